//! The runtime snapshot: everything a new connection needs, built from a validated
//! config and published through `ArcSwap`, so accept loops read it without locks and a
//! connection keeps the `Arc` it started with.

use std::sync::Arc;
use std::time::Duration;

use super::Server;
use crate::balance::Pool;
use crate::config::{self, Config, Keepalive};

/// A service as connections see it.
pub struct Service {
    pub name: String,
    pub pool: Pool,
    pub connect_timeout: Option<Duration>,
    pub client_timeout: Option<Duration>,
    pub server_timeout: Option<Duration>,
    pub retries: u32,
    pub keepalive: Keepalive,
}

impl Service {
    pub fn new(cfg: &config::Service) -> Self {
        let servers: Vec<Arc<Server>> = cfg
            .servers
            .iter()
            .map(|s| {
                let server = Server::new(s, cfg.source);
                // A checked server takes no traffic until its first probe says so.
                server.set_up(cfg.check.is_none());
                Arc::new(server)
            })
            .collect();
        Service {
            name: cfg.name.clone(),
            pool: Pool::new(cfg.balance, servers),
            connect_timeout: cfg.connect_timeout,
            client_timeout: cfg.client_timeout,
            server_timeout: cfg.server_timeout,
            retries: cfg.retries,
            keepalive: cfg.keepalive,
        }
    }
}

/// All services, in config order.
pub struct Snapshot {
    pub services: Vec<Arc<Service>>,
}

impl Snapshot {
    pub fn new(config: &Config) -> Self {
        Snapshot {
            services: config
                .services
                .iter()
                .map(|s| Arc::new(Service::new(s)))
                .collect(),
        }
    }

    pub fn service(&self, name: &str) -> Option<&Arc<Service>> {
        self.services.iter().find(|s| s.name == name)
    }
}
