//! `source`: weighted rendezvous hashing on the client IP. The same client lands on the
//! same server while the set is unchanged; when one of N servers leaves (or goes down),
//! only the clients it had move, about 1/N. No table to rebuild: health changes just
//! make a server ineligible, and the next-highest score takes its clients.

use std::net::IpAddr;
use std::sync::Arc;

use super::hash::{client_key, hrw_hash, hrw_score};
use super::Balancer;
use super::Server;

pub struct SourceHash;

impl SourceHash {
    pub fn new(_servers: &[Arc<Server>]) -> Self {
        SourceHash
    }
}

impl Balancer for SourceHash {
    fn pick(&self, servers: &[Arc<Server>], eligible: &dyn Fn(usize) -> bool, client: IpAddr) -> Option<usize> {
        let key = client_key(client);
        // All eligible weights equal (the usual case): the weighted score is monotonic in
        // the raw hash, so comparing hashes picks the same server without a logarithm per
        // server. Weights change at run time (admin API), so this is decided per pick.
        let mut weights = (0..servers.len()).filter(|&i| eligible(i)).map(|i| servers[i].weight());
        let first = weights.next();
        if weights.all(|w| Some(w) == first) {
            return (0..servers.len()).filter(|&i| eligible(i)).max_by_key(|&i| hrw_hash(key, servers[i].hash_key));
        }
        let mut best: Option<(usize, f64)> = None;
        for (i, s) in servers.iter().enumerate() {
            if !eligible(i) {
                continue;
            }
            let score = hrw_score(key, s.hash_key, s.weight());
            if best.is_none_or(|(_, b)| score > b) {
                best = Some((i, score));
            }
        }
        best.map(|(i, _)| i)
    }
}
