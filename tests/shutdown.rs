//! SIGTERM / SIGINT: listeners close at once, open connections drain for up to `grace`,
//! then the process exits 0.

mod common;

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;
use tokio::time::Instant;

use common::*;

const SLOW_TOTAL: usize = 1024 * 1024;
const SLOW_CHUNK: usize = 64 * 1024;

/// Backend that sends SLOW_TOTAL pattern bytes in 16 chunks over about two seconds, then
/// closes.
fn slow_backend() -> Backend {
    Backend::with_handler("slow", "127.0.0.1:0".parse().unwrap(), |mut s| {
        use std::io::Write;
        let _ = s.set_write_timeout(Some(Duration::from_secs(30)));
        let mut pat = Pattern::new(0xd7a1);
        let mut buf = vec![0u8; SLOW_CHUNK];
        for _ in 0..SLOW_TOTAL / SLOW_CHUNK {
            pat.fill(&mut buf);
            if s.write_all(&buf).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(125));
        }
        let _ = s.shutdown(std::net::Shutdown::Both);
    })
}

fn expected_hash() -> (u64, u64) {
    pattern_stream(0xd7a1, SLOW_CHUNK, SLOW_TOTAL as u64, |_| {})
}

/// Echo backend `b1` behind service `drain`, with `global_extra` in `[global]`.
fn drain_service(global_extra: &str) -> EchoService {
    echo_service_in(global_extra, "drain", "", "", &[("b1", "")])
}

/// Poll until a connect to `addr` is refused; Err with what happened otherwise.
fn wait_refused(addr: SocketAddr, timeout: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < timeout {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Ok(start.elapsed()),
            Err(e) => last = format!("error {e}"),
            Ok(_) => last = "accepted".into(),
        }
        thread::sleep(Duration::from_millis(50));
    }
    Err(format!("connects still not refused after {timeout:?} (last: {last})"))
}

#[test]
fn sigterm_refuses_new_connects_and_drains_in_flight_transfer() {
    let backend = slow_backend();
    let (mut v, bind) = start_service("", "drain", "", &[("b1", backend.addr, "")]); // default grace (30s)

    let mut s = connect(bind);
    let mut h = StreamHash::default();
    let mut buf = vec![0u8; 64 * 1024];
    let n = s.read(&mut buf).expect("first bytes of slow transfer");
    assert!(n > 0, "slow transfer closed at once");
    h.update(&buf[..n]);

    v.signal(libc::SIGTERM);
    let refused = wait_refused(bind, Duration::from_secs(5));
    assert!(refused.is_ok(), "after SIGTERM: {}", refused.unwrap_err());

    if let Err(e) = hash_to_eof(&mut s, &mut h, buf.len(), u64::MAX) {
        panic!("in-flight transfer broken after {} bytes: {e}\n{}", h.len, v.log());
    }
    assert_eq!(h.finish(), expected_hash(), "in-flight transfer not intact ({} bytes)", h.len);
    // The server is done and so is the client: close our side too (a half-closed
    // connection is still a connection to drain).
    drop(s);

    v.expect_exit_zero("after SIGTERM drain, once its last connection ended");
}

#[test]
fn sigterm_without_connections_exits_promptly() {
    let mut svc = drain_service("");
    // The readiness probe's connection must be gone before we signal.
    thread::sleep(Duration::from_millis(300));
    svc.vipgate.signal(libc::SIGTERM);
    svc.vipgate.expect_exit_zero("after SIGTERM while idle (grace is 30s, nothing to drain)");
}

#[test]
fn grace_expiry_closes_idle_connection_and_exits_zero() {
    let mut svc = drain_service("grace = \"500ms\"");
    let v = &mut svc.vipgate;
    let (mut s, _) = hold(svc.bind);
    let port = s.local_addr().unwrap().port();
    v.signal(libc::SIGTERM);
    v.expect_exit_zero("after SIGTERM with grace = 500ms (grace expiry)");
    let r = wait_closed(&mut s, Duration::from_secs(5));
    assert!(r.is_ok(), "client connection after exit: {}", r.unwrap_err());
    let line = v.wait_client_line(port, |_| true);
    assert_eq!(field(&line, "end").as_deref(), Some("shutdown"), "end of a connection cut at grace end: {line}");
}

#[test]
fn sigint_also_drains_and_exits_zero() {
    let mut svc = drain_service("grace = \"500ms\"");
    let bind = svc.bind;
    let v = &mut svc.vipgate;
    let (_s, _) = hold(bind);
    v.signal(libc::SIGINT);
    let refused = wait_refused(bind, Duration::from_secs(5));
    assert!(refused.is_ok() || v.try_wait().is_some(), "after SIGINT: {:?}", refused);
    v.expect_exit_zero("after SIGINT");
}
