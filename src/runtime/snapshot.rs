//! The runtime snapshot: everything a new connection needs, built from a validated
//! config and published through `ArcSwap`, so accept loops read it without locks and a
//! connection keeps the `Arc` it started with.

use std::sync::Arc;
use std::time::Duration;

use super::Server;
use crate::balance::{Policy, Pool};
use crate::config::{self, Config, Keepalive, OnDown};

/// A service as connections see it.
pub struct Service {
    pub name: String,
    pub pool: Pool,
    pub connect_timeout: Option<Duration>,
    pub client_timeout: Option<Duration>,
    pub server_timeout: Option<Duration>,
    pub retries: u32,
    pub keepalive: Keepalive,
    /// Passive health: this many connect failures in a row mark a server down.
    pub observe_errors: Option<u32>,
    pub on_down: OnDown,
}

impl Service {
    pub fn new(cfg: &config::Service) -> Self {
        let servers: Vec<Arc<Server>> = cfg
            .servers
            .iter()
            .map(|s| {
                let server = Server::new(s, cfg.source);
                // A checked server takes no traffic until its first probe says so.
                if cfg.check.is_some() {
                    server.hold_until_checked();
                }
                Arc::new(server)
            })
            .collect();
        Service {
            name: cfg.name.clone(),
            pool: Pool::with_policy(
                cfg.balance,
                servers,
                Policy { failback: cfg.failback, all_backups: cfg.all_backups },
            ),
            connect_timeout: cfg.connect_timeout,
            client_timeout: cfg.client_timeout,
            server_timeout: cfg.server_timeout,
            retries: cfg.retries,
            keepalive: cfg.keepalive,
            observe_errors: cfg.observe_errors,
            on_down: cfg.on_down,
        }
    }
}

/// All services, in config order.
pub struct Snapshot {
    pub services: Vec<Arc<Service>>,
}

impl Snapshot {
    pub fn new(config: &Config) -> Self {
        Snapshot { services: config.services.iter().map(|s| Arc::new(Service::new(s))).collect() }
    }

    pub fn service(&self, name: &str) -> Option<&Arc<Service>> {
        self.services.iter().find(|s| s.name == name)
    }
}
