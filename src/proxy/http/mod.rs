//! `mode = "http"`: one client connection from accept to close. Optional PROXY header,
//! optional TLS (ALPN picks HTTP/2 or HTTP/1.1), the first request head read by us so a
//! slow one gets 408, then hyper serves the connection and [`request`] handles each
//! request.

mod body;
mod errors;
pub mod h1;
pub(crate) mod io;
mod policy;
mod request;
pub mod server_conn;
mod tunnel;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::config::{self, Http};
use crate::net::Prefixed;
use crate::proxy::proxy_protocol;
use crate::proxy::{Service, Tracker};
use crate::upstream::Server;
use server_conn::{ConnPool, Connector, ServerTlsConnector};

pub use server_conn::ConnPool as ServerConnPool;

/// The HTTP side of a runtime service: settings, TLS, server connections and their
/// keep-alive pools. (Its balancing pools, route pools included, are the service's.)
pub struct HttpService {
    pub cfg: Http,
    tls: Option<TlsAcceptor>,
    connector: Connector,
    /// Server name → its keep-alive pool.
    pools: HashMap<String, Arc<ConnPool>>,
    /// Cookie value → server name.
    cookies: Vec<(String, String)>,
}

/// An http service's TLS as built from its files: the listener's certificates, the CA
/// that checks its servers. Reading them is I/O, so a reload builds this in its load
/// step, off the workers, and the snapshot only puts it in place.
#[derive(Clone, Default)]
pub struct HttpTls {
    acceptor: Option<TlsAcceptor>,
    connector: Option<ServerTlsConnector>,
}

impl HttpTls {
    /// Read the files `cfg` names (nothing for a tcp service or one without TLS).
    pub fn load(cfg: &config::Service) -> Result<Self, String> {
        let Some(h) = &cfg.http else { return Ok(HttpTls::default()) };
        let acceptor = match &h.tls {
            None => None,
            Some(t) => {
                let alpn: &[&[u8]] = if t.http2 { &[b"h2", b"http/1.1"] } else { &[b"http/1.1"] };
                let server_config =
                    crate::tls::server::server_config(&t.certificates, alpn).map_err(|e| e.to_string())?;
                Some(TlsAcceptor::from(server_config))
            }
        };
        let connector = match &h.server_tls {
            None => None,
            Some(st) => Some(ServerTlsConnector::new(st, h.server_http2)?),
        };
        Ok(HttpTls { acceptor, connector })
    }
}

impl HttpService {
    /// With `old` (the service before a reload), a server that keeps its name keeps its
    /// keep-alive pool and the idle connections in it, unless the pool's limits changed:
    /// a reload costs the servers no new connections. (A pooled connection is used only
    /// for the address it was opened to, so a moved server gets fresh ones.)
    /// `tls` is what [`HttpTls::load`] read for `cfg`.
    pub fn new(
        cfg: &config::Service,
        servers: &[Arc<Server>],
        old: Option<&HttpService>,
        tls: HttpTls,
    ) -> Result<Self, String> {
        let Some(h) = cfg.http.clone() else { return Err("not an http service".into()) };
        let HttpTls { acceptor: tls, connector: server_tls } = tls;
        // Connections opened another way (TLS, HTTP/2, PROXY header) are not reused.
        let same_connections = old.is_some_and(|o| {
            o.cfg.server_tls == h.server_tls
                && o.cfg.server_http2 == h.server_http2
                && o.connector.send_proxy == cfg.send_proxy
        });
        let connector = Connector {
            connect_timeout: cfg.connect_timeout,
            keepalive: cfg.keepalive,
            tls: server_tls,
            http2: h.server_http2,
            send_proxy: cfg.send_proxy,
        };
        let pools = servers
            .iter()
            .map(|s| {
                let kept = old
                    .filter(|_| same_connections)
                    .and_then(|o| o.pools.get(&s.name))
                    .filter(|p| p.limits() == (h.pool_max_idle, h.pool_idle_timeout));
                let pool = match kept {
                    Some(p) => Arc::clone(p),
                    None => Arc::new(ConnPool::new(h.pool_max_idle, h.pool_idle_timeout)),
                };
                (s.name.clone(), pool)
            })
            .collect();
        let cookies =
            cfg.servers.iter().map(|s| (s.cookie.clone().unwrap_or_else(|| s.name.clone()), s.name.clone())).collect();
        Ok(HttpService { cfg: h, tls, connector, pools, cookies })
    }

    /// The keep-alive pool of a server, by name (for tests and metrics).
    pub fn conn_pool(&self, server: &str) -> Option<&Arc<ConnPool>> {
        self.pools.get(server)
    }

    fn cookie_of(&self, server: &str) -> Option<&str> {
        self.cookies.iter().find(|(_, s)| s == server).map(|(c, _)| c.as_str())
    }

    fn server_of_cookie(&self, cookie: &str) -> Option<&str> {
        self.cookies.iter().find(|(c, _)| c == cookie).map(|(_, s)| s.as_str())
    }
}

/// What every request of one client connection shares.
pub(crate) struct ConnCtx {
    pub service: Arc<Service>,
    pub http: Arc<HttpService>,
    /// The client as the PROXY header named it, else the peer.
    pub client: SocketAddr,
    /// The TCP peer (a front balancer, when it sent a PROXY header).
    pub peer: SocketAddr,
    /// The address the client connected to.
    pub local: SocketAddr,
    pub tls: bool,
    pub accepted: Instant,
    /// When the previous request on this connection ended (for the head timing).
    pub last_end: Mutex<Instant>,
    /// Requests begun and not yet ended (their response bodies included).
    pub open_requests: AtomicUsize,
    /// With `send_proxy`, server connections carry this client's address and are not shared.
    pub private: Mutex<Vec<(String, Arc<ConnPool>)>>,
    pub tracker: Tracker,
    pub close_all: watch::Receiver<bool>,
    /// The client stream's write-stall bound (client_timeout; tunnel_timeout once
    /// upgraded).
    pub stall_limit: io::StallLimit,
}

impl ConnCtx {
    /// Since when no request has been open on this connection; now while one is.
    fn idle_since(&self) -> Instant {
        if self.open_requests.load(Relaxed) > 0 {
            return Instant::now();
        }
        self.last_end.lock().map(|t| *t).unwrap_or_else(|_| Instant::now())
    }

    fn pool_for(&self, server: &str) -> Option<Arc<ConnPool>> {
        if self.service.config.send_proxy.is_none() {
            return self.http.pools.get(server).cloned();
        }
        let mut private = self.private.lock().ok()?;
        if let Some((_, p)) = private.iter().find(|(s, _)| s == server) {
            return Some(Arc::clone(p));
        }
        let p = Arc::new(ConnPool::new(1, self.http.cfg.pool_idle_timeout));
        private.push((server.to_string(), Arc::clone(&p)));
        Some(p)
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\n";
/// Streams at once on one HTTP/2 client connection (HAProxy's default too).
const H2_MAX_STREAMS: u32 = 100;
/// Response bytes buffered per HTTP/2 stream beyond what the socket takes.
const H2_SEND_BUF: usize = 16 * 1024;

pub struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub service: Arc<Service>,
    pub tracker: Tracker,
    /// True once the listener closes: finish in-flight requests, then close.
    pub stop: watch::Receiver<bool>,
    /// True once the grace period is over: close now.
    pub close_all: watch::Receiver<bool>,
}

pub async fn handle(a: Accepted) {
    let Some(http) = a.service.http.clone() else { return };
    let accepted = Instant::now();
    a.service.stats.connections_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let header_timeout = http.cfg.header_timeout;
    let accept_proxy = a.service.config.accept_proxy.as_ref();
    let (client, local) = match proxy_protocol::accept(&a.stream, a.peer, a.local, accept_proxy, header_timeout).await {
        Ok(endpoints) => (endpoints.client, endpoints.local),
        Err(e) => {
            warn!(client = %a.peer, service = %a.service.name, server = "-", end = %crate::proxy::End::BadProxyHeader,
                error = ?e.to_string(), "connection closed");
            return;
        }
    };
    let stall_limit: io::StallLimit = Arc::new(io::Stall::new(a.service.config.client_timeout));
    let stream = io::WriteStall::new(a.stream, Arc::clone(&stall_limit));
    let ctx = Arc::new(ConnCtx {
        service: Arc::clone(&a.service),
        http: Arc::clone(&http),
        client,
        peer: a.peer,
        local,
        tls: http.tls.is_some(),
        accepted,
        last_end: Mutex::new(accepted),
        open_requests: AtomicUsize::new(0),
        private: Mutex::new(Vec::new()),
        tracker: a.tracker.clone(),
        close_all: a.close_all.clone(),
        stall_limit,
    });
    match &http.tls {
        None => {
            let mut stream = stream;
            let Some(head) = first_head(&mut stream, &ctx).await else { return };
            let h2 = head.starts_with(H2_PREFACE);
            if h2 && !http.cfg.h2c {
                refuse_h2c(&mut stream, &ctx).await;
                return;
            }
            let io = Prefixed::new(head, stream);
            if h2 {
                serve_h2(io, ctx, a.stop, a.close_all).await
            } else {
                serve_h1(io, ctx, a.stop, a.close_all).await
            }
        }
        Some(acceptor) => {
            let tls = match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    info!(client = %client, service = %a.service.name, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    info!(client = %client, service = %a.service.name, "TLS handshake timed out");
                    return;
                }
            };
            if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                serve_h2(tls, ctx, a.stop, a.close_all).await
            } else {
                let mut tls = tls;
                let Some(head) = first_head(&mut tls, &ctx).await else { return };
                serve_h1(Prefixed::new(head, tls), ctx, a.stop, a.close_all).await
            }
        }
    }
}

/// Read the first request head (or the HTTP/2 preface) within `header_timeout`. On a
/// timeout answer 408, on an oversized head 431; either way the connection closes.
async fn first_head<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, ctx: &ConnCtx) -> Option<Bytes> {
    let cfg = &ctx.http.cfg;
    let deadline = ctx.accepted + cfg.header_timeout;
    let limit = cfg.max_header_bytes;
    let mut buf = BytesMut::with_capacity(4096.min(limit + 1));
    loop {
        let searched_from = buf.len().saturating_sub(3);
        if buf.len() > limit {
            refuse(stream, ctx, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large").await;
            return None;
        }
        let read = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await;
        match read {
            Ok(Ok(0)) => return None,
            Ok(Ok(_)) => {
                let fresh = &buf[searched_from..];
                if fresh.windows(4).any(|w| w == b"\r\n\r\n") || buf.starts_with(H2_PREFACE) {
                    return Some(buf.freeze());
                }
                // hyper also accepts bare-LF heads; so do we.
                if fresh.windows(2).any(|w| w == b"\n\n") {
                    return Some(buf.freeze());
                }
                if buf.capacity() - buf.len() < 1024 {
                    buf.reserve(4096.min(limit + 1 - buf.len().min(limit)));
                }
            }
            Ok(Err(e)) => {
                debug!(client = %ctx.client, error = %e, "client read failed before a request");
                return None;
            }
            Err(_) => {
                let why = format!("request headers did not arrive within {:?}", cfg.header_timeout);
                refuse(stream, ctx, StatusCode::REQUEST_TIMEOUT, &why).await;
                return None;
            }
        }
    }
}

async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, ctx: &ConnCtx, status: StatusCode, why: &str) {
    info!(client = %ctx.client, service = %ctx.service.name, server = "-", method = "-", host = "-", path = "-",
        status = status.as_u16(), bytes_in = 0u64, bytes_out = 0u64,
        t_headers_ms = ctx.accepted.elapsed().as_millis() as u64, t_connect_ms = 0u64, t_response_ms = 0u64,
        t_total_ms = ctx.accepted.elapsed().as_millis() as u64, error = %why, "request");
    let bytes = errors::raw(status, why);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(&bytes).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// HTTP/2 with prior knowledge on a plain listener where `h2c` is off: the server
/// preface (an empty SETTINGS frame) and a GOAWAY with HTTP_1_1_REQUIRED, so the client
/// learns why, then close. Nothing is forwarded.
async fn refuse_h2c<S: AsyncWrite + Unpin>(stream: &mut S, ctx: &ConnCtx) {
    info!(client = %ctx.client, service = %ctx.service.name, "HTTP/2 prior knowledge refused: h2c is off for this service");
    // Frames: 9-byte header (length, type, flags, stream 0), then the payload. GOAWAY
    // carries the last stream id (0: none was processed) and the error code 0xd.
    let mut frames = [0u8; 9 + 9 + 8];
    frames[3] = 0x4; // SETTINGS, empty
    frames[9..18].copy_from_slice(&[0, 0, 8, 0x7, 0, 0, 0, 0, 0]);
    frames[22..26].copy_from_slice(&0xdu32.to_be_bytes());
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(&frames).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

async fn serve_h1<S>(io: S, ctx: Arc<ConnCtx>, stop: watch::Receiver<bool>, close_all: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let cfg = &ctx.http.cfg;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(cfg.header_timeout)
        .max_headers(cfg.max_headers)
        .max_header_size(cfg.max_header_bytes)
        .max_buf_size((cfg.max_header_bytes + 1024).max(8192));
    let svc_ctx = Arc::clone(&ctx);
    let service = service_fn(move |req| request::serve(Arc::clone(&svc_ctx), req));
    let conn = builder.serve_connection(TokioIo::new(io), service).with_upgrades();
    tokio::pin!(conn);
    // hyper's header_read_timeout already bounds an idle HTTP/1.1 connection.
    drive(conn, |c| c.graceful_shutdown(), &ctx, None, stop, close_all).await
}

async fn serve_h2<S>(io: S, ctx: Arc<ConnCtx>, stop: watch::Receiver<bool>, close_all: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(ctx.http.cfg.max_header_bytes as u32)
        // What a client that opens wide windows and then reads nothing can make vipgate
        // hold: with h2's default (~400 KiB per stream) one connection's 100 streams held
        // 60 MiB. One 16 KiB frame per stream costs no single-stream throughput here.
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_send_buf_size(H2_SEND_BUF)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let svc_ctx = Arc::clone(&ctx);
    let service = service_fn(move |req| request::serve(Arc::clone(&svc_ctx), req));
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    // hyper has no idle limit for HTTP/2: without this, a client that opens a connection
    // and never sends a request would hold it for ever.
    let idle = ctx.http.cfg.header_timeout;
    drive(conn, |c| c.graceful_shutdown(), &ctx, Some(idle), stop, close_all).await
}

/// Run a served client connection (HTTP/1.1 or HTTP/2) to its end. When the listener
/// closes, finish the request in flight and close; when the grace period is over, drop it.
/// With `idle`, a connection with no request open for that long is closed gracefully.
async fn drive<C>(
    mut conn: std::pin::Pin<&mut C>,
    graceful_shutdown: fn(std::pin::Pin<&mut C>),
    ctx: &ConnCtx,
    idle: Option<Duration>,
    mut stop: watch::Receiver<bool>,
    mut close_all: watch::Receiver<bool>,
) where
    C: std::future::Future<Output = Result<(), hyper::Error>>,
{
    let mut stopping = false;
    // After an idle close begins: a client that never answers the GOAWAY's PING would
    // hold the connection open, so it gets one more `idle` and is then dropped.
    let mut drop_at: Option<Instant> = None;
    loop {
        let idle_check = async {
            match (idle, drop_at) {
                (_, Some(at)) => tokio::time::sleep_until(at).await,
                (Some(d), None) if !stopping => tokio::time::sleep_until(ctx.idle_since() + d).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    debug!(client = %ctx.client, error = %e, "client connection ended");
                }
                return;
            }
            _ = idle_check => {
                if drop_at.is_some_and(|at| at <= Instant::now()) {
                    // A stream opened before the client saw the GOAWAY is served to its end.
                    if ctx.open_requests.load(Relaxed) > 0 {
                        drop_at = idle.map(|d| Instant::now() + d);
                        continue;
                    }
                    debug!(client = %ctx.client, service = %ctx.service.name, "dropping an idle HTTP/2 connection that did not close");
                    return;
                }
                if let Some(d) = idle.filter(|d| !stopping && ctx.idle_since().elapsed() >= *d) {
                    debug!(client = %ctx.client, service = %ctx.service.name, idle = ?d, "closing an idle HTTP/2 connection");
                    stopping = true;
                    drop_at = Some(Instant::now() + d);
                    graceful_shutdown(conn.as_mut());
                }
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                graceful_shutdown(conn.as_mut());
            }
            _ = close_all.wait_for(|c| *c) => return,
        }
    }
}
