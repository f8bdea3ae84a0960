//! `kind = "tcp"`: the server is up if a TCP connect succeeds.
//!
//! Nothing is written. A server that speaks first gets a short moment to do so: if what
//! it says is a MySQL greeting, the probe ends the conversation the way MariaDB does not
//! count toward `max_connect_errors` (answer as the anonymous user, close on the refusal
//! or COM_QUIT), because a bare reset after connect is counted whenever MariaDB's address
//! lookup wins the race with it (measured in tests/mariadb.rs; a blocked address takes
//! every client of the balancer down with it). Any other server, silent or not, gets a
//! reset (SO_LINGER 0): no TIME_WAIT and nothing to parse.

use std::time::Duration;

use super::probe::{Probe, ProbeFuture, Target};
use crate::{mysql, net};

/// How long a connected server may take to greet before it is treated as a silent one.
const GREETING_WAIT: Duration = Duration::from_millis(300);

pub struct TcpProbe {
    timeout: Duration,
}

impl TcpProbe {
    pub fn new(timeout: Duration) -> Self {
        TcpProbe { timeout }
    }
}

/// Does `head` start like a MySQL server's first packet (greeting v10, or an ERR packet)?
fn looks_like_mysql(head: &[u8]) -> bool {
    head.len() >= 5 && head[3] == 0 && (head[4] == 10 || head[4] == 0xff)
}

impl Probe for TcpProbe {
    fn probe<'a>(&'a self, target: &'a Target) -> ProbeFuture<'a> {
        Box::pin(async move {
            let stream = net::connect(target.addr, target.source, None)
                .await
                .map_err(|e| format!("tcp connect to {}: {e}", target.addr))?;
            let wait = GREETING_WAIT.min(self.timeout / 2);
            let mut head = [0u8; 5];
            let peeked = tokio::time::timeout(wait, stream.peek(&mut head)).await;
            if let Ok(Ok(n)) = peeked {
                if looks_like_mysql(&head[..n]) {
                    // Up either way: the connect succeeded. The polite ending only keeps
                    // MariaDB from counting this probe against the balancer's address.
                    let _ = mysql::check(stream, None, self.timeout).await;
                    return Ok("tcp connect ok (MySQL greeting answered politely)".to_string());
                }
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
