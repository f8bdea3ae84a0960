//! `kind = "tcp"`: the server is up if a TCP connect succeeds.
//!
//! Nothing is written. A server that speaks first gets a moment to do so (longer for one
//! seen greeting before, short for one seen silent): if what
//! it says is a MySQL greeting, the probe ends the conversation the way MariaDB does not
//! count toward `max_connect_errors` (answer as the anonymous user, close on the refusal
//! or COM_QUIT), because a bare reset after connect is counted whenever MariaDB's address
//! lookup wins the race with it (measured in tests/mariadb.rs; a blocked address takes
//! every client of the balancer down with it). Any other server, silent or not, gets a
//! reset (SO_LINGER 0): no TIME_WAIT and nothing to parse.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::probe::{Probe, ProbeFuture, Target};
use crate::{mysql, net};

/// How long a server never seen to speak first may take to greet on a later probe.
const SILENT_WAIT: Duration = Duration::from_millis(300);
/// The first probe of a server waits longer: a loaded MariaDB (or one resolving the
/// prober's name) can take a while to greet, and a missed greeting means a reset it counts.
const FIRST_WAIT: Duration = Duration::from_secs(1);

pub struct TcpProbe {
    timeout: Duration,
    /// What each target did on earlier probes: true = greeted like MySQL, false = silent.
    seen: Mutex<HashMap<SocketAddr, bool>>,
}

impl TcpProbe {
    pub fn new(timeout: Duration) -> Self {
        TcpProbe { timeout, seen: Mutex::new(HashMap::new()) }
    }

    fn seen(&self, addr: SocketAddr) -> Option<bool> {
        self.seen.lock().ok()?.get(&addr).copied()
    }

    fn remember(&self, addr: SocketAddr, greets: bool) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.insert(addr, greets);
        }
    }
}

/// Does `head` start like a MySQL server's first packet (greeting v10, or an ERR packet)?
fn looks_like_mysql(head: &[u8]) -> bool {
    head.len() >= 5 && head[3] == 0 && (head[4] == 10 || head[4] == 0xff)
}

impl Probe for TcpProbe {
    fn probe<'a>(&'a self, target: &'a Target) -> ProbeFuture<'a> {
        Box::pin(async move {
            let started = Instant::now();
            let stream = net::connect(target.addr, target.source, None)
                .await
                .map_err(|e| format!("tcp connect to {}: {e}", target.addr))?;
            // A known MySQL server gets most of the probe's time to greet (the rest is
            // for the polite ending); others a short moment.
            let wait = match self.seen(target.addr) {
                Some(true) => self.timeout.mul_f64(0.6),
                Some(false) => SILENT_WAIT.min(self.timeout / 2),
                None => FIRST_WAIT.min(self.timeout / 2),
            };
            let mut head = [0u8; 5];
            let deadline = started + wait;
            let mut got = 0;
            // Peek until five bytes (a packet header and its first byte) or the wait ends.
            while got < head.len() {
                match tokio::time::timeout_at(deadline, stream.peek(&mut head)).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                    Ok(Ok(n)) if n == got => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        if Instant::now() >= deadline {
                            break;
                        }
                    }
                    Ok(Ok(n)) => got = n,
                }
            }
            if looks_like_mysql(&head[..got]) {
                self.remember(target.addr, true);
                // Up either way: the connect succeeded. The polite ending only keeps
                // MariaDB from counting this probe against the balancer's address.
                let left = self.timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(100));
                let _ = mysql::check(stream, None, left).await;
                return Ok("tcp connect ok (MySQL greeting answered politely)".to_string());
            }
            if got == 0 && self.seen(target.addr) != Some(true) {
                self.remember(target.addr, false);
            }
            net::abort(stream);
            Ok("tcp connect ok".to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::looks_like_mysql;

    #[test]
    fn recognises_mysql_first_packets() {
        assert!(looks_like_mysql(&[0x5b, 0, 0, 0, 10]));
        assert!(looks_like_mysql(&[0x17, 0, 0, 0, 0xff]));
        assert!(!looks_like_mysql(b"db1\nx"));
        assert!(!looks_like_mysql(b"HTTP/"));
        assert!(!looks_like_mysql(&[0x5b, 0, 0]));
    }
}
