//! Giving the memory of a burst of connections back to the system once it is over.
//! (Counting them, so shutdown can wait for them, is [`Tracker`]'s.)

use crate::proxy::Tracker;

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
        if tracker.high_water() >= open + TRIM_AFTER_DROP_OF {
            tracker.reset_high_water(open);
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
