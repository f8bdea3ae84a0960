//! Socket plumbing shared by listeners, the proxy and probes: how sockets are opened and
//! tuned, in one place.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, SockRef, Socket, TcpKeepalive, Type};
use tokio::net::{TcpSocket, TcpStream};

pub mod host_port;
mod prefixed;
pub mod response_head;

pub use prefixed::Prefixed;

/// Open a listening socket. IP_FREEBIND lets vipgate bind a VIP that keepalived or
/// pacemaker has not moved to this host yet; SO_REUSEADDR lets a restart bind while old
/// connections sit in TIME_WAIT.
/// `options`: the client-socket options accepted sockets inherit (Linux), set before
/// listen() so no connection is accepted without them.
pub fn bind_listener(addr: SocketAddr, backlog: i32, options: Option<&Keepalive>) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // Keep [::]:p and 0.0.0.0:p separate listeners, each as configured.
        socket.set_only_v6(true)?;
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        if addr.is_ipv4() {
            socket.set_freebind_v4(true)?;
        } else {
            socket.set_freebind_v6(true)?;
        }
    }
    socket.set_nonblocking(true)?;
    if let Some(keepalive) = options {
        tune(SockRef::from(&socket), keepalive);
    }
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// Connect to `addr`, from `source` when set, within `timeout` (None = no limit).
pub async fn connect(addr: SocketAddr, source: Option<IpAddr>, timeout: Option<Duration>) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let attempt = socket.connect(addr);
    match timeout {
        Some(t) => match tokio::time::timeout(t, attempt).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, format!("connect timed out after {t:?}"))),
        },
        None => attempt.await,
    }
}

/// A connect for probes of responders that answer and close at once (the clustercheck
/// script under xinetd writes its answer and exits; the unread request turns the close
/// into a reset). When the reset lands before this task looks at the finished connect,
/// the socket's pending error says "reset" although the answer already sits in the
/// receive queue: the stream is returned anyway, and reading it decides.
pub async fn connect_for_probe(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let domain = if addr.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let socket = Socket::new(domain, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    if let Some(ip) = source {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(std::net::TcpStream::from(socket))?;
    stream.writable().await?;
    match stream.take_error()? {
        None => Ok(stream),
        Some(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(stream),
        Some(e) => Err(e),
    }
}

/// Per-connection options on either side of a proxied connection.
pub fn tune_stream(stream: &TcpStream, keepalive: &Keepalive) {
    tune(SockRef::from(stream), keepalive);
}

/// The same options on a listening socket. Linux copies them into every socket the
/// listener accepts, which saves five setsockopt calls per client connection.
pub fn tune_listener(listener: &tokio::net::TcpListener, keepalive: &Keepalive) {
    tune(SockRef::from(listener), keepalive);
}

/// True where accepted sockets inherit the listener's TCP_NODELAY and keepalive options.
pub const ACCEPT_INHERITS_OPTIONS: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// `keepalive.enabled = false` is applied too: an accepted socket may have inherited it.
fn tune(sock: SockRef<'_>, keepalive: &Keepalive) {
    // Interactive protocols (MySQL, AMQP, HTTP request/response) must not wait on Nagle.
    let _ = sock.set_tcp_nodelay(true);
    if keepalive.enabled {
        let ka = TcpKeepalive::new().with_time(keepalive.idle).with_interval(keepalive.interval);
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let ka = ka.with_retries(keepalive.count);
        let _ = sock.set_tcp_keepalive(&ka);
    } else {
        let _ = sock.set_keepalive(false);
    }
}

/// Close so that the peer sees a reset and no FIN/TIME_WAIT handshake: a health probe
/// must leave no "aborted connection" trace in MySQL and no TIME_WAIT pile on either side.
pub fn abort(stream: TcpStream) {
    let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// TCP keepalive settings applied to both sides of every proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    pub enabled: bool,
    /// Idle time before the first probe.
    pub idle: Duration,
    pub interval: Duration,
    pub count: u32,
}

impl Default for Keepalive {
    fn default() -> Self {
        // Kernel defaults (2 h idle) leave a dead peer after VIP failover hanging for hours;
        // 60 s + 6 × 10 s notices it in about two minutes at a negligible packet cost.
        Keepalive { enabled: true, idle: Duration::from_secs(60), interval: Duration::from_secs(10), count: 6 }
    }
}
