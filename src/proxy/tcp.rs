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

use super::connect::Attempts;
use super::proxy_protocol;
use super::pump::{forward, End, Timeouts};
use crate::net;
use crate::proxy::Service;

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
    let wait = service.config.client_timeout.unwrap_or(PROXY_HEADER_WAIT).min(PROXY_HEADER_WAIT);
    let (peer, local) =
        match proxy_protocol::accept(&client, peer, local, service.config.accept_proxy.as_ref(), wait).await {
            Ok(endpoints) => (endpoints.client, endpoints.local),
            Err(e) => {
                log_ended_early(peer, &service, started, End::BadProxyHeader, &e.to_string());
                return;
            }
        };
    let mut attempts = Attempts::new(&service, &service.pool, peer.ip(), None);
    let (connect_timeout, send_proxy) = (service.config.connect_timeout, service.config.send_proxy);
    let opened = attempts
        .connect(|server| async move {
            let mut stream = net::connect(server.address(), server.source, connect_timeout).await?;
            if let Some(version) = send_proxy {
                stream.write_all(&proxy_protocol::encode(version, peer, local)).await?;
            }
            Ok::<_, std::io::Error>(stream)
        })
        .await;
    let (lease, upstream) = match opened {
        Ok(opened) => opened,
        Err(refused) => {
            log_refused(peer, &service, started, &refused.to_string());
            return;
        }
    };
    let server = Arc::clone(lease.server());
    server.stats.connections_total.fetch_add(1, Relaxed);
    net::tune_stream(&upstream, &service.config.keepalive);
    let timeouts = Timeouts { client: service.config.client_timeout, server: service.config.server_timeout };
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
