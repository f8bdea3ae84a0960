//! The validated configuration: every value checked, every default filled in.
//! Nothing downstream of `config` ever sees raw TOML.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

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
}

impl Default for Global {
    fn default() -> Self {
        Global {
            workers: None,
            grace: Duration::from_secs(30),
            splice: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    pub bind: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Tcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BalanceKind {
    RoundRobin,
    LeastConn,
    Source,
    First,
    Random,
}

impl BalanceKind {
    pub const NAMES: &'static [&'static str] =
        &["roundrobin", "leastconn", "source", "first", "random"];

    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "roundrobin" => BalanceKind::RoundRobin,
            "leastconn" => BalanceKind::LeastConn,
            "source" => BalanceKind::Source,
            "first" => BalanceKind::First,
            "random" => BalanceKind::Random,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            BalanceKind::RoundRobin => "roundrobin",
            BalanceKind::LeastConn => "leastconn",
            BalanceKind::Source => "source",
            BalanceKind::First => "first",
            BalanceKind::Random => "random",
        }
    }
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
        Keepalive {
            enabled: true,
            idle: Duration::from_secs(60),
            interval: Duration::from_secs(10),
            count: 6,
        }
    }
}

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
    pub keepalive: Keepalive,
    /// Local address for outgoing connections (traffic and probes), as HAProxy's `source`.
    pub source: Option<IpAddr>,
    pub check: Option<Check>,
    pub servers: Vec<Server>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub name: String,
    pub address: SocketAddr,
    pub weight: u32,
    pub backup: bool,
    /// Overrides the service's `source`.
    pub source: Option<IpAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    Tcp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub kind: CheckKind,
    pub interval: Duration,
    /// Bound on one probe, connect included.
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_RETRIES: u32 = 3;
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_RISE: u32 = 2;
pub const DEFAULT_FALL: u32 = 3;
pub const MAX_WEIGHT: u32 = 256;
