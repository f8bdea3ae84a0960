use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use super::*;

fn servers(spec: &[(&str, u32, bool)]) -> Vec<Arc<Server>> {
    spec.iter()
        .enumerate()
        .map(|(i, (name, w, backup))| {
            Arc::new(Server::named(name, SocketAddr::from(([127, 0, 0, 1], 10_000 + i as u16)), *w, *backup))
        })
        .collect()
}

fn client(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
}

/// Pick `n` times, releasing each lease at once (sequential short connections).
fn spread(pool: &Pool, n: usize) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for i in 0..n {
        let lease = pool.pick(client(i as u32), &Tried::default()).expect("a server");
        *out.entry(lease.server().name.clone()).or_default() += 1;
    }
    out
}

#[test]
fn roundrobin_even_and_weighted() {
    let pool = Pool::new(BalanceKind::RoundRobin, servers(&[("a", 1, false), ("b", 1, false), ("c", 1, false)]));
    let got = spread(&pool, 30);
    assert_eq!((got["a"], got["b"], got["c"]), (10, 10, 10));

    let pool = Pool::new(BalanceKind::RoundRobin, servers(&[("a", 3, false), ("b", 1, false)]));
    let got = spread(&pool, 40);
    assert_eq!((got["a"], got["b"]), (30, 10));
}

#[test]
fn roundrobin_is_smooth() {
    let pool = Pool::new(BalanceKind::RoundRobin, servers(&[("a", 5, false), ("b", 1, false), ("c", 1, false)]));
    let order: String =
        (0..7).map(|_| pool.pick(client(0), &Tried::default()).unwrap().server().name.clone()).collect();
    assert_eq!(order, "aabacaa");
}

#[test]
fn leastconn_prefers_idle_and_respects_weight() {
    let pool = Pool::new(BalanceKind::LeastConn, servers(&[("a", 1, false), ("b", 1, false), ("c", 1, false)]));
    let l1 = pool.pick(client(0), &Tried::default()).unwrap();
    let l2 = pool.pick(client(0), &Tried::default()).unwrap();
    let l3 = pool.pick(client(0), &Tried::default()).unwrap();
    let mut names = vec![l1.server().name.clone(), l2.server().name.clone(), l3.server().name.clone()];
    names.sort();
    assert_eq!(names, ["a", "b", "c"]);
    drop(l2);
    let next = pool.pick(client(0), &Tried::default()).unwrap();
    assert_eq!(next.server().name, names_of(&l1, &l3, &["a", "b", "c"]));

    // Weight 2 holds twice the connections of weight 1.
    let pool = Pool::new(BalanceKind::LeastConn, servers(&[("big", 2, false), ("small", 1, false)]));
    let held: Vec<_> = (0..30).map(|_| pool.pick(client(0), &Tried::default()).unwrap()).collect();
    let big = held.iter().filter(|l| l.server().name == "big").count();
    assert_eq!(big, 20);
}

fn names_of(a: &Lease, b: &Lease, all: &[&str]) -> String {
    all.iter().find(|n| **n != a.server().name && **n != b.server().name).unwrap().to_string()
}

#[test]
fn source_is_sticky_and_spreads() {
    let pool = Pool::new(BalanceKind::Source, servers(&[("a", 1, false), ("b", 1, false), ("c", 1, false)]));
    let mut counts: HashMap<String, usize> = HashMap::new();
    for c in 0..3000 {
        let first = pool.pick(client(c), &Tried::default()).unwrap().server().name.clone();
        for _ in 0..3 {
            assert_eq!(pool.pick(client(c), &Tried::default()).unwrap().server().name, first);
        }
        *counts.entry(first).or_default() += 1;
    }
    for (name, n) in &counts {
        assert!((850..=1150).contains(n), "{name}: {n} of 3000");
    }
}

#[test]
fn source_moves_only_clients_of_a_removed_server() {
    let all = servers(&[("a", 1, false), ("b", 1, false), ("c", 1, false), ("d", 1, false)]);
    let pool = Pool::new(BalanceKind::Source, all.clone());
    let before: Vec<String> =
        (0..4000).map(|c| pool.pick(client(c), &Tried::default()).unwrap().server().name.clone()).collect();
    // "c" goes down: only its clients may move, and they spread over the rest.
    all[2].set_up(false);
    let mut moved = 0;
    for c in 0..4000u32 {
        let now = pool.pick(client(c), &Tried::default()).unwrap().server().name.clone();
        if before[c as usize] == "c" {
            assert_ne!(now, "c");
            moved += 1;
        } else {
            assert_eq!(now, before[c as usize], "client {c} moved although its server stayed");
        }
    }
    assert!((800..=1200).contains(&moved), "moved {moved} of 4000, expected about 1/4");
    // It comes back: everyone returns to where they were.
    all[2].set_up(true);
    for c in 0..4000u32 {
        assert_eq!(pool.pick(client(c), &Tried::default()).unwrap().server().name, before[c as usize]);
    }
}

#[test]
fn source_weights_shift_share() {
    let pool = Pool::new(BalanceKind::Source, servers(&[("heavy", 3, false), ("light", 1, false)]));
    let got = spread(&pool, 8000);
    let heavy = got["heavy"] as f64 / 8000.0;
    assert!((0.70..=0.80).contains(&heavy), "heavy share {heavy}");
}

/// Golden values: a refactor must not silently re-home every keystone client.
#[test]
fn source_hash_golden() {
    let pool = Pool::new(BalanceKind::Source, servers(&[("ctl1", 1, false), ("ctl2", 1, false), ("ctl3", 1, false)]));
    let pick = |ip: [u8; 4]| pool.pick(IpAddr::from(ip), &Tried::default()).unwrap().server().name.clone();
    let got: Vec<String> =
        [[10, 0, 0, 1], [10, 0, 0, 2], [192, 168, 1, 10], [172, 16, 5, 4], [127, 0, 0, 1], [10, 20, 30, 40]]
            .iter()
            .map(|ip| pick(*ip))
            .collect();
    assert_eq!(got, GOLDEN);
    // An IPv4-mapped IPv6 client lands where its IPv4 form does.
    let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
    assert_eq!(pool.pick(mapped, &Tried::default()).unwrap().server().name, got[0]);
}

const GOLDEN: [&str; 6] = ["ctl2", "ctl2", "ctl1", "ctl3", "ctl2", "ctl2"];

#[test]
fn first_and_backup_tiers() {
    let all = servers(&[("db1", 1, false), ("db2", 1, true), ("db3", 1, true)]);
    let pool = Pool::new(BalanceKind::First, all.clone());
    assert_eq!(spread(&pool, 10)["db1"], 10);
    all[0].set_up(false);
    // Only the first usable backup serves, never both: one writer.
    assert_eq!(spread(&pool, 10)["db2"], 10);
    all[1].set_up(false);
    assert_eq!(spread(&pool, 10)["db3"], 10);
    all[0].set_up(true);
    assert_eq!(spread(&pool, 10)["db1"], 10);
    all[0].set_up(false);
    all[2].set_up(false);
    assert!(pool.pick(client(0), &Tried::default()).is_none());
}

#[test]
fn a_retry_moves_on_at_once_even_to_the_backup_tier() {
    let all = servers(&[("a", 1, false), ("b", 1, false), ("bk", 1, true)]);
    let pool = Pool::new(BalanceKind::RoundRobin, all.clone());
    let mut tried = Tried::default();
    let l = pool.pick(client(0), &tried).unwrap();
    tried.add(&l, &pool);
    let l2 = pool.pick(client(0), &tried).unwrap();
    assert!(l2.server().name != l.server().name && l2.server().name != "bk");
    tried.add(&l2, &pool);
    // Both actives refused this connection: the backup serves it rather than nobody.
    assert_eq!(pool.pick(client(0), &tried).unwrap().server().name, "bk");
    // Other connections still go to the active tier.
    assert_ne!(pool.pick(client(1), &Tried::default()).unwrap().server().name, "bk");
}

fn tiered(spec: &[(&str, u32)]) -> Vec<Arc<Server>> {
    spec.iter()
        .enumerate()
        .map(|(i, (name, tier))| {
            let address = SocketAddr::from(([127, 0, 0, 1], 20_000 + i as u16));
            Arc::new(Server::new(ServerSpec::named(name, address, 1, *tier)))
        })
        .collect()
}

#[test]
fn lowest_tier_with_a_usable_server_takes_traffic() {
    let all = tiered(&[("local1", 0), ("local2", 0), ("dr1", 1), ("remote1", 2), ("remote2", 2)]);
    let policy = Policy { all_backups: true, ..Policy::default() };
    let pool = Pool::with_policy(BalanceKind::RoundRobin, all.clone(), policy);
    let got = spread(&pool, 10);
    assert_eq!((got.get("local1"), got.get("local2")), (Some(&5), Some(&5)));
    all[0].set_up(false);
    all[1].set_up(false);
    assert_eq!(spread(&pool, 10)["dr1"], 10);
    all[2].set_up(false);
    // A last-resort tier of several servers is balanced across when all_backups is on.
    let got = spread(&pool, 10);
    assert_eq!((got["remote1"], got["remote2"]), (5, 5));
    all[1].set_up(true);
    assert_eq!(spread(&pool, 4)["local2"], 4);

    // Without all_backups only the first usable server of a backup tier serves.
    let pool = Pool::new(BalanceKind::RoundRobin, all.clone());
    all[1].set_up(false);
    assert_eq!(spread(&pool, 6)["remote1"], 6);
}

#[test]
fn failback_immediate_returns_at_once() {
    let all = servers(&[("db1", 1, false), ("db2", 1, true)]);
    let pool = Pool::new(BalanceKind::First, all.clone());
    all[0].set_up(false);
    assert_eq!(spread(&pool, 3)["db2"], 3);
    all[0].set_up(true);
    assert_eq!(spread(&pool, 3)["db1"], 3);
}

#[test]
fn failback_never_stays_until_the_current_server_fails() {
    let all = servers(&[("db1", 1, false), ("db2", 1, true), ("db3", 1, true)]);
    let pool =
        Pool::with_policy(BalanceKind::First, all.clone(), Policy { failback: Failback::Never, all_backups: false });
    assert_eq!(spread(&pool, 3)["db1"], 3);
    all[0].set_up(false);
    assert_eq!(spread(&pool, 3)["db2"], 3);
    all[0].set_up(true);
    assert_eq!(spread(&pool, 3)["db2"], 3, "db1 is back, but the writer stays on db2");
    all[1].set_up(false);
    assert_eq!(spread(&pool, 3)["db1"], 3, "db2 failed: the best usable server takes over");
    all[1].set_up(true);
    assert_eq!(spread(&pool, 3)["db1"], 3);
}

#[test]
fn failback_never_sticks_within_a_backup_tier_too() {
    let all = servers(&[("db1", 1, false), ("db2", 1, true), ("db3", 1, true)]);
    let pool =
        Pool::with_policy(BalanceKind::First, all.clone(), Policy { failback: Failback::Never, all_backups: false });
    all[0].set_up(false);
    all[1].set_up(false);
    assert_eq!(spread(&pool, 2)["db3"], 2);
    all[1].set_up(true);
    assert_eq!(spread(&pool, 2)["db3"], 2);
}

#[test]
fn failback_drain_closes_the_sessions_left_behind() {
    let all = servers(&[("db1", 1, false), ("db2", 1, true)]);
    let pool =
        Pool::with_policy(BalanceKind::First, all.clone(), Policy { failback: Failback::Drain, all_backups: false });
    let mut db1_sessions = all[0].sessions();
    let mut db2_sessions = all[1].sessions();
    all[0].set_up(false);
    assert_eq!(spread(&pool, 2)["db2"], 2);
    assert!(!db2_sessions.has_changed().unwrap());
    all[0].set_up(true);
    assert_eq!(spread(&pool, 1)["db1"], 1);
    assert!(db2_sessions.has_changed().unwrap(), "the backup's sessions must be shut on failback");
    assert!(!db1_sessions.has_changed().unwrap());
    db2_sessions.mark_unchanged();
    // Staying on db1 shuts nothing more.
    assert_eq!(spread(&pool, 3)["db1"], 3);
    assert!(!db2_sessions.has_changed().unwrap());
    let _ = db1_sessions.borrow_and_update();
}

#[test]
fn passive_health_marks_down_after_consecutive_connect_errors() {
    let all = servers(&[("a", 1, false), ("b", 1, false)]);
    assert!(!all[0].traffic_failed(Some(3)));
    assert!(!all[0].traffic_failed(Some(3)));
    all[0].traffic_ok();
    assert!(!all[0].traffic_failed(Some(3)));
    assert!(!all[0].traffic_failed(Some(3)));
    assert!(all[0].traffic_failed(Some(3)), "third in a row marks it down");
    assert!(!all[0].is_up());
    assert!(!all[1].traffic_failed(None), "observe_errors off never marks down");
    assert!(all[1].is_up());
}

#[test]
fn random_reaches_everyone_and_avoids_loaded() {
    let pool = Pool::new(BalanceKind::Random, servers(&[("a", 1, false), ("b", 1, false), ("c", 1, false)]));
    let got = spread(&pool, 300);
    assert_eq!(got.len(), 3, "{got:?}");
    // Hold 50 connections: power-of-two keeps them within a small spread.
    let held: Vec<_> = (0..60).map(|_| pool.pick(client(0), &Tried::default()).unwrap()).collect();
    for name in ["a", "b", "c"] {
        let n = held.iter().filter(|l| l.server().name == name).count();
        assert!((10..=30).contains(&n), "{name}: {n} of 60");
    }
}

#[test]
fn weight_zero_and_down_servers_are_skipped_by_every_algorithm() {
    for kind in
        [BalanceKind::RoundRobin, BalanceKind::LeastConn, BalanceKind::Source, BalanceKind::First, BalanceKind::Random]
    {
        let all = servers(&[("zero", 0, false), ("down", 1, false), ("ok", 1, false)]);
        all[1].set_up(false);
        let pool = Pool::new(kind, all);
        assert_eq!(spread(&pool, 50)["ok"], 50, "{kind:?}");
    }
}
