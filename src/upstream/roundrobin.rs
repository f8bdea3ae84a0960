//! `roundrobin`: smooth weighted round-robin. Weights 5,1,1 give a a b a c a a, never
//! five in a row to one server, and the order only looks at servers eligible right now.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use super::Balancer;
use super::Server;

pub struct RoundRobin {
    /// Running "current weight" per server; a short critical section per pick.
    current: Mutex<Vec<i64>>,
}

impl RoundRobin {
    pub fn new(n: usize) -> Self {
        RoundRobin { current: Mutex::new(vec![0; n]) }
    }
}

impl Balancer for RoundRobin {
    fn pick(&self, servers: &[Arc<Server>], eligible: &dyn Fn(usize) -> bool, _client: IpAddr) -> Option<usize> {
        let mut current = self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.len() != servers.len() {
            current.resize(servers.len(), 0);
        }
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, s) in servers.iter().enumerate() {
            if !eligible(i) {
                continue;
            }
            let w = i64::from(s.weight());
            current[i] += w;
            total += w;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let b = best?;
        current[b] -= total;
        Some(b)
    }
}
