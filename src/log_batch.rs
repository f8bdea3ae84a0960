//! Log lines leave the request path in batches. The subscriber formats a line on the
//! worker that logs it, appends it to one shared buffer (a memcpy under an uncontended
//! lock) and goes on; a thread of its own writes the buffer to the sink every few
//! milliseconds, one write(2) for many lines, so no request waits on the log's file,
//! pipe or journal. One buffer rather than one per worker keeps the lines in the order
//! they were logged. The buffer is bounded: when the sink cannot keep up, lines are
//! dropped and counted, and the count is written once it can; a sink nobody reads (a
//! full pipe) stalls only that thread, never a worker. Not yet vipgate's stderr writer:
//! see README ("Under systemd and in containers") and tests/log_stall.rs.

use std::io::{self, Write};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

/// How long a line may wait before it is written.
const FLUSH_EVERY: Duration = Duration::from_millis(5);
/// Lines waiting past this are dropped (counted) until stderr takes them again.
const MAX_PENDING: usize = 8 << 20;

struct Pending {
    bytes: Vec<u8>,
    dropped: u64,
}

struct Batch {
    pending: Mutex<Pending>,
    /// Where the lines go (stderr); held while writing, so a flush at exit never
    /// interleaves with the thread's.
    out: Mutex<Box<dyn Write + Send>>,
}

impl Batch {
    fn new(out: Box<dyn Write + Send>) -> Self {
        Batch { pending: Mutex::new(Pending { bytes: Vec::with_capacity(64 << 10), dropped: 0 }), out: Mutex::new(out) }
    }

    /// Write what waits to the sink.
    fn flush(&self) {
        let mut out = self.out.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some((bytes, dropped)) = self.take() else { return };
        // Nothing to do about a failed write to stderr: the lines are gone either way.
        let _ = out.write_all(&bytes);
        if dropped > 0 {
            let _ = writeln!(out, "vipgate: {dropped} log lines dropped: stderr did not keep up");
        }
        let _ = out.flush();
    }

    /// The batch and its writer thread, for the life of the process.
    fn start(out: Box<dyn Write + Send>) -> &'static Batch {
        let batch: &'static Batch = Box::leak(Box::new(Batch::new(out)));
        let started = thread::Builder::new().name("vipgate-log".into()).spawn(move || loop {
            thread::sleep(FLUSH_EVERY);
            batch.flush();
        });
        if let Err(e) = started {
            // Without the thread the lines would only leave at exit: say so where one looks.
            let _ = writeln!(io::stderr(), "vipgate: cannot start the log writer thread: {e}");
        }
        batch
    }

    fn push(&self, line: &[u8]) {
        let mut p = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if p.bytes.len() + line.len() > MAX_PENDING {
            p.dropped += 1;
        } else {
            p.bytes.extend_from_slice(line);
        }
    }

    /// What waits, and how many lines were dropped since the last take.
    fn take(&self) -> Option<(Vec<u8>, u64)> {
        let mut p = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if p.bytes.is_empty() && p.dropped == 0 {
            return None;
        }
        // The next lines go into a fresh buffer while this one is written.
        let bytes = std::mem::replace(&mut p.bytes, Vec::with_capacity(64 << 10));
        Some((bytes, std::mem::take(&mut p.dropped)))
    }
}

/// A `MakeWriter` for tracing-subscriber: each line goes into a batch that a thread of
/// its own writes out.
#[derive(Clone, Copy)]
pub struct Batched(&'static Batch);

impl Batched {
    /// `out`, batched, with a thread of its own that lives as long as the process. Not yet
    /// vipgate's writer (stderr is written line by line until the tests that read the log
    /// wait for it); `benches/request_log.rs` compares it with writing each line at once.
    pub fn to(out: Box<dyn Write + Send>) -> Self {
        Batched(Batch::start(out))
    }

    /// Write every line logged so far.
    pub fn flush(&self) {
        self.0.flush();
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Batched {
    type Writer = Batched;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

impl Write for Batched {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        self.0.push(line);
        Ok(line.len())
    }

    /// A line is flushed by the thread, not by the worker that logged it.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_kept_in_order_bounded_and_dropped_lines_counted() {
        let b = Batch::new(Box::new(io::sink()));
        assert!(b.take().is_none());
        b.push(b"one\n");
        b.push(b"two\n");
        assert_eq!(b.take(), Some((b"one\ntwo\n".to_vec(), 0)));
        let line = vec![b'x'; 1 << 20];
        for _ in 0..12 {
            b.push(&line);
        }
        let (bytes, dropped) = b.take().unwrap_or_default();
        assert_eq!((bytes.len(), dropped), (8 << 20, 4), "eight lines fit, four are counted");
        assert!(b.take().is_none(), "the count was reported once");
        b.push(b"three\n");
        assert_eq!(b.take(), Some((b"three\n".to_vec(), 0)), "lines are taken again once there is room");
    }
}
