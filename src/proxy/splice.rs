//! Zero-copy forwarding with splice(2): socket → pipe → socket, bytes never enter user
//! space. The only `unsafe` in vipgate lives here.
//!
//! Pipes are precious (two descriptors and up to 64 KiB of kernel memory each), and most
//! proxied connections (Galera sessions, AMQP, idle keep-alives) sit idle for hours. So
//! a connection borrows a pipe only while it moves a chunk, from a per-thread pool with a
//! process-wide cap; an emptied pipe goes back, a pipe with bytes still in it (the
//! writer failed) is closed, never reused: handing those bytes to another connection
//! would leak data between clients.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
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
const PIPE_SIZE: libc::c_int = 256 * 1024;

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
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a valid, writable array of two c_ints as pipe2 requires.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ takes an int and touches no memory of ours. Refusal (EPERM
        // past the user's pipe quota) leaves the default size, which works, only slower.
        let _ = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
        Ok(Pipe { read, write, pending: 0, lent: false })
    }

    /// Move up to `len` bytes from socket `from` into this pipe. WouldBlock means the
    /// socket is empty *or* the pipe is full; only with an empty pipe is it the socket.
    pub fn fill_from(&mut self, from: RawFd, len: usize) -> io::Result<usize> {
        let n = splice(from, self.write.as_raw_fd(), len)?;
        self.pending += n;
        Ok(n)
    }

    /// Move bytes from this pipe into socket `to`.
    pub fn drain_to(&mut self, to: RawFd) -> io::Result<usize> {
        let n = splice(self.read.as_raw_fd(), to, self.pending)?;
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

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // No SPLICE_F_MORE: it would delay the last segment of interactive replies.
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    // SAFETY: both descriptors are open for the duration of the call (borrowed from live
    // sockets and an owned pipe); null offsets are required for sockets and pipes.
    let n = unsafe { libc::splice(from, std::ptr::null_mut(), to, std::ptr::null_mut(), len, flags) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
