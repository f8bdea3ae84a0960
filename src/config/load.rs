//! The I/O a config needs beyond its own text: server names to resolve, secret files to
//! read, CA bundles and certificates to try. The validator asks for it through [`Io`], so
//! the same checks run pure ([`NoIo`]: fuzzing, [`super::validate_pure`]) or for real
//! ([`SystemIo`]: [`super::load`] and [`super::parse`], which the supervisor runs off the
//! workers so a slow DNS answer stalls no connection). Validation touches the network or
//! the disk only through this file (and `tls`, which it calls); reading the config file
//! itself is [`super::load`]'s, and the secret-file mode warnings (`secrets.rs`) are asked
//! for by the caller after validation.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::Path;

use super::http::CertFiles;

pub trait Io {
    /// `host:port` to one address (the first the resolver gives).
    fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, String>;
    /// A secret file's text (token, password).
    fn read_secret(&self, path: &str) -> std::io::Result<String>;
    /// A CA bundle that loads as a client trust store (`None`: the system's).
    fn check_ca(&self, path: Option<&Path>, verify: bool) -> Result<(), String>;
    /// A certificate chain and key that load as a TLS server identity.
    fn check_certificates(&self, files: &CertFiles) -> Result<(), String>;
}

/// The machine's resolver and files.
pub struct SystemIo;

impl Io for SystemIo {
    fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, String> {
        let mut addrs = (host, port).to_socket_addrs().map_err(|e| format!("cannot resolve \"{host}\": {e}"))?;
        addrs.next().ok_or_else(|| format!("\"{host}\" resolves to no address"))
    }

    fn read_secret(&self, path: &str) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn check_ca(&self, path: Option<&Path>, verify: bool) -> Result<(), String> {
        crate::tls::client_config(path, verify).map(|_| ())
    }

    fn check_certificates(&self, files: &CertFiles) -> Result<(), String> {
        crate::tls::server::check_files(std::slice::from_ref(files)).map_err(|e| e.to_string())
    }
}

/// No I/O at all: every name resolves to `0.0.0.0:PORT`, every secret file reads as a
/// placeholder token, every CA and certificate loads. A config validated this way is for
/// checking what its text says, never for running.
pub struct NoIo;

/// What [`NoIo`] reads from any secret file.
pub const PLACEHOLDER_SECRET: &str = "unread";

impl Io for NoIo {
    fn resolve(&self, _host: &str, port: u16) -> Result<SocketAddr, String> {
        Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
    }

    fn read_secret(&self, _path: &str) -> std::io::Result<String> {
        Ok(PLACEHOLDER_SECRET.to_string())
    }

    fn check_ca(&self, _path: Option<&Path>, _verify: bool) -> Result<(), String> {
        Ok(())
    }

    fn check_certificates(&self, _files: &CertFiles) -> Result<(), String> {
        Ok(())
    }
}
