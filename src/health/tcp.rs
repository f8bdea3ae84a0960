//! `kind = "tcp"`: the server is up if a TCP connect succeeds.
//!
//! The connection is reset (SO_LINGER 0) the moment it is established: no byte is read or
//! written, so a MySQL server never gets a half-done handshake to count against
//! `max_connect_errors` for the balancer's address.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::net;

pub async fn probe(
    addr: SocketAddr,
    source: Option<IpAddr>,
    timeout: Duration,
) -> Result<(), String> {
    match net::connect(addr, source, Some(timeout)).await {
        Ok(stream) => {
            net::abort(stream);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
            Err(format!("tcp connect to {addr} timed out"))
        }
        Err(e) => Err(format!("tcp connect to {addr} failed: {e}")),
    }
}
