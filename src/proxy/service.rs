//! A service as connections see it: its pools (service, routes, untagged servers), its
//! http side and its counters, built from config. Building it with the service as it was
//! before a reload carries over what must survive one: server health and counters, the
//! `first`/`failback` choice of every pool, keep-alive pools and their idle connections.
//! The runtime snapshot holds one per configured service; the proxy reads it per
//! connection and never needs the runtime.

use std::sync::Arc;

use crate::config;
use crate::proxy::http::{HttpService, HttpTls};
use crate::upstream::{Policy, Pool, Server, ServerSpec};

/// A service as connections see it.
pub struct Service {
    pub name: String,
    /// Every server of the service (tcp mode, and http without routes or pool tags).
    pub pool: Pool,
    /// http routes: each route's pool name and balancing pool, in route order; routes
    /// naming the same pool share one, so its queue and failback choice are one.
    pub route_pools: Vec<(String, Arc<Pool>)>,
    /// http: the servers without a `pool` tag, when routes or tags exist.
    pub default_pool: Option<Pool>,
    /// The service as configured: its timeouts, retries, limits, keep-alive, passive
    /// health and PROXY settings are read from here, not copied.
    pub config: Arc<config::Service>,
    /// `mode = "http"`: its settings, TLS and server connection pools.
    pub http: Option<Arc<HttpService>>,
    /// Counters that outlive a reload (the service keeps its name).
    pub stats: Arc<super::stats::ServiceStats>,
}

impl Service {
    /// Fails on TLS settings that cannot be loaded (certificate files, CA file).
    pub fn new(cfg: &config::Service) -> Result<Self, String> {
        Service::build(cfg, None, HttpTls::load(cfg)?).map(|(s, _)| s)
    }

    /// Build from config; with `old` (the same service before a reload) a server that
    /// keeps its name and address keeps its health, operator state and counters, and a
    /// `first`/`failback` choice carries over. Changes to servers that are live now are
    /// returned, not made: they apply when the new snapshot is committed. `tls` is what
    /// [`HttpTls::load`] read for `cfg` (no I/O happens here).
    pub fn build(cfg: &config::Service, old: Option<&Service>, tls: HttpTls) -> Result<(Self, Vec<Pending>), String> {
        let mut pending = Vec::new();
        let servers: Vec<Arc<Server>> = cfg
            .servers
            .iter()
            .map(|s| {
                let before = old.and_then(|o| {
                    o.pool.servers().iter().find(|p| p.name == s.name && p.configured == s.address && p.host == s.host)
                });
                match before {
                    Some(b) if same_settings(b, s, cfg.source) => {
                        if b.config_weight() != s.weight {
                            pending.push(Pending::ConfigWeight(Arc::clone(b), s.weight));
                        }
                        if b.maxconn() != s.maxconn {
                            pending.push(Pending::Maxconn(Arc::clone(b), s.maxconn));
                        }
                        if b.config_disabled() != s.disabled {
                            pending.push(Pending::ConfigDisabled(Arc::clone(b), s.disabled));
                        }
                        if cfg.check_for(s).is_none() {
                            pending.push(Pending::Unchecked(Arc::clone(b)));
                        }
                        Arc::clone(b)
                    }
                    Some(b) => {
                        // Not live yet: settle it here.
                        let server = Server::new(spec(s, cfg.source));
                        server.carry_from(b);
                        if b.config_disabled() != s.disabled {
                            server.set_config_disabled(s.disabled);
                        }
                        if b.config_weight() == s.weight {
                            server.set_weight(b.weight());
                        }
                        if cfg.check_for(s).is_none() {
                            server.reset_unchecked();
                        }
                        Arc::new(server)
                    }
                    None => {
                        let server = Server::new(spec(s, cfg.source));
                        // A checked server takes no traffic until its first probe says so.
                        if cfg.check_for(s).is_some() {
                            server.hold_until_checked();
                        }

                        Arc::new(server)
                    }
                }
            })
            .collect();
        let http = match cfg.mode {
            config::Mode::Http => {
                let old_http = old.and_then(|o| o.http.as_deref());
                Some(Arc::new(HttpService::new(cfg, &servers, old_http, tls)?))
            }
            config::Mode::Tcp => None,
        };
        let (route_pools, default_pool) = http_pools(cfg, &servers, old);
        let pool =
            Pool::with_policy(cfg.balance, servers, Policy { failback: cfg.failback, all_backups: cfg.all_backups });
        if let Some(o) = old {
            pool.carry_choice(&o.pool);
        }
        Ok((
            Service {
                name: cfg.name.clone(),
                pool,
                route_pools,
                default_pool,
                config: Arc::new(cfg.clone()),
                http,
                stats: old.map(|o| Arc::clone(&o.stats)).unwrap_or_default(),
            },
            pending,
        ))
    }
}

/// The balancing pools of an http service's routes and of its untagged servers. Each
/// takes over the choice (`first`, `failback = "never"`) of the pool of its name before a
/// reload, as the service's own pool does: a reload must not move a writer.
fn http_pools(
    cfg: &config::Service,
    servers: &[Arc<Server>],
    old: Option<&Service>,
) -> (Vec<(String, Arc<Pool>)>, Option<Pool>) {
    let Some(h) = &cfg.http else { return (Vec::new(), None) };
    let policy = Policy { failback: cfg.failback, all_backups: cfg.all_backups };
    let tagged = |pool: Option<&str>| -> Vec<Arc<Server>> {
        cfg.servers.iter().zip(servers).filter(|(c, _)| c.pool.as_deref() == pool).map(|(_, s)| Arc::clone(s)).collect()
    };
    let mut route_pools: Vec<(String, Arc<Pool>)> = Vec::with_capacity(h.routes.len());
    for r in &h.routes {
        let shared = route_pools.iter().find(|(n, _)| *n == r.pool).map(|(_, p)| Arc::clone(p));
        let pool = shared.unwrap_or_else(|| {
            let p = Pool::with_policy(cfg.balance, tagged(Some(&r.pool)), policy);
            if let Some((_, before)) = old.and_then(|o| o.route_pools.iter().find(|(n, _)| *n == r.pool)) {
                p.carry_choice(before);
            }
            Arc::new(p)
        });
        route_pools.push((r.pool.clone(), pool));
    }
    let default_pool = (!h.routes.is_empty() || cfg.servers.iter().any(|s| s.pool.is_some())).then(|| {
        let p = Pool::with_policy(cfg.balance, tagged(None), policy);
        if let Some(before) = old.and_then(|o| o.default_pool.as_ref()) {
            p.carry_choice(before);
        }
        p
    });
    (route_pools, default_pool)
}

/// Settings a live server cannot change in place.
fn same_settings(live: &Server, cfg: &config::Server, service_source: Option<std::net::IpAddr>) -> bool {
    live.tier == cfg.tier
        && live.source == cfg.source.or(service_source)
        && live.check_port == cfg.check_port
        && live.check_address == cfg.check_address
}

/// A change to a live server that a reload makes only once it commits.
pub enum Pending {
    /// The config's weight changed: it replaces the operator's.
    ConfigWeight(Arc<Server>, u32),
    /// The service no longer has a check: the server serves, as any unchecked one.
    Unchecked(Arc<Server>),
    /// The config's `maxconn` changed.
    Maxconn(Arc<Server>, u32),
    /// The config's `disabled` changed: maintenance on or off.
    ConfigDisabled(Arc<Server>, bool),
}

/// What a server of the config is built from, the service's `source` folded in.
fn spec(s: &config::Server, service_source: Option<std::net::IpAddr>) -> ServerSpec {
    ServerSpec {
        name: s.name.clone(),
        address: s.address,
        host: s.host.clone(),
        weight: s.weight,
        tier: s.tier,
        maxconn: s.maxconn,
        disabled: s.disabled,
        source: s.source.or(service_source),
        check_port: s.check_port,
        check_address: s.check_address,
    }
}
