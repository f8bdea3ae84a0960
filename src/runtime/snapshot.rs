//! The runtime snapshot: everything a new connection needs, built from a validated
//! config and published through `ArcSwap`, so accept loops read it without locks and a
//! connection keeps the `Arc` it started with.

use std::sync::Arc;

use crate::config::Config;
use crate::health::{self, Probe};
use crate::proxy::http::HttpTls;
use crate::proxy::service::{Pending, Service};
use crate::upstream::Server;

use super::RunError;

/// All services, in config order, and which service each bind feeds: one load of the
/// snapshot answers both, so a bind moved to another service by a reload never sees a
/// service that is gone.
pub struct Snapshot {
    pub services: Vec<Arc<Service>>,
    /// `[global] resolve_interval`, for the resolver task.
    pub resolve_interval: Option<std::time::Duration>,
    binds: Vec<(std::net::SocketAddr, usize)>,
    pending: std::sync::Mutex<Vec<Pending>>,
}

/// A config with the files its services need read: the load step's result. Building it
/// is blocking I/O (certificates, CA files of servers and of https probes), so a reload
/// does it off the workers; the snapshot and the checks are then built from it without
/// touching a file.
pub struct Loaded {
    pub config: Config,
    /// Per service, in config order.
    tls: Vec<HttpTls>,
    /// Per service, one probe per entry of its `checks()`, in that order.
    probes: Vec<Vec<Arc<dyn Probe>>>,
}

impl Loaded {
    /// Read every service's TLS files; fails naming the service whose files cannot be
    /// loaded.
    pub fn read(config: Config) -> Result<Self, RunError> {
        let mut tls = Vec::with_capacity(config.services.len());
        let mut probes = Vec::with_capacity(config.services.len());
        for s in &config.services {
            tls.push(HttpTls::load(s).map_err(|message| RunError::Tls { service: s.name.clone(), message })?);
            let service_probes = s
                .checks()
                .into_iter()
                .map(|(check, _)| health::build_probe(&check.kind, check.timeout))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|message| RunError::Check { service: s.name.clone(), message })?;
            probes.push(service_probes);
        }
        Ok(Loaded { config, tls, probes })
    }

    /// The probes of the service at `index` in the config, one per entry of its `checks()`.
    pub(super) fn probes(&self, index: usize) -> &[Arc<dyn Probe>] {
        self.probes.get(index).map(Vec::as_slice).unwrap_or_default()
    }
}

impl Snapshot {
    /// Fails naming the service whose TLS settings cannot be loaded.
    pub fn new(config: &Config) -> Result<Self, RunError> {
        Snapshot::rebuild(&Loaded::read(config.clone())?, None)
    }

    /// A snapshot for `loaded`, carrying server state over from `old` (reload). Nothing
    /// live changes until [`Snapshot::commit`].
    pub fn rebuild(loaded: &Loaded, old: Option<&Snapshot>) -> Result<Self, RunError> {
        let config = &loaded.config;
        let mut services = Vec::with_capacity(config.services.len());
        let mut pending = Vec::new();
        let mut binds = Vec::new();
        for (i, (s, tls)) in config.services.iter().zip(&loaded.tls).enumerate() {
            let before = old.and_then(|o| o.service(&s.name)).map(|a| a.as_ref());
            let (svc, p) = Service::build(s, before, tls.clone())
                .map_err(|message| RunError::Tls { service: s.name.clone(), message })?;
            services.push(Arc::new(svc));
            pending.extend(p);
            binds.extend(s.binds.iter().map(|&b| (b, i)));
        }
        Ok(Snapshot {
            services,
            resolve_interval: config.global.resolve_interval,
            binds,
            pending: std::sync::Mutex::new(pending),
        })
    }

    /// Apply the changes to live servers this snapshot carries (once it is published).
    pub fn commit(&self) {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        for p in pending {
            match p {
                Pending::ConfigWeight(server, w) => server.set_config_weight(w),
                Pending::Unchecked(server) => server.reset_unchecked(),
                Pending::ConfigDisabled(server, d) => server.set_config_disabled(d),
                Pending::Maxconn(server, n) => server.set_maxconn(n),
            }
        }
    }

    /// The service a configured bind feeds.
    pub fn service_for_bind(&self, bind: std::net::SocketAddr) -> Option<&Arc<Service>> {
        self.binds.iter().find(|(b, _)| *b == bind).and_then(|&(_, i)| self.services.get(i))
    }

    pub fn service(&self, name: &str) -> Option<&Arc<Service>> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Server `srv` of service `svc`, or which of the two does not exist (the admin API
    /// and the command socket word that differently).
    pub fn server(&self, svc: &str, srv: &str) -> Result<&Arc<Server>, Missing> {
        let service = self.service(svc).ok_or(Missing::Service)?;
        service.pool.servers().iter().find(|s| s.name == srv).ok_or(Missing::Server)
    }
}

/// What [`Snapshot::server`] did not find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    Service,
    Server,
}
