//! Accept loops: one per bind address, handing each client to the proxy with the
//! service as the current snapshot has it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, error, warn};

use super::drain::Tracker;
use super::Snapshot;
use crate::proxy;

pub struct AcceptLoop {
    pub listener: TcpListener,
    /// The bound address (the real port when the config said 0).
    pub bind: SocketAddr,
    /// The bind as configured: the key the snapshot maps to its service, so a reload can
    /// hand the bind to another service without closing the socket.
    pub configured: SocketAddr,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub use_splice: bool,
    pub tracker: Tracker,
    /// Becomes true when the listener must close (shutdown).
    pub stop: watch::Receiver<bool>,
    /// Becomes true when open connections must end (grace is over).
    pub close_all: watch::Receiver<bool>,
}

impl AcceptLoop {
    /// Accept until told to stop; the listener is dropped (closed) on return.
    pub async fn run(mut self) {
        let mut backoff = Duration::from_millis(5);
        loop {
            let accepted = tokio::select! {
                biased;
                _ = self.stop.wait_for(|s| *s) => break,
                r = self.listener.accept() => r,
            };
            match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(5);
                    let snapshot = self.snapshot.load();
                    let Some(service) = snapshot.service_for_bind(self.configured).cloned() else {
                        // Not reached: a reload stops a removed bind's loop before the swap.
                        continue;
                    };
                    let guard = self.tracker.enter();
                    let close_all = self.close_all.clone();
                    if service.http.is_some() {
                        let accepted = proxy::http::Accepted {
                            local: stream.local_addr().unwrap_or(self.bind),
                            stream,
                            peer,
                            service,
                            tracker: self.tracker.clone(),
                            stop: self.stop.clone(),
                            close_all,
                        };
                        tokio::spawn(async move {
                            proxy::http::handle(accepted).await;
                            drop(guard);
                        });
                        continue;
                    }
                    let use_splice = self.use_splice;
                    let local = stream.local_addr().unwrap_or(self.bind);
                    tokio::spawn(async move {
                        proxy::tcp::handle(stream, peer, local, service, use_splice, close_all).await;
                        drop(guard);
                    });
                }
                Err(e) if transient(&e) => {
                    debug!(bind = %self.bind, error = %e, "accept: peer went away")
                }
                Err(e) => {
                    // Out of descriptors or memory: accepting again at once would spin a
                    // core; back off and let connections finish and free descriptors.
                    if backoff <= Duration::from_millis(10) {
                        warn!(bind = %self.bind, error = %e, "accept failed; backing off");
                    } else {
                        error!(bind = %self.bind, error = %e, backoff_ms = backoff.as_millis() as u64, "accept still failing");
                    }
                    tokio::select! {
                        _ = self.stop.wait_for(|s| *s) => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

fn transient(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted)
}
