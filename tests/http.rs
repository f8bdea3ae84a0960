//! `mode = "http"` through the real binary: forwarding headers, keep-alive reuse to
//! servers, the error statuses, retries, WebSocket tunnels, h2c, and the access log.

mod common;
#[path = "support/http_backend.rs"]
mod http_backend;
#[path = "support/http_client.rs"]
mod http_client;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use common::*;
use http_backend::HttpBackend;
use http_client::{connect, get, read_response, send};
use tokio::time::Instant;

fn http_service(bind: SocketAddr, keys: &str, backends: &[&HttpBackend]) -> String {
    let list: Vec<(&str, SocketAddr, &str)> = backends.iter().map(|b| (b.name.as_str(), b.addr, "")).collect();
    service_toml("", "api", bind, &format!("mode = \"http\"\n{keys}"), &list)
}

#[test]
fn proxies_requests_with_forwarding_headers_and_without_hop_by_hop_ones() {
    let b = HttpBackend::start("b1");
    let bind = free_addr();
    let v = Vipgate::start_accepting(&http_service(bind, "", &[&b]), bind);

    let r = get(bind, "/v3/auth/tokens?x=1", "X-Private: secret\r\nConnection: close, X-Private\r\nKeep-Alive: 5\r\n");
    assert_eq!(r.status, 200, "{}", v.log());
    assert_eq!(r.field("server").as_deref(), Some("b1"));
    assert_eq!(r.field("path").as_deref(), Some("/v3/auth/tokens?x=1"));
    assert_eq!(r.seen_header("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(r.seen_header("x-forwarded-proto"), vec!["http"]);
    assert_eq!(r.seen_header("host"), vec!["test.example"], "Host passes unchanged (novnc checks Origin against it)");
    assert!(r.seen_header("x-private").is_empty(), "a header named in Connection must not reach the server");
    assert!(r.seen_header("keep-alive").is_empty());

    // A client-supplied X-Forwarded-For from an untrusted peer is dropped, not appended to.
    let r = get(bind, "/", "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n");
    assert_eq!(r.seen_header("x-forwarded-for"), vec!["127.0.0.1"], "spoofed XFF kept:\n{}", r.text());
    assert_eq!(r.seen_header("x-forwarded-proto"), vec!["http"]);

    // The access log line: client, service, server, method, path, status, bytes, timings.
    let line = v
        .wait_log_line(WAIT, |l| l.contains("request") && l.contains("path=/v3/auth/tokens"))
        .unwrap_or_else(|| panic!("no access log line:\n{}", v.log()));
    for field in [
        "client=127.0.0.1:",
        "service=api",
        "server=b1",
        "method=GET",
        "status=200",
        "bytes_in=0",
        "bytes_out=",
        "t_headers_ms=",
        "t_connect_ms=",
        "t_response_ms=",
        "t_total_ms=",
    ] {
        assert!(line.contains(field), "access log line lacks {field}: {line}");
    }
}

#[test]
fn trusted_forwarders_keep_and_extend_the_chain() {
    let b = HttpBackend::start("b1");
    let bind = free_addr();
    let keys = "trusted_forwarders = [\"127.0.0.0/8\"]\nforwarded_host = true\nforwarded = true\n";
    let _v = Vipgate::start_accepting(&http_service(bind, keys, &[&b]), bind);
    let r = get(bind, "/", "X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n");
    assert_eq!(r.seen_header("x-forwarded-for").join(","), "203.0.113.9, 127.0.0.1", "{}", r.text());
    assert_eq!(r.seen_header("x-forwarded-proto"), vec!["https"], "the front balancer saw https");
    assert_eq!(r.seen_header("x-forwarded-host"), vec!["test.example"]);
    let fwd = r.seen_header("forwarded").join(",");
    assert!(fwd.contains("for=127.0.0.1") && fwd.contains("host=test.example"), "{fwd}");
}

#[test]
fn keep_alive_connections_to_servers_are_reused() {
    let b = HttpBackend::start("b1");
    let bind = free_addr();
    let _v = Vipgate::start_accepting(&http_service(bind, "", &[&b]), bind);
    // 30 requests, each on its own client connection, one after another.
    for i in 0..30 {
        let r = get(bind, &format!("/n{i}"), "");
        assert_eq!(r.status, 200);
    }
    // And 30 on one kept-alive client connection.
    let mut s = connect(bind);
    for i in 0..30 {
        let r = send(&mut s, &format!("GET /k{i} HTTP/1.1\r\nHost: x\r\n\r\n")).expect("keep-alive response");
        assert_eq!(r.status, 200);
    }
    assert_eq!(b.requests(), 60);
    assert!(b.connections() <= 3, "60 requests opened {} server connections: no reuse", b.connections());
}

#[test]
fn no_server_up_is_503_at_once_and_connect_failures_retry_elsewhere() {
    let dead = free_addr();
    let b = HttpBackend::start("alive");
    let bind = free_addr();
    let list = [("dead", dead, ""), ("alive", b.addr, "")];
    let cfg = service_toml("", "api", bind, "mode = \"http\"\nbalance = \"roundrobin\"\n", &list);
    let v = Vipgate::start_accepting(&cfg, bind);
    for _ in 0..10 {
        let r = get(bind, "/", "");
        assert_eq!(r.status, 200, "a connect failure must be retried on the other server:\n{}", v.log());
        assert_eq!(r.field("server").as_deref(), Some("alive"));
    }
    drop(v);

    // Only dead servers: 503 after the retries, fast.
    let bind = free_addr();
    let cfg = service_toml("", "api", bind, "mode = \"http\"\n", &[("dead", dead, "")]);
    let _v = Vipgate::start_accepting(&cfg, bind);
    let t = Instant::now();
    let r = get(bind, "/", "");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(t.elapsed() < Duration::from_secs(5), "503 took {:?}", t.elapsed());

    // Checked and down: 503 without trying.
    let bind = free_addr();
    let cfg = service_toml(
        "",
        "api",
        bind,
        "mode = \"http\"\n[services.api.check]\nkind = \"tcp\"\ninterval = \"200ms\"\n",
        &[("dead", dead, "")],
    );
    let _v = Vipgate::start_accepting(&cfg, bind);
    let t = Instant::now();
    let r = get(bind, "/", "");
    assert_eq!(r.status, 503);
    assert!(r.text().contains("no server is available"), "{}", r.text());
    assert!(t.elapsed() < Duration::from_secs(2), "503 took {:?}", t.elapsed());
}

#[test]
fn server_failures_are_502_and_slow_servers_504() {
    let b = HttpBackend::start("b1");
    let bind = free_addr();
    let v = Vipgate::start_accepting(&http_service(bind, "server_timeout = \"1s\"\n", &[&b]), bind);
    let r = get(bind, "/close", "");
    assert_eq!(r.status, 502, "{}\n{}", r.text(), v.log());
    let t = Instant::now();
    let r = get(bind, "/slow?ms=5000", "");
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(t.elapsed() < Duration::from_secs(4), "504 after {:?}", t.elapsed());
    // The service still works afterwards.
    assert_eq!(get(bind, "/", "").status, 200);
}

#[test]
fn slow_oversized_and_malformed_heads_get_408_431_400() {
    let b = HttpBackend::start("b1");
    let bind = free_addr();
    let v = Vipgate::start_accepting(
        &http_service(bind, "header_timeout = \"1s\"\nmax_header_bytes = 8192\n", &[&b]),
        bind,
    );

    // Slowloris: half a head, then nothing.
    let mut s = connect(bind);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let t = Instant::now();
    let r = read_response(&mut s).expect("a 408, not a silent close");
    assert_eq!(r.status, 408);
    assert!(t.elapsed() < Duration::from_secs(4), "408 after {:?}", t.elapsed());

    // Headers over the limit.
    let mut s = connect(bind);
    let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000));
    let _ = s.write_all(big.as_bytes());
    let r = read_response(&mut s).expect("431");
    assert_eq!(r.status, 431);

    // Garbage.
    let mut s = connect(bind);
    let r = send(&mut s, "NOT HTTP AT ALL\r\n\r\n").expect("400");
    assert_eq!(r.status, 400);

    assert_eq!(b.requests(), 0, "none of these may reach the server");
    assert!(v.log().contains("status=408"), "{}", v.log());
}

#[test]
fn websocket_upgrade_tunnels_bytes_both_ways() {
    let b = HttpBackend::start("b1");
    let bind = free_addr();
    let v = Vipgate::start_accepting(
        &http_service(bind, "tunnel_timeout = \"2s\"\nclient_timeout = \"500ms\"\n", &[&b]),
        bind,
    );
    let mut s = connect(bind);
    let r = send(
        &mut s,
        "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .expect("101");
    assert_eq!(r.status, 101, "{}", v.log());
    assert_eq!(r.header("upgrade"), Some("websocket"));
    // Longer than client_timeout between messages: the tunnel has its own timeout.
    for msg in [&b"hello"[..], b"console output", &[0u8, 1, 2, 255]] {
        thread::sleep(Duration::from_millis(800));
        s.write_all(msg).unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).expect("echo through the tunnel");
        assert_eq!(&got, msg);
    }
    // Idle past tunnel_timeout: closed.
    let t = Instant::now();
    let mut buf = [0u8; 1];
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0);
    assert!(t.elapsed() < Duration::from_secs(6), "tunnel idle close after {:?}", t.elapsed());
    let line = v.wait_log_line(WAIT, |l| l.contains("tunnel closed")).expect("tunnel log line");
    assert!(line.contains("end=tunnel_timeout"), "{line}");
}

#[test]
fn h2c_prior_knowledge_from_a_client() {
    let b = HttpBackend::start("b1");
    let bind = free_addr();
    let _v = Vipgate::start_accepting(&http_service(bind, "h2c = true\n", &[&b]), bind);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let text = rt.block_on(async {
        use http_body_util::{BodyExt, Empty};
        let mut send = http_client::h2c(bind).await;
        let mut out = Vec::new();
        for i in 0..3 {
            let req =
                http::Request::get(format!("http://api.example/h2/{i}")).body(Empty::<bytes::Bytes>::new()).unwrap();
            let resp = send.send_request(req).await.expect("h2 response");
            assert_eq!(resp.status(), 200);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            out.push(String::from_utf8_lossy(&body).into_owned());
        }
        out
    });
    assert!(text[2].contains("path=/h2/2"), "{}", text[2]);
    assert!(text[0].contains("h:host=api.example"), "the :authority becomes Host for an HTTP/1.1 server:\n{}", text[0]);
}

#[test]
fn an_idle_h2c_connection_is_closed_after_header_timeout_but_a_busy_one_is_not() {
    let b = HttpBackend::start("b1");
    let bind = free_addr();
    let v = Vipgate::start_accepting(&http_service(bind, "h2c = true\nheader_timeout = \"1s\"\n", &[&b]), bind);

    // The preface and an empty SETTINGS frame, then nothing.
    let mut idle = connect(bind);
    idle.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").unwrap();
    let opened = Instant::now();
    let mut seen = Vec::new();
    idle.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let ended = idle.read_to_end(&mut seen);
    let took = opened.elapsed();
    assert!(ended.is_ok(), "the idle connection was not closed within 15 s: {ended:?}\n{}", v.log());
    // Frame types in what came back: 9-byte headers, the type in the fourth byte.
    let mut types = Vec::new();
    let mut at = 0;
    while at + 9 <= seen.len() {
        let len = (usize::from(seen[at]) << 16) | (usize::from(seen[at + 1]) << 8) | usize::from(seen[at + 2]);
        types.push(seen[at + 3]);
        at += 9 + len;
    }
    println!("idle h2c connection closed after {took:?}; frame types {types:?}");
    assert!(types.contains(&7), "no GOAWAY before the close: {types:?}");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(6), "closed after {took:?}");

    // A request that runs longer than header_timeout keeps its connection, and the
    // connection takes another request after it.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use http_body_util::{BodyExt, Empty};
        let mut send = http_client::h2c(bind).await;
        for path in ["/slow?ms=2500", "/after"] {
            let req =
                http::Request::get(format!("http://api.example{path}")).body(Empty::<bytes::Bytes>::new()).unwrap();
            let resp = send.send_request(req).await.unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(resp.status(), 200, "{path}");
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            assert!(String::from_utf8_lossy(&body).contains("server=b1"));
        }
    });
}

/// Peak resident memory of a process (VmHWM), in KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn upload(bind: SocketAddr, size: usize) -> (http_client::Resp, u64) {
    let mut s = connect(bind);
    s.write_all(format!("PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n").as_bytes()).unwrap();
    let chunk: Vec<u8> = (0..65536u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut sum = 0u64;
    let mut sent = 0;
    while sent < size {
        let n = chunk.len().min(size - sent);
        s.write_all(&chunk[..n]).unwrap();
        for b in &chunk[..n] {
            sum = sum.wrapping_mul(31).wrapping_add(u64::from(*b));
        }
        sent += n;
    }
    (read_response(&mut s).expect("upload response"), sum)
}

/// A glance-sized upload and download through vipgate must not raise its memory by more
/// than a few MiB: bodies stream with back-pressure, nothing is buffered whole.
/// `VIPGATE_HTTP_STREAM_MIB` sets the size (default 256).
#[test]
fn large_bodies_stream_in_bounded_memory() {
    let mib: usize = std::env::var("VIPGATE_HTTP_STREAM_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let b = HttpBackend::start("b1");
    let bind = free_addr();
    let v = Vipgate::start_accepting(&http_service(bind, "", &[&b]), bind);
    // Warm up (allocator arenas, pools), then take the baseline.
    let (r, _) = upload(bind, 8 << 20);
    assert_eq!(r.status, 200);
    assert_eq!(get(bind, "/big?bytes=8388608", "").body.len(), 8 << 20);
    let before = peak_rss_kib(v.pid());

    let size = mib << 20;
    let (r, sum) = upload(bind, size);
    assert_eq!(r.status, 200);
    assert_eq!(r.field("body_len"), Some(size.to_string()));
    assert_eq!(r.field("body_sum"), Some(sum.to_string()));

    let mut s = connect(bind);
    s.write_all(format!("GET /big?bytes={size} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1);
        head.push(byte[0]);
    }
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got += n;
    }
    assert_eq!(got, size, "download arrived whole");
    let after = peak_rss_kib(v.pid());
    let grew = after.saturating_sub(before);
    println!("{mib} MiB up and down: vipgate peak RSS {before} KiB -> {after} KiB (+{grew} KiB)");
    assert!(grew < 8 * 1024, "peak RSS grew by {grew} KiB streaming {mib} MiB each way");
}

#[test]
fn sigterm_finishes_the_request_in_flight_and_closes_idle_keep_alive() {
    let b = HttpBackend::start("b1");
    let bind = free_addr();
    let mut v = Vipgate::start_accepting(&http_service(bind, "", &[&b]), bind);
    // An idle kept-alive client connection.
    let mut idle = connect(bind);
    assert_eq!(send(&mut idle, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").expect("first").status, 200);
    // A request in flight for 1.5 s.
    let slow = thread::spawn(move || {
        let mut s = connect(bind);
        send(&mut s, "GET /slow?ms=1500 HTTP/1.1\r\nHost: x\r\n\r\n")
    });
    assert!(eventually(WAIT, || (b.requests() == 2).then_some(())).is_some());
    v.signal(libc::SIGTERM);
    let r = slow.join().unwrap().expect("the in-flight request is answered");
    assert_eq!(r.status, 200);
    // The idle connection was closed, not left to the grace period.
    let mut buf = [0u8; 1];
    assert_eq!(idle.read(&mut buf).unwrap_or(0), 0, "idle keep-alive connection left open");
    assert!(TcpStream::connect_timeout(&bind, Duration::from_millis(500)).is_err(), "listener still open");
    v.expect_exit_zero("after SIGTERM with http connections");
}
