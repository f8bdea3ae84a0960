//! The admin HTTP endpoint: health, readiness, metrics, the JSON API and the status page.
//!
//! One small hyper HTTP/1.1 server on a TCP address (loopback by default) and, if
//! configured, a unix socket. Over TCP every request but `/healthz` needs the bearer token
//! when `token_file` is set; the socket needs none, its file mode (0600 by default) is the access
//! control. Requests are small and rare, so each connection gets its own task, bodies are
//! capped at [`MAX_BODY`], heads must arrive within [`HEADER_TIMEOUT`], and at most
//! [`MAX_CONNECTIONS`] TCP and [`MAX_SOCKET_CONNECTIONS`] unix-socket connections are served
//! at once.

pub mod api;
pub mod cli;
pub mod client;
pub mod metrics;
pub mod page;

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::config::Admin;
use crate::runtime::Control;

/// Largest request body accepted (the API takes a few bytes of JSON); larger is 413.
pub const MAX_BODY: usize = 64 * 1024;
/// A request head, and the idle time between keep-alive requests, must fit in this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A request body must arrive within this once its head is in.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP connections served at once; more are closed at accept. Operators and a scraper or two
/// need a handful; the cap keeps a misbehaving client from taking the process's descriptors.
pub const MAX_CONNECTIONS: usize = 128;
/// Unix-socket connections served at once, counted apart from TCP: keepalived's check,
/// `vipgate status/reload/upgrade` and `socat` must get in while the TCP port is full of idle
/// clients (a missed `show info` moves the VIP). Only the socket's owner can connect, so a
/// few dozen is plenty.
pub const MAX_SOCKET_CONNECTIONS: usize = 32;

type Resp = Response<Full<Bytes>>;

/// Who is asking: a TCP peer (token checked) or the unix socket (trusted by file mode).
#[derive(Debug, Clone, Copy)]
enum Peer {
    Tcp(SocketAddr),
    Unix,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(a) => write!(f, "{a}"),
            Peer::Unix => f.write_str("unix-socket"),
        }
    }
}

struct Shared {
    control: Control,
    token: Option<String>,
    tcp_slots: Arc<Semaphore>,
    socket_slots: Arc<Semaphore>,
}

/// While the address is taken, try again this often: during a hitless upgrade the old
/// process keeps its admin endpoint until it exits, and the new one takes over then.
const REBIND_EVERY: Duration = Duration::from_secs(1);

/// Serve the admin endpoint until the process ends. Fails only if the TCP address or the
/// unix socket cannot be bound for another reason than being in use.
pub async fn serve(cfg: Admin, control: Control) -> io::Result<()> {
    if !cfg.bind.ip().is_loopback() && cfg.token.is_none() {
        warn!(bind = %cfg.bind, "admin endpoint on a non-loopback address without token_file: anyone who can reach it can drain servers and reload");
    }
    let shared = Arc::new(Shared {
        control,
        token: cfg.token,
        tcp_slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        socket_slots: Arc::new(Semaphore::new(MAX_SOCKET_CONNECTIONS)),
    });
    let tcp = serve_tcp(cfg.bind, Arc::clone(&shared));
    match cfg.socket {
        Some(path) => tokio::try_join!(tcp, serve_unix(path, cfg.socket_mode, shared)).map(|_| ()),
        None => tcp.await,
    }
}

async fn serve_tcp(bind: SocketAddr, shared: Arc<Shared>) -> io::Result<()> {
    let mut warned = false;
    let listener = loop {
        match TcpListener::bind(bind).await {
            Ok(l) => break l,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => in_use(&mut warned, &bind.to_string(), &e).await,
            Err(e) => return Err(io::Error::new(e.kind(), format!("admin bind {bind}: {e}"))),
        }
    };
    let local = listener.local_addr().unwrap_or(bind);
    info!(bind = %local, token = shared.token.is_some(), "admin endpoint listening");
    let mut backoff = Backoff::default();
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                backoff.reset();
                let _ = stream.set_nodelay(true);
                spawn_tcp(stream, peer, &shared);
            }
            Err(e) => backoff.wait(&e).await,
        }
    }
}

async fn serve_unix(path: PathBuf, mode: u32, shared: Arc<Shared>) -> io::Result<()> {
    let mut warned = false;
    let listener = loop {
        match bind_unix(&path, mode) {
            Ok(l) => break l,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                in_use(&mut warned, &path.display().to_string(), &e).await
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("admin socket {}: {e}", path.display()))),
        }
    };
    info!(socket = %path.display(), mode = %format_args!("{mode:04o}"), "admin endpoint listening on its unix socket (no token: its file mode is the access control)");
    let mut backoff = Backoff::default();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                backoff.reset();
                spawn_unix(stream, &shared);
            }
            Err(e) => backoff.wait(&e).await,
        }
    }
}

/// Wait before binding again; say so once, not every second.
async fn in_use(warned: &mut bool, what: &str, e: &io::Error) {
    if !*warned {
        warn!(address = %what, error = %e, "admin address in use (an upgrade's old process still serving?); retrying every second");
        *warned = true;
    }
    tokio::time::sleep(REBIND_EVERY).await;
}

/// Bind the unix socket with `mode` (0600 by default). A stale socket file from an earlier run is removed
/// (one that still answers is in use: error); any other kind of file is left alone (error).
/// The socket is bound under a temporary name, restricted, then renamed into place, so it
/// is never reachable at its path with looser permissions.
fn bind_unix(path: &Path, mode: u32) -> io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(io::ErrorKind::AddrInUse, "another process is serving on it"));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a socket; not removing it"))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(listener)
}

/// Accept errors (out of descriptors, mostly) back off instead of spinning a core.
#[derive(Default)]
struct Backoff(Duration);

impl Backoff {
    fn reset(&mut self) {
        self.0 = Duration::ZERO;
    }

    async fn wait(&mut self, e: &io::Error) {
        self.0 = (self.0 * 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
        warn!(error = %e, retry_ms = self.0.as_millis() as u64, "admin accept failed");
        tokio::time::sleep(self.0).await;
    }
}

/// The unix socket speaks HTTP (the JSON API) and HAProxy's command language: the first
/// line decides, and what was read to see it is replayed to whichever serves it.
fn spawn_unix(mut stream: tokio::net::UnixStream, shared: &Arc<Shared>) {
    let Ok(permit) = Arc::clone(&shared.socket_slots).try_acquire_owned() else {
        debug!(limit = MAX_SOCKET_CONNECTIONS, "admin socket connection refused: too many open");
        return;
    };
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let mut seen = Vec::new();
        let read = tokio::time::timeout(HEADER_TIMEOUT, async {
            let mut chunk = [0u8; 1024];
            while !seen.contains(&b'\n') && seen.len() < 16 * 1024 {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await;
        if read.is_err() || seen.is_empty() {
            return;
        }
        let first_line = seen.split(|&b| b == b'\n').next().unwrap_or_default();
        let http = cli::is_http_request_line(first_line);
        let io = crate::net::Prefixed::new(bytes::Bytes::from(seen), stream);
        if http {
            serve_http(io, Peer::Unix, shared, permit).await;
        } else {
            cli::serve(io, &shared.control).await;
            drop(permit);
        }
    });
}

fn spawn_tcp(stream: tokio::net::TcpStream, peer: SocketAddr, shared: &Arc<Shared>) {
    let Ok(permit) = Arc::clone(&shared.tcp_slots).try_acquire_owned() else {
        debug!(%peer, limit = MAX_CONNECTIONS, "admin connection refused: too many open");
        return;
    };
    tokio::spawn(serve_http(stream, Peer::Tcp(peer), Arc::clone(shared), permit));
}

async fn serve_http<I>(io: I, peer: Peer, shared: Arc<Shared>, permit: tokio::sync::OwnedSemaphorePermit)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _permit = permit;
    let service = service_fn(move |req| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(handle(req, &shared, peer).await) }
    });
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).keep_alive(true);
    if let Err(e) = builder.serve_connection(TokioIo::new(io), service).await {
        debug!(%peer, error = %e, "admin connection ended");
    }
}

/// Route one request. Never fails: every problem is an HTTP answer.
async fn handle(req: Request<Incoming>, shared: &Shared, peer: Peer) -> Resp {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    debug!(%peer, %method, %path, "admin request");
    if path == "/healthz" {
        return match method {
            Method::GET | Method::HEAD => text(StatusCode::OK, "ok\n"),
            _ => not_allowed("GET, HEAD"),
        };
    }
    if let (Peer::Tcp(addr), Some(token)) = (peer, &shared.token) {
        if !authorized(req.headers(), token) {
            info!(peer = %addr, %method, %path, "admin request refused: missing or wrong bearer token");
            let mut r =
                api::error(StatusCode::UNAUTHORIZED, "missing or wrong token: send Authorization: Bearer <token>");
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"vipgate\""));
            return r;
        }
    }
    let control = &shared.control;
    match path.as_str() {
        "/" => get_only(&method, || page::response(control)),
        "/readyz" => get_only(&method, || readyz(control)),
        "/metrics" => get_only(&method, || {
            let mut r = text(StatusCode::OK, metrics::render(control));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
            r
        }),
        "/api/v1/services" => get_only(&method, || api::json(StatusCode::OK, &api::services(control))),
        "/api/v1/reload" => {
            if method != Method::POST {
                return not_allowed("POST");
            }
            if let Some(r) = refuse_unless_json(req.headers()) {
                return r;
            }
            // The body, if any, is ignored; it is still read within bounds so a keep-alive
            // connection stays in step.
            if let Err(r) = read_body(req).await {
                return r;
            }
            api::reload(control, &peer.to_string()).await
        }
        p => match api::server_path(p) {
            Some(Ok((svc, srv))) => match method {
                Method::GET | Method::HEAD => api::get_server(control, &svc, &srv),
                Method::POST => match refuse_unless_json(req.headers()) {
                    Some(r) => r,
                    None => match read_body(req).await {
                        Ok(body) => api::change_server(control, &svc, &srv, &body, &peer.to_string()),
                        Err(r) => r,
                    },
                },
                _ => not_allowed("GET, HEAD, POST"),
            },
            Some(Err(why)) => api::error(StatusCode::BAD_REQUEST, why),
            None => api::error(StatusCode::NOT_FOUND, format!("no such endpoint: {p}")),
        },
    }
}

fn get_only(method: &Method, f: impl FnOnce() -> Resp) -> Resp {
    match *method {
        Method::GET | Method::HEAD => f(),
        _ => not_allowed("GET, HEAD"),
    }
}

fn readyz(control: &Control) -> Resp {
    let snapshot = control.snapshot.load();
    // A service without servers (a redirect-only port) needs none to do its job.
    let unready: Vec<&str> = snapshot
        .services
        .iter()
        .filter(|s| !s.pool.servers().is_empty() && !s.pool.servers().iter().any(|v| v.usable()))
        .map(|s| s.name.as_str())
        .collect();
    if unready.is_empty() {
        text(StatusCode::OK, "ready\n")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: no usable server in {}\n", unready.join(", ")))
    }
}

/// The request body, at most [`MAX_BODY`] bytes within [`BODY_TIMEOUT`]; else the answer.
async fn read_body(req: Request<Incoming>) -> Result<Bytes, Resp> {
    let too_large = || api::error(StatusCode::PAYLOAD_TOO_LARGE, format!("request body over {MAX_BODY} bytes"));
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(BODY_TIMEOUT, Limited::new(req.into_body(), MAX_BODY).collect()).await {
        Ok(Ok(body)) => Ok(body.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(api::error(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}"))),
        Err(_) => Err(api::error(StatusCode::REQUEST_TIMEOUT, "request body too slow")),
    }
}

/// A state change must say its body is JSON. A browser sends a cross-site form post
/// (`application/x-www-form-urlencoded`, `multipart/form-data`, `text/plain`, or no type)
/// without asking the site first, but never `application/json`: requiring it keeps a page
/// the operator happens to visit from draining a server or reloading through the endpoint.
/// Parameters (`; charset=utf-8`) are allowed; the type is matched case-insensitively.
/// The 415 answer, or None for a JSON body.
fn refuse_unless_json(headers: &HeaderMap) -> Option<Resp> {
    let given = headers.get(header::CONTENT_TYPE).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let media_type = given.as_deref().map(|v| v.split(';').next().unwrap_or_default().trim());
    if media_type.is_some_and(|t| t.eq_ignore_ascii_case("application/json")) {
        return None;
    }
    let got = match &given {
        Some(v) => format!("got \"{}\"", v.escape_debug()),
        None => "none was sent".to_string(),
    };
    Some(api::error(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("send Content-Type: application/json ({got})")))
}

/// `Authorization: Bearer <token>`, compared in constant time so the answer's timing says
/// nothing about how much of a guess was right.
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((scheme, given)) = value.trim().split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer") && constant_time_eq(given.trim().as_bytes(), token.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, &x) in a.iter().enumerate() {
        // Walk all of `a` whatever `b`'s length, so the time depends only on the guess.
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(!x));
    }
    diff == 0
}

/// Headers every answer carries: never cached (it is live state), never sniffed into
/// another type, never framed by another site.
fn harden(r: &mut Resp) {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    harden(&mut r);
    r
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    respond(status, "text/plain; charset=utf-8", body)
}

fn not_allowed(allow: &'static str) -> Resp {
    let mut r = api::error(StatusCode::METHOD_NOT_ALLOWED, format!("method not allowed here (allowed: {allow})"));
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_json_bodies_change_state() {
        let mut h = HeaderMap::new();
        assert!(refuse_unless_json(&h).is_some());
        for (value, ok) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("APPLICATION/JSON ;charset=UTF-8", true),
            (" application/json", true),
            ("application/x-www-form-urlencoded", false),
            ("multipart/form-data; boundary=x", false),
            ("text/plain", false),
            ("text/plain; x=application/json", false),
            ("application/jsonx", false),
            ("application/json-seq", false),
            ("", false),
        ] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(refuse_unless_json(&h).is_none(), ok, "{value:?}");
        }
    }

    #[test]
    fn bearer_tokens() {
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, "s3cret"));
        for (value, ok) in [
            ("Bearer s3cret", true),
            ("bearer s3cret", true),
            ("Bearer  s3cret ", true),
            ("Bearer s3cre", false),
            ("Bearer s3cretX", false),
            ("Basic s3cret", false),
            ("s3cret", false),
            ("Bearer ", false),
        ] {
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(authorized(&h, "s3cret"), ok, "{value:?}");
        }
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"a", b""));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
