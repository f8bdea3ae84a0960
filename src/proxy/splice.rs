//! Zero-copy forwarding with splice(2): socket → pipe → socket, bytes never enter user
//! space. The system calls go through rustix, which takes borrowed descriptors: no
//! `unsafe` here.
//!
//! Pipes are precious (two descriptors and up to 64 KiB of kernel memory each), and most
//! proxied connections (Galera sessions, AMQP, idle keep-alives) sit idle for hours. So
//! a connection borrows a pipe only while it moves a chunk, from a per-thread pool with a
//! process-wide cap; an emptied pipe goes back, a pipe with bytes still in it (the
//! writer failed) is closed, never reused: handing those bytes to another connection
//! would leak data between clients.

use std::cell::RefCell;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Most pipes that may exist at once; past this, chunks go through the copy path.
const MAX_PIPES: usize = 4096;
/// Empty pipes each worker thread keeps for reuse.
const POOL_PER_THREAD: usize = 64;
/// Ask for up to this much per splice; the pipe's capacity bounds what really moves.
pub const CHUNK: usize = 1 << 20;
/// Pipe capacity asked for with F_SETPIPE_SZ. Each splice into a socket ends in a push of
/// what it carried, so a bigger pipe means fewer, larger pushes: 256 KiB cut proxy CPU per
/// GB by about 8 % against the 64 KiB default (benches/load S1). Larger buys little more,
/// and an unprivileged user's pipes count against `pipe-user-pages-soft` (64 MiB), past
/// which the kernel hands out two-page pipes; 64 pooled 256 KiB pipes are a quarter of it.
const PIPE_SIZE: usize = 256 * 1024;

static LIVE_PIPES: AtomicUsize = AtomicUsize::new(0);
/// Pipes lent to connections right now (the rest of the live ones sit in pools).
static LENT_PIPES: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static POOL: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes currently inside the pipe.
    pub pending: usize,
    lent: bool,
}

impl Pipe {
    fn open() -> io::Result<Pipe> {
        use rustix::pipe::{fcntl_setpipe_size, pipe_with, PipeFlags};
        let (read, write) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
        // Refusal (EPERM past the user's pipe quota) leaves the default size, which works,
        // only slower.
        let _ = fcntl_setpipe_size(&write, PIPE_SIZE);
        Ok(Pipe { read, write, pending: 0, lent: false })
    }

    /// Move up to `len` bytes from socket `from` into this pipe. WouldBlock means the
    /// socket is empty *or* the pipe is full; only with an empty pipe is it the socket.
    pub fn fill_from(&mut self, from: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
        use std::os::fd::AsFd;
        let n = splice(from, self.write.as_fd(), len)?;
        self.pending += n;
        Ok(n)
    }

    /// Move bytes from this pipe into socket `to`.
    pub fn drain_to(&mut self, to: BorrowedFd<'_>) -> io::Result<usize> {
        use std::os::fd::AsFd;
        let n = splice(self.read.as_fd(), to, self.pending)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "splice wrote nothing"));
        }
        self.pending -= n;
        Ok(n)
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        LIVE_PIPES.fetch_sub(1, Relaxed);
        if self.lent {
            LENT_PIPES.fetch_sub(1, Relaxed);
        }
    }
}

fn lend(mut pipe: Pipe) -> Pipe {
    pipe.lent = true;
    LENT_PIPES.fetch_add(1, Relaxed);
    pipe
}

/// Borrow an empty pipe. `Ok(None)` means the cap is reached or the system is out of
/// descriptors: the caller copies this chunk instead.
pub fn take() -> Option<Pipe> {
    if let Some(p) = POOL.with(|pool| pool.borrow_mut().pop()) {
        return Some(lend(p));
    }
    if LIVE_PIPES.fetch_add(1, Relaxed) >= MAX_PIPES {
        LIVE_PIPES.fetch_sub(1, Relaxed);
        return None;
    }
    match Pipe::open() {
        Ok(p) => Some(lend(p)),
        Err(_) => {
            LIVE_PIPES.fetch_sub(1, Relaxed);
            None
        }
    }
}

/// Return a pipe. Only an empty pipe is kept; anything else is closed.
pub fn give(mut pipe: Pipe) {
    pipe.lent = false;
    LENT_PIPES.fetch_sub(1, Relaxed);
    if pipe.pending != 0 {
        return;
    }
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOL_PER_THREAD {
            pool.push(pipe);
        }
    });
}

/// Pipes alive in the process (pooled or in use).
pub fn live_pipes() -> usize {
    LIVE_PIPES.load(Relaxed)
}

/// Pipes lent to connections right now: zero when every connection is idle.
pub fn lent_pipes() -> usize {
    LENT_PIPES.load(Relaxed)
}

/// Is this error one where splice itself is unsupported for these descriptors?
pub fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP))
}

fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    use rustix::pipe::SpliceFlags;
    // No SPLICE_F_MORE: it would delay the last segment of interactive replies.
    Ok(rustix::pipe::splice(from, None, to, None, len, SpliceFlags::MOVE | SpliceFlags::NONBLOCK)?)
}
