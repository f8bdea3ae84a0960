//! One request: rules, routing, persistence, a server connection (pooled or new, retried
//! on connect failure), the response with its rules, and one access-log line when the
//! response body has gone out.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use tokio::time::{sleep_until, Instant};
use tracing::{debug, info};

use super::body::{ms_since, Ending, Progress, ProxyBody, Tracked};
use super::server_conn::{ConnPool, ConnectError, Sender};
use super::{errors, policy, tunnel, ConnCtx};
use crate::proxy::connect::{Attempts, Refused};
use crate::proxy::http_rules as rules;
use crate::upstream::{Pool, Server};

/// What the access log line says about one request.
struct Log {
    ctx: Arc<ConnCtx>,
    method: Method,
    /// The request's one authority, once checked; `-` before that or without one.
    host: Option<String>,
    path: String,
    started: Instant,
    headers_ms: u64,
    connect_ms: u64,
    response_ms: u64,
    server: String,
    bytes_in: Arc<AtomicU64>,
    bytes_out: Arc<AtomicU64>,
}

impl Drop for Log {
    /// The request is over, its response body included (the log travels with it).
    fn drop(&mut self) {
        if let Ok(mut last) = self.ctx.last_end.lock() {
            *last = Instant::now();
        }
        self.ctx.open_requests.fetch_sub(1, Relaxed);
    }
}

impl Log {
    fn write(&self, status: u16, error: Option<&str>) {
        let c = &self.ctx;
        c.service.stats.count_response(status);
        let (bytes_in, bytes_out) = (self.bytes_in.load(Relaxed), self.bytes_out.load(Relaxed));
        let total = ms_since(self.started) + self.headers_ms;
        let host = self.host.as_deref().unwrap_or("-");
        match error {
            None => info!(client = %c.client, service = %c.service.name, server = %self.server, method = %self.method,
                host = %host, path = %self.path, status, bytes_in, bytes_out, t_headers_ms = self.headers_ms,
                t_connect_ms = self.connect_ms, t_response_ms = self.response_ms, t_total_ms = total, "request"),
            Some(e) => {
                info!(client = %c.client, service = %c.service.name, server = %self.server, method = %self.method,
                host = %host, path = %self.path, status, bytes_in, bytes_out, t_headers_ms = self.headers_ms,
                t_connect_ms = self.connect_ms, t_response_ms = self.response_ms, t_total_ms = total, error = %e, "request")
            }
        }
    }

    /// A response vipgate makes itself.
    fn answer(self, status: StatusCode, why: &str) -> Response<ProxyBody> {
        self.write(status.as_u16(), Some(why));
        errors::response(status, why)
    }

    /// A response vipgate makes itself, after which an HTTP/1.1 client connection closes:
    /// the request's framing or body cannot be trusted to leave the connection in step.
    fn answer_and_close(self, status: StatusCode, why: &str, client_h1: bool) -> Response<ProxyBody> {
        let mut resp = self.answer(status, why);
        if client_h1 {
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

pub(super) async fn serve(ctx: Arc<ConnCtx>, req: Request<Incoming>) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    ctx.open_requests.fetch_add(1, Relaxed);
    let headers_ms = ctx.last_end.lock().map(|t| started.saturating_duration_since(*t).as_millis() as u64).unwrap_or(0);
    let log = Log {
        ctx: Arc::clone(&ctx),
        method: req.method().clone(),
        host: None,
        path: log_path(req.uri()),
        started,
        headers_ms,
        connect_ms: 0,
        response_ms: 0,
        server: "-".into(),
        bytes_in: Arc::new(AtomicU64::new(0)),
        bytes_out: Arc::new(AtomicU64::new(0)),
    };
    Ok(proxy(ctx, req, log).await)
}

fn log_path(uri: &Uri) -> String {
    let p = uri.path();
    // A log line is no place for a megabyte of path.
    if p.len() > 512 {
        let mut end = 512;
        while !p.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &p[..end])
    } else {
        p.to_string()
    }
}

/// Request bodies kept for a resend up to this size: HAProxy's layer-7 retries likewise
/// need the request to fit in one (16 KiB) buffer. Larger bodies stream and are not kept.
const REPLAY_LIMIT: usize = 16 * 1024;

async fn proxy(ctx: Arc<ConnCtx>, mut req: Request<Incoming>, mut log: Log) -> Response<ProxyBody> {
    let http = Arc::clone(&ctx.http);
    let cfg = &http.cfg;
    let client_h1 = req.version() < Version::HTTP_2;
    let checked = policy::authority(req.method(), req.version(), req.uri(), req.headers())
        .and_then(|host| policy::framing(req.version(), req.headers()).map(|()| host));
    let host = match checked {
        Ok(host) => host,
        Err(refused) => return log.answer_and_close(refused.status, refused.why, client_h1),
    };
    log.host.clone_from(&host);

    if cfg.redirect_https {
        return redirect_https(&req, host.as_deref(), cfg.https_port, log);
    }
    if let Some(status) = rules::denied(req.uri().path(), &cfg.deny) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
        return log.answer(status, "denied by a deny rule");
    }
    let service = &ctx.service;
    let pool: &Pool = match rules::route(&cfg.routes, host.as_deref(), req.uri().path()) {
        Some(route) => match cfg.routes.iter().position(|r| std::ptr::eq(r, route)) {
            Some(i) => service.route_pools.get(i).map_or(&service.pool, |(_, p)| p.as_ref()),
            None => &service.pool,
        },
        None => service.default_pool.as_ref().unwrap_or(&service.pool),
    };
    if pool.servers().is_empty() {
        return log.answer(StatusCode::NOT_FOUND, "no route for this host and path");
    }

    // Upgrades are an HTTP/1.1 affair; take the client's side before the body moves on.
    let upgrade = req.version() == Version::HTTP_11 && rules::is_upgrade(req.headers()).is_some();
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

    let wanted_server = cfg.cookie.as_ref().and_then(|c| {
        let v = rules::cookie_value(req.headers(), &c.name)?;
        http.server_of_cookie(v).map(str::to_string)
    });

    let (mut parts, body) = req.into_parts();
    prepare_request_head(&ctx, &mut parts.headers, host.as_deref(), upgrade);
    let idempotent = matches!(
        parts.method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    );
    let bodiless = body.is_end_stream();
    // Tells the wait for an answer whether the server or the client is the slow one, and
    // whose fault a failed exchange is (a request without a body has nothing to tell).
    let progress = (!bodiless).then(|| Arc::new(Progress::new(idempotent.then_some(REPLAY_LIMIT))));
    let mut body = Tracked::new(body, ctx.service.config.client_timeout, Arc::clone(&log.bytes_in))
        .min_rate(cfg.min_body_rate, cfg.body_rate_window);
    if let Some(p) = &progress {
        body = body.progress(Arc::clone(p));
    }
    let body = body.boxed_unsync();
    // The head as it leaves, for a resend: idempotent requests only.
    let saved = idempotent.then(|| (parts.method.clone(), parts.uri.clone(), parts.headers.clone()));
    let mut req = Some(Request::from_parts(parts, body));

    let mut attempts = Attempts::new(service, pool, ctx.client.ip(), wanted_server.as_deref());
    let mut resends = 0u32;
    // After a kept-alive connection failed, the next try opens a new one.
    let mut fresh_only = false;
    let mut last_error = String::new();
    let connect_started = Instant::now();
    let (lease, pool_ref, sender, addr, resp) = loop {
        let (conn_ctx, upgrading, logged_server) = (&*ctx, upgrade, &mut log.server);
        let opened = attempts
            .connect(move |server| {
                // The log names the last server tried, whether it answered or not.
                logged_server.clone_from(&server.name);
                open(conn_ctx, server, upgrading, fresh_only)
            })
            .await;
        let (lease, opened) = match opened {
            Ok(opened) => opened,
            Err(Refused::NoServer { .. }) if resends > 0 => {
                return log.answer(StatusCode::BAD_GATEWAY, &format!("the server failed: {last_error}"))
            }
            // Whatever the reason, no server was reached: the service is unavailable.
            Err(refused) => return log.answer(StatusCode::SERVICE_UNAVAILABLE, &refused.to_string()),
        };
        let Some(Opened { mut sender, reused, pool: conn_pool, addr }) = opened else {
            return log.answer(StatusCode::INTERNAL_SERVER_ERROR, "server pool missing");
        };
        let server = Arc::clone(lease.server());
        log.connect_ms = ms_since(connect_started);
        let Some(mut outgoing) = req.take() else {
            return log.answer(StatusCode::BAD_GATEWAY, "request lost");
        };
        set_target(&mut outgoing, &sender, &server.address(), host.as_deref(), http.connector.tls.is_some());
        let sent_at = Instant::now();
        if let Some(p) = &progress {
            p.touch();
        }
        let Some(result) =
            send_watched(&mut sender, outgoing, ctx.service.config.server_timeout, progress.as_deref()).await
        else {
            crate::proxy::passive_failure(&ctx.service, &server, &"no answer within server_timeout");
            return log.answer(StatusCode::GATEWAY_TIMEOUT, "the server did not answer within server_timeout");
        };
        log.response_ms = ms_since(sent_at);
        ctx.service.stats.latency.observe(sent_at.elapsed());
        match result {
            Ok(resp) => {
                server.traffic_ok();
                // Per server, http counts requests (HAProxy's sessions in http mode).
                server.stats.connections_total.fetch_add(1, Relaxed);
                break (lease, conn_pool, sender, addr, resp);
            }
            Err(mut e) => {
                if let Some((status, why)) = client_fault(&progress) {
                    // The client broke its own request: its answer, never the server's failure.
                    return log.answer_and_close(status, &why, client_h1);
                }
                last_error = e.error().to_string();
                // No response came. The request goes again if it never left, or if it went
                // out on a reused keep-alive connection (which the server may have closed
                // just then: its idle timeout, a graceful stop) and is idempotent and whole,
                // its body (if any) kept. A POST that went out is never sent twice, and a
                // request that a new connection failed on is the server's failure.
                let again =
                    e.take_message().or_else(|| reused.then(|| resend(saved.as_ref(), progress.as_deref())).flatten());
                let Some(again) = again.filter(|_| resends < ctx.service.config.retries) else {
                    crate::proxy::passive_failure(&ctx.service, &server, &last_error);
                    return log.answer(StatusCode::BAD_GATEWAY, &format!("the server failed: {last_error}"));
                };
                resends += 1;
                ctx.service.stats.retries.fetch_add(1, Relaxed);
                if reused {
                    // The others the server holds are as suspect: the retry opens a new
                    // connection, which a stopped server refuses, so the connect retry
                    // moves the request on to another server.
                    conn_pool.clear_idle();
                    fresh_only = true;
                }
                debug!(service = %ctx.service.name, server = %server.name, reused, error = %last_error,
                    "no response: sending the request again");
                req = Some(again);
                drop(lease);
                continue;
            }
        }
    };

    let mut resp = resp;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_side) = client_upgrade else {
            return log.answer(StatusCode::BAD_GATEWAY, "the server switched protocols unasked");
        };
        let server_side = hyper::upgrade::on(&mut resp);
        let (parts, _) = resp.into_parts();
        log.write(101, None);
        tunnel::spawn(Arc::clone(&ctx), client_side, server_side, lease, log.path.clone());
        return Response::from_parts(parts, super::body::empty());
    }

    let (mut parts, body) = resp.into_parts();
    rules::strip_hop_by_hop(&mut parts.headers, false);
    rules::apply_rules(&mut parts.headers, &cfg.response);
    if ctx.tls && cfg.rewrite_location {
        rules::rewrite_location(&mut parts.headers, host.as_deref());
    }
    if let Some(c) = &cfg.cookie {
        let server = &lease.server().name;
        if wanted_server.as_deref() != Some(server.as_str()) {
            if let Some(value) = http.cookie_of(server) {
                rules::insert_persistence_cookie(&mut parts.headers, &c.name, value, ctx.tls);
            }
        }
    }
    let status = parts.status.as_u16();
    let bytes_out = Arc::clone(&log.bytes_out);
    let ctx_stall = Arc::clone(&ctx.stall_limit);
    let body = Tracked::new(body, ctx.service.config.server_timeout, bytes_out).on_end(move |ending| {
        let server = Arc::clone(lease.server());
        server.stats.bytes_in.fetch_add(log.bytes_in.load(Relaxed), Relaxed);
        server.stats.bytes_out.fetch_add(log.bytes_out.load(Relaxed), Relaxed);
        drop(lease);
        match (ending, client_fault(&progress)) {
            (Ending::Complete, _) => {
                pool_ref.checkin(sender, addr);
                log.write(status, None);
            }
            // Giving up on the client's body, or the client breaking it, broke the
            // exchange with the server.
            (Ending::Error | Ending::TooSlow(_), Some((_, why))) => log.write(status, Some(&why)),
            (Ending::Error, None) => log.write(status, Some("response body failed")),
            (Ending::TooSlow(why), None) => log.write(status, Some(&format!("server_timeout: response body: {why}"))),
            (Ending::Dropped, _) => {
                if sender.is_h2() {
                    pool_ref.checkin(sender, addr);
                }
                let why = if ctx_stall.fired.load(Relaxed) {
                    "client_timeout: the client stopped reading the response"
                } else {
                    "client went away"
                };
                log.write(status, Some(why))
            }
        }
    });
    Response::from_parts(parts, body.boxed_unsync())
}

/// When the client is to blame for a failed exchange: its status and the log's reason.
/// A body sent too slowly is 408; one the client broke (bad chunked framing, a hang-up
/// mid-body, more bytes than it declared) is 400.
fn client_fault(progress: &Option<Arc<Progress>>) -> Option<(StatusCode, String)> {
    let p = progress.as_ref()?;
    if let Some(why) = p.slow() {
        return Some((StatusCode::REQUEST_TIMEOUT, format!("the client sent its body too slowly: {why}")));
    }
    let why = p.broken()?;
    Some((StatusCode::BAD_REQUEST, format!("the client's request body failed: {why}")))
}

/// The request again, for another try: its saved head and its body, when the body was
/// kept whole (or there was none).
fn resend(saved: Option<&(Method, Uri, HeaderMap)>, progress: Option<&Progress>) -> Option<Request<ProxyBody>> {
    let (method, uri, headers) = saved?;
    let body = match progress {
        None => super::body::empty(),
        Some(p) => super::body::full(p.replay()?),
    };
    let mut again = Request::new(body);
    *again.method_mut() = method.clone();
    *again.uri_mut() = uri.clone();
    *again.headers_mut() = headers.clone();
    Some(again)
}

/// Send and wait for the response head; `None` when the server sat idle for
/// `server_timeout`: neither taking the request body nor answering, while the body was not
/// waiting on the client (whose own limits, `client_timeout` and `min_body_rate`, apply).
async fn send_watched(
    sender: &mut Sender,
    req: Request<ProxyBody>,
    server_timeout: Option<Duration>,
    progress: Option<&Progress>,
) -> Option<Result<Response<Incoming>, TrySendError<Request<ProxyBody>>>> {
    let send = sender.send(req);
    let Some(t) = server_timeout else { return Some(send.await) };
    let Some(progress) = progress else { return tokio::time::timeout(t, send).await.ok() };
    tokio::pin!(send);
    // The server's idle time counts from here: the last progress, or the moment the
    // body was last seen waiting on the client.
    let mut from = progress.last();
    loop {
        tokio::select! {
            r = &mut send => return Some(r),
            _ = sleep_until(from + t) => {
                if progress.slow().is_some() {
                    // vipgate gave up on the client: the send fails at once; wait for that.
                    return Some(send.await);
                }
                let last = progress.last();
                if progress.waiting_on_client() {
                    from = Instant::now();
                } else if last > from {
                    from = last;
                } else {
                    return None;
                }
            }
        }
    }
}

/// A server connection for one request.
struct Opened {
    sender: Sender,
    /// A kept-alive connection, which the server may have closed just as we sent.
    reused: bool,
    pool: Arc<ConnPool>,
    addr: SocketAddr,
}

/// A kept-alive connection to `server` when the request may share one, else a new one.
/// `Ok(None)`: the server has no keep-alive pool (it cannot happen), and the request ends
/// without counting that against the server.
async fn open(
    ctx: &ConnCtx,
    server: Arc<Server>,
    upgrade: bool,
    fresh_only: bool,
) -> Result<Option<Opened>, ConnectError> {
    let Some(pool) = ctx.pool_for(&server.name) else { return Ok(None) };
    let addr = server.address();
    if !upgrade && !fresh_only {
        while let Some(mut sender) = pool.checkout(addr) {
            if sender.ready().await {
                return Ok(Some(Opened { sender, reused: true, pool, addr }));
            }
        }
    }
    let sender = ctx.http.connector.connect(&server, (ctx.client, ctx.local), upgrade).await?;
    pool.opened(&sender, addr);
    Ok(Some(Opened { sender, reused: false, pool, addr }))
}

/// Hop-by-hop headers out, the one Host in, forwarding headers and request rules in, the
/// persistence cookie (ours, not the application's) removed.
fn prepare_request_head(ctx: &ConnCtx, headers: &mut HeaderMap, host: Option<&str>, upgrade: bool) {
    let cfg = &ctx.http.cfg;
    rules::strip_hop_by_hop(headers, upgrade);
    // The server sees the authority routing used, and only it: an absolute-form target's
    // or HTTP/2's :authority replaces (or supplies) Host.
    if let Some(h) = host.filter(|h| headers.get(header::HOST).is_none_or(|v| v.as_bytes() != h.as_bytes())) {
        if let Ok(v) = HeaderValue::from_str(h) {
            headers.insert(header::HOST, v);
        }
    }
    let facts =
        rules::ClientFacts { client: ctx.client.ip(), peer: ctx.peer.ip(), tls: ctx.tls, host, local: ctx.local };
    rules::apply_forwarding(headers, cfg, &facts);
    rules::apply_rules(headers, &cfg.request);
    if let Some(c) = &cfg.cookie {
        rules::strip_cookie(headers, &c.name);
    }
}

/// Origin-form for HTTP/1.1 servers; HTTP/2 wants scheme and authority.
/// `server_tls`: the connection to the server is TLS (the :scheme an HTTP/2 server sees).
fn set_target(
    req: &mut Request<ProxyBody>,
    sender: &Sender,
    server: &std::net::SocketAddr,
    host: Option<&str>,
    server_tls: bool,
) {
    let pq = req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    if sender.is_h2() {
        *req.version_mut() = Version::HTTP_2;
        let authority =
            host.and_then(|h| h.parse::<Authority>().ok()).or_else(|| server.to_string().parse::<Authority>().ok());
        let scheme = if server_tls { Scheme::HTTPS } else { Scheme::HTTP };
        let mut b = Uri::builder().scheme(scheme).path_and_query(pq.clone());
        if let Some(a) = authority {
            b = b.authority(a);
        }
        if let Ok(uri) = b.build() {
            *req.uri_mut() = uri;
        }
        req.headers_mut().remove(header::HOST);
    } else {
        *req.version_mut() = Version::HTTP_11;
        *req.uri_mut() = Uri::from(pq);
        // A body of unknown length goes chunked. Said outright, because hyper otherwise
        // sends a GET or HEAD with no body at all (it guesses they have none).
        let body = req.body();
        if !body.is_end_stream() && body.size_hint().exact().is_none() {
            req.headers_mut().insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        }
    }
}

fn redirect_https(req: &Request<Incoming>, host: Option<&str>, port: Option<u16>, log: Log) -> Response<ProxyBody> {
    let Some(host) = host else {
        return log.answer(StatusCode::BAD_REQUEST, "no Host header to redirect to");
    };
    // Drop the plain port; add the https one unless it is the default.
    let Some(split) = crate::net::host_port::split(host) else {
        return log.answer(StatusCode::BAD_REQUEST, "cannot build a redirect from this Host");
    };
    let bare = split.host_for_url();
    let authority = match port {
        Some(p) if p != 443 => format!("{bare}:{p}"),
        _ => bare.to_string(),
    };
    let pq = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let location = format!("https://{authority}{pq}");
    let Ok(value) = HeaderValue::from_str(&location) else {
        return log.answer(StatusCode::BAD_REQUEST, "cannot build a redirect from this Host");
    };
    log.write(301, None);
    let mut resp = errors::response(StatusCode::MOVED_PERMANENTLY, &format!("moved to {location}"));
    resp.headers_mut().insert(header::LOCATION, value);
    resp
}
