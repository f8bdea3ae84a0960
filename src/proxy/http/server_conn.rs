//! Connections to servers: opened with the service's connect timeout and source address,
//! optionally behind a PROXY header and TLS, spoken over HTTP/1.1 or HTTP/2, and kept
//! in a bounded per-server pool of idle keep-alive connections.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2, TrySendError};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

/// Most a server connection's read buffer grows to (hyper's default is about 400 KiB):
/// with a slow client the response waits in the kernel's socket buffers, not in ours.
/// Response heads stay within it (their limit is the client side's).
const UPSTREAM_READ_BUFFER: usize = 64 * 1024;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tracing::debug;

use super::body::ProxyBody;

/// How long a pooled connection may take to settle after its last response before it is
/// given up (it is nearly always immediate; a server that stalls here is not reused).
const SETTLE: Duration = Duration::from_secs(1);
use crate::config::{Keepalive, ProxyVersion, ServerTls};
use crate::net;
use crate::proxy::proxy_protocol;
use crate::upstream::Server;

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// How connections to the servers of one service are opened.
pub struct Connector {
    pub connect_timeout: Option<Duration>,
    pub keepalive: Keepalive,
    pub tls: Option<ServerTlsConnector>,
    pub http2: bool,
    pub send_proxy: Option<ProxyVersion>,
}

#[derive(Clone)]
pub struct ServerTlsConnector {
    connector: TlsConnector,
    /// `None`: the server's IP address is the name.
    name: Option<rustls_pki_types::ServerName<'static>>,
}

impl ServerTlsConnector {
    pub fn new(cfg: &ServerTls, http2: bool) -> Result<Self, String> {
        let base = crate::tls::client_config(cfg.ca_file.as_deref(), cfg.verify)?;
        let mut config = (*base).clone();
        config.alpn_protocols = if http2 { vec![b"h2".to_vec()] } else { vec![b"http/1.1".to_vec()] };
        let name = cfg.server_name.as_deref().map(crate::tls::server_name).transpose()?;
        Ok(ServerTlsConnector { connector: TlsConnector::from(Arc::new(config)), name })
    }
}

#[derive(Debug)]
pub enum ConnectError {
    Connect(std::io::Error),
    Proxy(std::io::Error),
    Tls(std::io::Error),
    Handshake(hyper::Error),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Connect(e) => write!(f, "connect: {e}"),
            ConnectError::Proxy(e) => write!(f, "sending the PROXY header: {e}"),
            ConnectError::Tls(e) => write!(f, "TLS handshake with the server: {e}"),
            ConnectError::Handshake(e) => write!(f, "HTTP handshake with the server: {e}"),
        }
    }
}

/// A connection ready to carry requests.
pub enum Sender {
    H1(http1::SendRequest<ProxyBody>),
    H2(http2::SendRequest<ProxyBody>),
}

impl Sender {
    pub fn is_h2(&self) -> bool {
        matches!(self, Sender::H2(_))
    }

    pub fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    /// Wait until a pooled HTTP/1.1 connection can take a request (hyper settles it just
    /// after the previous response's end). False: it closed instead, or took too long.
    pub async fn ready(&mut self) -> bool {
        match self {
            Sender::H1(s) if !s.is_ready() => {
                matches!(tokio::time::timeout(SETTLE, s.ready()).await, Ok(Ok(())))
            }
            Sender::H1(s) => !s.is_closed(),
            Sender::H2(s) => !s.is_closed(),
        }
    }

    /// Send; on failure the request comes back if it never left.
    pub async fn send(
        &mut self,
        req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, TrySendError<Request<ProxyBody>>> {
        match self {
            Sender::H1(s) => s.try_send_request(req).await,
            Sender::H2(s) => s.try_send_request(req).await,
        }
    }
}

impl Connector {
    /// Open a connection to `server`. `addresses` (client, the address it connected to)
    /// go into the PROXY header when the service sends one.
    pub async fn connect(
        &self,
        server: &Server,
        addresses: (SocketAddr, SocketAddr),
        upgrade: bool,
    ) -> Result<Sender, ConnectError> {
        let mut stream =
            net::connect(server.address(), server.source, self.connect_timeout).await.map_err(ConnectError::Connect)?;
        net::tune_stream(&stream, &self.keepalive);
        if let Some(version) = self.send_proxy {
            let header = proxy_protocol::encode(version, addresses.0, addresses.1);
            stream.write_all(&header).await.map_err(ConnectError::Proxy)?;
        }
        // An upgraded connection carries raw bytes after the 101: HTTP/1.1 only.
        let h2 = self.http2 && !upgrade;
        let io: Box<dyn Io> = match &self.tls {
            None => Box::new(stream),
            Some(tls) => {
                let name = tls.name.clone().unwrap_or_else(|| server.address().ip().into());
                let handshake = tls.connector.connect(name, stream);
                let tls_stream = match self.connect_timeout {
                    Some(t) => tokio::time::timeout(t, handshake).await.map_err(|_| {
                        ConnectError::Tls(std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))
                    })?,
                    None => handshake.await,
                }
                .map_err(ConnectError::Tls)?;
                Box::new(tls_stream)
            }
        };
        let io = TokioIo::new(io);
        if h2 {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(ConnectError::Handshake)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    debug!(error = %e, "server connection (h2) ended");
                }
            });
            Ok(Sender::H2(sender))
        } else {
            let (sender, conn) = http1::Builder::new()
                .max_buf_size(UPSTREAM_READ_BUFFER)
                .handshake(io)
                .await
                .map_err(ConnectError::Handshake)?;
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    debug!(error = %e, "server connection ended");
                }
            });
            Ok(Sender::H1(sender))
        }
    }
}

/// Idle keep-alive connections to one server (HTTP/1.1), or its one shared HTTP/2
/// connection, each with the address it was opened to: once the server's name resolves
/// elsewhere, connections to the old address are not used again.
pub struct ConnPool {
    /// Oldest at the front, newest at the back: expiry trims the front, reuse takes the
    /// back (the connection likeliest to still be open on the server).
    idle: Mutex<VecDeque<(http1::SendRequest<ProxyBody>, Instant, SocketAddr)>>,
    h2: Mutex<Option<(http2::SendRequest<ProxyBody>, SocketAddr)>>,
    max_idle: usize,
    idle_timeout: Duration,
    /// Connections opened to this server over the pool's life.
    pub opened: AtomicU64,
    /// Requests that went out on a reused connection.
    pub reused: AtomicU64,
}

impl ConnPool {
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Self {
        ConnPool {
            idle: Mutex::new(VecDeque::new()),
            h2: Mutex::new(None),
            max_idle,
            idle_timeout,
            opened: AtomicU64::new(0),
            reused: AtomicU64::new(0),
        }
    }

    /// An idle connection to `addr` (the server's address now) that is not closed, newest
    /// first. An HTTP/1.1 one may still be settling after its last response: the caller
    /// waits for [`Sender::ready`].
    pub fn checkout(&self, addr: SocketAddr) -> Option<Sender> {
        if let Ok(mut h2) = self.h2.lock() {
            match h2.as_ref() {
                Some((s, at)) if *at == addr && !s.is_closed() => {
                    self.reused.fetch_add(1, Relaxed);
                    return Some(Sender::H2(s.clone()));
                }
                // Closed, or to an old address: streams still open on it finish; new
                // ones go to a new connection.
                Some(_) => *h2 = None,
                None => {}
            }
        }
        let mut idle = self.idle.lock().ok()?;
        let now = Instant::now();
        while let Some((sender, since, at)) = idle.pop_back() {
            if at == addr && now.saturating_duration_since(since) < self.idle_timeout && !sender.is_closed() {
                self.reused.fetch_add(1, Relaxed);
                return Some(Sender::H1(sender));
            }
        }
        None
    }

    /// A new connection to `addr` was opened; an HTTP/2 one is shared from now on.
    pub fn opened(&self, sender: &Sender, addr: SocketAddr) {
        self.opened.fetch_add(1, Relaxed);
        if let Sender::H2(s) = sender {
            if let Ok(mut h2) = self.h2.lock() {
                *h2 = Some((s.clone(), addr));
            }
        }
    }

    /// Give back a connection to `addr` whose response has been read to its end. hyper
    /// marks it ready a moment later; checkout's caller waits for that, so no task is
    /// spawned here.
    pub fn checkin(&self, sender: Sender, addr: SocketAddr) {
        let Sender::H1(sender) = sender else { return };
        if self.max_idle == 0 || sender.is_closed() {
            return;
        }
        let Ok(mut idle) = self.idle.lock() else { return };
        let now = Instant::now();
        while idle.front().is_some_and(|(_, since, _)| now.saturating_duration_since(*since) >= self.idle_timeout) {
            idle.pop_front();
        }
        if idle.len() >= self.max_idle {
            idle.pop_front();
        }
        idle.push_back((sender, now, addr));
    }

    /// Drop every idle connection: the server was seen closing kept-alive ones (an idle
    /// timeout, a graceful stop), and the others it holds are as likely closing too.
    pub fn clear_idle(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    /// `pool_max_idle` and `pool_idle_timeout`, as this pool was made with.
    pub fn limits(&self) -> (usize, Duration) {
        (self.max_idle, self.idle_timeout)
    }

    pub fn idle_count(&self) -> usize {
        self.idle.lock().map(|i| i.len()).unwrap_or(0)
    }
}
