//! Per-service counters beside the per-server ones: kept across reloads by service name,
//! written on the hot path with relaxed atomics, read by the metrics endpoint.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// Upper bounds (seconds) of the request latency buckets; the last bucket is +Inf.
pub const LATENCY_BUCKETS: [f64; 12] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Debug, Default)]
pub struct ServiceStats {
    /// Client connections accepted.
    pub connections_total: AtomicU64,
    /// Connect attempts that went to another server after a failure.
    pub retries: AtomicU64,
    /// Connections (tcp) or requests (http) refused after waiting `queue_timeout` for
    /// a server below its `maxconn`.
    pub queue_timeouts: AtomicU64,
    /// Client connections open now (what `maxconn` bounds).
    pub current: AtomicU64,
    /// accept() failures that are not a client gone (EMFILE, ENFILE, ENOMEM, ...).
    pub accept_errors: AtomicU64,
    /// Times the listeners paused because the service reached its `maxconn`.
    pub maxconn_reached: AtomicU64,
    /// Woken when a client connection ends: a paused listener may accept again.
    room: Notify,
    /// http: responses by status class, 1xx..5xx.
    pub responses: [AtomicU64; 5],
    /// http: time from request head to response head.
    pub latency: Latency,
}

/// One client connection counted in `current`; dropping it frees the slot.
pub struct ConnSlot(Arc<ServiceStats>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, Relaxed);
        self.0.room.notify_one();
    }
}

/// While paused at `maxconn`, a listener also looks again this often: a reload may have
/// raised the limit, and a wakeup may have gone to another listener of the service.
const PAUSE_RECHECK: Duration = Duration::from_millis(100);

impl ServiceStats {
    /// Count one more client connection, unless `max` are open already.
    pub fn try_slot(self: &Arc<Self>, max: Option<u32>) -> Option<ConnSlot> {
        let taken = match max {
            None => {
                self.current.fetch_add(1, Relaxed);
                true
            }
            Some(max) => self.current.fetch_update(Relaxed, Relaxed, |n| (n < u64::from(max)).then_some(n + 1)).is_ok(),
        };
        taken.then(|| ConnSlot(Arc::clone(self)))
    }

    /// Wait until a connection ends, or `PAUSE_RECHECK` at most, before trying again.
    pub async fn room(&self) {
        tokio::select! {
            _ = self.room.notified() => {}
            _ = tokio::time::sleep(PAUSE_RECHECK) => {}
        }
    }

    pub fn count_response(&self, status: u16) {
        if let Some(c) = self.responses.get(usize::from(status / 100).wrapping_sub(1)) {
            c.fetch_add(1, Relaxed);
        }
    }
}

/// A fixed-bucket histogram (non-cumulative counts; the renderer accumulates).
#[derive(Debug, Default)]
pub struct Latency {
    pub buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    pub sum_micros: AtomicU64,
    pub count: AtomicU64,
}

impl Latency {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS.iter().position(|&b| secs <= b).unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_classes() {
        let s = ServiceStats::default();
        s.latency.observe(Duration::from_micros(500));
        s.latency.observe(Duration::from_millis(30));
        s.latency.observe(Duration::from_secs(60));
        assert_eq!(s.latency.buckets[0].load(Relaxed), 1);
        assert_eq!(s.latency.buckets[4].load(Relaxed), 1);
        assert_eq!(s.latency.buckets[12].load(Relaxed), 1);
        assert_eq!(s.latency.count.load(Relaxed), 3);
        for st in [101, 200, 204, 302, 404, 503, 0, 999] {
            s.count_response(st);
        }
        let got: Vec<u64> = s.responses.iter().map(|c| c.load(Relaxed)).collect();
        assert_eq!(got, vec![1, 2, 1, 1, 1]);
    }
}
