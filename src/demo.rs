//! `vipgate demo`: three tiny HTTP backends on loopback with vipgate in front, a scripted
//! tour that shows requests spreading and a dead backend leaving and rejoining rotation,
//! then (unless `--once`) serving until Ctrl-C so one can point curl at it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

use crate::config;
use crate::runtime::{self, signals::Signals};
use crate::upstream::Server;

struct Backend {
    name: String,
    addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Backend {
    async fn start(name: &str, addr: SocketAddr) -> Result<Backend, String> {
        let listener = TcpListener::bind(addr).await.map_err(|e| format!("demo backend on {addr}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let task = tokio::spawn(serve_backend(name.to_string(), listener));
        Ok(Backend { name: name.to_string(), addr, task: Some(task) })
    }

    fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    async fn restart(&mut self) -> Result<(), String> {
        let again = Backend::start(&self.name, self.addr).await?;
        self.task = again.task;
        Ok(())
    }
}

async fn serve_backend(name: String, listener: TcpListener) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let name = name.clone();
        tokio::spawn(async move {
            // Read the request head (or whatever arrives within a moment), then answer.
            let mut buf = [0u8; 4096];
            let mut seen = Vec::new();
            while let Ok(Ok(n)) = timeout(Duration::from_millis(300), conn.read(&mut buf)).await {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
                if seen.windows(4).any(|w| w == b"\r\n\r\n")
                    || seen.windows(2).any(|w| w == b"\n\n")
                    || seen.len() > 16_384
                {
                    break;
                }
            }
            let body = format!("hello from {name}\n");
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

/// One request through the balancer; returns the backend's name.
async fn ask(addr: SocketAddr) -> String {
    let attempt = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        out.lines().last().map(|l| l.trim_start_matches("hello from ").to_string())
    };
    match timeout(Duration::from_secs(5), attempt).await {
        Ok(Some(name)) => name,
        _ => "(no answer)".to_string(),
    }
}

async fn wait_state(server: &Arc<Server>, up: bool) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(15) {
        if server.is_up() == up {
            return Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

async fn round(bind: SocketAddr, label: &str) {
    let mut names = Vec::new();
    for _ in 0..6 {
        names.push(ask(bind).await);
    }
    println!("  {label}: {}", names.join(", "));
}

pub async fn run(bind: SocketAddr, once: bool) -> Result<(), String> {
    let mut signals = Signals::install().map_err(|e| format!("signals: {e}"))?;
    let mut backends = Vec::new();
    for i in 1..=3 {
        backends.push(Backend::start(&format!("backend-{i}"), SocketAddr::from(([127, 0, 0, 1], 0))).await?);
    }
    let bind = if bind.port() == 0 {
        // The config wants a real port: take a free one from the kernel.
        let probe = std::net::TcpListener::bind(bind).map_err(|e| format!("{bind}: {e}"))?;
        probe.local_addr().map_err(|e| e.to_string())?
    } else {
        bind
    };
    let mut toml = format!(
        "[global]\ngrace = \"2s\"\n\n[services.demo]\nbind = \"{bind}\"\nbalance = \"roundrobin\"\n\
         [services.demo.check]\nkind = \"tcp\"\ninterval = \"500ms\"\nrise = 2\nfall = 2\n"
    );
    for b in &backends {
        toml.push_str(&format!("[[services.demo.servers]]\nname = \"{}\"\naddress = \"{}\"\n", b.name, b.addr));
    }
    let cfg = config::parse(&toml, "<demo>").map_err(|e| e.to_string())?;
    let running = runtime::start(&cfg).await.map_err(|e| format!("{e} (choose another address with --bind)"))?;
    let bind = running.local_addrs().first().map(|(_, a)| *a).unwrap_or(bind);
    let snapshot = running.snapshot();
    let servers = snapshot.services[0].pool.servers().to_vec();

    println!("vipgate demo: {bind} balances (roundrobin, tcp health check every 500ms) over");
    for b in &backends {
        println!("  {} at {}", b.name, b.addr);
    }
    println!("\nSix requests through vipgate:");
    round(bind, "answers").await;

    println!("\nStopping backend-2 ...");
    backends[1].stop();
    match wait_state(&servers[1], false).await {
        Some(d) => println!("  health check marked backend-2 DOWN after {} ms (fall = 2)", d.as_millis()),
        None => println!("  backend-2 still up after 15 s?"),
    }
    round(bind, "answers").await;

    println!("\nStarting backend-2 again ...");
    backends[1].restart().await?;
    match wait_state(&servers[1], true).await {
        Some(d) => println!("  backend-2 is UP again after {} ms (rise = 2)", d.as_millis()),
        None => println!("  backend-2 still down after 15 s?"),
    }
    round(bind, "answers").await;

    if !once {
        println!("\nServing on {bind}; try:  curl http://{bind}/   (Ctrl-C to stop)");
        let sig = signals.terminate().await;
        println!("{sig}: stopping");
    }
    running.shutdown(Duration::from_secs(2)).await;
    for b in &mut backends {
        b.stop();
    }
    Ok(())
}
