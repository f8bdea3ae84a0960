//! Balancing algorithms observed through real sockets: each backend answers with its
//! name, so the test sees where every connection landed.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;

/// Echo backends with the given names (no server extras) behind service `lb`.
fn lb(balance: &str, extra: &str, names: &[&str]) -> EchoService {
    let list: Vec<(&str, &str)> = names.iter().map(|n| (*n, "")).collect();
    echo_service("lb", balance, extra, &list)
}

fn counts(bind: SocketAddr, n: usize) -> Vec<(String, usize)> {
    tally(&server_names(bind, n))
}

#[test]
fn roundrobin_equal_weights_is_exact() {
    let svc = lb("roundrobin", "", &["s1", "s2", "s3"]);
    let c = counts(svc.bind, 30);
    assert_eq!(c, vec![("s1".into(), 10), ("s2".into(), 10), ("s3".into(), 10)], "30 connections over 3 equal servers");
}

#[test]
fn roundrobin_weights_three_to_one() {
    let svc = echo_service("lb", "roundrobin", "", &[("heavy", "weight = 3"), ("light", "weight = 1")]);
    let names = server_names(svc.bind, 40);
    assert_eq!(tally(&names), vec![("heavy".into(), 30), ("light".into(), 10)], "weights 3:1 over 40 connections");
    // Smooth: never more than three in a row on the heavy server.
    let mut run = 0;
    for n in &names {
        run = if n == "heavy" { run + 1 } else { 0 };
        assert!(run <= 3, "more than 3 consecutive picks of the weight-3 server: {names:?}");
    }
}

#[test]
fn leastconn_prefers_idle_server() {
    let svc = lb("leastconn", "", &["s1", "s2", "s3"]);
    let bind = svc.bind;
    // Let the readiness probe's connection drain out of every backend first.
    let idle = eventually(WAIT, || svc.backends.iter().all(|b| b.active.load(Ordering::SeqCst) == 0).then_some(()));
    assert!(idle.is_some(), "backends still see open connections after readiness probe");
    std::thread::sleep(Duration::from_millis(500));

    let (c1, n1) = hold(bind);
    let (c2, n2) = hold(bind);
    assert_ne!(n1, n2, "second connection should avoid the server holding the first");
    let (c3, n3) = hold(bind);
    assert!(n3 != n1 && n3 != n2, "third connection should go to the idle server, got {n3} ({n1}, {n2} busy)");

    // Free the first server: the next connection goes there (the others still hold one).
    drop(c1);
    let b1 = svc.backend(&n1);
    assert!(
        eventually(WAIT, || (b1.active.load(Ordering::SeqCst) == 0).then_some(())).is_some(),
        "backend {n1} still sees the closed connection"
    );
    std::thread::sleep(Duration::from_millis(500));
    let (c4, n4) = hold(bind);
    assert_eq!(n4, n1, "after closing the connection on {n1}, it is the least loaded");
    drop((c2, c3, c4));
}

#[test]
fn source_same_client_sticks() {
    let svc = lb("source", "", &["s1", "s2", "s3"]);
    let names = server_names(svc.bind, 10);
    assert_eq!(tally(&names).len(), 1, "127.0.0.1 should always land on one server: {names:?}");
}

fn sources() -> Vec<IpAddr> {
    (2..=50).map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i))).collect()
}

fn map_sources(bind: SocketAddr) -> BTreeMap<IpAddr, String> {
    sources()
        .into_iter()
        .map(|ip| {
            let n = which_server_from(ip, bind).unwrap_or_else(|| panic!("no server for client {ip}"));
            (ip, n)
        })
        .collect()
}

#[test]
fn source_spreads_and_only_removed_servers_clients_move() {
    let mut svc = lb("source", &check("lb", "100ms", 2, 2), &["s1", "s2", "s3"]);
    let bind = svc.bind;

    let first = map_sources(bind);
    let spread = tally(first.values());
    assert_eq!(spread.len(), 3, "49 source addresses should reach all 3 servers: {spread:?}");
    let again = map_sources(bind);
    assert_eq!(first, again, "each source address should stick to its server");

    // Remove s3: stop its backend; health checks take it out of rotation.
    svc.backend_mut("s3").stop();
    let s3_gone = eventually(WAIT, || {
        // Wait until the checker has seen s3 down: a client of s3 no longer gets s3.
        let ip = *first.iter().find(|(_, n)| *n == "s3").unwrap().0;
        which_server_from(ip, bind).filter(|n| n != "s3")
    });
    assert!(s3_gone.is_some(), "clients of s3 never moved after s3 stopped");
    // Give the checker time to really mark it down (fall 2 × 100 ms), then remap.
    std::thread::sleep(Duration::from_millis(500));
    let after = map_sources(bind);
    let mut moved = 0;
    for (ip, before) in &first {
        let now = &after[ip];
        assert_ne!(now, "s3", "client {ip} still on the stopped server");
        if before == "s3" {
            moved += 1;
        } else {
            assert_eq!(now, before, "client {ip} moved from {before} to {now} although {before} stayed up");
        }
    }
    let total = first.len();
    assert!(moved >= 1 && moved * 100 <= total * 60, "moved {moved} of {total}: expected about a third");
}

#[test]
fn first_sends_everything_to_first_server() {
    let svc = lb("first", "", &["db1", "db2", "db3"]);
    assert_eq!(counts(svc.bind, 10), vec![("db1".into(), 10)]);
}

#[test]
fn random_reaches_every_server() {
    let svc = lb("random", "", &["s1", "s2", "s3"]);
    let c = counts(svc.bind, 60);
    assert_eq!(c.len(), 3, "60 random connections should reach all 3 servers: {c:?}");
}
