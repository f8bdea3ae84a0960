//! Move bytes both ways between client and server until both directions end, one side
//! fails, an idle timeout fires, or shutdown's grace runs out.
//!
//! Each direction ends on EOF by shutting down the write side of the other socket, so a
//! client's `shutdown(WR)` reaches the server as EOF while the reply still flows back.
//!
//! Most proxied connections sit idle for hours (Galera sessions, AMQP), so what an idle
//! one costs is what counts: the whole connection is one hand-written future that waits
//! with `poll_read_ready`/`poll_write_ready` (a waker slot in the socket, no stored
//! readiness future), and holds a pipe or buffer only while bytes are in flight.

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::Duration;

use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::copy;
#[cfg(target_os = "linux")]
use super::splice::{self, Pipe};

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

/// An I/O failure, tagged with the side whose socket failed.
enum Fail {
    Src(io::Error),
    Dst(io::Error),
}

/// Bytes taken from the source and not yet written to the destination.
enum Chunk {
    #[cfg(target_os = "linux")]
    Pipe(Pipe),
    Buf {
        buf: Box<[u8]>,
        start: usize,
        end: usize,
    },
}

impl Chunk {
    fn pending(&self) -> usize {
        match self {
            #[cfg(target_os = "linux")]
            Chunk::Pipe(p) => p.pending,
            Chunk::Buf { start, end, .. } => end - start,
        }
    }

    /// Back to its pool (a pipe still holding bytes is closed, never pooled).
    fn release(self) {
        match self {
            #[cfg(target_os = "linux")]
            Chunk::Pipe(p) => splice::give(p),
            Chunk::Buf { buf, .. } => copy::give(buf),
        }
    }
}

/// Chunks one direction may move in one poll before yielding, so a bulk transfer cannot
/// starve the other connections of its worker thread.
const CHUNKS_PER_POLL: u32 = 16;

/// One direction: source socket → chunk → destination socket.
struct Half {
    /// splice may be used (configured, supported).
    splice: bool,
    /// This direction has shown bulk traffic (a read filled a whole buffer): splice from
    /// now on. Small messages (a request, a reply, a MySQL packet) cost fewer kernel
    /// cycles through recv/send than through a pipe, as with HAProxy's splice-auto.
    bulk: bool,
    chunk: Option<Chunk>,
    eof: bool,
    bytes: u64,
}

impl Half {
    fn new(splice: bool) -> Self {
        Half { splice, bulk: false, chunk: None, eof: false, bytes: 0 }
    }

    fn release(&mut self) {
        if let Some(c) = self.chunk.take() {
            c.release();
        }
    }

    /// Move what can be moved now. Ready(Ok) once the source's EOF has been passed on in
    /// full; Pending with the waker registered on whichever socket we wait for.
    fn poll_move(
        &mut self,
        cx: &mut Context<'_>,
        src: &TcpStream,
        dst: &TcpStream,
        last: &mut Instant,
    ) -> Poll<Result<(), Fail>> {
        let mut chunks = 0;
        loop {
            let pending = self.chunk.as_ref().map_or(0, Chunk::pending);
            if pending == 0 {
                if self.eof {
                    self.release();
                    return Poll::Ready(Ok(()));
                }
                if chunks >= CHUNKS_PER_POLL {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                chunks += 1;
                match src.poll_read_ready(cx) {
                    Poll::Pending => {
                        // Idle: hold no pipe and no buffer while waiting.
                        self.release();
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(Fail::Src(e))),
                    Poll::Ready(Ok(())) => {}
                }
                match self.fill_empty(src) {
                    Ok(0) => self.eof = true,
                    Ok(_) => {}
                    // Readiness was cleared: the next turn registers for the next edge.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(Fail::Src(e))),
                }
            } else if !self.eof {
                // Top up the pipe while the destination is slow (overlap both sockets).
                if let Err(e) = self.top_up(src) {
                    return Poll::Ready(Err(Fail::Src(e)));
                }
            }
            if self.chunk.as_ref().map_or(0, Chunk::pending) == 0 {
                continue;
            }
            match self.drain(dst) {
                Ok(n) => {
                    self.bytes += n as u64;
                    *last = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => match dst.poll_write_ready(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(Fail::Dst(e))),
                    Poll::Ready(Ok(())) => {}
                },
                Err(e) => return Poll::Ready(Err(Fail::Dst(e))),
            }
        }
    }

    /// Read into a fresh chunk (a pipe when splicing and one is to be had, else a buffer).
    /// Ok(0) is EOF; WouldBlock clears the socket's readiness.
    fn fill_empty(&mut self, src: &TcpStream) -> io::Result<usize> {
        #[cfg(target_os = "linux")]
        if self.splice && self.bulk {
            let pipe = match self.chunk.take() {
                Some(Chunk::Pipe(p)) => Some(p),
                Some(other) => {
                    other.release();
                    splice::take()
                }
                None => splice::take(),
            };
            if let Some(mut pipe) = pipe {
                use std::os::fd::AsFd;
                let fd = src.as_fd();
                let r = src.try_io(Interest::READABLE, || pipe.fill_from(fd, splice::CHUNK));
                match r {
                    Err(e) if splice::unsupported(&e) => {
                        // splice cannot serve these sockets: copy from now on.
                        splice::give(pipe);
                        self.splice = false;
                    }
                    r => {
                        self.chunk = Some(Chunk::Pipe(pipe));
                        return r;
                    }
                }
            }
            // No pipe (cap or descriptors exhausted): this chunk goes through a buffer.
        }
        let mut buf = match self.chunk.take() {
            Some(Chunk::Buf { buf, .. }) => buf,
            Some(other) => {
                other.release();
                copy::take()
            }
            None => copy::take(),
        };
        let r = src.try_read(&mut buf);
        let end = *r.as_ref().unwrap_or(&0);
        if end == buf.len() {
            self.bulk = true;
        }
        self.chunk = Some(Chunk::Buf { buf, start: 0, end });
        r
    }

    /// With bytes already in the pipe, splice more in without touching readiness: EAGAIN
    /// here may mean the pipe is full, not that the socket is empty.
    fn top_up(&mut self, src: &TcpStream) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if let Some(Chunk::Pipe(pipe)) = self.chunk.as_mut() {
            use std::os::fd::AsFd;
            match pipe.fill_from(src.as_fd(), splice::CHUNK) {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = src;
        Ok(())
    }

    fn drain(&mut self, dst: &TcpStream) -> io::Result<usize> {
        match self.chunk.as_mut() {
            #[cfg(target_os = "linux")]
            Some(Chunk::Pipe(pipe)) => {
                use std::os::fd::AsFd;
                let fd = dst.as_fd();
                dst.try_io(Interest::WRITABLE, || pipe.drain_to(fd))
            }
            Some(Chunk::Buf { buf, start, end }) => {
                let n = dst.try_write(&buf[*start..*end])?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                *start += n;
                Ok(n)
            }
            None => Ok(0),
        }
    }
}

/// Forward until the connection is over; `stop` ends it early with the `End` it yields
/// (shutdown grace over, the server's sessions shut down).
pub async fn forward(
    client: &TcpStream,
    server: &TcpStream,
    timeouts: Timeouts,
    use_splice: bool,
    stop: impl Future<Output = End>,
) -> Outcome {
    let splice = cfg!(target_os = "linux") && use_splice;
    let mut c2s = Half::new(splice);
    let mut s2c = Half::new(splice);
    let (mut c2s_open, mut s2c_open) = (true, true);
    let mut first_close: Option<End> = None;
    let mut last = Instant::now();
    let mut stop = pin!(stop);
    // One timer for the idle timeout; activity only moves `last`.
    let mut timer = pin!(tokio::time::sleep(Duration::ZERO));
    let mut armed: Option<Instant> = None;

    let (end, error) = std::future::poll_fn(|cx| {
        if let Poll::Ready(end) = stop.as_mut().poll(cx) {
            return Poll::Ready((end, None));
        }
        if c2s_open {
            if let Poll::Ready(r) = c2s.poll_move(cx, client, server, &mut last) {
                c2s_open = false;
                match r {
                    Ok(()) => {
                        // Client sent FIN: pass it on, keep the reply flowing. (Once both
                        // directions are done the sockets are closed, which sends the FIN.)
                        if s2c_open {
                            let _ = SockRef::from(server).shutdown(Shutdown::Write);
                        }
                        first_close.get_or_insert(End::ClientClose);
                    }
                    Err(Fail::Src(e)) => return Poll::Ready((End::ClientClose, Some(e))),
                    Err(Fail::Dst(e)) => return Poll::Ready((End::ServerClose, Some(e))),
                }
            }
        }
        if s2c_open {
            if let Poll::Ready(r) = s2c.poll_move(cx, server, client, &mut last) {
                s2c_open = false;
                match r {
                    Ok(()) => {
                        if c2s_open {
                            let _ = SockRef::from(client).shutdown(Shutdown::Write);
                        }
                        first_close.get_or_insert(End::ServerClose);
                    }
                    Err(Fail::Src(e)) => return Poll::Ready((End::ServerClose, Some(e))),
                    Err(Fail::Dst(e)) => return Poll::Ready((End::ClientClose, Some(e))),
                }
            }
        }
        if !c2s_open && !s2c_open {
            return Poll::Ready((first_close.unwrap_or(End::ClientClose), None));
        }
        let Some((limit, end)) = idle_limit(timeouts, c2s_open, s2c_open) else {
            return Poll::Pending;
        };
        loop {
            let deadline = last + limit;
            if Instant::now() >= deadline {
                return Poll::Ready((end, None));
            }
            // Re-arm only when the timer fired early (there was activity since) or the
            // limit shrank (a direction closed); a busy connection never touches it.
            if armed.is_none_or(|a| a > deadline) {
                timer.as_mut().reset(deadline);
                armed = Some(deadline);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            armed = None;
        }
    })
    .await;
    c2s.release();
    s2c.release();
    Outcome { bytes_in: c2s.bytes, bytes_out: s2c.bytes, end, error }
}

/// The idle limit in force and the side to blame when it runs out.
///
/// Any byte moved counts as activity for both sides (a long download keeps a silent
/// client alive, as in HAProxy). When only one direction is still open we are waiting on
/// that direction's sender; otherwise the shorter timeout fires and names its side.
fn idle_limit(t: Timeouts, c2s_open: bool, s2c_open: bool) -> Option<(Duration, End)> {
    let (limit, end) = match (t.client, t.server) {
        _ if c2s_open && !s2c_open => (t.client, End::ClientTimeout),
        _ if s2c_open && !c2s_open => (t.server, End::ServerTimeout),
        (Some(c), Some(s)) if s < c => (Some(s), End::ServerTimeout),
        (Some(c), _) => (Some(c), End::ClientTimeout),
        (None, s) => (s, End::ServerTimeout),
    };
    limit.map(|l| (l, end))
}
