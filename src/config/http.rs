//! The validated model of `mode = "http"` settings and of the PROXY protocol keys (which
//! apply in both modes).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// PEM files of one listener certificate: the type is tls's, the config only names them.
pub use crate::tls::CertFiles;

/// An address range, `10.0.0.0/8`, `fd00::/8`, or one address (`192.0.2.7` = /32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    /// Parse `IP` or `IP/PREFIX`; the host bits are masked off.
    pub fn parse(s: &str) -> Result<IpNet, String> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = ip.trim().parse().map_err(|_| format!("\"{s}\" is not an IP address or IP/PREFIX range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("\"{s}\": prefix length must be 0..={max}")),
            },
        };
        let net = IpNet { addr, prefix };
        Ok(IpNet { addr: net.masked(addr), prefix })
    }

    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(self.prefix)) };
                IpAddr::V4((bits & mask).into())
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(self.prefix)) };
                IpAddr::V6((bits & mask).into())
            }
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) if self.addr.is_ipv4() => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            other => other,
        };
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        self.masked(ip) == self.addr
    }
}

/// Which PROXY protocol header vipgate writes to servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    V1,
    V2,
}

/// Which clients must open with a PROXY protocol header (v1 or v2, detected).
#[derive(Debug, Clone, PartialEq)]
pub enum AcceptProxy {
    /// Every connection (`accept_proxy = true`).
    All,
    /// Connections from these ranges must, others must not
    /// (`accept_proxy = ["10.0.0.2", "10.1.0.0/16"]`).
    From(Vec<IpNet>),
}

impl AcceptProxy {
    pub fn expects(&self, peer: IpAddr) -> bool {
        match self {
            AcceptProxy::All => true,
            AcceptProxy::From(nets) => nets.iter().any(|n| n.contains(peer)),
        }
    }
}

/// Everything `mode = "http"` adds to a service.
#[derive(Debug, Clone, PartialEq)]
pub struct Http {
    /// Request headers must arrive within this (408 otherwise); also the idle time
    /// allowed between keep-alive requests.
    pub header_timeout: Duration,
    /// Idle timeout of an upgraded (WebSocket) connection, both ways; `None` = none.
    pub tunnel_timeout: Option<Duration>,
    /// Largest request head (request line + headers) in bytes (431 above it).
    pub max_header_bytes: usize,
    /// Most request headers (431 above it).
    pub max_headers: usize,
    /// Least a client must send of a request body, in bytes per second, over every
    /// `body_rate_window` of time spent waiting on it (408 below it); 0 = no floor.
    pub min_body_rate: u64,
    pub body_rate_window: Duration,
    /// Accept HTTP/2 with prior knowledge on a plain-text listener.
    pub h2c: bool,
    /// Speak HTTP/2 to servers (prior knowledge on plain TCP, ALPN on TLS).
    pub server_http2: bool,
    /// Idle keep-alive connections kept per server.
    pub pool_max_idle: usize,
    /// How long an idle pooled server connection is kept.
    pub pool_idle_timeout: Duration,
    pub forwarded_for: bool,
    pub forwarded_proto: bool,
    pub forwarded_host: bool,
    /// RFC 7239 `Forwarded`.
    pub forwarded: bool,
    /// Incoming X-Forwarded-* / Forwarded headers are kept (and appended to) only from
    /// these sources; from anyone else they are removed first.
    pub trusted_forwarders: Vec<IpNet>,
    /// Answer every request with a 301 to the same URL on https (a plain port that
    /// only redirects).
    pub redirect_https: bool,
    /// Port in the redirect target; `None` = the default 443.
    pub https_port: Option<u16>,
    pub request: HeaderRules,
    pub response: HeaderRules,
    /// Rewrite `Location: http://HOST...` to `https://` when the client came over TLS and
    /// HOST is the host the client asked for.
    pub rewrite_location: bool,
    pub deny: Vec<DenyRule>,
    /// Cookie persistence; `None` = off.
    pub cookie: Option<CookiePersistence>,
    pub routes: Vec<Route>,
    /// TLS termination on the service's binds; `None` = plain text.
    pub tls: Option<ListenerTls>,
    /// TLS to servers; `None` = plain text.
    pub server_tls: Option<ServerTls>,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            header_timeout: Duration::from_secs(10),
            tunnel_timeout: Some(Duration::from_secs(3600)),
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            // Apache's mod_reqtimeout default (MinRate=500), measured per 20 s.
            min_body_rate: 500,
            body_rate_window: Duration::from_secs(20),
            h2c: false,
            server_http2: false,
            pool_max_idle: 1024,
            pool_idle_timeout: Duration::from_secs(10),
            forwarded_for: true,
            forwarded_proto: true,
            forwarded_host: false,
            forwarded: false,
            trusted_forwarders: Vec::new(),
            redirect_https: false,
            https_port: None,
            request: HeaderRules::default(),
            response: HeaderRules::default(),
            rewrite_location: true,
            deny: Vec::new(),
            cookie: None,
            routes: Vec::new(),
            tls: None,
            server_tls: None,
        }
    }
}

/// `set_headers` replaces (or adds) each header; `del_headers` removes. Deletions run
/// first, so a header can be both removed and set to a vipgate-chosen value.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeaderRules {
    /// Lower-case names, valid values (checked at load).
    pub set: Vec<(String, String)>,
    pub del: Vec<String>,
}

/// Deny requests whose (percent-decoded) path matches, answering `status`.
#[derive(Debug, Clone)]
pub struct DenyRule {
    pub path_prefix: Option<String>,
    pub path_contains: Option<String>,
    pub path_regex: Option<regex::Regex>,
    pub status: u16,
}

impl PartialEq for DenyRule {
    fn eq(&self, other: &Self) -> bool {
        self.path_prefix == other.path_prefix
            && self.path_contains == other.path_contains
            && self.path_regex.as_ref().map(regex::Regex::as_str) == other.path_regex.as_ref().map(regex::Regex::as_str)
            && self.status == other.status
    }
}

/// Insert a cookie naming the server that answered (HAProxy `cookie NAME insert
/// indirect nocache`): a client that sends it back goes to that server while it is up.
#[derive(Debug, Clone, PartialEq)]
pub struct CookiePersistence {
    pub name: String,
}

/// Requests whose Host and path match go to the servers tagged `pool`.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Exact host (case-insensitive, port ignored) or `*.example.org`; `None` = any.
    pub host: Option<String>,
    /// `None` = any path.
    pub path_prefix: Option<String>,
    pub pool: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerTls {
    pub certificates: Vec<CertFiles>,
    /// Offer h2 by ALPN.
    pub http2: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerTls {
    pub ca_file: Option<PathBuf>,
    pub verify: bool,
    /// SNI and verification name; `None` = the server's IP.
    pub server_name: Option<String>,
}
