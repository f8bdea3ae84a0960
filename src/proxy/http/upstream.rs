//! Connections to servers: opened with the service's connect timeout and source address,
//! optionally behind a PROXY header and TLS, spoken over HTTP/1.1 or HTTP/2, and kept
//! in a bounded per-server pool of idle keep-alive connections.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2, TrySendError};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tracing::debug;

use super::body::ProxyBody;
use crate::config::{Keepalive, ProxyVersion, ServerTls};
use crate::net;
use crate::proxy::proxy_protocol;
use crate::runtime::Server;

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
            net::connect(server.address, server.source, self.connect_timeout).await.map_err(ConnectError::Connect)?;
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
                let name = tls.name.clone().unwrap_or_else(|| server.address.ip().into());
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
            let (sender, conn) = http1::Builder::new().handshake(io).await.map_err(ConnectError::Handshake)?;
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
/// connection.
pub struct ConnPool {
    idle: Mutex<Vec<(http1::SendRequest<ProxyBody>, Instant)>>,
    h2: Mutex<Option<http2::SendRequest<ProxyBody>>>,
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
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
            max_idle,
            idle_timeout,
            opened: AtomicU64::new(0),
            reused: AtomicU64::new(0),
        }
    }

    /// A live idle connection, newest first (the likeliest to still be open on the server).
    pub fn checkout(&self) -> Option<Sender> {
        if let Ok(h2) = self.h2.lock() {
            if let Some(s) = h2.as_ref().filter(|s| !s.is_closed()) {
                self.reused.fetch_add(1, Relaxed);
                return Some(Sender::H2(s.clone()));
            }
        }
        let mut idle = self.idle.lock().ok()?;
        while let Some((sender, since)) = idle.pop() {
            if since.elapsed() < self.idle_timeout && sender.is_ready() {
                self.reused.fetch_add(1, Relaxed);
                return Some(Sender::H1(sender));
            }
        }
        None
    }

    /// A new connection was opened; an HTTP/2 one is shared from now on.
    pub fn opened(&self, sender: &Sender) {
        self.opened.fetch_add(1, Relaxed);
        if let Sender::H2(s) = sender {
            if let Ok(mut h2) = self.h2.lock() {
                *h2 = Some(s.clone());
            }
        }
    }

    /// Give back a connection whose response has been read to its end.
    pub fn checkin(self: &Arc<Self>, sender: Sender) {
        let Sender::H1(mut sender) = sender else { return };
        if self.max_idle == 0 || sender.is_closed() {
            return;
        }
        if sender.is_ready() {
            self.put(sender);
            return;
        }
        // hyper marks the connection ready a moment after the body's last frame.
        let pool = Arc::clone(self);
        let wait = self.idle_timeout;
        tokio::spawn(async move {
            if let Ok(Ok(())) = tokio::time::timeout(wait, sender.ready()).await {
                pool.put(sender);
            }
        });
    }

    fn put(&self, sender: http1::SendRequest<ProxyBody>) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.retain(|(s, since)| !s.is_closed() && since.elapsed() < self.idle_timeout);
            if idle.len() >= self.max_idle {
                idle.remove(0);
            }
            idle.push((sender, Instant::now()));
        }
    }

    pub fn idle_count(&self) -> usize {
        self.idle.lock().map(|i| i.len()).unwrap_or(0)
    }
}
