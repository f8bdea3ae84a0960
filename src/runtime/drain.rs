//! Counting open connections so shutdown can wait for them to finish, and giving the
//! memory of a burst of them back to the system once it is over.

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

/// How often the trimmer looks, and how far the open count must have fallen from its
/// high-water mark to be worth a trim (a few MiB at a few KiB per connection).
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
const TRIM_AFTER_DROP_OF: usize = 256;

/// After a burst of connections ends, hand the allocator's free pages back to the system
/// (glibc keeps them in its arenas otherwise, so RSS would stay at the burst's peak). As
/// HAProxy trims after flushing its pools; it costs one pass over the arenas.
pub async fn trim_after_bursts(tracker: Tracker) {
    loop {
        tokio::time::sleep(TRIM_EVERY).await;
        let open = tracker.open();
        let high = tracker.inner.high_water.load(Ordering::Relaxed);
        if high >= open + TRIM_AFTER_DROP_OF {
            tracker.inner.high_water.store(open, Ordering::Relaxed);
            trim();
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // the one call no safe wrapper offers
fn trim() {
    // SAFETY: malloc_trim only walks glibc's own arenas; any thread may call it.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.inner.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.idle.notify_waiters();
        }
    }
}
