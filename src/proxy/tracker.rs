//! Counting open client connections, so shutdown can wait for them to finish and the
//! runtime can tell when a burst of them is over.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

#[derive(Clone, Default)]
pub struct Tracker {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    open: AtomicUsize,
    /// Most open at once since the last trim.
    high_water: AtomicUsize,
    idle: Notify,
}

/// Held by a connection task; the count drops when it does.
pub struct Guard {
    inner: Arc<Inner>,
}

impl Tracker {
    pub fn enter(&self) -> Guard {
        let now = self.inner.open.fetch_add(1, Ordering::AcqRel) + 1;
        self.inner.high_water.fetch_max(now, Ordering::Relaxed);
        Guard { inner: Arc::clone(&self.inner) }
    }

    pub fn open(&self) -> usize {
        self.inner.open.load(Ordering::Acquire)
    }

    /// Most open at once since [`Tracker::reset_high_water`].
    pub fn high_water(&self) -> usize {
        self.inner.high_water.load(Ordering::Relaxed)
    }

    pub fn reset_high_water(&self, to: usize) {
        self.inner.high_water.store(to, Ordering::Relaxed);
    }

    /// Resolves once no connection is open.
    pub async fn idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.inner.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.idle.notify_waiters();
        }
    }
}
