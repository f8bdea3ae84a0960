//! vipgate: a TCP load balancer for OpenStack controller VIPs and Galera.
//!
//! Data flow: [`config`] (TOML → validated model) → [`runtime`] (snapshot, listeners,
//! signals, drain) → [`upstream`] (pick a live server) → [`proxy`] (forward bytes), while
//! [`health`] probes servers and flips their state beside it; [`admin`] reads the runtime,
//! the [`supervisor`] runs it all and [`verbs`] are the command line over it. Which
//! module may use which: README "Layout" (checked by tests/layout.rs).

#![deny(unsafe_code)]

pub mod admin;
pub mod clustercheck;
pub mod config;
pub mod demo;
pub mod health;
pub mod import;
pub mod log_batch;
pub mod mysql;
pub mod net;
pub mod proxy;
pub mod runtime;
pub mod supervisor;
pub mod tls;
pub mod upstream;
pub mod verbs;
