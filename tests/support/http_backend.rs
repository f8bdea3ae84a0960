//! A real HTTP/1.1 (and optionally h2c) server for the http-mode tests, on its own tokio
//! runtime thread: it answers with what it saw, so tests can assert on the request as
//! the server received it, and counts the TCP connections it accepted.
//!
//! Paths: `/slow?ms=N` waits before answering; `/close` closes without answering;
//! `/big?bytes=N` streams N bytes; `/redirect` answers 302 to `http://HOST/next`;
//! `/ws` accepts an `Upgrade` with 101 and echoes raw bytes; `/upload` drains the body
//! and reports its length and a checksum. Everything else: 200 with the report.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

pub struct HttpBackend {
    pub name: String,
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl HttpBackend {
    /// HTTP/1.1 (keep-alive) on an ephemeral loopback port.
    pub fn start(name: &str) -> HttpBackend {
        Self::start_on(name, "127.0.0.1:0".parse().unwrap(), false)
    }

    /// HTTP/2 with prior knowledge (h2c) only.
    pub fn start_h2c(name: &str) -> HttpBackend {
        Self::start_on(name, "127.0.0.1:0".parse().unwrap(), true)
    }

    pub fn start_on(name: &str, addr: SocketAddr, h2c: bool) -> HttpBackend {
        Self::try_start_on(name, addr, h2c).expect("bind backend")
    }

    /// As [`HttpBackend::start_on`], with the bind's error for the caller to handle (a
    /// fixed port that turns out to be taken).
    pub fn try_start_on(name: &str, addr: SocketAddr, h2c: bool) -> std::io::Result<HttpBackend> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let (n, c, r) = (name.to_string(), Arc::clone(&connections), Arc::clone(&requests));
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).unwrap();
                loop {
                    let (stream, peer) = tokio::select! {
                        _ = &mut rx => break,
                        a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                    };
                    c.fetch_add(1, SeqCst);
                    let (n, r) = (n.clone(), Arc::clone(&r));
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| handle(n.clone(), peer, Arc::clone(&r), req));
                        if h2c {
                            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        } else {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .with_upgrades()
                                .await;
                        }
                    });
                }
            });
            rt.shutdown_timeout(Duration::from_secs(1));
        });
        Ok(HttpBackend {
            name: name.into(),
            addr,
            connections,
            requests,
            stop,
            thread: Some(thread),
            shutdown: Some(tx),
        })
    }

    pub fn connections(&self) -> usize {
        self.connections.load(SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.requests.load(SeqCst)
    }

    pub fn stop(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.stop();
    }
}

fn query(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).map_err(|never| match never {}).boxed_unsync()
}

async fn handle(
    name: String,
    peer: SocketAddr,
    requests: Arc<AtomicUsize>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Box<dyn std::error::Error + Send + Sync>> {
    requests.fetch_add(1, SeqCst);
    let path = req.uri().path().to_string();
    if path == "/slow" {
        tokio::time::sleep(Duration::from_millis(query(&req, "ms").unwrap_or(1000))).await;
    }
    if path == "/ws" {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 4096];
                loop {
                    match io.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if io.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
        });
        let mut resp = Response::new(full(""));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        resp.headers_mut().insert("upgrade", "websocket".parse().unwrap());
        resp.headers_mut().insert("connection", "upgrade".parse().unwrap());
        return Ok(resp);
    }
    if path == "/big" {
        let n = query(&req, "bytes").unwrap_or(1 << 20);
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let mut resp = Response::new(Repeat { left: n, chunk }.boxed_unsync());
        resp.headers_mut().insert("content-length", n.to_string().parse().unwrap());
        return Ok(resp);
    }
    let mut report = format!(
        "server={name}\npeer={peer}\nmethod={}\npath={}\nversion={:?}\n",
        req.method(),
        req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        req.version()
    );
    for (k, v) in req.headers() {
        report.push_str(&format!("h:{}={}\n", k, String::from_utf8_lossy(v.as_bytes())));
    }
    let host = req.headers().get("host").and_then(|h| h.to_str().ok()).unwrap_or("").to_string();
    // Drain the body: length and a simple checksum; `read_bps` reads it no faster than
    // that many bytes a second (a server writing an upload to slow storage).
    let read_bps = query(&req, "read_bps");
    let reading = tokio::time::Instant::now();
    let mut body = req.into_body();
    let (mut len, mut sum) = (0u64, 0u64);
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    len += d.len() as u64;
                    for b in d.iter() {
                        sum = sum.wrapping_mul(31).wrapping_add(u64::from(*b));
                    }
                    if let Some(bps) = read_bps.filter(|b| *b > 0) {
                        tokio::time::sleep_until(reading + Duration::from_millis(len * 1000 / bps)).await;
                    }
                }
            }
            Err(_) => break,
        }
    }
    report.push_str(&format!("body_len={len}\nbody_sum={sum}\n"));
    if path == "/close" {
        // A crashed worker: the connection closes with no response (a service error
        // makes hyper hang up).
        return Err("closing without a response".into());
    }
    let mut resp = Response::new(full(report));
    if path == "/redirect" {
        *resp.status_mut() = StatusCode::FOUND;
        resp.headers_mut().insert("location", format!("http://{host}/next").parse().unwrap());
    }
    Ok(resp)
}

/// `left` bytes in `chunk`-sized frames.
struct Repeat {
    left: u64,
    chunk: Bytes,
}

impl http_body::Body for Repeat {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64) as usize;
        self.left -= n as u64;
        std::task::Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }
}
