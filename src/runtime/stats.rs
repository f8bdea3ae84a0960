//! Per-service counters beside the per-server ones: kept across reloads by service name,
//! written on the hot path with relaxed atomics, read by the metrics endpoint.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the request latency buckets; the last bucket is +Inf.
pub const LATENCY_BUCKETS: [f64; 12] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Debug, Default)]
pub struct ServiceStats {
    /// Client connections accepted.
    pub connections_total: AtomicU64,
    /// Connect attempts that went to another server after a failure.
    pub retries: AtomicU64,
    /// http: responses by status class, 1xx..5xx.
    pub responses: [AtomicU64; 5],
    /// http: time from request head to response head.
    pub latency: Latency,
}

impl ServiceStats {
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
