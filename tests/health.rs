//! Health checks, backup failover and connect-failure retries.

mod common;

use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

use common::*;

/// Start service `hc` with `balance_keys(balance, extra)` over the given servers.
fn start(balance: &str, extra: &str, list: &[(&str, SocketAddr, &str)]) -> (Vipgate, SocketAddr) {
    start_service("", "hc", &balance_keys(balance, extra), list)
}

/// Roundrobin over echo server A and server B at `dead` (nothing listens there), with
/// `extra`: every one of ten connections must land on A (`why` says why).
fn all_land_on_a(extra: &str, why: &str) {
    let a1 = Backend::echo_any("A");
    let dead = free_addr();
    let (_v, bind) = start("roundrobin", extra, &[("A", a1.addr, ""), ("B", dead, "")]);
    let results = try_server_names(bind, 10);
    assert!(results.iter().all(|r| r.as_deref() == Some("A")), "{why}: {results:?}");
}

/// Poll connections until `n` in a row satisfy `ok` (None = connection got no name).
fn until_streak(bind: SocketAddr, n: usize, ok: impl Fn(&Option<String>) -> bool) -> Result<(), Vec<Option<String>>> {
    let deadline = Instant::now() + WAIT;
    let mut streak = 0;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let r = try_which_server(bind);
        if ok(&r) {
            streak += 1;
            if streak >= n {
                return Ok(());
            }
        } else {
            streak = 0;
            std::thread::sleep(Duration::from_millis(50));
        }
        seen.push(r);
    }
    let keep = seen.len().saturating_sub(20);
    Err(seen.split_off(keep))
}

fn is(name: &'static str) -> impl Fn(&Option<String>) -> bool {
    move |r| r.as_deref() == Some(name)
}

#[test]
fn first_with_backup_fails_over_and_back() {
    let mut svc = echo_service("hc", "first", &check("hc", "100ms", 2, 2), &[("db1", ""), ("db2", "backup = true")]);
    let bind = svc.bind;
    let names = server_names(bind, 5);
    assert_eq!(tally(&names), vec![("db1".into(), 5)], "active server takes everything while up");

    let db1 = svc.backend_mut("db1");
    db1.stop();
    if let Err(last) = until_streak(bind, 5, is("db2")) {
        panic!("connections never moved to backup db2 after db1 died; last results: {last:?}");
    }

    db1.restart();
    if let Err(last) = until_streak(bind, 5, is("db1")) {
        panic!("connections never returned to db1 after it came back; last results: {last:?}");
    }
}

#[test]
fn dead_server_leaves_rotation_and_returns() {
    // retries = 0 so that a connection sent to a dead B is visible as a failure.
    let extra = format!("retries = 0\n{}", check("hc", "100ms", 2, 2));
    let mut svc = echo_service("hc", "roundrobin", &extra, &[("A", ""), ("B", "")]);
    let bind = svc.bind;
    let names = server_names(bind, 4);
    assert_eq!(tally(&names), vec![("A".into(), 2), ("B".into(), 2)], "both servers up: {names:?}");

    let b1 = svc.backend_mut("B");
    b1.stop();
    if let Err(last) = until_streak(bind, 10, is("A")) {
        panic!("B never left rotation after its backend stopped; last results: {last:?}");
    }

    b1.restart();
    let back = eventually(WAIT, || (try_which_server(bind).as_deref() == Some("B")).then_some(()));
    assert!(back.is_some(), "B never returned to rotation after its backend restarted");
    // Back in rotation: both take connections again.
    let names = server_names(bind, 6);
    assert_eq!(tally(&names).len(), 2, "both servers should take connections again: {names:?}");
}

#[test]
fn server_down_at_start_never_gets_a_client() {
    // Long interval: only the immediate first probe can have found B down in time.
    all_land_on_a(
        &format!("retries = 0\n{}", check("hc", "30s", 2, 3)),
        "every connection should land on A (B was down at start)",
    );
}

#[test]
fn connect_failure_retries_on_next_server() {
    all_land_on_a("", "with no check, connects to dead B must be retried on A");
}

#[test]
fn no_retries_and_dead_server_closes_client() {
    let dead = free_addr();
    let (_v, bind) = start("roundrobin", "retries = 0", &[("B", dead, "")]);
    for _ in 0..3 {
        let mut s = connect(bind);
        let r = wait_closed(&mut s, Duration::from_secs(10));
        assert!(r.is_ok(), "client connection to a service with only a dead server: {}", r.unwrap_err());
    }
}
