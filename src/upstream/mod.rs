//! Upstream: the servers of a service and how one is chosen. A leaf: it knows nothing of
//! the config, the runtime, the proxy or the health checks. Health writes a server's state
//! through [`Server`]; the proxy asks a [`Pool`] for a [`Lease`].
//!
//! Each algorithm answers "which of these eligible servers?", and one selection routine
//! around them applies tiers (active, then backup), health, admission slots (`maxconn`)
//! and "not already tried", so retries and health filtering are the same loop.

mod first;
pub mod hash;
mod leastconn;
mod random;
pub mod rng;
mod roundrobin;
mod server;
mod source;

use std::net::IpAddr;
use std::sync::Arc;

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

pub use server::{AdminState, Health, ProbeResult, Server, ServerSpec, ServerStats, State, MAX_WEIGHT};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BalanceKind {
    RoundRobin,
    LeastConn,
    Source,
    First,
    Random,
}

impl BalanceKind {
    pub const NAMES: &'static [&'static str] = &["roundrobin", "leastconn", "source", "first", "random"];

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

/// What happens when a higher-priority server (lower tier, or earlier for `first`)
/// becomes usable again while traffic has moved elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failback {
    /// New connections go back at once; sessions opened meanwhile stay where they are.
    Immediate,
    /// Stay on the current server (or tier) until it fails.
    Never,
    /// Go back at once and close the sessions on the server (or tier) being left.
    Drain,
}

/// One balancing algorithm. `eligible(i)` says whether `servers[i]` may be chosen now.
pub trait Balancer: Send + Sync {
    fn pick(&self, servers: &[Arc<Server>], eligible: &dyn Fn(usize) -> bool, client: IpAddr) -> Option<usize>;
}

pub fn new_balancer(kind: BalanceKind, servers: &[Arc<Server>]) -> Box<dyn Balancer> {
    match kind {
        BalanceKind::RoundRobin => Box::new(roundrobin::RoundRobin::new(servers.len())),
        BalanceKind::LeastConn => Box::new(leastconn::LeastConn::default()),
        BalanceKind::Source => Box::new(source::SourceHash::new(servers)),
        BalanceKind::First => Box::new(first::First),
        BalanceKind::Random => Box::new(random::PowerOfTwo),
    }
}

/// How a pool chooses among tiers and reacts when a better server returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub failback: Failback,
    /// Spread over every usable server of a backup tier instead of only its first.
    pub all_backups: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { failback: Failback::Immediate, all_backups: false }
    }
}

const NONE: usize = usize::MAX;

/// The servers of one service and the algorithm that spreads clients over them.
pub struct Pool {
    servers: Vec<Arc<Server>>,
    balancer: Box<dyn Balancer>,
    policy: Policy,
    /// `first` picks one server for everyone: failback is tracked per server.
    single: bool,
    /// Last server chosen (`first`) and last tier chosen, for failback.
    current_server: AtomicUsize,
    current_tier: AtomicUsize,
    /// Woken when a lease on a server with a `maxconn` ends: a slot may be free.
    room: Arc<Notify>,
}

/// Why no server was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoPick {
    /// No server may take traffic (down, maintenance, weight 0, or all tried).
    NoServer,
    /// The servers that would take it are at their `maxconn`.
    Full,
}

/// Between wakeups, a queued client looks again this often: a server coming up, a
/// weight or `maxconn` change, or a slot freed by a lease of another pool announce
/// nothing.
const QUEUE_RECHECK: Duration = Duration::from_millis(100);

/// A server chosen for one connection; counts as active until dropped.
pub struct Lease {
    server: Arc<Server>,
    /// Set when the server has a `maxconn`: the end of this lease frees a slot.
    room: Option<Arc<Notify>>,
}

impl Lease {
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.server.release();
        if let Some(room) = &self.room {
            room.notify_one();
        }
    }
}

/// Indices of servers already tried for this connection (connect failed).
#[derive(Default)]
pub struct Tried(Vec<usize>);

impl Tried {
    pub fn add(&mut self, lease: &Lease, pool: &Pool) {
        if let Some(i) = pool.servers.iter().position(|s| Arc::ptr_eq(s, &lease.server)) {
            self.0.push(i);
        }
    }
    fn contains(&self, i: usize) -> bool {
        self.0.contains(&i)
    }
}

impl Pool {
    pub fn new(kind: BalanceKind, servers: Vec<Arc<Server>>) -> Self {
        Pool::with_policy(kind, servers, Policy::default())
    }

    pub fn with_policy(kind: BalanceKind, servers: Vec<Arc<Server>>, policy: Policy) -> Self {
        let balancer = new_balancer(kind, &servers);
        Pool {
            servers,
            balancer,
            policy,
            single: kind == BalanceKind::First,
            current_server: AtomicUsize::new(NONE),
            current_tier: AtomicUsize::new(NONE),
            room: Arc::new(Notify::new()),
        }
    }

    pub fn servers(&self) -> &[Arc<Server>] {
        &self.servers
    }

    fn available(&self, i: usize, tried: &Tried) -> bool {
        self.servers[i].usable() && !tried.contains(i)
    }

    /// Lowest tier with a server available to this connection.
    fn best_tier(&self, tried: &Tried) -> Option<u32> {
        (0..self.servers.len()).filter(|&i| self.available(i, tried)).map(|i| self.servers[i].tier).min()
    }

    /// Choose a server for a client, skipping those in `tried`.
    ///
    /// Traffic goes to the lowest tier that has an available server. In a backup tier
    /// (tier > 0) only its first available server in config order serves unless
    /// `all_backups` is set (HAProxy without `allbackups`), so an active-backup Galera never
    /// gets two writers from the balancer's choice. A server whose connect just failed is
    /// not available to this connection, so a retry moves on at once, to the next tier if
    /// need be: a stopped primary sends clients to the backup before its probe notices.
    pub fn pick(&self, client: IpAddr, tried: &Tried) -> Option<Lease> {
        self.try_pick(client, tried).ok()
    }

    /// As [`Pool::pick`], telling apart "no server" from "every candidate is at its
    /// `maxconn`". A full tier never sends traffic to the next one: backups are for
    /// failures, not for load (as HAProxy queues rather than spilling to backups).
    pub fn try_pick(&self, client: IpAddr, tried: &Tried) -> Result<Lease, NoPick> {
        let best = self.best_tier(tried).ok_or(NoPick::NoServer)?;
        let never = self.policy.failback == Failback::Never;
        // `first` with failback = never: the current writer keeps everything while it is
        // available; when it fails, the best available server takes over.
        let sticky = match self.current_server.load(Relaxed) {
            i if never && self.single && i < self.servers.len() && self.available(i, tried) => Some(i),
            _ => None,
        };
        let tier = match (sticky, self.current_tier.load(Relaxed)) {
            (Some(i), _) => self.servers[i].tier,
            // Other algorithms stay on the tier in use while it has an available server.
            (None, t) if never && !self.single && t != NONE => {
                let t = t as u32;
                let alive = (0..self.servers.len()).any(|i| self.servers[i].tier == t && self.available(i, tried));
                if alive {
                    t
                } else {
                    best
                }
            }
            _ => best,
        };
        let index = match sticky {
            Some(i) => i,
            None if tier > 0 && !self.policy.all_backups => (0..self.servers.len())
                .find(|&i| self.servers[i].tier == tier && self.available(i, tried))
                .ok_or(NoPick::NoServer)?,
            None => {
                let eligible =
                    |i: usize| self.servers[i].tier == tier && self.available(i, tried) && self.servers[i].has_room();
                self.balancer.pick(&self.servers, &eligible, client).ok_or(NoPick::Full)?
            }
        };
        // One writer (sticky or a lone backup) is waited for, never replaced, when full.
        let lease = self.lease(index).ok_or(NoPick::Full)?;
        self.note_choice(index, tier);
        Ok(lease)
    }

    /// [`Pool::try_pick`], waiting up to `wait` for a slot while the candidates are full.
    /// `Err(Full)`: the wait ran out.
    pub async fn pick_queued(&self, client: IpAddr, tried: &Tried, wait: Duration) -> Result<Lease, NoPick> {
        let deadline = Instant::now() + wait;
        loop {
            match self.try_pick(client, tried) {
                Err(NoPick::Full) => {}
                done => return done,
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(NoPick::Full);
            }
            tokio::select! {
                _ = self.room.notified() => {}
                _ = tokio::time::sleep_until(deadline.min(now + QUEUE_RECHECK)) => {}
            }
        }
    }

    /// A slot on `servers[index]`; None when it is at its `maxconn`.
    fn lease(&self, index: usize) -> Option<Lease> {
        let server = Arc::clone(&self.servers[index]);
        if !server.try_acquire() {
            return None;
        }
        let room = (server.maxconn() > 0).then(|| Arc::clone(&self.room));
        Some(Lease { server, room })
    }

    /// Remember what was chosen; on a failback with `drain`, close the sessions left on the
    /// server (or tier) traffic is leaving, so there is only ever one writer.
    /// Lease the first server `wanted` accepts if it may take traffic now (cookie
    /// persistence): usable and not tried. Failback policy does not apply: the client
    /// asked for this server, and it is up.
    pub fn pick_where(&self, wanted: impl Fn(&Server) -> bool, tried: &Tried) -> Option<Lease> {
        let index = (0..self.servers.len()).find(|&i| wanted(&self.servers[i]))?;
        if !self.available(index, tried) {
            return None;
        }
        self.lease(index)
    }

    /// Take over `old`'s current server and tier (by server name) across a reload, so
    /// `failback = "never"` does not move a Galera writer because the config was reloaded.
    pub fn carry_choice(&self, old: &Pool) {
        let server = old.current_server.load(Relaxed);
        if let Some(name) = old.servers.get(server).map(|s| &s.name) {
            if let Some(i) = self.servers.iter().position(|s| &s.name == name) {
                self.current_server.store(i, Relaxed);
            }
        }
        self.current_tier.store(old.current_tier.load(Relaxed), Relaxed);
    }

    fn note_choice(&self, index: usize, tier: u32) {
        let prev_server = self.current_server.swap(index, Relaxed);
        let prev_tier = self.current_tier.swap(tier as usize, Relaxed);
        if self.policy.failback != Failback::Drain {
            return;
        }
        if self.single {
            // A failback: the previous writer ranks below the new one (higher tier, or
            // same tier but later in config order).
            if prev_server != NONE && prev_server != index && prev_server < self.servers.len() {
                let prev = &self.servers[prev_server];
                let lower = (prev.tier, prev_server) > (tier, index);
                if lower {
                    prev.shutdown_sessions();
                }
            }
        } else if prev_tier != NONE && prev_tier > tier as usize {
            for s in self.servers.iter().filter(|s| s.tier as usize > tier as usize) {
                s.shutdown_sessions();
            }
        }
    }
}

#[cfg(test)]
mod tests;
