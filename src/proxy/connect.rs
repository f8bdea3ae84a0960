//! Reaching a server of a pool, for both modes: pick one (waiting in the queue while every
//! server is at its maxconn), open a connection, and on a failure move on to another,
//! `retries` times at most. One implementation, so tcp and http mode count, log and give
//! up alike.

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tracing::warn;

use super::{passive_failure, Service};
use crate::config::Mode;
use crate::upstream::{Lease, NoPick, Pool, Server, Tried};

/// Why no server connection came of a client's attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Every server that could take it stayed at its maxconn for the whole queue_timeout.
    QueueTimeout,
    /// No server may take traffic: none is up, or every one left has failed already.
    NoServer { after_failures: u32 },
    /// More connect failures than `retries` allows.
    RetriesExhausted,
}

impl fmt::Display for Refused {
    /// The words both modes log (and http answers with).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refused::QueueTimeout => "queue timeout: every server is at its maxconn",
            Refused::NoServer { after_failures: 0 } => "no server is available",
            Refused::NoServer { .. } => "every server tried failed to connect",
            Refused::RetriesExhausted => "connect retries exhausted",
        })
    }
}

/// The servers one client connection (tcp) or one request (http) has tried. A request
/// sent again after a failed exchange keeps them, so it never goes back to a server that
/// refused it a connection, and its connect failures count towards one `retries`.
pub(crate) struct Attempts<'a> {
    service: &'a Service,
    pool: &'a Pool,
    /// Source hashing balances on it.
    client: IpAddr,
    /// The server a persistence cookie names, taken whenever it may take traffic.
    preferred: Option<&'a str>,
    tried: Tried,
    failures: u32,
}

impl<'a> Attempts<'a> {
    pub(crate) fn new(service: &'a Service, pool: &'a Pool, client: IpAddr, preferred: Option<&'a str>) -> Self {
        Attempts { service, pool, client, preferred, tried: Tried::default(), failures: 0 }
    }

    /// A server and what `open` made of it. Each failure of `open` counts against that
    /// server (its stats, passive health, a log line) and sends the next try elsewhere.
    pub(crate) async fn connect<T, E, F, Fut>(&mut self, mut open: F) -> Result<(Lease, T), Refused>
    where
        F: FnMut(Arc<Server>) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: fmt::Display,
    {
        loop {
            let lease = self.pick().await?;
            let server = Arc::clone(lease.server());
            match open(Arc::clone(&server)).await {
                Ok(opened) => return Ok((lease, opened)),
                Err(e) => {
                    server.stats.connect_failures.fetch_add(1, Relaxed);
                    passive_failure(self.service, &server, &e);
                    self.log_failure(&server, &e);
                    self.tried.add(&lease, self.pool);
                    self.failures += 1;
                    if self.failures > self.service.config.retries {
                        return Err(Refused::RetriesExhausted);
                    }
                    self.service.stats.retries.fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// The line names its mode's module as target, so a log filter on
    /// `vipgate::proxy::tcp` or `vipgate::proxy::http::request` keeps showing it.
    fn log_failure(&self, server: &Server, e: &dyn fmt::Display) {
        let (service, address) = (&self.service.name, server.address());
        match self.service.config.mode {
            Mode::Http => warn!(target: "vipgate::proxy::http::request", service = %service, server = %server.name,
                address = %address, error = %e, "connect failed"),
            Mode::Tcp => warn!(target: "vipgate::proxy::tcp", service = %service, server = %server.name,
                address = %address, error = %e, "connect failed"),
        }
    }

    async fn pick(&self) -> Result<Lease, Refused> {
        if let Some(name) = self.preferred {
            if let Some(lease) = self.pool.pick_where(|s| s.name == name, &self.tried) {
                return Ok(lease);
            }
        }
        match self.pool.pick_queued(self.client, &self.tried, self.service.config.queue_timeout).await {
            Ok(lease) => Ok(lease),
            Err(NoPick::Full) => {
                self.service.stats.queue_timeouts.fetch_add(1, Relaxed);
                Err(Refused::QueueTimeout)
            }
            Err(NoPick::NoServer) => Err(Refused::NoServer { after_failures: self.failures }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_modes_say_the_same() {
        assert_eq!(Refused::QueueTimeout.to_string(), "queue timeout: every server is at its maxconn");
        assert_eq!(Refused::NoServer { after_failures: 0 }.to_string(), "no server is available");
        assert_eq!(Refused::NoServer { after_failures: 2 }.to_string(), "every server tried failed to connect");
        assert_eq!(Refused::RetriesExhausted.to_string(), "connect retries exhausted");
    }
}
