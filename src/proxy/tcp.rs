//! One client connection in tcp mode: pick a server, connect (retrying other servers on
//! failure), forward, and log one line when it ends.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use super::proxy_protocol;
use super::pump::{forward, End, Timeouts};
use crate::net;
use crate::proxy::Service;
use crate::upstream::{NoPick, Tried};

/// Bound on waiting for a front balancer's PROXY header (it sends it with the connect).
const PROXY_HEADER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub async fn handle(
    client: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    service: Arc<Service>,
    use_splice: bool,
    shutdown: watch::Receiver<bool>,
) {
    let started = Instant::now();
    service.stats.connections_total.fetch_add(1, Relaxed);
    // Behind a front balancer the PROXY header names the real client: it drives source
    // hashing, the log line and the header we send on.
    let wait = service.client_timeout.unwrap_or(PROXY_HEADER_WAIT).min(PROXY_HEADER_WAIT);
    let (peer, local) = match proxy_protocol::accept(&client, peer, local, service.accept_proxy.as_ref(), wait).await {
        Ok(endpoints) => (endpoints.client, endpoints.local),
        Err(e) => {
            log_ended_early(peer, &service, started, End::BadProxyHeader, &e.to_string());
            return;
        }
    };
    let mut tried = Tried::default();
    let mut failures = 0u32;
    let (lease, upstream) = loop {
        let lease = match service.pool.pick_queued(peer.ip(), &tried, service.queue_timeout).await {
            Ok(lease) => lease,
            Err(why) => {
                let reason = match why {
                    NoPick::Full => {
                        service.stats.queue_timeouts.fetch_add(1, Relaxed);
                        "queue timeout: every server is at its maxconn"
                    }
                    NoPick::NoServer if failures == 0 => "no server available",
                    NoPick::NoServer => "every server tried failed to connect",
                };
                log_refused(peer, &service, started, reason);
                return;
            }
        };
        let server = lease.server();
        let connected = match net::connect(server.address(), server.source, service.connect_timeout).await {
            Ok(mut stream) => match service.send_proxy {
                Some(version) => {
                    let header = proxy_protocol::encode(version, peer, local);
                    stream.write_all(&header).await.map(|()| stream)
                }
                None => Ok(stream),
            },
            Err(e) => Err(e),
        };
        match connected {
            Ok(stream) => break (lease, stream),
            Err(e) => {
                server.stats.connect_failures.fetch_add(1, Relaxed);
                super::passive_failure(&service, server, &e);
                warn!(service = %service.name, server = %server.name, address = %server.address(), error = %e, "connect failed");
                tried.add(&lease, &service.pool);
                failures += 1;
                if failures > service.retries {
                    log_refused(peer, &service, started, "connect retries exhausted");
                    return;
                }
                service.stats.retries.fetch_add(1, Relaxed);
            }
        }
    };
    let server = Arc::clone(lease.server());
    server.stats.connections_total.fetch_add(1, Relaxed);
    net::tune_stream(&upstream, &service.keepalive);
    let timeouts = Timeouts { client: service.client_timeout, server: service.server_timeout };
    let mut sessions = server.sessions();
    let mut shutdown = shutdown;
    let closing = async move {
        // Drop the borrow guard at once: it must not live across an await.
        let closed = shutdown.wait_for(|closing| *closing).await.is_ok();
        if !closed {
            // The runtime handle was dropped without a shutdown: nothing will end us.
            std::future::pending::<()>().await;
        }
        End::Shutdown
    };
    let stop = async move {
        tokio::select! {
            end = closing => end,
            r = sessions.changed() => match r {
                Ok(()) => End::Killed,
                // The server is gone with its snapshot: nothing will ever ask to kill us.
                Err(_) => std::future::pending().await,
            },
        }
    };
    let outcome = forward(&client, &upstream, timeouts, use_splice, stop).await;
    drop(lease);
    match (&outcome.end, &outcome.error) {
        // The server's side failed (a reset): passive health counts it.
        (End::ServerClose, Some(e)) => super::passive_failure(&service, &server, e),
        _ => server.traffic_ok(),
    }
    server.stats.bytes_in.fetch_add(outcome.bytes_in, Relaxed);
    server.stats.bytes_out.fetch_add(outcome.bytes_out, Relaxed);
    let duration_ms = started.elapsed().as_millis() as u64;
    let end = outcome.end;
    match outcome.error {
        None => info!(
            client = %peer, service = %service.name, server = %server.name,
            bytes_in = outcome.bytes_in, bytes_out = outcome.bytes_out, duration_ms, end = %end,
            "connection closed"
        ),
        Some(e) => info!(
            client = %peer, service = %service.name, server = %server.name,
            bytes_in = outcome.bytes_in, bytes_out = outcome.bytes_out, duration_ms, end = %end, error = %e,
            "connection closed"
        ),
    }
}

fn log_refused(peer: SocketAddr, service: &Service, started: Instant, reason: &str) {
    log_ended_early(peer, service, started, End::ConnectFailure, reason);
}

/// The log line of a connection that never reached a server.
fn log_ended_early(peer: SocketAddr, service: &Service, started: Instant, end: End, reason: &str) {
    warn!(
        client = %peer,
        service = %service.name,
        server = "-",
        bytes_in = 0u64,
        bytes_out = 0u64,
        duration_ms = started.elapsed().as_millis() as u64,
        end = %end,
        error = ?reason,
        "connection closed"
    );
}
