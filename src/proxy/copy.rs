//! The portable forwarding path: read into a pooled buffer, write it out. A connection
//! holds a buffer only while a chunk is in flight, and no chunk allocates.

use std::cell::RefCell;

/// HAProxy's default bufsize is 16 KiB; 32 KiB halves the syscalls on bulk transfers.
pub const BUF_SIZE: usize = 32 * 1024;
const POOL_PER_THREAD: usize = 64;

thread_local! {
    static POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

pub fn take() -> Box<[u8]> {
    POOL.with(|p| p.borrow_mut().pop()).unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice())
}

pub fn give(buf: Box<[u8]>) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_PER_THREAD {
            p.push(buf);
        }
    });
}
