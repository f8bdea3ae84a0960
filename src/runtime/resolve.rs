//! Servers given as HOST:PORT are looked up again every `resolve_interval`: in containers
//! a server's IP changes when it is replaced, and a balancer that resolved once at start
//! would keep sending clients to a dead address. New connections and probes go to the new
//! address; open connections stay where they are, but idle keep-alive (and shared HTTP/2)
//! connections to the old address are not used again. A failed lookup keeps the last address
//! (a DNS hiccup must not take a working server away), logged once until it recovers.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tracing::{info, warn};

use super::Snapshot;
use crate::upstream::Server;

/// One lookup may take this long before it counts as failed.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// While re-resolution is off, how often to look whether a reload turned it on.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Run until aborted (at shutdown). Follows reloads: each round reads the servers and the
/// interval from the snapshot in force.
pub async fn run(snapshot: Arc<ArcSwap<Snapshot>>) {
    let mut failing: HashSet<(String, String)> = HashSet::new();
    loop {
        let interval = snapshot.load().resolve_interval;
        tokio::time::sleep(interval.unwrap_or(IDLE_POLL)).await;
        if interval.is_none() {
            continue;
        }
        let current = snapshot.load_full();
        // A server shared by several route pools is looked up once (by identity).
        let mut seen: Vec<usize> = Vec::new();
        for service in &current.services {
            for server in service.pool.servers() {
                let Some(host) = server.host.as_deref() else { continue };
                let id = Arc::as_ptr(server) as usize;
                if seen.contains(&id) {
                    continue;
                }
                seen.push(id);
                let key = (service.name.clone(), server.name.clone());
                match lookup(host, server.configured.port()).await {
                    Ok(addrs) => {
                        if failing.remove(&key) {
                            info!(service = %service.name, server = %server.name, host, "server name resolves again");
                        }
                        apply(&service.name, server, &addrs);
                    }
                    Err(e) => {
                        if failing.insert(key) {
                            warn!(service = %service.name, server = %server.name, host, error = %e,
                                address = %server.address(), "cannot resolve the server's name; keeping its last address");
                        }
                    }
                }
            }
        }
    }
}

async fn lookup(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    match tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(addrs)) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                Err("no address".to_string())
            } else {
                Ok(addrs)
            }
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {LOOKUP_TIMEOUT:?}")),
    }
}

/// Keep the current address while the name still lists it (several A records must not
/// flap a server between them); otherwise take the first, preferring the same family.
fn apply(service: &str, server: &Server, addrs: &[SocketAddr]) {
    let now = server.address();
    if addrs.contains(&now) {
        return;
    }
    let Some(&next) = addrs.iter().find(|a| a.is_ipv4() == now.is_ipv4()).or_else(|| addrs.first()) else {
        return;
    };
    server.set_address(next);
    info!(service, server = %server.name, host = server.host.as_deref().unwrap_or(""), old = %now, new = %next,
        "server address changed (new name resolution)");
}
