//! Accept loops: one per bind address, handing each client to the proxy with the
//! service as the current snapshot has it.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use super::Snapshot;
use crate::config::Keepalive;
use crate::net;
use crate::proxy;
use crate::proxy::Tracker;

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
    /// The socket options last set on the listener, which accepted sockets inherit
    /// (None: not yet, or a platform where they are not inherited).
    pub tuned: Option<Keepalive>,
}

impl AcceptLoop {
    /// Accept until told to stop; the listener is dropped (closed) on return.
    pub async fn run(mut self) {
        let mut backoff = Duration::from_millis(5);
        let mut slot = None;
        let mut paused = false;
        loop {
            // The next client's place under the service's maxconn, taken before accepting:
            // at the limit the listener waits and clients wait in the kernel's backlog.
            if slot.is_none() {
                // Each try reads the service again: a reload may have changed its maxconn
                // or handed this bind to another service.
                let Some(service) = self.snapshot.load().service_for_bind(self.configured).cloned() else {
                    break;
                };
                slot = service.stats.try_slot(service.config.maxconn);
                if slot.is_none() {
                    if !paused {
                        paused = true;
                        service.stats.maxconn_reached.fetch_add(1, Relaxed);
                        warn!(service = %service.name, bind = %self.bind, maxconn = service.config.maxconn.unwrap_or(0),
                            "service at its maxconn: not accepting until a connection ends");
                    }
                    tokio::select! {
                        biased;
                        _ = self.stop.wait_for(|s| *s) => break,
                        _ = service.stats.room() => continue,
                    }
                }
                if paused {
                    paused = false;
                    info!(service = %service.name, bind = %self.bind, "accepting again");
                }
            }
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
                    let slot = slot.take();
                    // Client socket options: inherited from the listener once it carries
                    // this service's settings; a reload that changes them re-tunes it.
                    if self.tuned != Some(service.config.keepalive) {
                        net::tune_stream(&stream, &service.config.keepalive);
                        if net::ACCEPT_INHERITS_OPTIONS {
                            net::tune_listener(&self.listener, &service.config.keepalive);
                            self.tuned = Some(service.config.keepalive);
                        }
                    }
                    // A specific bind address is the local address: no getsockname.
                    let local = if self.bind.ip().is_unspecified() {
                        stream.local_addr().unwrap_or(self.bind)
                    } else {
                        self.bind
                    };
                    let guard = self.tracker.enter();
                    let close_all = self.close_all.clone();
                    if service.http.is_some() {
                        let accepted = proxy::http::Accepted {
                            local,
                            stream,
                            peer,
                            service,
                            tracker: self.tracker.clone(),
                            stop: self.stop.clone(),
                            close_all,
                        };
                        tokio::spawn(async move {
                            proxy::http::handle(accepted).await;
                            drop(slot);
                            drop(guard);
                        });
                        continue;
                    }
                    let use_splice = self.use_splice;
                    tokio::spawn(async move {
                        proxy::tcp::handle(stream, peer, local, service, use_splice, close_all).await;
                        drop(slot);
                        drop(guard);
                    });
                }
                Err(e) if transient(&e) => {
                    debug!(bind = %self.bind, error = %e, "accept: peer went away")
                }
                Err(e) => {
                    if let Some(service) = self.snapshot.load().service_for_bind(self.configured) {
                        service.stats.accept_errors.fetch_add(1, Relaxed);
                    }
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
