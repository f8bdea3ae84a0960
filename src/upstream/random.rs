//! `random`: power of two choices. Draw two servers at random (by weight) and take the
//! one with fewer active connections per weight: near-leastconn spread without every
//! balancer thread converging on the same "least loaded" server.

use std::cell::Cell;
use std::net::IpAddr;
use std::sync::Arc;

use super::Balancer;
use super::Server;

pub struct PowerOfTwo;

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x9e37_79b9);
    let local = 0u8;
    super::hash::mix64(t ^ (&local as *const u8 as u64)) | 1
}

/// xorshift64*: plenty for load spreading, never for anything secret.
fn next_u64() -> u64 {
    RNG.with(|r| {
        let mut x = r.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        r.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

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
