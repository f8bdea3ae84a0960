//! The running balancer: build the snapshot, start health checks, open listeners, and
//! on shutdown close listeners at once and let open connections drain.

pub mod control;
mod drain;
mod listener;
mod resolve;
pub mod sdnotify;
pub mod signals;
mod snapshot;
pub mod upgrade;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use control::{Control, ReloadError, ReloadSource};
pub use snapshot::{Loaded, Missing, Snapshot};
// Where admin and the tests have always found them; they belong to the proxy, which must
// not need the runtime to read a service.
pub use crate::proxy::{stats, Service, ServiceStats, Tracker};

use crate::config::Config;
use crate::health;
use crate::upstream::Server;

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
    close_all_tx: watch::Sender<bool>,
    close_all_rx: watch::Receiver<bool>,
    listeners: Vec<Listener>,
    checks: CheckSet,
    /// Looks server names up again (aborted at shutdown).
    resolver: JoinHandle<()>,
    /// Gives memory back after bursts (see `drain::trim_after_bursts`).
    trimmer: JoinHandle<()>,
    config: Config,
    use_splice: bool,
    process: Arc<ProcessStats>,
}

/// One open bind and its accept loop.
struct Listener {
    /// As configured (port 0 stays 0 here; `local` has the real one).
    bind: SocketAddr,
    local: SocketAddr,
    /// A second descriptor for the listening socket (the accept loop owns the first), to
    /// hand over in an upgrade; `None` when it could not be had (out of descriptors).
    /// Dropped with the listener, after its accept loop has ended.
    fd: Option<std::os::fd::OwnedFd>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    pub generation: u64,
    pub services: usize,
    pub binds_added: Vec<SocketAddr>,
    pub binds_removed: Vec<SocketAddr>,
    pub servers_added: usize,
    pub servers_removed: usize,
}

/// Start everything in `config` on the current tokio runtime.
///
/// Listeners are bound first (so a port clash fails the start at once, and clients
/// connecting early wait in the backlog instead of being refused), then each service
/// starts accepting once every server's first probe has finished: no client lands on a
/// server that was never checked.
pub async fn start(config: &Config) -> Result<Running, RunError> {
    start_with(config, std::collections::HashMap::new()).await
}

/// [`start`], taking listeners handed over by an upgrading process instead of binding
/// them again (by configured bind address).
pub async fn start_with(
    config: &Config,
    mut inherited: std::collections::HashMap<SocketAddr, std::net::TcpListener>,
) -> Result<Running, RunError> {
    // At start nothing is served yet: reading the files here stalls no one.
    let loaded = Loaded::read(config.clone())?;
    let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::rebuild(&loaded, None)?));
    let use_splice = config.global.splice && cfg!(target_os = "linux");

    let mut bound = Vec::new();
    for svc in &config.services {
        for &bind in &svc.binds {
            // A handed-over listener carries the old process's options: re-tuned on use.
            let (listener, tuned) = match inherited.remove(&bind) {
                Some(l) => {
                    let l = tokio::net::TcpListener::from_std(l).map_err(|source| RunError::Bind {
                        service: svc.name.clone(),
                        bind,
                        source,
                    })?;
                    (l, None)
                }
                None => (open_listener(svc, bind)?, Some(svc.keepalive)),
            };
            bound.push((svc.name.clone(), bind, listener, tuned));
        }
    }
    for (bind, _) in inherited {
        info!(bind = %bind, "handed-over listener not in the config: closed");
    }

    let current = snapshot.load_full();
    let (checks, first) = spawn_all_checks(&loaded, &current);
    first.await;

    let (close_all_tx, close_all_rx) = watch::channel(false);
    let resolver = tokio::spawn(resolve::run(Arc::clone(&snapshot)));
    let tracker = Tracker::default();
    let trimmer = tokio::spawn(drain::trim_after_bursts(tracker.clone()));
    let mut running = Running {
        snapshot,
        tracker,
        trimmer,
        close_all_tx,
        close_all_rx,
        listeners: Vec::new(),
        checks,
        resolver,
        config: config.clone(),
        use_splice,
        process: Arc::new(ProcessStats {
            started_unix: AtomicU64::new(
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            ),
            ..ProcessStats::default()
        }),
    };
    for (service, bind, listener, tuned) in bound {
        running.spawn_listener(&service, bind, listener, tuned);
    }
    Ok(running)
}

fn open_listener(service: &crate::config::Service, bind: SocketAddr) -> Result<tokio::net::TcpListener, RunError> {
    let err = |source| RunError::Bind { service: service.name.clone(), bind, source };
    let std_listener = crate::net::bind_listener(bind, BACKLOG, Some(&service.keepalive)).map_err(err)?;
    tokio::net::TcpListener::from_std(std_listener).map_err(err)
}

/// The health checks of one config generation.
struct CheckSet {
    tasks: Vec<JoinHandle<()>>,
    /// Turning it true ends the checks after their probe in flight (never mid-probe).
    stop: watch::Sender<bool>,
    /// The longest probe timeout: how long stopping can take.
    longest: Duration,
}

impl CheckSet {
    /// Stop after the probes in flight; wait for them (bounded), then end what is left.
    async fn finish(mut self) {
        let _ = self.stop.send(true);
        let bound = self.longest + Duration::from_secs(1);
        let all = async {
            for t in self.tasks.iter_mut() {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(bound, all).await.is_err() {
            for t in &self.tasks {
                t.abort();
            }
        }
    }
}

/// Start the checks of every service; the future resolves once every server's first
/// probe has finished (bounded by each check's timeout).
fn spawn_all_checks(loaded: &Loaded, snapshot: &Snapshot) -> (CheckSet, impl std::future::Future<Output = ()>) {
    let (stop, stop_rx) = watch::channel(false);
    let mut set = CheckSet { tasks: Vec::new(), stop, longest: Duration::ZERO };
    let mut first_rounds = Vec::new();
    for (at, (svc_cfg, svc)) in loaded.config.services.iter().zip(snapshot.services.iter()).enumerate() {
        for ((check, indexes), probe) in svc_cfg.checks().into_iter().zip(loaded.probes(at)) {
            let servers: Vec<Arc<Server>> =
                indexes.iter().filter_map(|&i| svc.pool.servers().get(i).cloned()).collect();
            let checks = health::spawn_checks(&svc.name, check, probe, svc.config.on_down, &servers, &stop_rx);
            set.tasks.extend(checks.tasks);
            set.longest = set.longest.max(check.timeout);
            // Bounded: a probe never outlives its timeout, plus slack for a busy machine.
            first_rounds.push((check.timeout + Duration::from_secs(1), checks.first_round));
        }
    }
    let all = async move {
        for (bound, first) in first_rounds {
            let _ = tokio::time::timeout(bound, futures_join(first)).await;
        }
    };
    (set, all)
}

/// (service, server, address) of every server: what a reload compares to count changes.
fn server_keys(snapshot: &Snapshot) -> Vec<(&str, &str, SocketAddr)> {
    snapshot
        .services
        .iter()
        .flat_map(|s| s.pool.servers().iter().map(move |v| (s.name.as_str(), v.name.as_str(), v.configured)))
        .collect()
}

async fn futures_join(receivers: Vec<tokio::sync::oneshot::Receiver<()>>) {
    for rx in receivers {
        let _ = rx.await;
    }
}

impl Running {
    fn spawn_listener(
        &mut self,
        service: &str,
        bind: SocketAddr,
        listener: tokio::net::TcpListener,
        tuned: Option<crate::config::Keepalive>,
    ) {
        let local = listener.local_addr().unwrap_or(bind);
        let fd = std::os::fd::AsFd::as_fd(&listener).try_clone_to_owned();
        if let Err(e) = &fd {
            warn!(service = %service, bind = %local, error = %e, "no second descriptor for this listener: an upgrade cannot hand it over");
        }
        let fd = fd.ok();
        info!(service = %service, bind = %local, splice = self.use_splice, "listening");
        let (stop_tx, stop_rx) = watch::channel(false);
        let accept = listener::AcceptLoop {
            listener,
            bind: local,
            configured: bind,
            snapshot: Arc::clone(&self.snapshot),
            use_splice: self.use_splice,
            tracker: self.tracker.clone(),
            stop: stop_rx,
            close_all: self.close_all_rx.clone(),
            tuned: tuned.filter(|_| crate::net::ACCEPT_INHERITS_OPTIONS),
        };
        let task = tokio::spawn(accept.run());
        self.listeners.push(Listener { bind, local, fd, stop: stop_tx, task });
    }

    /// Each listener's service and actual bound address (useful with port 0).
    pub fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        let snapshot = self.snapshot.load();
        self.listeners
            .iter()
            .map(|l| (snapshot.service_for_bind(l.bind).map(|s| s.name.clone()).unwrap_or_default(), l.local))
            .collect()
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The live snapshot, for readers beside the runtime (admin API, metrics).
    pub fn snapshot_handle(&self) -> Arc<ArcSwap<Snapshot>> {
        Arc::clone(&self.snapshot)
    }

    pub fn process(&self) -> Arc<ProcessStats> {
        Arc::clone(&self.process)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Every listening socket by configured bind, as descriptors of their own, for an
    /// upgrade: all of them, or an error naming the one that cannot be had.
    pub fn listener_fds(&self) -> Result<Vec<(SocketAddr, std::os::fd::OwnedFd)>, String> {
        self.listeners
            .iter()
            .map(|l| {
                let fd = l.fd.as_ref().ok_or_else(|| format!("listener {} has no descriptor to hand over", l.local))?;
                let fd = fd.try_clone().map_err(|e| format!("listener {}: {e}", l.local))?;
                Ok((l.bind, fd))
            })
            .collect()
    }

    /// Connections currently open.
    pub fn open_connections(&self) -> usize {
        self.tracker.open()
    }

    /// Switch to `config` without dropping anything: connections already open go on with
    /// the snapshot they started with; a bind that stays keeps its socket (no moment of
    /// refused connects); new binds open, removed ones stop accepting and drain; servers
    /// that keep their service, name and address keep health and counters. On any error
    /// nothing has changed. `loaded` comes from [`Loaded::read`], the blocking part,
    /// which the caller runs off the workers.
    pub async fn reload(&mut self, loaded: Loaded) -> Result<ReloadReport, RunError> {
        let old = self.snapshot.load_full();
        let snapshot = Snapshot::rebuild(&loaded, Some(&old))?;

        // Open new binds first: if one fails, close what was opened and keep running as before.
        let mut opened = Vec::new();
        for svc in &loaded.config.services {
            for &bind in &svc.binds {
                if !self.listeners.iter().any(|l| l.bind == bind) {
                    opened.push((svc.name.clone(), bind, open_listener(svc, bind)?, svc.keepalive));
                }
            }
        }
        let snapshot = Arc::new(snapshot);
        let (checks, first) = spawn_all_checks(&loaded, &snapshot);
        let config = loaded.config;

        // Commit.
        let mut report = ReloadReport { services: config.services.len(), ..ReloadReport::default() };
        let (before, after) = (server_keys(&old), server_keys(&snapshot));
        report.servers_added = after.iter().filter(|k| !before.contains(k)).count();
        report.servers_removed = before.iter().filter(|k| !after.contains(k)).count();
        // Removed binds stop accepting before the swap, so nothing they accepted meets
        // a snapshot without their service. Their open connections drain.
        let (kept, removed): (Vec<Listener>, Vec<Listener>) = std::mem::take(&mut self.listeners)
            .into_iter()
            .partition(|l| config.services.iter().any(|s| s.binds.contains(&l.bind)));
        for l in &removed {
            let _ = l.stop.send(true);
        }
        for l in removed {
            info!(bind = %l.local, "bind removed by reload: no longer accepting; open connections drain");
            report.binds_removed.push(l.local);
            let _ = l.task.await;
        }
        self.snapshot.store(Arc::clone(&snapshot));
        snapshot.commit();
        // The old checks end after their probe in flight, in the background.
        let old_checks = std::mem::replace(&mut self.checks, checks);
        tokio::spawn(old_checks.finish());
        self.listeners = kept;
        self.config = config;
        // New binds start accepting once their servers' first probes are in, as at start.
        if !opened.is_empty() {
            first.await;
        }
        for (service, bind, listener, keepalive) in opened {
            self.spawn_listener(&service, bind, listener, Some(keepalive));
            if let Some(l) = self.listeners.last() {
                report.binds_added.push(l.local);
            }
        }
        report.generation = self.process.generation.fetch_add(1, Relaxed) + 1;
        Ok(report)
    }

    /// Close every listener now (new connects are refused), let open connections finish
    /// for up to `grace`, then end the rest.
    pub async fn shutdown(self, grace: Duration) {
        self.resolver.abort();
        self.trimmer.abort();
        for l in &self.listeners {
            let _ = l.stop.send(true);
        }
        for l in self.listeners {
            let _ = l.task.await;
        }
        let open = self.tracker.open();
        info!(open_connections = open, grace_ms = grace.as_millis() as u64, "listeners closed; draining");
        if tokio::time::timeout(grace, self.tracker.idle()).await.is_err() {
            warn!(open_connections = self.tracker.open(), "grace period over; closing remaining connections");
            let _ = self.close_all_tx.send(true);
            // Connections end on their next poll; give them a moment to log their line.
            let _ = tokio::time::timeout(Duration::from_secs(2), self.tracker.idle()).await;
        }
        self.checks.finish().await;
        info!("stopped");
    }
}

/// Process-wide counters the admin API and metrics read.
#[derive(Debug, Default)]
pub struct ProcessStats {
    /// Bumped by every successful reload (0 = the config the process started with).
    pub generation: AtomicU64,
    pub reloads_total: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// SHA-1 of the config file text in use, and the last reload error.
    pub config_hash: std::sync::Mutex<String>,
    pub last_reload_error: std::sync::Mutex<Option<String>>,
    /// When the balancer started, in seconds since the Unix epoch (uptime in `show info`).
    pub started_unix: AtomicU64,
}
