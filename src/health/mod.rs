//! Health checking: one task per checked server probes it on its schedule and feeds the
//! result to the rise/fall [`state`] machine, which sets the server's health that the
//! balancer reads. Probes are one [`probe::Probe`] trait with a file per kind.

mod clustercheck;
pub mod http;
mod mysql;
mod probe;
pub mod state;
mod tcp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};
use tracing::{info, warn};

pub use probe::{Probe, Target, Verdict};

use crate::config::{Check, CheckKind, OnDown};
use crate::upstream::{Health, ProbeResult, Server};
use state::{HealthState, Transition};

/// The probe for a check kind; fails only on TLS settings (unreadable CA file). It reads
/// the CA file: the runtime builds probes in its load step, off the workers.
pub fn build_probe(kind: &CheckKind, timeout: Duration) -> Result<Arc<dyn Probe>, String> {
    Ok(match kind {
        CheckKind::Tcp => Arc::new(tcp::TcpProbe::new(timeout)),
        CheckKind::Http(h) => Arc::new(http::HttpProbe::new(h, false)?),
        CheckKind::Clustercheck(h) => Arc::new(clustercheck::ClustercheckProbe::new(h)?),
        CheckKind::Mysql(m) => Arc::new(mysql::MysqlProbe::new(m, timeout)),
    })
}

/// Where a server is probed: its own overrides, then the check's, then the traffic address.
pub fn target(check: &Check, server: &Server) -> Target {
    let ip = server.check_address.or(check.address).unwrap_or(server.address().ip());
    let port = server.check_port.or(check.port).unwrap_or(server.address().port());
    Target { addr: SocketAddr::new(ip, port), source: server.source }
}

/// Run one probe, bounded by the check's timeout.
pub async fn probe_once(probe: &dyn Probe, check: &Check, target: &Target) -> Verdict {
    match timeout(check.timeout, probe.probe(target)).await {
        Ok(v) => v,
        Err(_) => Err(format!("{} check of {} timed out after {:?}", check.kind.name(), target.addr, check.timeout)),
    }
}

/// The probe tasks of one service.
pub struct Checks {
    pub tasks: Vec<JoinHandle<()>>,
    /// One per server; fires once that server's first probe has finished, so the caller
    /// can hold its listener until then.
    pub first_round: Vec<oneshot::Receiver<()>>,
}

/// Start checking every server of one service, until `stop` turns true. A probe in
/// flight is never cancelled: a MySQL handshake cut short is an aborted connect the
/// server counts against the balancer's address (reloads and shutdown stop checks).
/// `probe` comes from [`build_probe`] for `check.kind`.
pub fn spawn_checks(
    service: &str,
    check: &Check,
    probe: &Arc<dyn Probe>,
    on_down: OnDown,
    servers: &[Arc<Server>],
    stop: &watch::Receiver<bool>,
) -> Checks {
    let n = servers.len().max(1) as u32;
    let mut tasks = Vec::with_capacity(servers.len());
    let mut first = Vec::with_capacity(servers.len());
    for (i, server) in servers.iter().enumerate() {
        let (tx, rx) = oneshot::channel();
        let job = CheckJob {
            service: service.to_string(),
            check: check.clone(),
            on_down,
            probe: Arc::clone(probe),
            server: Arc::clone(server),
            stop: stop.clone(),
            // Spread the servers' phases over the interval so probes never go out in one burst.
            phase: check.interval * i as u32 / n,
        };
        tasks.push(tokio::spawn(job.run(tx)));
        first.push(rx);
    }
    Checks { tasks, first_round: first }
}

struct CheckJob {
    service: String,
    check: Check,
    on_down: OnDown,
    probe: Arc<dyn Probe>,
    server: Arc<Server>,
    stop: watch::Receiver<bool>,
    phase: Duration,
}

impl CheckJob {
    async fn run(mut self, first: oneshot::Sender<()>) {
        // A server kept across a reload goes on from its state and streak; a new one is
        // decided by its first probe.
        let (rise, fall, streak) = (self.check.rise, self.check.fall, self.server.streak());
        let mut state = match self.server.health() {
            Health::Unchecked => HealthState::new(rise, fall),
            Health::Up | Health::GoingDown => HealthState::resume(rise, fall, true, streak),
            Health::Down | Health::GoingUp => HealthState::resume(rise, fall, false, streak),
        };
        let mut first = Some(first);
        let mut delay = Duration::ZERO;
        loop {
            if !delay.is_zero() {
                // Passive health can cut the wait short: probe now to confirm.
                tokio::select! {
                    _ = sleep(delay) => {}
                    _ = self.server.recheck.notified() => {}
                    _ = self.stop.changed() => {}
                }
            }
            if *self.stop.borrow() {
                return;
            }
            if self.server.take_passive_down() && state.is_up() {
                state.force_down();
            }
            // Each probe: the server's address may have been resolved anew.
            let target = target(&self.check, &self.server);
            let started = Instant::now();
            let verdict = probe_once(self.probe.as_ref(), &self.check, &target).await;
            let took = started.elapsed();
            self.apply(&mut state, verdict, took);

            // fastinter while a change is pending, downinter while down, else interval;
            // ±5 % jitter keeps servers from drifting back into lockstep. The probe's own
            // duration counts against the wait, which never drops below 10 %.
            let base = if state.transitioning() {
                self.check.fastinter
            } else if !state.is_up() {
                self.check.downinter
            } else {
                self.check.interval
            };
            delay = base.mul_f64(jitter()).saturating_sub(took).max(base / 10);
            if let Some(tx) = first.take() {
                let _ = tx.send(());
                delay += self.phase;
            }
        }
    }

    fn apply(&self, state: &mut HealthState, verdict: Verdict, took: Duration) {
        let ok = verdict.is_ok();
        let reason = match &verdict {
            Ok(detail) => detail.clone(),
            Err(reason) => reason.clone(),
        };
        self.server.record_probe(ProbeResult { ok, reason: reason.clone(), duration: took, at: SystemTime::now() });
        let before = self.server.health();
        let transition = state.observe(ok);
        self.server.set_streak(state.streak());
        let now = match (state.is_up(), state.transitioning()) {
            (true, false) => Health::Up,
            (true, true) => Health::GoingDown,
            (false, true) => Health::GoingUp,
            (false, false) => Health::Down,
        };
        self.server.set_health(now);
        let (svc, srv, ms) = (&self.service, &self.server.name, took.as_millis() as u64);
        match transition {
            Some(Transition::WentUp) => {
                info!(service = %svc, server = %srv, reason = %reason, took_ms = ms, "server is UP")
            }
            Some(Transition::WentDown) => {
                warn!(service = %svc, server = %srv, reason = %reason, took_ms = ms, "server is DOWN");
                if self.on_down == OnDown::ShutdownSessions && self.server.active() > 0 {
                    warn!(service = %svc, server = %srv, sessions = self.server.active(), "closing the sessions of a server marked down");
                    self.server.shutdown_sessions();
                }
            }
            None if now != before => {
                info!(service = %svc, server = %srv, reason = %reason, took_ms = ms, state = %self.server.state(), "server state changed")
            }
            None => {}
        }
    }
}

fn jitter() -> f64 {
    0.95 + crate::upstream::rng::unit() * 0.10
}
