//! Health checks, backup failover and connect-failure retries.

mod common;

use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

use common::*;

fn service(bind: SocketAddr, balance: &str, extra: &str, list: &[(&str, SocketAddr, &str)]) -> String {
    format!(
        "{}\n[services.hc]\nbind = \"{}\"\nbalance = \"{balance}\"\n{extra}\n{}",
        global(""),
        a(bind),
        servers("hc", list)
    )
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
    let mut db1 = Backend::echo_any("db1");
    let db2 = Backend::echo_any("db2");
    let bind = free_addr();
    let cfg = service(
        bind,
        "first",
        &check("hc", "100ms", 2, 2),
        &[("db1", db1.addr, ""), ("db2", db2.addr, "backup = true")],
    );
    let _v = Vipgate::start(&cfg, bind);
    let names: Vec<String> = (0..5).map(|_| which_server(bind)).collect();
    assert_eq!(tally(&names), vec![("db1".into(), 5)], "active server takes everything while up");

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
    let a1 = Backend::echo_any("A");
    let mut b1 = Backend::echo_any("B");
    let bind = free_addr();
    // retries = 0 so that a connection sent to a dead B is visible as a failure.
    let cfg = service(
        bind,
        "roundrobin",
        &format!("retries = 0\n{}", check("hc", "100ms", 2, 2)),
        &[("A", a1.addr, ""), ("B", b1.addr, "")],
    );
    let _v = Vipgate::start(&cfg, bind);
    let names: Vec<String> = (0..4).map(|_| which_server(bind)).collect();
    assert_eq!(tally(&names), vec![("A".into(), 2), ("B".into(), 2)], "both servers up: {names:?}");

    b1.stop();
    if let Err(last) = until_streak(bind, 10, is("A")) {
        panic!("B never left rotation after its backend stopped; last results: {last:?}");
    }

    b1.restart();
    let back = eventually(WAIT, || (try_which_server(bind).as_deref() == Some("B")).then_some(()));
    assert!(back.is_some(), "B never returned to rotation after its backend restarted");
    // Back in rotation: both take connections again.
    let names: Vec<String> = (0..6).map(|_| which_server(bind)).collect();
    assert_eq!(tally(&names).len(), 2, "both servers should take connections again: {names:?}");
}

#[test]
fn server_down_at_start_never_gets_a_client() {
    let a1 = Backend::echo_any("A");
    let dead = free_addr();
    let bind = free_addr();
    // Long interval: only the immediate first probe can have found B down in time.
    let cfg = service(
        bind,
        "roundrobin",
        &format!("retries = 0\n{}", check("hc", "30s", 2, 3)),
        &[("A", a1.addr, ""), ("B", dead, "")],
    );
    let _v = Vipgate::start(&cfg, bind);
    let results: Vec<Option<String>> = (0..10).map(|_| try_which_server(bind)).collect();
    assert!(
        results.iter().all(|r| r.as_deref() == Some("A")),
        "every connection should land on A (B was down at start): {results:?}"
    );
}

#[test]
fn connect_failure_retries_on_next_server() {
    let a1 = Backend::echo_any("A");
    let dead = free_addr();
    let bind = free_addr();
    let cfg = service(bind, "roundrobin", "", &[("A", a1.addr, ""), ("B", dead, "")]);
    let _v = Vipgate::start(&cfg, bind);
    let results: Vec<Option<String>> = (0..10).map(|_| try_which_server(bind)).collect();
    assert!(
        results.iter().all(|r| r.as_deref() == Some("A")),
        "with no check, connects to dead B must be retried on A: {results:?}"
    );
}

#[test]
fn no_retries_and_dead_server_closes_client() {
    let dead = free_addr();
    let bind = free_addr();
    let cfg = service(bind, "roundrobin", "retries = 0", &[("B", dead, "")]);
    let mut v = Vipgate::spawn(&cfg);
    v.wait_ready(bind);
    for _ in 0..3 {
        let mut s = connect(bind);
        let r = wait_closed(&mut s, Duration::from_secs(10));
        assert!(r.is_ok(), "client connection to a service with only a dead server: {}", r.unwrap_err());
    }
}
