//! A server as the running process sees it: its configuration plus live state that the
//! health checker writes and the balancer and proxy read, all lock-free.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::balance::hash::server_key;
use crate::config::model;

#[derive(Debug)]
pub struct Server {
    pub name: String,
    pub address: SocketAddr,
    pub weight: u32,
    pub backup: bool,
    /// Local address for outgoing connections (server's own, else the service's).
    pub source: Option<IpAddr>,
    /// Stable identity for hashing: derived from the name, so every controller and every
    /// restart agrees on where a client belongs.
    pub(crate) hash_key: u64,
    up: AtomicBool,
    active: AtomicU32,
    pub stats: ServerStats,
}

#[derive(Debug, Default)]
pub struct ServerStats {
    pub connections_total: AtomicU64,
    pub connect_failures: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

impl Server {
    /// A server starts up; with health checks on, the checker decides before traffic flows.
    pub fn new(cfg: &model::Server, service_source: Option<IpAddr>) -> Self {
        Server {
            name: cfg.name.clone(),
            address: cfg.address,
            weight: cfg.weight,
            backup: cfg.backup,
            source: cfg.source.or(service_source),
            hash_key: server_key(&cfg.name),
            up: AtomicBool::new(true),
            active: AtomicU32::new(0),
            stats: ServerStats::default(),
        }
    }

    /// Build a bare server (benchmarks, tests).
    pub fn named(name: &str, address: SocketAddr, weight: u32, backup: bool) -> Self {
        let cfg = model::Server {
            name: name.into(),
            address,
            weight,
            backup,
            source: None,
        };
        Server::new(&cfg, None)
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Relaxed);
    }

    /// Connections currently assigned (connecting or established).
    pub fn active(&self) -> u32 {
        self.active.load(Relaxed)
    }

    pub(crate) fn acquire(&self) {
        self.active.fetch_add(1, Relaxed);
    }

    pub(crate) fn release(&self) {
        self.active.fetch_sub(1, Relaxed);
    }

    /// May this server take new traffic at all?
    pub fn usable(&self) -> bool {
        self.weight > 0 && self.is_up()
    }
}
