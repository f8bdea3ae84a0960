//! `maxconn` per server and per service, and the bounded wait for a slot
//! (`queue_timeout`): excess clients wait, then are served or refused (closed in tcp mode,
//! 503 in http mode); a full active server never spills to a backup; the counters say so.

mod common;
#[path = "support/http_backend.rs"]
mod http_backend;
#[path = "support/http_client.rs"]
mod http_client;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use tokio::time::Instant;

use common::*;
use http_backend::HttpBackend;
use http_client::metric;

/// Connect and wait up to `wait` for the server's name line: None = nothing came (the
/// client is queued, or refused: see `wait_closed`).
fn name_within(s: &mut TcpStream, wait: Duration) -> Option<String> {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while let Ok(1) = s.read(&mut b) {
        if b[0] == b'\n' {
            return Some(String::from_utf8_lossy(&line).into_owned());
        }
        line.push(b[0]);
    }
    None
}

#[test]
fn a_full_server_queues_clients_then_serves_or_refuses_them() {
    let a = Backend::echo_any("a");
    let b = Backend::echo_any("b");
    let (bind, admin) = (free_addr(), free_addr());
    let cfg = format!(
        "{}[admin]\nbind = \"{admin}\"\n\n[services.db]\nbind = \"{bind}\"\nqueue_timeout = \"{{QT}}\"\n{}",
        global(""),
        servers("db", &[("a", a.addr, "maxconn = 1"), ("b", b.addr, "backup = true")])
    );

    let v = Vipgate::start(&cfg.replace("{QT}", "10s"), bind);
    let (first, name) = hold(bind);
    assert_eq!(name, "a");
    // The second waits for a's slot: the backup is for failures, not for load.
    let mut second = connect(bind);
    second.write_all(b"hello\n").unwrap();
    assert_eq!(name_within(&mut second, Duration::from_millis(800)), None, "a queued client was served at once");
    let freed = Instant::now();
    drop(first.shutdown(std::net::Shutdown::Both));
    assert_eq!(name_within(&mut second, Duration::from_secs(5)).as_deref(), Some("a"), "{}", v.log());
    assert!(freed.elapsed() < Duration::from_secs(5));
    // What it sent while queued was kept, not lost.
    let mut echo = String::new();
    second.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 6];
    second.read_exact(&mut buf).unwrap();
    echo.push_str(&String::from_utf8_lossy(&buf));
    assert_eq!(echo, "hello\n");
    assert_eq!(b.accepted.load(std::sync::atomic::Ordering::SeqCst), 0, "the backup took a client");
    drop(v);

    // A short queue_timeout: the waiting client is closed, and counted.
    let v = Vipgate::start(&cfg.replace("{QT}", "300ms"), bind);
    let (_held, name) = hold(bind);
    assert_eq!(name, "a");
    let mut refused = connect(bind);
    let waited = wait_closed(&mut refused, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}\n{}", v.log()));
    assert!(waited >= Duration::from_millis(250), "closed after {waited:?}, before queue_timeout");
    let ok = eventually(WAIT, || (metric(admin, "vipgate_service_queue_timeouts_total", "db") == 1.0).then_some(()));
    assert!(ok.is_some(), "queue timeout not counted");
    assert!(v.log().contains("queue timeout"), "{}", v.log());
}

#[test]
fn a_service_at_maxconn_stops_accepting_until_a_connection_ends() {
    let a = Backend::echo_any("a");
    let (bind, admin) = (free_addr(), free_addr());
    let cfg = format!(
        "{}[admin]\nbind = \"{admin}\"\n\n[services.api]\nbind = \"{bind}\"\nmaxconn = 2\n{}",
        global(""),
        servers("api", &[("a", a.addr, "")])
    );
    let v = Vipgate::start(&cfg, bind);
    let (one, _) = hold(bind);
    let (_two, _) = hold(bind);
    // The kernel completes the handshake (backlog); vipgate does not take it yet.
    let mut third = connect(bind);
    assert_eq!(name_within(&mut third, Duration::from_millis(800)), None, "a third client was taken");
    // (`active`, not `accepted`: the readiness probe of `Vipgate::start` was one too.)
    assert_eq!(a.active.load(std::sync::atomic::Ordering::SeqCst), 2);
    drop(one);
    assert_eq!(name_within(&mut third, Duration::from_secs(5)).as_deref(), Some("a"), "{}", v.log());
    assert!(metric(admin, "vipgate_service_maxconn_reached_total", "api") >= 1.0);
    assert!(v.log().contains("service at its maxconn"), "{}", v.log());
}

#[test]
fn http_requests_queue_for_a_full_server_then_get_503() {
    let web = HttpBackend::start("web");
    let bind = free_addr();
    let cfg = format!(
        "{}[services.api]\nbind = \"{bind}\"\nmode = \"http\"\nqueue_timeout = \"{{QT}}\"\n{}",
        global(""),
        servers("api", &[("web", web.addr, "maxconn = 1")])
    );
    for (qt, want) in [("10s", 200), ("300ms", 503)] {
        let v = Vipgate::start(&cfg.replace("{QT}", qt), bind);
        let before = web.requests();
        let slow = std::thread::spawn(move || http_client::get(bind, "/slow?ms=1500", ""));
        // Let the slow request take the slot first.
        let ok = eventually(WAIT, || (web.requests() > before).then_some(()));
        assert!(ok.is_some());
        let started = Instant::now();
        let r = http_client::get(bind, "/", "");
        let took = started.elapsed();
        assert_eq!(r.status, want, "queue_timeout {qt}: {}\n{}", r.text(), v.log());
        if want == 200 {
            assert!(took >= Duration::from_millis(800), "served after {took:?}: it did not wait for the slot");
        } else {
            assert!(r.text().contains("queue timeout"), "{}", r.text());
            assert!(took < Duration::from_millis(1400), "refused after {took:?}");
        }
        assert_eq!(slow.join().unwrap().status, 200);
        drop(v);
    }
}

#[test]
fn a_reload_that_raises_maxconn_lets_waiting_clients_in() {
    let a = Backend::echo_any("a");
    let bind = free_addr();
    let cfg = |max: u32| {
        format!(
            "{}[services.api]\nbind = \"{bind}\"\nmaxconn = {max}\n{}",
            global(""),
            servers("api", &[("a", a.addr, "")])
        )
    };
    let v = Vipgate::start(&cfg(1), bind);
    let (_one, _) = hold(bind);
    let mut waiting = connect(bind);
    assert_eq!(name_within(&mut waiting, Duration::from_millis(800)), None, "maxconn = 1 let a second client in");
    std::fs::write(&v.config, cfg(4)).unwrap();
    v.signal(libc::SIGHUP);
    assert_eq!(
        name_within(&mut waiting, Duration::from_secs(10)).as_deref(),
        Some("a"),
        "the raised limit did not let the waiting client in:\n{}",
        v.log()
    );
    assert!(v.log().contains("accepting again"), "{}", v.log());
}
