//! The client-side stream wrapper [`WriteStall`]: it bounds how long writes to a client
//! that stopped reading may wait. (Replaying a head vipgate read itself is
//! [`crate::net::Prefixed`].)

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long a client's writes may stall (its receive window full), shared with the
/// connection: an upgrade to a tunnel switches it to `tunnel_timeout`, and the request
/// log reads whether it fired.
#[derive(Default)]
pub struct Stall {
    /// Milliseconds; 0 = no bound.
    limit_ms: std::sync::atomic::AtomicU64,
    pub fired: std::sync::atomic::AtomicBool,
}

impl Stall {
    pub fn new(limit: Option<std::time::Duration>) -> Stall {
        let stall = Stall::default();
        stall.set(limit);
        stall
    }

    /// The bound from now on; `None` = none.
    pub fn set(&self, limit: Option<std::time::Duration>) {
        let ms = limit.map_or(0, |d| (d.as_millis() as u64).max(1));
        self.limit_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }
}

pub type StallLimit = std::sync::Arc<Stall>;

/// The client side of an http connection, whose writes must make progress within the
/// stall limit: a client that stops reading its response is cut off after
/// `client_timeout`, as an idle one is, instead of holding its server and buffers for
/// ever. A client that reads, however slowly, is never cut off by this.
pub struct WriteStall<S> {
    inner: S,
    limit: StallLimit,
    /// Armed when a write first returns Pending; disarmed by any progress.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteStall<S> {
    pub fn new(inner: S, limit: StallLimit) -> Self {
        WriteStall { inner, limit, deadline: None }
    }

    /// After a Pending write: Err once the stall has lasted the limit.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let ms = self.limit.limit_ms.load(std::sync::atomic::Ordering::Relaxed);
        if ms == 0 {
            self.deadline = None;
            return Poll::Pending;
        }
        let limit = std::time::Duration::from_millis(ms);
        let sleep = self.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.limit.fired.store(true, std::sync::atomic::Ordering::Relaxed);
                Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the client read nothing for {limit:?} (client_timeout)"),
                ))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn progressed<T>(&mut self, r: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(v) => {
                self.deadline = None;
                Poll::Ready(v)
            }
            Poll::Pending => self.stalled(cx).map(Err),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteStall<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteStall<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progressed(r, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progressed(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.progressed(r, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
