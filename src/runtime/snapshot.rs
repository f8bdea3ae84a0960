//! The runtime snapshot: everything a new connection needs, built from a validated
//! config and published through `ArcSwap`, so accept loops read it without locks and a
//! connection keeps the `Arc` it started with.

use std::sync::Arc;
use std::time::Duration;

use super::Server;
use crate::balance::{Policy, Pool};
use crate::config::{self, AcceptProxy, Config, Keepalive, OnDown, ProxyVersion};
use crate::proxy::http::HttpService;

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
    pub send_proxy: Option<ProxyVersion>,
    pub accept_proxy: Option<AcceptProxy>,
    /// `mode = "http"`: its settings, TLS and server connection pools.
    pub http: Option<Arc<HttpService>>,
}

impl Service {
    /// Fails on TLS settings that cannot be loaded (certificate files, CA file).
    pub fn new(cfg: &config::Service) -> Result<Self, String> {
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
        let http = match cfg.mode {
            config::Mode::Http => Some(Arc::new(HttpService::new(cfg, &servers)?)),
            config::Mode::Tcp => None,
        };
        Ok(Service {
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
            send_proxy: cfg.send_proxy,
            accept_proxy: cfg.accept_proxy.clone(),
            http,
        })
    }
}

/// All services, in config order.
pub struct Snapshot {
    pub services: Vec<Arc<Service>>,
}

impl Snapshot {
    /// Fails naming the service whose TLS settings cannot be loaded.
    pub fn new(config: &Config) -> Result<Self, (String, String)> {
        let mut services = Vec::with_capacity(config.services.len());
        for s in &config.services {
            services.push(Arc::new(Service::new(s).map_err(|e| (s.name.clone(), e))?));
        }
        Ok(Snapshot { services })
    }

    pub fn service(&self, name: &str) -> Option<&Arc<Service>> {
        self.services.iter().find(|s| s.name == name)
    }
}
