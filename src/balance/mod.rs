//! Balancing: each algorithm answers "which of these eligible servers?", and one
//! selection routine around them applies tiers (active, then backup), health and
//! "not already tried", so retries and health filtering are the same loop.

mod first;
pub mod hash;
mod leastconn;
mod random;
mod roundrobin;
mod source;

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::BalanceKind;
use crate::runtime::Server;

/// One balancing algorithm. `eligible(i)` says whether `servers[i]` may be chosen now.
pub trait Balancer: Send + Sync {
    fn pick(
        &self,
        servers: &[Arc<Server>],
        eligible: &dyn Fn(usize) -> bool,
        client: IpAddr,
    ) -> Option<usize>;
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

/// The servers of one service and the algorithm that spreads clients over them.
pub struct Pool {
    servers: Vec<Arc<Server>>,
    balancer: Box<dyn Balancer>,
}

/// A server chosen for one connection; counts as active until dropped.
pub struct Lease {
    server: Arc<Server>,
}

impl Lease {
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.server.release();
    }
}

/// Indices of servers already tried for this connection (connect failed).
#[derive(Default)]
pub struct Tried(Vec<usize>);

impl Tried {
    pub fn add(&mut self, lease: &Lease, pool: &Pool) {
        if let Some(i) = pool
            .servers
            .iter()
            .position(|s| Arc::ptr_eq(s, &lease.server))
        {
            self.0.push(i);
        }
    }
    fn contains(&self, i: usize) -> bool {
        self.0.contains(&i)
    }
}

impl Pool {
    pub fn new(kind: BalanceKind, servers: Vec<Arc<Server>>) -> Self {
        let balancer = new_balancer(kind, &servers);
        Pool { servers, balancer }
    }

    pub fn servers(&self) -> &[Arc<Server>] {
        &self.servers
    }

    /// Choose a server for a client, skipping those in `tried`.
    ///
    /// Backup servers serve only while no active server is usable, and then only the first
    /// usable backup in config order takes traffic (HAProxy without `allbackups`), so an
    /// active-backup Galera never has two writers. Tier choice looks at health only, not at
    /// `tried`: a connect failure on an active server retries other active servers and does
    /// not spill onto a backup while health checks still call the active tier up.
    pub fn pick(&self, client: IpAddr, tried: &Tried) -> Option<Lease> {
        let primary_up = self.servers.iter().any(|s| !s.backup && s.usable());
        let index = if primary_up {
            let eligible = |i: usize| {
                let s = &self.servers[i];
                !s.backup && s.usable() && !tried.contains(i)
            };
            self.balancer.pick(&self.servers, &eligible, client)
        } else {
            (0..self.servers.len()).find(|&i| {
                let s = &self.servers[i];
                s.backup && s.usable() && !tried.contains(i)
            })
        }?;
        let server = Arc::clone(&self.servers[index]);
        server.acquire();
        Some(Lease { server })
    }
}

#[cfg(test)]
mod tests;
