//! An upgraded connection (WebSocket, any `Upgrade`): after the 101, raw bytes both ways
//! with its own idle timeout, until either side closes.

use std::sync::Arc;
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tracing::info;

use super::ConnCtx;
use crate::upstream::Lease;

pub(super) fn spawn(ctx: Arc<ConnCtx>, client: OnUpgrade, server: OnUpgrade, lease: Lease, path: String) {
    let guard = ctx.tracker.enter();
    let mut close_all = ctx.close_all.clone();
    let mut sessions = lease.server().sessions();
    tokio::spawn(async move {
        let started = Instant::now();
        let (client, server) = match tokio::join!(client, server) {
            (Ok(c), Ok(s)) => (c, s),
            (c, s) => {
                let e = c.err().or(s.err()).map(|e| e.to_string()).unwrap_or_default();
                info!(client = %ctx.client, service = %ctx.service.name, server = %lease.server().name, path = %path, error = %e, "tunnel failed to start");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut server = TokioIo::new(server);
        let idle = ctx.http.cfg.tunnel_timeout;
        // A tunnel's writes may stall as long as it may idle (a console left open).
        ctx.stall_limit.set(idle);
        let (mut up, mut down) = (0u64, 0u64);
        let closing = async move {
            // Drop the borrow guard at once: it must not live across an await.
            let closed = close_all.wait_for(|c| *c).await.is_ok();
            if !closed {
                std::future::pending::<()>().await;
            }
        };
        let killed = async move {
            if sessions.changed().await.is_err() {
                // The server left with its snapshot: nothing will ask to kill us.
                std::future::pending::<()>().await;
            }
        };
        let end = tokio::select! {
            r = pump(&mut client, &mut server, idle, &mut up, &mut down) => r,
            _ = closing => "shutdown",
            _ = killed => "killed",
        };
        let server_name = lease.server().name.clone();
        drop(lease);
        info!(client = %ctx.client, service = %ctx.service.name, server = %server_name, path = %path,
            bytes_in = up, bytes_out = down, duration_ms = started.elapsed().as_millis() as u64, end = %end,
            "tunnel closed");
        drop(guard);
    });
}

/// Copy both ways until both directions ended, or nothing moved for `idle`.
async fn pump<C, S>(
    client: &mut C,
    server: &mut S,
    idle: Option<Duration>,
    up: &mut u64,
    down: &mut u64,
) -> &'static str
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut cbuf = vec![0u8; 16 * 1024];
    let mut sbuf = vec![0u8; 16 * 1024];
    let (mut client_open, mut server_open) = (true, true);
    while client_open || server_open {
        let wait = async {
            match idle {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = client.read(&mut cbuf), if client_open => match r {
                Ok(0) | Err(_) => {
                    client_open = false;
                    let _ = server.shutdown().await;
                }
                Ok(n) => {
                    if server.write_all(&cbuf[..n]).await.is_err() {
                        return "server_close";
                    }
                    *up += n as u64;
                }
            },
            r = server.read(&mut sbuf), if server_open => match r {
                Ok(0) | Err(_) => {
                    server_open = false;
                    let _ = client.shutdown().await;
                }
                Ok(n) => {
                    if client.write_all(&sbuf[..n]).await.is_err() {
                        return "client_close";
                    }
                    *down += n as u64;
                }
            },
            _ = wait => return "tunnel_timeout",
        }
    }
    "closed"
}
