//! Forwarding: [`tcp`] owns one client connection from accept to its log line; [`connect`]
//! reaches a server for it and for [`http`] alike; [`pump`] moves bytes both ways with
//! half-close and idle timeouts, through [`splice`] pipes on Linux or the pooled buffers
//! of [`copy`].

mod connect;
mod copy;
pub mod http;
pub mod http_rules;
pub mod proxy_protocol;
mod pump;
pub mod service;
#[cfg(target_os = "linux")]
pub mod splice;
pub mod stats;
pub mod tcp;
mod tracker;

pub use pump::End;
pub use service::Service;
pub use stats::ServiceStats;
pub use tracker::Tracker;

use crate::config::OnDown;
use crate::upstream::Server;

/// Passive health: real traffic failed on `server`. At `observe_errors` failures in a row
/// the server is marked down at once (its probe brings it back), and with
/// `on_down = "shutdown-sessions"` its sessions are closed.
pub(crate) fn passive_failure(service: &Service, server: &Server, reason: &dyn std::fmt::Display) {
    if server.traffic_failed(service.config.observe_errors) {
        tracing::warn!(service = %service.name, server = %server.name, errors = service.config.observe_errors.unwrap_or(0),
            reason = %reason, "server is DOWN (passive health: consecutive failures of real traffic)");
        if service.config.on_down == OnDown::ShutdownSessions {
            server.shutdown_sessions();
        }
    }
}
