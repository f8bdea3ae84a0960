//! Counting open connections so shutdown can wait for them to finish.

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
    idle: Notify,
}

/// Held by a connection task; the count drops when it does.
pub struct Guard {
    inner: Arc<Inner>,
}

impl Tracker {
    pub fn enter(&self) -> Guard {
        self.inner.open.fetch_add(1, Ordering::AcqRel);
        Guard { inner: Arc::clone(&self.inner) }
    }

    pub fn open(&self) -> usize {
        self.inner.open.load(Ordering::Acquire)
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
