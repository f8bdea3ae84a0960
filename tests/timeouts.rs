//! Idle timeouts: idle connections are closed, active ones are not, "0" disables.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::Duration;
use tokio::time::Instant;

use common::*;

/// Echo backend `b1` behind service `idle` with the given client/server timeouts, and a
/// connection held open through it with the server name it got.
fn held(client: &str, server: &str) -> (EchoService, TcpStream, String) {
    let svc = echo_service(
        "idle",
        "",
        &format!("client_timeout = \"{client}\"\nserver_timeout = \"{server}\""),
        &[("b1", "")],
    );
    let (s, name) = hold(svc.bind);
    (svc, s, name)
}

#[test]
fn idle_connection_is_closed() {
    let (svc, mut s, name) = held("300ms", "300ms");
    assert_eq!(name, "b1");
    let port = s.local_addr().unwrap().port();
    let r = wait_closed(&mut s, Duration::from_secs(10));
    assert!(r.is_ok(), "idle connection with 300ms timeouts: {}", r.unwrap_err());

    // The connection log line names a timeout as the end.
    let line = svc.vipgate.wait_client_line(port, |_| true);
    let end = field(&line, "end").unwrap_or_default();
    assert!(end == "client_timeout" || end == "server_timeout", "end should be a timeout: {line}");
}

#[test]
fn active_connection_stays_open() {
    let (_svc, mut s, _) = held("300ms", "300ms");
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < Duration::from_millis(1500) {
        let msg = format!("tick {i}\n");
        s.write_all(msg.as_bytes()).unwrap_or_else(|e| panic!("write {i} after {:?}: {e}", start.elapsed()));
        let got = read_line(&mut s).unwrap_or_else(|e| panic!("read {i} after {:?}: {e}", start.elapsed()));
        assert_eq!(got, msg.trim_end(), "echo {i} after {:?} (empty = closed)", start.elapsed());
        i += 1;
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn zero_means_no_timeout() {
    let (_svc, mut s, _) = held("0", "0");
    thread::sleep(Duration::from_millis(1500));
    s.write_all(b"still here\n").expect("write after idle");
    assert_eq!(read_line(&mut s).unwrap(), "still here", "connection with timeouts \"0\" was closed while idle");
}

#[test]
fn defaults_section_timeouts_apply() {
    let backend = Backend::echo_any("b1");
    let bind = free_addr();
    let cfg = format!(
        "{}\n[defaults]\nclient_timeout = \"300ms\"\nserver_timeout = \"300ms\"\n\n[services.idle]\nbind = \"{}\"\n{}",
        global(""),
        a(bind),
        servers("idle", &[("b1", backend.addr, "")])
    );
    let _v = Vipgate::start(&cfg, bind);
    let (mut s, _) = hold(bind);
    let r = wait_closed(&mut s, Duration::from_secs(10));
    assert!(r.is_ok(), "[defaults] client/server_timeout = 300ms not applied: {}", r.unwrap_err());
}
