//! Raw client bytes into a real http service: vipgate runs in-process (its library API) on
//! a loopback port in front of a loopback server, and each input is written to a fresh
//! connection, which is then half-closed and read to its end. Any panic in any of
//! vipgate's tasks aborts the process, so libFuzzer sees it; a connection that neither
//! answers nor closes within the bounds below is a finding too (vipgate's own timeouts
//! are shorter).
#![no_main]
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONFIG: &str = r#"
[services.api]
bind = "FRONT"
mode = "http"
header_timeout = "1s"
client_timeout = "2s"
server_timeout = "2s"
h2c = true
cookie = "SERVERID"
deny = [{ path_prefix = "/server-status" }, { path_contains = "/." }]
[[services.api.routes]]
host = "*.example.org"
pool = "other"
[[services.api.routes]]
path_prefix = "/identity"
pool = "other"
[services.api.request]
set_headers = { X-Fuzz = "1" }
del_headers = ["X-Remove"]
[[services.api.servers]]
name = "a"
address = "BACKEND"
[[services.api.servers]]
name = "b"
address = "BACKEND"
pool = "other"
"#;

struct Harness {
    _rt: tokio::runtime::Runtime,
    front: SocketAddr,
}

/// A server that reads a request head (or whatever comes within a second) and answers
/// with a small response, keeping the connection for more.
async fn backend(listener: tokio::net::TcpListener) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut seen = Vec::new();
            loop {
                let n = match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => n,
                    _ => return,
                };
                seen.extend_from_slice(&buf[..n]);
                if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    seen.clear();
                    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nSet-Cookie: app=1\r\nLocation: http://x.example.org/a\r\n\r\nok";
                    if s.write_all(resp).await.is_err() {
                        return;
                    }
                }
                if seen.len() > 1 << 20 {
                    return;
                }
            }
        });
    }
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        // A panic anywhere (a tokio task included) must end the process for libFuzzer.
        std::panic::set_hook(Box::new(|info| {
            eprintln!("{info}");
            std::process::abort();
        }));
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let front = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind backend");
            let addr = listener.local_addr().expect("backend address");
            tokio::spawn(backend(listener));
            // A free port for vipgate's listener (the config wants a real one).
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
            let front = probe.local_addr().expect("free port");
            drop(probe);
            let text = CONFIG.replace("BACKEND", &addr.to_string()).replace("FRONT", &front.to_string());
            let cfg = vipgate::config::parse(&text, "fuzz.toml").expect("fuzz config");
            let running = vipgate::runtime::start(&cfg).await.expect("start vipgate");
            let front = running.local_addrs()[0].1;
            // Serves for the life of the process.
            std::mem::forget(running);
            front
        });
        Harness { _rt: rt, front }
    })
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let Ok(mut s) = TcpStream::connect_timeout(&h.front, Duration::from_secs(5)) else {
        panic!("vipgate stopped accepting");
    };
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = s.write_all(data);
    let _ = s.shutdown(Shutdown::Write);
    let started = Instant::now();
    let mut buf = [0u8; 16 * 1024];
    let mut total = 0usize;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                panic!("connection neither answered nor closed within {:?}", started.elapsed())
            }
            Err(_) => break,
        }
        assert!(total < 64 << 20, "more than 64 MiB of response to {} bytes", data.len());
    }
});
