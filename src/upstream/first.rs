//! `first`: the first eligible server in config order takes everything (active-backup).

use super::Balancer;
use super::Server;
use std::{net::IpAddr, sync::Arc};

pub struct First;

impl Balancer for First {
    fn pick(&self, servers: &[Arc<Server>], eligible: &dyn Fn(usize) -> bool, _client: IpAddr) -> Option<usize> {
        (0..servers.len()).find(|&i| eligible(i))
    }
}
