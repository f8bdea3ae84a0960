//! Forwarding: [`tcp`] owns one client connection from accept to its log line; [`pump`]
//! moves bytes both ways with half-close and idle timeouts, through [`splice`] pipes on
//! Linux or the pooled buffers of [`copy`].

mod copy;
pub mod http;
pub mod http_rules;
pub mod proxy_protocol;
mod pump;
#[cfg(target_os = "linux")]
pub mod splice;
pub mod tcp;

pub use pump::End;
