//! Move bytes both ways between client and server until both directions end, one side
//! fails, an idle timeout fires, or shutdown's grace runs out.
//!
//! Each direction ends on EOF by shutting down the write side of the other socket, so a
//! client's `shutdown(WR)` reaches the server as EOF while the reply still flows back.

use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant};

use super::copy;

/// How a proxied connection ended (the `end=` field of the connection log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    ClientClose,
    ServerClose,
    ClientTimeout,
    ServerTimeout,
    ConnectFailure,
    Shutdown,
    /// The server's sessions were shut down (marked down, or failback drain).
    Killed,
    /// `accept_proxy`: the client's PROXY header was missing or broken.
    BadProxyHeader,
}

impl End {
    pub fn as_str(self) -> &'static str {
        match self {
            End::ClientClose => "client_close",
            End::ServerClose => "server_close",
            End::ClientTimeout => "client_timeout",
            End::ServerTimeout => "server_timeout",
            End::ConnectFailure => "connect_failure",
            End::Shutdown => "shutdown",
            End::Killed => "killed",
            End::BadProxyHeader => "bad_proxy_header",
        }
    }
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub client: Option<Duration>,
    pub server: Option<Duration>,
}

/// What [`forward`] reports when the connection is over.
pub struct Outcome {
    /// Bytes from the client to the server.
    pub bytes_in: u64,
    /// Bytes from the server to the client.
    pub bytes_out: u64,
    pub end: End,
    pub error: Option<io::Error>,
}

/// Shared by both directions of one connection; atomics only so the task stays `Send`.
struct Activity {
    start: Instant,
    /// Milliseconds since `start` of the last byte moved either way.
    last_ms: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Relaxed);
    }
}

/// An I/O failure, tagged with the side whose socket failed.
enum Fail {
    Src(io::Error),
    Dst(io::Error),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    ClientToServer,
    ServerToClient,
}

/// Forward until the connection is over; `stop` ends it early with the `End` it yields
/// (shutdown grace over, the server's sessions shut down).
pub async fn forward(
    client: &TcpStream,
    server: &TcpStream,
    timeouts: Timeouts,
    use_splice: bool,
    stop: impl std::future::Future<Output = End>,
) -> Outcome {
    let act = Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
        bytes_in: AtomicU64::new(0),
        bytes_out: AtomicU64::new(0),
    };
    let c2s = direction(client, server, Dir::ClientToServer, use_splice, &act);
    let s2c = direction(server, client, Dir::ServerToClient, use_splice, &act);
    tokio::pin!(c2s, s2c, stop);
    let (mut c2s_open, mut s2c_open) = (true, true);
    let mut first_close: Option<End> = None;
    let mut error = None;

    let end = loop {
        tokio::select! {
            r = &mut c2s, if c2s_open => {
                c2s_open = false;
                match r {
                    Ok(()) => {
                        // Client sent FIN: pass it on, keep the reply flowing.
                        let _ = SockRef::from(server).shutdown(Shutdown::Write);
                        first_close.get_or_insert(End::ClientClose);
                    }
                    Err(Fail::Src(e)) => { error = Some(e); break End::ClientClose; }
                    Err(Fail::Dst(e)) => { error = Some(e); break End::ServerClose; }
                }
            }
            r = &mut s2c, if s2c_open => {
                s2c_open = false;
                match r {
                    Ok(()) => {
                        let _ = SockRef::from(client).shutdown(Shutdown::Write);
                        first_close.get_or_insert(End::ServerClose);
                    }
                    Err(Fail::Src(e)) => { error = Some(e); break End::ServerClose; }
                    Err(Fail::Dst(e)) => { error = Some(e); break End::ClientClose; }
                }
            }
            end = idle(&act, timeouts, c2s_open, s2c_open) => break end,
            end = &mut stop => break end,
        }
        if !c2s_open && !s2c_open {
            break first_close.unwrap_or(End::ClientClose);
        }
    };
    Outcome { bytes_in: act.bytes_in.load(Relaxed), bytes_out: act.bytes_out.load(Relaxed), end, error }
}

/// Resolves when the connection has been idle too long, naming the side to blame.
///
/// Any byte moved counts as activity for both sides (a long download keeps a silent
/// client alive, as in HAProxy). When only one direction is still open we are waiting on
/// that direction's sender; otherwise the shorter timeout fires and names its side.
async fn idle(act: &Activity, t: Timeouts, c2s_open: bool, s2c_open: bool) -> End {
    let (limit, end) = match (t.client, t.server) {
        _ if c2s_open && !s2c_open => (t.client, End::ClientTimeout),
        _ if s2c_open && !c2s_open => (t.server, End::ServerTimeout),
        (Some(c), Some(s)) if s < c => (Some(s), End::ServerTimeout),
        (Some(c), _) => (Some(c), End::ClientTimeout),
        (None, s) => (s, End::ServerTimeout),
    };
    let Some(limit) = limit else {
        return std::future::pending().await;
    };
    loop {
        let last = act.start + Duration::from_millis(act.last_ms.load(Relaxed));
        let deadline = last + limit;
        if Instant::now() >= deadline {
            return end;
        }
        sleep_until(deadline).await;
    }
}

async fn direction(src: &TcpStream, dst: &TcpStream, dir: Dir, use_splice: bool, act: &Activity) -> Result<(), Fail> {
    let counter = match dir {
        Dir::ClientToServer => &act.bytes_in,
        Dir::ServerToClient => &act.bytes_out,
    };
    #[cfg(target_os = "linux")]
    if use_splice {
        match splice_loop(src, dst, counter, act).await {
            SpliceEnd::Done(r) => return r,
            // splice is unsupported here: the copy loop carries on from the same point.
            SpliceEnd::Unsupported => {}
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = use_splice;
    copy_loop(src, dst, counter, act).await
}

#[cfg(target_os = "linux")]
enum SpliceEnd {
    Done(Result<(), Fail>),
    Unsupported,
}

#[cfg(target_os = "linux")]
async fn splice_loop(src: &TcpStream, dst: &TcpStream, counter: &AtomicU64, act: &Activity) -> SpliceEnd {
    use super::splice;
    use std::os::fd::AsRawFd;
    let (src_fd, dst_fd) = (src.as_raw_fd(), dst.as_raw_fd());
    loop {
        if let Err(e) = src.readable().await {
            return SpliceEnd::Done(Err(Fail::Src(e)));
        }
        let Some(mut pipe) = splice::take() else {
            // No pipe to be had (cap or descriptors exhausted): copy this chunk instead.
            match copy_chunk(src, dst, counter, act).await {
                Ok(true) => continue,
                Ok(false) => return SpliceEnd::Done(Ok(())),
                Err(f) => return SpliceEnd::Done(Err(f)),
            }
        };
        match src.try_io(Interest::READABLE, || pipe.fill_from(src_fd, splice::CHUNK)) {
            Ok(0) => {
                splice::give(pipe);
                return SpliceEnd::Done(Ok(()));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                splice::give(pipe);
                continue;
            }
            Err(e) if splice::unsupported(&e) => {
                splice::give(pipe);
                return SpliceEnd::Unsupported;
            }
            Err(e) => return SpliceEnd::Done(Err(Fail::Src(e))),
        }
        while pipe.pending > 0 {
            match dst.try_io(Interest::WRITABLE, || pipe.drain_to(dst_fd)) {
                Ok(n) => {
                    counter.fetch_add(n as u64, Relaxed);
                    act.touch();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = dst.writable().await {
                        return SpliceEnd::Done(Err(Fail::Dst(e)));
                    }
                }
                // The pipe still holds bytes: dropping it (not pooling it) discards them.
                Err(e) => return SpliceEnd::Done(Err(Fail::Dst(e))),
            }
        }
        splice::give(pipe);
    }
}

async fn copy_loop(src: &TcpStream, dst: &TcpStream, counter: &AtomicU64, act: &Activity) -> Result<(), Fail> {
    loop {
        src.readable().await.map_err(Fail::Src)?;
        if !copy_chunk(src, dst, counter, act).await? {
            return Ok(());
        }
    }
}

/// Copy what `src` has ready. Ok(false) at EOF. Takes a buffer only once data is there.
async fn copy_chunk(src: &TcpStream, dst: &TcpStream, counter: &AtomicU64, act: &Activity) -> Result<bool, Fail> {
    let mut buf = copy::take();
    let n = match src.try_read(&mut buf) {
        Ok(0) => {
            copy::give(buf);
            return Ok(false);
        }
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            copy::give(buf);
            return Ok(true);
        }
        Err(e) => {
            copy::give(buf);
            return Err(Fail::Src(e));
        }
    };
    let mut done = 0;
    while done < n {
        match dst.try_write(&buf[done..n]) {
            Ok(0) => return Err(Fail::Dst(io::ErrorKind::WriteZero.into())),
            Ok(w) => {
                done += w;
                counter.fetch_add(w as u64, Relaxed);
                act.touch();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable().await.map_err(Fail::Dst)?,
            Err(e) => return Err(Fail::Dst(e)),
        }
    }
    copy::give(buf);
    Ok(true)
}
