//! Galera-style failover policies with `balance = "first"` (and tiers with round robin):
//! `on_down`, `failback` (immediate / never / drain), tiers with `all_backups`, and the
//! immediate retry of a refused connect on the backup.
//!
//! Each server's health comes from a clustercheck-like responder on a side port that the
//! test flips between "synced" (200) and "not synced" (503); checks are fast (100ms,
//! rise 2, fall 2), traffic goes to echo backends that announce their name.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;
use tokio::time::Instant;

use common::*;

// ---------------------------------------------------------------------------------------
// A clustercheck-like responder
// ---------------------------------------------------------------------------------------

const SYNCED: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 32\r\n\r\nGalera cluster node is synced.\r\n";
const NOT_SYNCED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 36\r\n\r\nGalera cluster node is not synced.\r\n";

/// Answers every connection at once, without reading the request, with "synced" or
/// "not synced" as the test sets it, then closes.
struct Health {
    addr: SocketAddr,
    synced: Arc<AtomicBool>,
    probes: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Health {
    fn new() -> Health {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind responder");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let synced = Arc::new(AtomicBool::new(true));
        let probes = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (sy, pr, st) = (synced.clone(), probes.clone(), stop.clone());
        let thread = thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        pr.fetch_add(1, Ordering::SeqCst);
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
                        let _ = s.write_all(if sy.load(Ordering::SeqCst) { SYNCED } else { NOT_SYNCED });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Health { addr, synced, probes, stop, thread: Some(thread) }
    }

    fn set(&self, synced: bool) {
        self.synced.store(synced, Ordering::SeqCst);
    }
}

impl Drop for Health {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A server of the test cluster: traffic backend plus health responder.
struct Node {
    name: &'static str,
    echo: Backend,
    health: Health,
}

impl Node {
    fn new(name: &'static str) -> Node {
        Node { name, echo: Backend::echo_any(name), health: Health::new() }
    }
}

/// Service `svc` with `keys` (balance, policies...), a fast clustercheck, and the nodes
/// with their per-server extra lines (tier, backup...).
fn config(svc: &str, bind: SocketAddr, keys: &str, nodes: &[(&Node, &str)]) -> String {
    let mut s = format!(
        "{}\n[services.{svc}]\nbind = \"{bind}\"\n{keys}\n\n[services.{svc}.check]\nkind = \"clustercheck\"\n\
         interval = \"100ms\"\ntimeout = \"2s\"\nrise = 2\nfall = 2\n",
        global("")
    );
    for (n, extra) in nodes {
        s.push_str(&servers(svc, &[(n.name, n.echo.addr, &format!("check_port = {}\n{extra}", n.health.addr.port()))]));
    }
    s
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Poll fresh connections until `n` in a row land on `want`.
fn settle(bind: SocketAddr, want: &str, n: usize) {
    let deadline = Instant::now() + WAIT;
    let (mut streak, mut seen) = (0, Vec::new());
    while Instant::now() < deadline {
        let r = try_which_server(bind);
        if r.as_deref() == Some(want) {
            streak += 1;
            if streak >= n {
                return;
            }
        } else {
            streak = 0;
            thread::sleep(Duration::from_millis(50));
        }
        seen.push(r);
    }
    panic!("connections never settled on {want}; last: {:?}", &seen[seen.len().saturating_sub(20)..]);
}

fn names(bind: SocketAddr, n: usize) -> Vec<Option<String>> {
    (0..n).map(|_| try_which_server(bind)).collect()
}

fn state_line<'a>(msg: &'a str, server: &'a str) -> impl Fn(&str) -> bool + 'a {
    move |l: &str| l.contains(msg) && field(l, "server").as_deref() == Some(server)
}

fn wait_state(v: &Vipgate, msg: &str, server: &str) {
    let _ = v.wait_log_line(WAIT, state_line(msg, server)).unwrap_or_else(|| panic!("no '{msg}' line for {server}"));
}

/// Wait for the (n+1)-th line satisfying `pred` (n = how many there were before).
fn wait_another(v: &Vipgate, before: usize, pred: impl Fn(&str) -> bool, what: &str) {
    let ok = eventually(WAIT, || (v.log().lines().filter(|l| pred(l)).count() > before).then_some(()));
    assert!(ok.is_some(), "no new log line for {what}; log:\n{}", v.log());
}

fn count(v: &Vipgate, pred: impl Fn(&str) -> bool) -> usize {
    v.log().lines().filter(|l| pred(l)).count()
}

/// `connection closed ... end=killed` lines for `server`.
fn killed(v: &Vipgate, server: &str) -> usize {
    count(v, |l| {
        l.contains("connection closed")
            && field(l, "end").as_deref() == Some("killed")
            && field(l, "server").as_deref() == Some(server)
    })
}

/// Send a line on a held connection and expect it echoed back.
fn echoes(s: &mut TcpStream, msg: &str) -> Result<(), String> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("{msg}\n").as_bytes()).map_err(|e| format!("write: {e}"))?;
    match read_line(s) {
        Ok(l) if l == msg => Ok(()),
        Ok(l) => Err(format!("got {l:?} instead of the echo")),
        Err(e) => Err(format!("read: {e}")),
    }
}

/// Take `node` down through its check, and wait until vipgate says so.
fn fail(v: &Vipgate, node: &Node) {
    let before = count(v, state_line("server is DOWN", node.name));
    node.health.set(false);
    wait_another(v, before, state_line("server is DOWN", node.name), &format!("{} DOWN", node.name));
}

fn heal(v: &Vipgate, node: &Node) {
    let before = count(v, state_line("server is UP", node.name));
    node.health.set(true);
    wait_another(v, before, state_line("server is UP", node.name), &format!("{} UP", node.name));
}

fn pair() -> (Node, Node) {
    (Node::new("db1"), Node::new("db2"))
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// With `first`, on_down defaults to shutdown-sessions: a session held on db1 is closed
/// by vipgate when db1 is marked down (`end=killed`), and new clients reach db2.
#[test]
fn marked_down_closes_sessions_by_default() {
    let (db1, db2) = pair();
    let bind = free_addr();
    let v = Vipgate::start(&config("g", bind, "balance = \"first\"", &[(&db1, ""), (&db2, "backup = true")]), bind);
    wait_state(&v, "server is UP", "db2");
    let (mut held, on) = hold(bind);
    assert_eq!(on, "db1");
    echoes(&mut held, "before").unwrap();

    fail(&v, &db1);
    if let Err(e) = wait_closed(&mut held, Duration::from_secs(10)) {
        panic!("session on db1 should be closed when db1 is marked down: {e}");
    }
    assert!(
        v.wait_log_line(WAIT, |l| l.contains("end=killed") && field(l, "server").as_deref() == Some("db1")).is_some(),
        "the closed session logs end=killed"
    );
    settle(bind, "db2", 3);
}

/// `on_down = "keep"`: the session on db1 lives on after db1 is marked down.
#[test]
fn on_down_keep_leaves_sessions_open() {
    let (db1, db2) = pair();
    let bind = free_addr();
    let keys = "balance = \"first\"\non_down = \"keep\"";
    let v = Vipgate::start(&config("g", bind, keys, &[(&db1, ""), (&db2, "backup = true")]), bind);
    wait_state(&v, "server is UP", "db2");
    let (mut held, on) = hold(bind);
    assert_eq!(on, "db1");

    fail(&v, &db1);
    settle(bind, "db2", 3);
    thread::sleep(Duration::from_millis(300));
    echoes(&mut held, "still here").unwrap_or_else(|e| panic!("session on db1 should stay open with keep: {e}"));
    assert_eq!(killed(&v, "db1"), 0, "no session killed with on_down = keep");
}

/// failback immediate (default): new clients return to db1 as soon as it is up again;
/// a session opened on db2 meanwhile stays there.
#[test]
fn failback_immediate() {
    let (db1, db2) = pair();
    let bind = free_addr();
    let keys = "balance = \"first\"\nfailback = \"immediate\"";
    let v = Vipgate::start(&config("g", bind, keys, &[(&db1, ""), (&db2, "backup = true")]), bind);
    wait_state(&v, "server is UP", "db2");
    settle(bind, "db1", 2);

    fail(&v, &db1);
    settle(bind, "db2", 3);
    let (mut held, on) = hold(bind);
    assert_eq!(on, "db2");

    heal(&v, &db1);
    let next = names(bind, 5);
    assert!(next.iter().all(|r| r.as_deref() == Some("db1")), "db1 back: new clients to db1 at once: {next:?}");
    echoes(&mut held, "on db2").unwrap_or_else(|e| panic!("session on db2 should stay open: {e}"));
    assert_eq!(killed(&v, "db2"), 0);
}

/// failback never: after db1 returns, new clients stay on db2 until db2 fails; then db1.
#[test]
fn failback_never() {
    let (db1, db2) = pair();
    let bind = free_addr();
    let keys = "balance = \"first\"\nfailback = \"never\"";
    let v = Vipgate::start(&config("g", bind, keys, &[(&db1, ""), (&db2, "backup = true")]), bind);
    wait_state(&v, "server is UP", "db2");
    settle(bind, "db1", 2);

    fail(&v, &db1);
    settle(bind, "db2", 3);

    heal(&v, &db1);
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(try_which_server(bind));
        thread::sleep(Duration::from_millis(100));
    }
    assert!(seen.iter().all(|r| r.as_deref() == Some("db2")), "failback never: clients stay on db2: {seen:?}");

    fail(&v, &db2);
    settle(bind, "db1", 3);
}

/// failback drain: when db1 returns, the next client goes to db1 and the session left on
/// db2 is closed (`end=killed`).
#[test]
fn failback_drain() {
    let (db1, db2) = pair();
    let bind = free_addr();
    let keys = "balance = \"first\"\nfailback = \"drain\"";
    let v = Vipgate::start(&config("g", bind, keys, &[(&db1, ""), (&db2, "backup = true")]), bind);
    wait_state(&v, "server is UP", "db2");

    fail(&v, &db1);
    settle(bind, "db2", 3);
    let (mut held, on) = hold(bind);
    assert_eq!(on, "db2");
    echoes(&mut held, "meanwhile").unwrap();

    heal(&v, &db1);
    assert_eq!(try_which_server(bind).as_deref(), Some("db1"), "db1 back: the next client goes to db1");
    if let Err(e) = wait_closed(&mut held, Duration::from_secs(10)) {
        panic!("failback drain: the session on db2 should be closed: {e}");
    }
    assert!(
        v.wait_log_line(WAIT, |l| l.contains("end=killed") && field(l, "server").as_deref() == Some("db2")).is_some(),
        "the drained session logs end=killed"
    );
    assert_eq!(killed(&v, "db1"), 0);
}

/// Tiers 0, 1 and 2 (two servers, all_backups, round robin): traffic goes to the lowest
/// tier with a usable server, spread over tier 2 when it is the one left, and back to
/// tier 0 when it returns.
#[test]
fn tiers_with_all_backups() {
    let t0 = Node::new("t0");
    let t1 = Node::new("t1");
    let t2a = Node::new("t2a");
    let t2b = Node::new("t2b");
    let bind = free_addr();
    let keys = "balance = \"roundrobin\"\nall_backups = true";
    let cfg = config("k", bind, keys, &[(&t0, ""), (&t1, "tier = 1"), (&t2a, "tier = 2"), (&t2b, "tier = 2")]);
    let v = Vipgate::start(&cfg, bind);
    for n in ["t0", "t1", "t2a", "t2b"] {
        wait_state(&v, "server is UP", n);
    }
    let first = names(bind, 4);
    assert!(first.iter().all(|r| r.as_deref() == Some("t0")), "tier 0 takes everything: {first:?}");

    fail(&v, &t0);
    settle(bind, "t1", 4);

    fail(&v, &t1);
    let spread = names(bind, 8);
    let t = tally(spread.iter().flatten());
    assert!(
        spread.iter().all(|r| matches!(r.as_deref(), Some("t2a" | "t2b")))
            && t.len() == 2
            && t.iter().all(|(_, n)| *n >= 3),
        "only tier 2 left, all_backups: spread over both: {spread:?}"
    );

    heal(&v, &t0);
    let back = names(bind, 6);
    assert!(back.iter().all(|r| r.as_deref() == Some("t0")), "tier 0 back: all traffic to it: {back:?}");
}

/// db1's traffic port refuses while its check says up: with retries, each client lands
/// on the backup db2 at once instead of failing.
#[test]
fn refused_connect_retries_on_backup() {
    let (mut db1, db2) = pair();
    db1.echo.stop();
    let bind = free_addr();
    let keys = "balance = \"first\"\nretries = 3\nconnect_timeout = \"2s\"";
    let v = Vipgate::start(&config("g", bind, keys, &[(&db1, ""), (&db2, "backup = true")]), bind);
    wait_state(&v, "server is UP", "db1");
    wait_state(&v, "server is UP", "db2");
    for i in 0..5 {
        let t = Instant::now();
        let r = try_which_server(bind);
        assert_eq!(r.as_deref(), Some("db2"), "client {i} should be retried on db2");
        assert!(t.elapsed() < Duration::from_secs(2), "retry should be immediate, took {:?}", t.elapsed());
    }
    assert!(
        count(&v, |l| l.contains("connect failed") && field(l, "server").as_deref() == Some("db1")) >= 5,
        "each client first tried db1 (still up by its check)"
    );
    assert_eq!(count(&v, |l| l.contains("server is DOWN") && field(l, "server").as_deref() == Some("db1")), 0);
    assert!(db1.health.probes.load(Ordering::SeqCst) > 0);
}
