//! The running balancer: build the snapshot, start health checks, open listeners, and
//! on shutdown close listeners at once and let open connections drain.

mod drain;
mod listener;
mod server;
pub mod signals;
mod snapshot;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use drain::Tracker;
pub use server::{AdminState, Health, ProbeResult, Server, ServerStats, State};
pub use snapshot::{Service, Snapshot};

use crate::config::Config;
use crate::health;

/// Listen backlog; the kernel caps it at net.core.somaxconn.
const BACKLOG: i32 = 4096;

#[derive(Debug)]
pub enum RunError {
    /// A listener could not be opened.
    Bind { service: String, bind: SocketAddr, source: io::Error },
    /// A service's health check could not be set up (TLS settings).
    Check { service: String, message: String },
    /// A service's TLS settings could not be loaded (certificates, CA file).
    Tls { service: String, message: String },
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Bind { service, bind, source } => {
                write!(f, "service \"{service}\": cannot listen on {bind}: {source}")
            }
            RunError::Check { service, message } => write!(f, "service \"{service}\": check: {message}"),
            RunError::Tls { service, message } => write!(f, "service \"{service}\": TLS: {message}"),
        }
    }
}

impl std::error::Error for RunError {}

/// A started balancer. Dropping it does not stop it; call [`Running::shutdown`].
pub struct Running {
    snapshot: Arc<ArcSwap<Snapshot>>,
    tracker: Tracker,
    stop_tx: watch::Sender<bool>,
    close_all_tx: watch::Sender<bool>,
    accept_tasks: Vec<JoinHandle<()>>,
    check_tasks: Vec<JoinHandle<()>>,
    local_addrs: Vec<(String, SocketAddr)>,
}

/// Start everything in `config` on the current tokio runtime.
///
/// Listeners are bound first (so a port clash fails the start at once, and clients
/// connecting early wait in the backlog instead of being refused), then each service
/// starts accepting once every server's first probe has finished: no client lands on a
/// server that was never checked.
pub async fn start(config: &Config) -> Result<Running, RunError> {
    let snapshot = Snapshot::new(config).map_err(|(service, message)| RunError::Tls { service, message })?;
    let snapshot = Arc::new(ArcSwap::from_pointee(snapshot));
    let use_splice = config.global.splice && cfg!(target_os = "linux");

    let mut listeners = Vec::new();
    for svc in &config.services {
        for &bind in &svc.binds {
            let std_listener = crate::net::bind_listener(bind, BACKLOG).map_err(|source| RunError::Bind {
                service: svc.name.clone(),
                bind,
                source,
            })?;
            let listener = tokio::net::TcpListener::from_std(std_listener).map_err(|source| RunError::Bind {
                service: svc.name.clone(),
                bind,
                source,
            })?;
            let local = listener.local_addr().unwrap_or(bind);
            listeners.push((svc.name.clone(), local, listener));
        }
    }

    let current = snapshot.load_full();
    let mut check_tasks = Vec::new();
    let mut first_rounds = Vec::new();
    for (svc_cfg, svc) in config.services.iter().zip(current.services.iter()) {
        if let Some(check) = &svc_cfg.check {
            let checks = health::spawn_checks(&svc.name, check, svc.on_down, svc.pool.servers())
                .map_err(|message| RunError::Check { service: svc.name.clone(), message })?;
            check_tasks.extend(checks.tasks);
            let first = checks.first_round;
            // Bounded: a probe never outlives its timeout, plus slack for a busy machine.
            let bound = check.timeout + Duration::from_secs(1);
            first_rounds.push(async move {
                let all = futures_join(first);
                let _ = tokio::time::timeout(bound, all).await;
            });
        }
    }
    for round in first_rounds {
        round.await;
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let (close_all_tx, close_all_rx) = watch::channel(false);
    let tracker = Tracker::default();
    let mut accept_tasks = Vec::new();
    let mut local_addrs = Vec::new();
    for (service, local, listener) in listeners {
        info!(service = %service, bind = %local, splice = use_splice, "listening");
        local_addrs.push((service.clone(), local));
        let accept = listener::AcceptLoop {
            listener,
            bind: local,
            service,
            snapshot: Arc::clone(&snapshot),
            use_splice,
            tracker: tracker.clone(),
            stop: stop_rx.clone(),
            close_all: close_all_rx.clone(),
        };
        accept_tasks.push(tokio::spawn(accept.run()));
    }
    Ok(Running { snapshot, tracker, stop_tx, close_all_tx, accept_tasks, check_tasks, local_addrs })
}

async fn futures_join(receivers: Vec<tokio::sync::oneshot::Receiver<()>>) {
    for rx in receivers {
        let _ = rx.await;
    }
}

impl Running {
    /// Each listener's service and actual bound address (useful with port 0).
    pub fn local_addrs(&self) -> &[(String, SocketAddr)] {
        &self.local_addrs
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Connections currently open.
    pub fn open_connections(&self) -> usize {
        self.tracker.open()
    }

    /// Close every listener now (new connects are refused), let open connections finish
    /// for up to `grace`, then end the rest.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop_tx.send(true);
        for task in self.accept_tasks {
            let _ = task.await;
        }
        let open = self.tracker.open();
        info!(open_connections = open, grace_ms = grace.as_millis() as u64, "listeners closed; draining");
        if tokio::time::timeout(grace, self.tracker.idle()).await.is_err() {
            warn!(open_connections = self.tracker.open(), "grace period over; closing remaining connections");
            let _ = self.close_all_tx.send(true);
            // Connections end on their next poll; give them a moment to log their line.
            let _ = tokio::time::timeout(Duration::from_secs(2), self.tracker.idle()).await;
        }
        for task in self.check_tasks {
            task.abort();
        }
        info!("stopped");
    }
}
