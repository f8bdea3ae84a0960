//! Bodies as they cross vipgate: streamed frame by frame (back-pressure comes from hyper
//! polling us only when it can write), counted, bounded by an idle timeout, and followed
//! by one callback when they end, which is where the access log line, the lease and the
//! pooled server connection are settled.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use tokio::time::{sleep_until, Instant, Sleep};

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
    /// The sending side failed.
    Error,
    /// The sending side was too slow: vipgate gave up on it.
    TooSlow(Slow),
    /// Dropped before its end (the peer went away).
    Dropped,
}

/// Why vipgate gave up on a body the other side was sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slow {
    /// Nothing arrived for this long.
    Idle(Duration),
    /// Over `window` of waiting, `got` bytes arrived where `needed` were due.
    BelowRate { got: u64, needed: u64, window: Duration },
}

impl std::fmt::Display for Slow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Slow::Idle(d) => write!(f, "no data for {d:?}"),
            Slow::BelowRate { got, needed, window } => {
                write!(f, "{got} bytes in {window:?} of waiting, under min_body_rate ({needed} due)")
            }
        }
    }
}

impl std::error::Error for Slow {}

/// A floor under the rate at which the peer sends a body. Only time spent waiting on the
/// peer counts: while the other side of vipgate is slow to take the body, hyper stops
/// polling it, and the peer is not to blame for that.
struct RateFloor {
    per_sec: u64,
    window: Duration,
    /// Waiting time counted in this window, up to `mark`.
    waited: Duration,
    /// Bytes in this window.
    got: u64,
    /// Bytes due by the window's end: the rate times the window, or what is left of a
    /// body of known length.
    due: u64,
    /// Where waiting time was last counted from.
    mark: Instant,
}

impl RateFloor {
    fn new(per_sec: u64, window: Duration, left: Option<u64>) -> Self {
        let mut f = RateFloor { per_sec, window, waited: Duration::ZERO, got: 0, due: 0, mark: Instant::now() };
        f.next_window(left);
        f
    }

    fn next_window(&mut self, left: Option<u64>) {
        let full = (u128::from(self.per_sec) * self.window.as_millis() / 1000).min(u128::from(u64::MAX)) as u64;
        self.due = left.map_or(full, |l| l.min(full));
        self.waited = Duration::ZERO;
        self.got = 0;
    }

    fn window_end(&self) -> Instant {
        self.mark + self.window.saturating_sub(self.waited)
    }

    /// Judge the window if `now` ends it; a window that was met makes way for the next.
    fn judge(&mut self, now: Instant, left: Option<u64>) -> Result<(), Slow> {
        self.waited += now.saturating_duration_since(self.mark);
        self.mark = now;
        if self.waited < self.window {
            return Ok(());
        }
        if self.got < self.due {
            return Err(Slow::BelowRate { got: self.got, needed: self.due, window: self.window });
        }
        self.next_window(left);
        Ok(())
    }
}

/// What a request body shares with the wait for the server's answer. The server is idle
/// only while it takes no body and the body is not waiting on the client: a multi-GB
/// upload to glance must not hit `server_timeout` because it takes longer than that.
/// It also tells whose fault a failed exchange was: a body the client broke or sent too
/// slowly is the client's, never the server's.
pub struct Progress {
    base: Instant,
    /// Milliseconds after `base` when the body last moved on (or began to be sent).
    last_ms: AtomicU64,
    /// The body is waiting on the client.
    waiting: AtomicBool,
    /// Set when vipgate gave up on the client.
    slow: OnceLock<Slow>,
    /// Set when the client's body failed (bad framing, a hang-up mid-body, more than its
    /// length): what the client-side reader said.
    broken: OnceLock<String>,
    /// A copy of a small body as it goes out, for a resend; `None` when not kept.
    kept: Option<Mutex<Kept>>,
}

/// The frames of a request body, kept (by reference, not copied) up to a bound.
struct Kept {
    frames: Vec<Bytes>,
    len: usize,
    limit: usize,
    /// Every frame is in `frames`, through the end of the body.
    complete: bool,
    /// Over the bound, or a frame that cannot be kept (trailers): no resend.
    abandoned: bool,
}

impl Progress {
    /// `keep`: keep a copy of the body up to this many bytes so the request can be sent
    /// again (idempotent requests); `None` = keep nothing.
    pub fn new(keep: Option<usize>) -> Self {
        let kept =
            keep.map(|limit| Mutex::new(Kept { frames: Vec::new(), len: 0, limit, complete: false, abandoned: false }));
        Progress {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
            slow: OnceLock::new(),
            broken: OnceLock::new(),
            kept,
        }
    }

    /// The whole body, when it was kept to its end: what a resend carries.
    pub fn replay(&self) -> Option<Bytes> {
        let copy = self.kept.as_ref()?.lock().ok()?;
        if !copy.complete || copy.abandoned {
            return None;
        }
        Some(match copy.frames.as_slice() {
            [one] => one.clone(),
            frames => Bytes::from(frames.concat()),
        })
    }

    /// Why the client's body failed, if it did.
    pub fn broken(&self) -> Option<&str> {
        self.broken.get().map(String::as_str)
    }

    fn keep(&self, frame: &Frame<Bytes>) {
        let Some(Ok(mut copy)) = self.kept.as_ref().map(Mutex::lock) else { return };
        if copy.abandoned {
            return;
        }
        match frame.data_ref() {
            Some(data) if copy.len + data.len() <= copy.limit => {
                copy.len += data.len();
                copy.frames.push(data.clone());
            }
            _ => {
                copy.abandoned = true;
                copy.frames = Vec::new();
            }
        }
    }

    fn kept_to_the_end(&self) {
        if let Some(Ok(mut copy)) = self.kept.as_ref().map(Mutex::lock) {
            copy.complete = true;
        }
    }

    pub fn touch(&self) {
        self.last_ms.store(self.base.elapsed().as_millis() as u64, Relaxed);
    }

    pub fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Relaxed))
    }

    pub fn waiting_on_client(&self) -> bool {
        self.waiting.load(Relaxed)
    }

    /// Why vipgate gave up on the client's body, if it did.
    pub fn slow(&self) -> Option<Slow> {
        self.slow.get().copied()
    }
}

type OnEnd = Box<dyn FnOnce(Ending) + Send>;

pub struct Tracked<B> {
    inner: B,
    idle: Option<Duration>,
    floor: Option<RateFloor>,
    /// Since when the inner body has had nothing for us; `None` while it delivers.
    waiting: Option<Instant>,
    /// Kept across waits and reset, not reallocated.
    timer: Option<Pin<Box<Sleep>>>,
    bytes: Arc<AtomicU64>,
    progress: Option<Arc<Progress>>,
    on_end: Option<OnEnd>,
}

impl<B: Body> Tracked<B> {
    pub fn new(inner: B, idle: Option<Duration>, bytes: Arc<AtomicU64>) -> Self {
        Tracked { inner, idle, floor: None, waiting: None, timer: None, bytes, progress: None, on_end: None }
    }

    pub fn progress(mut self, progress: Arc<Progress>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Give up on the body when, over any `window` of waiting for it, less than
    /// `per_sec` bytes a second arrive (0 = no floor).
    pub fn min_rate(mut self, per_sec: u64, window: Duration) -> Self {
        if per_sec > 0 && !window.is_zero() && !self.inner.is_end_stream() {
            self.floor = Some(RateFloor::new(per_sec, window, self.inner.size_hint().upper()));
        }
        self
    }
}

impl<B> Tracked<B> {
    pub fn on_end(mut self, f: impl FnOnce(Ending) + Send + 'static) -> Self {
        self.on_end = Some(Box::new(f));
        self
    }

    fn finish(&mut self, how: Ending) {
        if let Some(p) = &self.progress {
            p.waiting.store(false, Relaxed);
            if how == Ending::Complete {
                p.kept_to_the_end();
            }
        }
        if let Some(f) = self.on_end.take() {
            f(how);
        }
    }

    fn give_up(&mut self, why: Slow) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.waiting = None;
        if let Some(p) = &self.progress {
            let _ = p.slow.set(why);
        }
        self.finish(Ending::TooSlow(why));
        Poll::Ready(Some(Err(Box::new(why))))
    }

    /// The earliest moment the waiting must be judged: the idle limit or the window's end.
    fn deadline(&self) -> Option<Instant> {
        let idle = self.idle.zip(self.waiting).map(|(d, since)| since + d);
        let window = self.floor.as_ref().map(RateFloor::window_end);
        match (idle, window) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
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
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Some(p) = &this.progress {
            p.waiting.store(polled.is_pending(), Relaxed);
            if polled.is_ready() {
                p.touch();
            }
        }
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                this.bytes.fetch_add(n, Relaxed);
                if let Some(p) = &this.progress {
                    p.keep(&frame);
                }
                let waited = this.waiting.take().is_some();
                if let Some(floor) = &mut this.floor {
                    floor.got += n;
                    if waited {
                        let left = this.inner.size_hint().upper();
                        if let Err(why) = floor.judge(Instant::now(), left) {
                            return this.give_up(why);
                        }
                    }
                }
                if this.inner.is_end_stream() {
                    this.finish(Ending::Complete);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.waiting = None;
                let e: BoxError = e.into();
                if let Some(p) = &this.progress {
                    let _ = p.broken.set(e.to_string());
                }
                this.finish(Ending::Error);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.waiting = None;
                this.finish(Ending::Complete);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.waiting.is_none() {
                    let now = Instant::now();
                    this.waiting = Some(now);
                    if let Some(floor) = &mut this.floor {
                        floor.mark = now;
                    }
                }
                // Each pass either returns or moves the deadline a window further on.
                loop {
                    let Some(deadline) = this.deadline() else { return Poll::Pending };
                    let timer = this.timer.get_or_insert_with(|| Box::pin(sleep_until(deadline)));
                    if timer.deadline() != deadline {
                        timer.as_mut().reset(deadline);
                    }
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    // Never before the deadline that fired, so the next pass moves on.
                    let now = Instant::now().max(deadline);
                    if let (Some(idle), Some(since)) = (this.idle, this.waiting) {
                        if now >= since + idle {
                            return this.give_up(Slow::Idle(idle));
                        }
                    }
                    if let Some(floor) = &mut this.floor {
                        let left = this.inner.size_hint().upper();
                        if let Err(why) = floor.judge(now, left) {
                            return this.give_up(why);
                        }
                    }
                }
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
