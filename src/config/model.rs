//! The validated configuration: every value checked, every default filled in.
//! Nothing downstream of `config` ever sees raw TOML.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

// The balancing vocabulary is the upstream module's; the config names it.
pub use crate::upstream::{BalanceKind, Failback, MAX_WEIGHT};

/// A whole, valid configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub global: Global,
    pub admin: Option<Admin>,
    pub services: Vec<Service>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Global {
    /// Worker threads; `None` = one per CPU. `VIPGATE_WORKERS` overrides at start.
    pub workers: Option<usize>,
    /// How long open connections may finish after SIGTERM/SIGINT.
    pub grace: Duration,
    /// Forward plain TCP with splice(2) on Linux; off forces the buffered copy.
    pub splice: bool,
    /// How often servers given as HOST:PORT are resolved again (container IPs change);
    /// `None` = only when the config loads.
    pub resolve_interval: Option<Duration>,
}

impl Default for Global {
    fn default() -> Self {
        Global {
            workers: None,
            grace: Duration::from_secs(30),
            splice: true,
            resolve_interval: Some(Duration::from_secs(30)),
        }
    }
}

/// `[admin]`: the admin HTTP endpoint (health, metrics, JSON API, status page).
#[derive(Clone, PartialEq)]
pub struct Admin {
    /// TCP address; loopback unless configured otherwise.
    pub bind: SocketAddr,
    /// Bearer token every request over TCP must carry (except `/healthz`), read from
    /// `token_file` when the config loads.
    pub token: Option<String>,
    /// Where the token came from, for messages.
    pub token_file: Option<std::path::PathBuf>,
    /// A unix socket serving the same API without the token, and HAProxy's runtime API
    /// commands: its file mode is the access control.
    pub socket: Option<std::path::PathBuf>,
    /// The socket's file mode (0600 unless configured).
    pub socket_mode: u32,
}

impl Admin {
    /// Loopback, so the endpoint is never reachable from the network unless configured so.
    pub const DEFAULT_BIND: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)), 9100);
    pub const DEFAULT_SOCKET_MODE: u32 = 0o600;
}

// By hand, so that printing a config (debug logs, test failures) never shows the token.
impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("bind", &self.bind)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("socket", &self.socket)
            .field("socket_mode", &format_args!("{:04o}", self.socket_mode))
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Tcp,
    Http,
}

/// TCP keepalive settings: the type is the socket layer's, the config only fills it.
pub use crate::net::Keepalive;

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    pub binds: Vec<SocketAddr>,
    pub mode: Mode,
    pub balance: BalanceKind,
    /// `None` = no timeout ("0").
    pub connect_timeout: Option<Duration>,
    pub client_timeout: Option<Duration>,
    pub server_timeout: Option<Duration>,
    /// Further connect attempts, each on another server, before the client is closed.
    pub retries: u32,
    /// Client connections open at once; beyond it the listeners stop accepting (clients
    /// wait in the kernel's backlog). `None` = no limit.
    pub maxconn: Option<u32>,
    /// How long a connection (tcp) or request (http) waits for a server below its
    /// `maxconn` before it is refused (closed, or 503).
    pub queue_timeout: Duration,
    pub keepalive: Keepalive,
    /// Local address for outgoing connections (traffic and probes), as HAProxy's `source`.
    pub source: Option<IpAddr>,
    pub check: Option<Check>,
    /// `[services.NAME.pools.POOL.check]`: the servers of POOL are probed with this check
    /// instead of `check` (HAProxy backends behind one frontend each keep their own).
    pub pool_checks: Vec<(String, Check)>,
    /// Consecutive connect failures from real traffic that mark a server down at once
    /// (passive health); `None` = off. The probe brings the server back.
    pub observe_errors: Option<u32>,
    pub on_down: OnDown,
    pub failback: Failback,
    /// Spread traffic over every usable server of a backup tier (HAProxy `allbackups`);
    /// off, only the first usable server of that tier serves (one Galera writer).
    pub all_backups: bool,
    pub servers: Vec<Server>,
    /// `mode = "http"` settings; `None` in tcp mode.
    pub http: Option<super::http::Http>,
    /// Write a PROXY protocol header to servers before any client byte.
    pub send_proxy: Option<super::http::ProxyVersion>,
    /// Clients (front balancers) that open with a PROXY protocol header.
    pub accept_proxy: Option<super::http::AcceptProxy>,
}

impl Service {
    /// The check that probes `server`: its pool's own, else the service's; `None` =
    /// unchecked.
    pub fn check_for(&self, server: &Server) -> Option<&Check> {
        server
            .pool
            .as_deref()
            .and_then(|p| self.pool_checks.iter().find(|(name, _)| name == p))
            .map(|(_, c)| c)
            .or(self.check.as_ref())
    }

    /// Every check this service runs, with the servers each one probes (in config order).
    pub fn checks(&self) -> Vec<(&Check, Vec<usize>)> {
        let mut out: Vec<(&Check, Vec<usize>)> = Vec::new();
        for (i, s) in self.servers.iter().enumerate() {
            let Some(c) = self.check_for(s) else { continue };
            match out.iter_mut().find(|(k, _)| std::ptr::eq(*k, c)) {
                Some((_, list)) => list.push(i),
                None => out.push((c, vec![i])),
            }
        }
        out
    }
}

/// What happens to a server's open connections when it is marked down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDown {
    /// Leave them; they end when the server or client closes them.
    Keep,
    /// Close them, so clients reconnect to the server that now takes traffic.
    ShutdownSessions,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub name: String,
    /// Resolved when the config loads (a HOST:PORT is looked up then).
    pub address: SocketAddr,
    /// The host name when the address was given as HOST:PORT: resolved again every
    /// `resolve_interval`.
    pub host: Option<String>,
    pub weight: u32,
    /// Priority tier: traffic goes to the lowest tier with a usable server.
    /// `backup = true` is tier 1.
    pub tier: u32,
    /// Overrides the service's `source`.
    pub source: Option<IpAddr>,
    /// Probe this port instead of the check's or the traffic port.
    pub check_port: Option<u16>,
    /// Probe this address instead of the check's or the server's.
    pub check_address: Option<IpAddr>,
    /// Value of the persistence cookie naming this server (default: its name).
    pub cookie: Option<String>,
    /// The route pool this server belongs to (`[[services.NAME.routes]]`); `None` = the
    /// service's default pool.
    pub pool: Option<String>,
    /// Connections (tcp) or requests (http) at once; more wait in the service's queue.
    /// 0 = no limit.
    pub maxconn: u32,
    /// Start in maintenance (HAProxy's `disabled`): no traffic, no probes counted, until
    /// an operator enables it.
    pub disabled: bool,
}

impl Server {
    pub fn is_backup(&self) -> bool {
        self.tier > 0
    }
}

/// What a probe does; the fields common to every kind live in [`Check`].
#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    /// Up if a TCP connect succeeds.
    Tcp,
    /// An HTTP request; `tls` for https.
    Http(HttpCheck),
    /// The Galera clustercheck responder: HTTP, 200 = usable, body = reason.
    Clustercheck(HttpCheck),
    /// MySQL greeting, or login + Galera state with credentials.
    Mysql(MysqlCheck),
}

impl CheckKind {
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Http(h) if h.tls.is_some() => "https",
            CheckKind::Http(_) => "http",
            CheckKind::Clustercheck(_) => "clustercheck",
            CheckKind::Mysql(_) => "mysql",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpCheck {
    pub method: String,
    pub path: String,
    /// Host header; none is sent when unset (as HAProxy's bare `option httpchk`).
    pub host: Option<String>,
    pub headers: Vec<(String, String)>,
    /// Accepted statuses; empty = any 2xx or 3xx.
    pub expect: Vec<u16>,
    pub expect_body: Option<String>,
    pub tls: Option<TlsCheck>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsCheck {
    /// Verify the server certificate against this CA bundle; `None` with `verify`
    /// means the system's roots are not used either: a CA file is required to verify.
    pub ca_file: Option<std::path::PathBuf>,
    pub verify: bool,
    /// SNI and verification name; defaults to `host`, else the address.
    pub server_name: Option<String>,
}

#[derive(Clone, PartialEq)]
pub struct MysqlCheck {
    pub user: Option<String>,
    pub password: String,
    /// Where `password` was read from, if from a file (for the warning about its mode).
    pub password_file: Option<std::path::PathBuf>,
    /// A donor (state 2) counts as usable, as clustercheck's AVAILABLE_WHEN_DONOR=1.
    pub available_when_donor: bool,
    /// `read_only = ON` still counts as usable (clustercheck's default).
    pub available_when_readonly: bool,
}

// By hand, so that printing a config (debug logs, test failures) never shows the password.
impl std::fmt::Debug for MysqlCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlCheck")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("password_file", &self.password_file)
            .field("available_when_donor", &self.available_when_donor)
            .field("available_when_readonly", &self.available_when_readonly)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub kind: CheckKind,
    /// Probe this port instead of the traffic port (clustercheck: 49000).
    pub port: Option<u16>,
    /// Probe this address instead of the server's.
    pub address: Option<IpAddr>,
    pub interval: Duration,
    /// Interval while a state change is pending.
    pub fastinter: Duration,
    /// Interval while the server is down.
    pub downinter: Duration,
    /// Bound on one probe, connect included.
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

pub const DEFAULT_CLUSTERCHECK_PORT: u16 = 49000;
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_RETRIES: u32 = 3;
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_RISE: u32 = 2;
pub const DEFAULT_FALL: u32 = 3;
