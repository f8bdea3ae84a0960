//! Bodies as they cross vipgate: streamed frame by frame (back-pressure comes from hyper
//! polling us only when it can write), counted, bounded by an idle timeout, and followed
//! by one callback when they end, which is where the access log line, the lease and the
//! pooled server connection are settled.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use tokio::time::{sleep, Instant, Sleep};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// How a tracked body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Every frame was delivered.
    Complete,
    /// The other side failed, or the idle timeout hit.
    Error,
    /// Dropped before its end (the peer went away).
    Dropped,
}

#[derive(Debug)]
pub struct IdleTimeout(pub Duration);

impl std::fmt::Display for IdleTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no data for {:?}", self.0)
    }
}

impl std::error::Error for IdleTimeout {}

type OnEnd = Box<dyn FnOnce(Ending) + Send>;

pub struct Tracked<B> {
    inner: B,
    idle: Option<Duration>,
    timer: Option<Pin<Box<Sleep>>>,
    bytes: Arc<AtomicU64>,
    on_end: Option<OnEnd>,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, idle: Option<Duration>, bytes: Arc<AtomicU64>) -> Self {
        Tracked { inner, idle, timer: None, bytes, on_end: None }
    }

    pub fn on_end(mut self, f: impl FnOnce(Ending) + Send + 'static) -> Self {
        self.on_end = Some(Box::new(f));
        self
    }

    fn finish(&mut self, how: Ending) {
        if let Some(f) = self.on_end.take() {
            f(how);
        }
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        self.finish(Ending::Dropped);
    }
}

impl<B> Body for Tracked<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes.fetch_add(data.len() as u64, Relaxed);
                }
                this.timer = None;
                if this.inner.is_end_stream() {
                    this.finish(Ending::Complete);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish(Ending::Error);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.finish(Ending::Complete);
                Poll::Ready(None)
            }
            Poll::Pending => {
                let Some(idle) = this.idle else { return Poll::Pending };
                let timer = this.timer.get_or_insert_with(|| Box::pin(sleep(idle)));
                if timer.as_mut().poll(cx).is_ready() {
                    this.timer = Some(Box::pin(sleep(idle)));
                    this.finish(Ending::Error);
                    return Poll::Ready(Some(Err(Box::new(IdleTimeout(idle)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Milliseconds since `t`, for log fields.
pub fn ms_since(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}
