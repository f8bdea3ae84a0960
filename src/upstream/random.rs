//! `random`: power of two choices. Draw two servers at random (by weight) and take the
//! one with fewer active connections per weight: near-leastconn spread without every
//! balancer thread converging on the same "least loaded" server.

use std::net::IpAddr;
use std::sync::Arc;

use super::rng::next_u64;
use super::Balancer;
use super::Server;

pub struct PowerOfTwo;

fn weighted_draw(servers: &[Arc<Server>], eligible: &dyn Fn(usize) -> bool, total: u64) -> Option<usize> {
    let mut r = next_u64() % total;
    for (i, s) in servers.iter().enumerate() {
        if !eligible(i) {
            continue;
        }
        let w = u64::from(s.weight());
        if r < w {
            return Some(i);
        }
        r -= w;
    }
    None
}

impl Balancer for PowerOfTwo {
    fn pick(&self, servers: &[Arc<Server>], eligible: &dyn Fn(usize) -> bool, _client: IpAddr) -> Option<usize> {
        let total: u64 = (0..servers.len()).filter(|&i| eligible(i)).map(|i| u64::from(servers[i].weight())).sum();
        if total == 0 {
            return None;
        }
        let a = weighted_draw(servers, eligible, total)?;
        let b = weighted_draw(servers, eligible, total)?;
        let (sa, sb) = (&servers[a], &servers[b]);
        let load_a = u64::from(sa.active()) * u64::from(sb.weight());
        let load_b = u64::from(sb.active()) * u64::from(sa.weight());
        Some(if load_b < load_a { b } else { a })
    }
}
