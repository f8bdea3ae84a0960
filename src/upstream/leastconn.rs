//! `leastconn`: fewest active connections relative to weight; ties go round-robin so
//! equal servers share new connections instead of the first one taking every tie.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use super::Balancer;
use super::Server;

#[derive(Default)]
pub struct LeastConn {
    next: AtomicUsize,
}

impl Balancer for LeastConn {
    fn pick(&self, servers: &[Arc<Server>], eligible: &dyn Fn(usize) -> bool, _client: IpAddr) -> Option<usize> {
        let n = servers.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Relaxed) % n;
        let mut best: Option<usize> = None;
        for k in 0..n {
            let i = (start + k) % n;
            if !eligible(i) {
                continue;
            }
            best = match best {
                None => Some(i),
                // a.active / a.weight < b.active / b.weight, without division.
                Some(b) => {
                    let (a, bs) = (&servers[i], &servers[b]);
                    let lhs = u64::from(a.active()) * u64::from(bs.weight());
                    let rhs = u64::from(bs.active()) * u64::from(a.weight());
                    if lhs < rhs {
                        Some(i)
                    } else {
                        Some(b)
                    }
                }
            };
        }
        best
    }
}
