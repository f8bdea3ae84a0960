//! `kind = "tcp"`: the server is up if a TCP connect succeeds.
//!
//! The connection is reset (SO_LINGER 0) the moment it is established: no byte is read or
//! written and no TIME_WAIT is left. MariaDB still counts a share of such probes as
//! handshake errors (when its address lookup wins the race with the reset; see
//! tests/mariadb.rs), so MySQL ports want the `mysql` or `clustercheck` kinds instead.

use super::probe::{Probe, ProbeFuture, Target};
use crate::net;

pub struct TcpProbe;

impl Probe for TcpProbe {
    fn probe<'a>(&'a self, target: &'a Target) -> ProbeFuture<'a> {
        Box::pin(async move {
            let stream = net::connect(target.addr, target.source, None)
                .await
                .map_err(|e| format!("tcp connect to {}: {e}", target.addr))?;
            net::abort(stream);
            Ok("tcp connect ok".to_string())
        })
    }
}
