//! `kind = "mysql"`: speak the MySQL protocol to the traffic port.
//!
//! Without `user` the server's greeting is enough (the server is up and accepting
//! logins). With `user`/`password` the probe logs in, reads `wsrep_local_state` and
//! `read_only`, and judges them as the clustercheck script does: a native Galera check
//! without the xinetd responder. Either way the conversation ends the polite way, so
//! MariaDB never counts an aborted connect against the balancer's address.

use std::time::Duration;

use super::probe::{Probe, ProbeFuture, Target};
use crate::config::MysqlCheck;
use crate::mysql::{self, Credentials};
use crate::net;

pub struct MysqlProbe {
    credentials: Option<Credentials>,
    available_when_donor: bool,
    available_when_readonly: bool,
    /// Protocol-level bound (the scheduler bounds the whole probe too).
    timeout: Duration,
}

impl MysqlProbe {
    pub fn new(check: &MysqlCheck, timeout: Duration) -> Self {
        MysqlProbe {
            credentials: check
                .user
                .as_ref()
                .map(|user| Credentials { user: user.clone(), password: check.password.clone() }),
            available_when_donor: check.available_when_donor,
            available_when_readonly: check.available_when_readonly,
            timeout,
        }
    }
}

impl Probe for MysqlProbe {
    fn probe<'a>(&'a self, target: &'a Target) -> ProbeFuture<'a> {
        Box::pin(async move {
            let stream = net::connect(target.addr, target.source, None)
                .await
                .map_err(|e| format!("connect to {}: {e}", target.addr))?;
            let (greeting, status) = mysql::check(stream, self.credentials.as_ref(), self.timeout)
                .await
                .map_err(|e| format!("mysql {}: {e}", target.addr))?;
            match status {
                None => Ok(format!("MySQL greeting: {}", greeting.server_version)),
                Some(status) => mysql::galera_verdict(&status, self.available_when_donor, self.available_when_readonly)
                    .map(|()| format!("{}: Galera cluster node is synced.", greeting.server_version)),
            }
        })
    }
}
