//! A server as the running process sees it: what it was built from ([`ServerSpec`]) plus
//! live state that the health checker writes and the balancer and proxy read, lock-free
//! on the hot path.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::sync::{watch, Notify};

use super::hash::server_key;

pub const MAX_WEIGHT: u32 = 256;

/// What a server is built from: its settings as the config gave them, the service's
/// `source` already folded in.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSpec {
    pub name: String,
    pub address: SocketAddr,
    /// The host name to resolve again, when the config named one.
    pub host: Option<String>,
    pub weight: u32,
    pub tier: u32,
    pub maxconn: u32,
    pub disabled: bool,
    pub source: Option<IpAddr>,
    pub check_port: Option<u16>,
    pub check_address: Option<IpAddr>,
}

impl ServerSpec {
    /// A server with only a name, an address, a weight and a tier (benchmarks, tests).
    pub fn named(name: &str, address: SocketAddr, weight: u32, tier: u32) -> Self {
        ServerSpec {
            name: name.into(),
            address,
            host: None,
            weight,
            tier,
            maxconn: 0,
            disabled: false,
            source: None,
            check_port: None,
            check_address: None,
        }
    }
}

/// What health checking says about a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    /// Not checked yet: takes no traffic until its first probe says so.
    Unchecked = 0,
    Down = 1,
    /// Down, but recent probes passed; `rise` not reached yet.
    GoingUp = 2,
    Up = 3,
    /// Up, but recent probes failed; `fall` not reached yet.
    GoingDown = 4,
}

/// What the operator says about a server (admin API, later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AdminState {
    Ready = 0,
    /// No new connections; open ones finish.
    Drain = 1,
    /// No traffic, no probes count.
    Maint = 2,
}

/// The single state an operator sees: admin state wins over health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Up,
    Down,
    GoingUp,
    GoingDown,
    Drain,
    Maint,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Down => "down",
            State::GoingUp => "going up",
            State::GoingDown => "going down",
            State::Drain => "drain",
            State::Maint => "maint",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The last probe of a server.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeResult {
    pub ok: bool,
    /// What the probe saw: "HTTP 200", "Galera cluster node is not synced.", "connect refused", ...
    pub reason: String,
    pub duration: Duration,
    pub at: SystemTime,
}

#[derive(Debug)]
pub struct Server {
    pub name: String,
    /// Where connections and probes go: the configured address, or the latest
    /// resolution of `host`. Read with [`Server::address`].
    address: arc_swap::ArcSwap<SocketAddr>,
    /// The address as the config gave it (what a reload compares).
    pub configured: SocketAddr,
    /// The host name to resolve again, when the config named one.
    pub host: Option<String>,
    /// Changed at run time by the admin API; read through [`Server::weight`].
    weight: AtomicU32,
    /// The weight the config gave (a reload that leaves it alone keeps the operator's).
    config_weight: AtomicU32,
    /// Connections (tcp) or requests (http) at once; 0 = no limit. A reload changes it in
    /// place, so connections open across the reload still count.
    maxconn: AtomicU32,
    /// The config's `disabled` (a reload that leaves it alone keeps the operator's state).
    config_disabled: AtomicBool,
    /// Priority tier: 0 = active, 1 = backup, ...
    pub tier: u32,
    /// Local address for outgoing connections (server's own, else the service's).
    pub source: Option<IpAddr>,
    /// Probe port override from the server's `check_port`.
    pub check_port: Option<u16>,
    /// Probe address override from the server's `check_address`.
    pub check_address: Option<IpAddr>,
    /// Stable identity for hashing: derived from the name, so every controller and every
    /// restart agrees on where a client belongs.
    pub(crate) hash_key: u64,
    up: AtomicBool,
    health: AtomicU8,
    /// Probes in a row toward a pending change (passes while down, failures while up), so
    /// that a reload, which restarts the checks, does not start that count again.
    streak: AtomicU32,
    admin: AtomicU8,
    active: AtomicU32,
    /// Consecutive failures of real traffic (passive health).
    connect_errors: AtomicU32,
    /// Set by passive health; the checker folds it into its rise/fall state.
    passive_down: AtomicBool,
    /// Wakes the checker to probe now (after a passive mark-down).
    pub(crate) recheck: Notify,
    /// Bumped to close every open connection to this server.
    sessions: watch::Sender<u64>,
    last_probe: Mutex<Option<ProbeResult>>,
    pub stats: ServerStats,
}

#[derive(Debug, Default)]
pub struct ServerStats {
    pub connections_total: AtomicU64,
    pub connect_failures: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub state_changes: AtomicU64,
    pub probes_total: AtomicU64,
    pub probe_failures: AtomicU64,
}

impl Server {
    /// A server starts up and unchecked; the runtime marks checked servers down until
    /// their first probe.
    pub fn new(spec: ServerSpec) -> Self {
        Server {
            hash_key: server_key(&spec.name),
            address: arc_swap::ArcSwap::from_pointee(spec.address),
            configured: spec.address,
            weight: AtomicU32::new(spec.weight),
            config_weight: AtomicU32::new(spec.weight),
            config_disabled: AtomicBool::new(spec.disabled),
            maxconn: AtomicU32::new(spec.maxconn),
            tier: spec.tier,
            source: spec.source,
            check_port: spec.check_port,
            check_address: spec.check_address,
            up: AtomicBool::new(true),
            health: AtomicU8::new(Health::Unchecked as u8),
            admin: AtomicU8::new(if spec.disabled { AdminState::Maint } else { AdminState::Ready } as u8),
            active: AtomicU32::new(0),
            streak: AtomicU32::new(0),
            connect_errors: AtomicU32::new(0),
            passive_down: AtomicBool::new(false),
            recheck: Notify::new(),
            sessions: watch::Sender::new(0),
            last_probe: Mutex::new(None),
            stats: ServerStats::default(),
            name: spec.name,
            host: spec.host,
        }
    }

    /// Build a bare server (benchmarks, tests).
    pub fn named(name: &str, address: SocketAddr, weight: u32, backup: bool) -> Self {
        Server::new(ServerSpec::named(name, address, weight, u32::from(backup)))
    }

    /// The address connections and probes use now.
    pub fn address(&self) -> SocketAddr {
        **self.address.load()
    }

    /// A new resolution of `host`: later connections and probes go there (open ones stay).
    pub fn set_address(&self, addr: SocketAddr) {
        self.address.store(std::sync::Arc::new(addr));
    }

    pub fn is_backup(&self) -> bool {
        self.tier > 0
    }

    /// Does health checking let this server take traffic?
    pub fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    /// A checked server takes no traffic before its first probe.
    pub(crate) fn hold_until_checked(&self) {
        self.up.store(false, Relaxed);
    }

    /// Set by health checking (and tests): up or down, as a settled state.
    pub fn set_up(&self, up: bool) {
        self.set_health(if up { Health::Up } else { Health::Down });
    }

    pub fn set_health(&self, h: Health) {
        let was = self.health.swap(h as u8, Relaxed);
        if was != h as u8 {
            self.stats.state_changes.fetch_add(1, Relaxed);
        }
        // Going down still serves (fall not reached); going up does not yet.
        self.up.store(matches!(h, Health::Up | Health::GoingDown), Relaxed);
    }

    pub fn health(&self) -> Health {
        match self.health.load(Relaxed) {
            1 => Health::Down,
            2 => Health::GoingUp,
            3 => Health::Up,
            4 => Health::GoingDown,
            _ => Health::Unchecked,
        }
    }

    pub(crate) fn streak(&self) -> u32 {
        self.streak.load(Relaxed)
    }

    pub(crate) fn set_streak(&self, n: u32) {
        self.streak.store(n, Relaxed);
    }

    pub fn admin(&self) -> AdminState {
        match self.admin.load(Relaxed) {
            1 => AdminState::Drain,
            2 => AdminState::Maint,
            _ => AdminState::Ready,
        }
    }

    pub fn set_admin(&self, state: AdminState) {
        self.admin.store(state as u8, Relaxed);
    }

    pub fn config_disabled(&self) -> bool {
        self.config_disabled.load(Relaxed)
    }

    /// A reload changed the config's `disabled`: it replaces the operator's state.
    pub(crate) fn set_config_disabled(&self, disabled: bool) {
        self.config_disabled.store(disabled, Relaxed);
        self.set_admin(if disabled { AdminState::Maint } else { AdminState::Ready });
    }

    pub fn state(&self) -> State {
        match (self.admin(), self.health()) {
            (AdminState::Maint, _) => State::Maint,
            (AdminState::Drain, _) => State::Drain,
            (_, Health::Up) => State::Up,
            (_, Health::GoingDown) => State::GoingDown,
            (_, Health::GoingUp) => State::GoingUp,
            (_, Health::Down) => State::Down,
            (_, Health::Unchecked) if self.is_up() => State::Up,
            (_, Health::Unchecked) => State::Down,
        }
    }

    /// Connections currently assigned (connecting or established).
    pub fn active(&self) -> u32 {
        self.active.load(Relaxed)
    }

    /// Take a slot if below `maxconn` (always, without one); exact under concurrency.
    pub(crate) fn try_acquire(&self) -> bool {
        let max = self.maxconn.load(Relaxed);
        if max == 0 {
            self.active.fetch_add(1, Relaxed);
            return true;
        }
        self.active.fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1)).is_ok()
    }

    pub(crate) fn release(&self) {
        self.active.fetch_sub(1, Relaxed);
    }

    pub fn maxconn(&self) -> u32 {
        self.maxconn.load(Relaxed)
    }

    pub(crate) fn set_maxconn(&self, n: u32) {
        self.maxconn.store(n, Relaxed);
    }

    /// Below its `maxconn` (or without one)?
    pub fn has_room(&self) -> bool {
        let max = self.maxconn.load(Relaxed);
        max == 0 || self.active.load(Relaxed) < max
    }

    /// May this server take new traffic at all?
    pub fn usable(&self) -> bool {
        self.weight() > 0 && self.is_up() && self.admin() == AdminState::Ready
    }

    /// Real traffic went well (a response came back, a connection ended cleanly): the run
    /// of failures passive health counts starts over.
    pub fn traffic_ok(&self) {
        if self.connect_errors.load(Relaxed) != 0 {
            self.connect_errors.store(0, Relaxed);
        }
    }

    /// Real traffic failed on this server (a refused or timed-out connect; in http mode
    /// also a reset, a malformed response or no answer within server_timeout; in tcp mode
    /// a reset from the server); true if that makes `limit` in a row and the server was
    /// just marked down by it.
    pub fn traffic_failed(&self, limit: Option<u32>) -> bool {
        let n = self.connect_errors.fetch_add(1, Relaxed) + 1;
        match limit {
            Some(limit) if n >= limit && self.is_up() => {
                self.set_health(Health::Down);
                // Failures counted toward `fall` are no passes toward `rise`.
                self.set_streak(0);
                self.passive_down.store(true, Relaxed);
                self.recheck.notify_one();
                true
            }
            _ => false,
        }
    }

    pub(crate) fn take_passive_down(&self) -> bool {
        self.passive_down.swap(false, Relaxed)
    }

    /// A receiver that changes when this server's sessions must close.
    pub fn sessions(&self) -> watch::Receiver<u64> {
        self.sessions.subscribe()
    }

    /// Close every open connection to this server (on-marked-down, failback drain).
    pub fn shutdown_sessions(&self) {
        self.sessions.send_modify(|generation| *generation += 1);
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Relaxed)
    }

    /// Operator's weight (0–256); 0 takes no new traffic.
    pub fn set_weight(&self, w: u32) {
        self.weight.store(w.min(MAX_WEIGHT), Relaxed);
    }

    /// The weight the config last gave.
    pub(crate) fn config_weight(&self) -> u32 {
        self.config_weight.load(Relaxed)
    }

    /// A reload changed the config's weight: it replaces the operator's.
    pub(crate) fn set_config_weight(&self, w: u32) {
        self.config_weight.store(w, Relaxed);
        self.set_weight(w);
    }

    /// The service no longer checks this server: like any unchecked server, it serves.
    pub(crate) fn reset_unchecked(&self) {
        self.health.store(Health::Unchecked as u8, Relaxed);
        self.up.store(true, Relaxed);
    }

    /// A server kept across a reload whose settings changed: take over the old one's
    /// health, operator state, last probe and counters.
    pub fn carry_from(&self, old: &Server) {
        self.health.store(old.health.load(Relaxed), Relaxed);
        self.streak.store(old.streak.load(Relaxed), Relaxed);
        self.up.store(old.up.load(Relaxed), Relaxed);
        self.admin.store(old.admin.load(Relaxed), Relaxed);
        *self.last_probe.lock().unwrap_or_else(|p| p.into_inner()) = old.last_probe();
        let (a, b) = (&self.stats, &old.stats);
        for (to, from) in [
            (&a.connections_total, &b.connections_total),
            (&a.connect_failures, &b.connect_failures),
            (&a.bytes_in, &b.bytes_in),
            (&a.bytes_out, &b.bytes_out),
            (&a.state_changes, &b.state_changes),
            (&a.probes_total, &b.probes_total),
            (&a.probe_failures, &b.probe_failures),
        ] {
            to.store(from.load(Relaxed), Relaxed);
        }
    }

    pub fn last_probe(&self) -> Option<ProbeResult> {
        self.last_probe.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn record_probe(&self, result: ProbeResult) {
        self.stats.probes_total.fetch_add(1, Relaxed);
        if !result.ok {
            self.stats.probe_failures.fetch_add(1, Relaxed);
        }
        *self.last_probe.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
    }
}
