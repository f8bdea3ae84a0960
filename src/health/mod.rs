//! Active health checking: one task per checked server probes it on its interval and
//! feeds the result to the rise/fall [`state`] machine, which flips the server's `up`
//! flag that the balancer reads.

pub mod state;
mod tcp;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{sleep, Instant};
use tracing::{debug, info, warn};

use crate::config::{Check, CheckKind};
use crate::runtime::Server;
use state::{HealthState, Transition};

/// Run one probe of `server` according to `check`.
async fn probe(check: &Check, server: &Server) -> Result<(), String> {
    match check.kind {
        CheckKind::Tcp => tcp::probe(server.address, server.source, check.timeout).await,
    }
}

/// Start checking every server of one service. Each receiver fires once that server's
/// first probe has finished, so the caller can hold its listener until then.
pub fn spawn_checks(
    service: &str,
    check: &Check,
    servers: &[Arc<Server>],
) -> (Vec<JoinHandle<()>>, Vec<oneshot::Receiver<()>>) {
    let n = servers.len().max(1) as u32;
    let mut tasks = Vec::with_capacity(servers.len());
    let mut first = Vec::with_capacity(servers.len());
    for (i, server) in servers.iter().enumerate() {
        let (tx, rx) = oneshot::channel();
        // Spread the servers' phases over the interval so probes never go out in one burst.
        let phase = check.interval * i as u32 / n;
        let task = tokio::spawn(check_loop(
            service.to_string(),
            check.clone(),
            Arc::clone(server),
            phase,
            tx,
        ));
        tasks.push(task);
        first.push(rx);
    }
    (tasks, first)
}

async fn check_loop(
    service: String,
    check: Check,
    server: Arc<Server>,
    phase: Duration,
    first: oneshot::Sender<()>,
) {
    let mut state = HealthState::new(check.rise, check.fall);
    let mut first = Some(first);
    let mut delay = Duration::ZERO;
    loop {
        if !delay.is_zero() {
            sleep(delay).await;
        }
        let started = Instant::now();
        let result = probe(&check, &server).await;
        let took = started.elapsed();
        let ok = result.is_ok();
        match state.observe(ok) {
            Some(Transition::WentUp) => {
                server.set_up(true);
                info!(service = %service, server = %server.name, took_ms = took.as_millis() as u64, "server is UP");
            }
            Some(Transition::WentDown) => {
                server.set_up(false);
                let reason = result.as_ref().err().map(String::as_str).unwrap_or("");
                warn!(service = %service, server = %server.name, reason = %reason, "server is DOWN");
            }
            None => {
                if let Err(reason) = &result {
                    debug!(service = %service, server = %server.name, reason = %reason, "probe failed");
                }
            }
        }
        // ±5 % jitter keeps servers from drifting back into lockstep; the probe's own
        // duration counts against the interval, but never shortens the wait below 10 %.
        let base = check.interval.mul_f64(jitter());
        delay = base.saturating_sub(took).max(check.interval / 10);
        if let Some(tx) = first.take() {
            let _ = tx.send(());
            delay += phase;
        }
    }
}

fn jitter() -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    static STATE: AtomicU64 = AtomicU64::new(0x2545_f491_4f6c_dd1d);
    let x = crate::balance::hash::mix64(STATE.fetch_add(0x9e37_79b9_7f4a_7c15, Relaxed));
    0.95 + (x >> 11) as f64 / (1u64 << 53) as f64 * 0.10
}
