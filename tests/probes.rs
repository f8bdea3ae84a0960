//! Health probes end to end: http and clustercheck probes against small in-test
//! responders on side ports, probe port/address overrides, fastinter/downinter timing,
//! passive health from real traffic, and the startup rule (no client before a server's
//! first probe).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;
use tokio::time::Instant;

use common::*;

// ---------------------------------------------------------------------------------------
// A controllable probe responder
// ---------------------------------------------------------------------------------------

/// What a responder does with each connection it accepts.
#[derive(Clone)]
struct Reply {
    /// Written on every connection.
    bytes: Vec<u8>,
    /// Read the request head (up to the blank line) before answering, and record it.
    /// When false the answer goes out at once on accept, the request unread.
    read_first: bool,
    /// After writing, close with a reset (SO_LINGER 0) instead of a FIN.
    reset: bool,
    /// Wait this long before answering.
    delay: Duration,
}

impl Reply {
    /// An HTTP server answer: reads the request, then replies.
    fn http(status: u16, reason: &str, body: &str) -> Reply {
        Reply { bytes: http_bytes(status, reason, body), read_first: true, reset: false, delay: Duration::ZERO }
    }

    /// An answer to HEAD: Content-Length announced, no body.
    fn head(status: u16, reason: &str, announced_len: usize) -> Reply {
        let bytes =
            format!("HTTP/1.1 {status} {reason}\r\nContent-Length: {announced_len}\r\nConnection: close\r\n\r\n");
        Reply { bytes: bytes.into_bytes(), read_first: true, reset: false, delay: Duration::ZERO }
    }

    /// The Galera clustercheck script's answer, written on accept without reading.
    fn galera(synced: bool) -> Reply {
        let bytes: &[u8] = if synced {
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 32\r\n\r\nGalera cluster node is synced.\r\n"
        } else {
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 36\r\n\r\nGalera cluster node is not synced.\r\n"
        };
        Reply { bytes: bytes.to_vec(), read_first: false, reset: false, delay: Duration::ZERO }
    }

    fn with_reset(mut self) -> Reply {
        self.reset = true;
        self
    }

    fn with_delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }

    /// The status code this reply carries (0 if not HTTP).
    fn status(&self) -> u16 {
        std::str::from_utf8(&self.bytes[..self.bytes.len().min(12)])
            .ok()
            .and_then(|s| s.get(9..12))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

fn http_bytes(status: u16, reason: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One connection a responder served.
#[derive(Clone, Debug)]
struct Hit {
    at: Instant,
    /// The request head as received (empty when the reply did not read it).
    request: String,
    /// Status of the reply sent.
    status: u16,
}

/// A thread-per-connection TCP responder whose reply the test changes at will.
struct Responder {
    addr: SocketAddr,
    reply: Arc<Mutex<Reply>>,
    hits: Arc<Mutex<Vec<Hit>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Responder {
    fn start(reply: Reply) -> Responder {
        Responder::start_on("127.0.0.1:0".parse().unwrap(), reply)
    }

    fn start_on(addr: SocketAddr, reply: Reply) -> Responder {
        let mut r = Responder {
            addr,
            reply: Arc::new(Mutex::new(reply)),
            hits: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        };
        r.listen();
        r
    }

    fn listen(&mut self) {
        let deadline = Instant::now() + WAIT;
        let listener = loop {
            match TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("responder cannot bind {}: {e}", self.addr),
            }
        };
        self.addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        self.stop = stop.clone();
        let (reply, hits) = (self.reply.clone(), self.hits.clone());
        self.thread = Some(thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let at = Instant::now();
                        let (reply, hits) = (reply.clone(), hits.clone());
                        thread::spawn(move || serve(s, at, reply, hits));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        }));
    }

    fn set(&self, reply: Reply) {
        *self.reply.lock().unwrap() = reply;
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.hits.lock().unwrap().len()
    }

    /// Close the listener: probes get "connection refused" from now on.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(mut s: TcpStream, at: Instant, reply: Arc<Mutex<Reply>>, hits: Arc<Mutex<Vec<Hit>>>) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(3)));
    let r = reply.lock().unwrap().clone();
    let mut request = Vec::new();
    if r.read_first {
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => request.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
    hits.lock().unwrap().push(Hit { at, request: String::from_utf8_lossy(&request).into_owned(), status: r.status() });
    if !r.delay.is_zero() {
        thread::sleep(r.delay);
    }
    let _ = s.write_all(&r.bytes);
    if r.reset {
        let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
    }
    // Dropping closes: FIN, or RST with linger 0 (or with the request left unread).
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Poll fresh connections until `n` in a row land on `want` (None = no server name).
fn settle(bind: SocketAddr, want: Option<&str>, n: usize) -> Result<(), Vec<Option<String>>> {
    let deadline = Instant::now() + WAIT;
    let (mut streak, mut seen) = (0, Vec::new());
    while Instant::now() < deadline {
        let r = try_which_server(bind);
        if r.as_deref() == want {
            streak += 1;
            if streak >= n {
                return Ok(());
            }
        } else {
            streak = 0;
            thread::sleep(Duration::from_millis(50));
        }
        seen.push(r);
    }
    Err(seen.split_off(seen.len().saturating_sub(20)))
}

fn names(bind: SocketAddr, n: usize) -> Vec<Option<String>> {
    (0..n).map(|_| try_which_server(bind)).collect()
}

/// A log line for `msg` about `service`/`server`.
fn is_line<'a>(msg: &'a str, service: &'a str, server: &'a str) -> impl Fn(&str) -> bool + 'a {
    move |l: &str| {
        l.contains(msg)
            && field(l, "service").as_deref() == Some(service)
            && field(l, "server").as_deref() == Some(server)
    }
}

/// Everything after `reason=` on a log line (reasons are not quoted and hold spaces).
fn reason_of(line: &str) -> String {
    line.split_once("reason=").map(|(_, r)| r.to_string()).unwrap_or_default()
}

/// Wait until at least `n` lines match (an earlier matching line must not count again).
fn wait_nth_line(v: &Vipgate, timeout: Duration, pred: impl Fn(&str) -> bool, n: usize, what: &str) -> String {
    eventually(timeout, || {
        let log = v.log();
        let hits: Vec<&str> = log.lines().filter(|l| pred(l)).collect();
        (hits.len() >= n).then(|| hits[n - 1].to_string())
    })
    .unwrap_or_else(|| panic!("no log line #{n} for {what} within {timeout:?}"))
}

fn wait_line(v: &Vipgate, timeout: Duration, pred: impl Fn(&str) -> bool, what: &str) -> String {
    v.wait_log_line(timeout, pred).unwrap_or_else(|| panic!("no log line for {what} within {timeout:?}"))
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// `kind = "http"`: a 503 takes a server out of rotation, a 200 brings it back; the probe
/// goes to the side port (check `port` for A, per-server `check_port` for B) and sends the
/// documented request.
#[test]
fn http_check_takes_server_out_and_back() {
    let ea = Backend::echo_any("A");
    let eb = Backend::echo_any("B");
    let ra = Responder::start(Reply::http(200, "OK", "fine"));
    let rb = Responder::start(Reply::http(200, "OK", "fine"));
    let bind = free_addr();
    let cfg = format!(
        r#"{}
[services.web]
bind = "{bind}"
balance = "roundrobin"
retries = 0

[services.web.check]
kind = "http"
port = {pa}
path = "/healthcheck"
host = "keystone.internal"
headers = {{ Authorization = "Basic dXNlcjpzZWNyZXQ=", X-Probe = "vipgate" }}
expect = [200]
interval = "100ms"
timeout = "2s"
rise = 2
fall = 2
{}"#,
        global(""),
        servers("web", &[("A", ea.addr, ""), ("B", eb.addr, &format!("check_port = {}", rb.addr.port()))]),
        pa = ra.addr.port(),
    );
    let v = Vipgate::start(&cfg, bind);

    let both = names(bind, 4);
    assert_eq!(
        tally(both.iter().flatten()),
        vec![("A".into(), 2), ("B".into(), 2)],
        "both up: round robin over A and B: {both:?}"
    );

    // The request exactly as the responder received it.
    let want = "GET /healthcheck HTTP/1.0\r\nHost: keystone.internal\r\nUser-Agent: vipgate-check\r\n\
                Authorization: Basic dXNlcjpzZWNyZXQ=\r\nX-Probe: vipgate\r\nConnection: close\r\n\r\n";
    for (who, r) in [("A", &ra), ("B", &rb)] {
        let hits = r.hits();
        assert!(!hits.is_empty(), "{who}'s check port saw no probe");
        assert_eq!(hits[0].request, want, "probe request as {who}'s check port received it");
    }
    // The traffic backends see clients only (4 + the readiness connection), no probe.
    assert_eq!(ea.accepted.load(Ordering::SeqCst) + eb.accepted.load(Ordering::SeqCst), 5);

    rb.set(Reply::http(503, "Service Unavailable", "maintenance"));
    let down = wait_line(&v, WAIT, is_line("server is DOWN", "web", "B"), "B DOWN");
    assert!(reason_of(&down).contains("503"), "DOWN reason should name the status: {down}");
    let after = names(bind, 8);
    assert!(after.iter().all(|r| r.as_deref() == Some("A")), "B is down: every connection to A: {after:?}");

    rb.set(Reply::http(200, "OK", "fine"));
    wait_nth_line(&v, WAIT, is_line("server is UP", "web", "B"), 2, "B UP again");
    let back = names(bind, 6);
    let t = tally(back.iter().flatten());
    assert!(t.len() == 2 && t.iter().all(|(_, n)| *n >= 2), "B back in rotation: {back:?}");
}

/// `expect` lists 405: HEAD and OPTIONS probes answered 405 count as up, while the
/// default expectation (2xx/3xx) takes the same 405 as down. `expect_body` missing from
/// the body marks the server down.
#[test]
fn http_expect_methods_and_body() {
    let e = Backend::echo_any("E");
    let head = Responder::start(Reply::head(405, "Method Not Allowed", 18));
    let options = Responder::start(Reply::http(405, "Method Not Allowed", "use GET"));
    let strict = Responder::start(Reply::http(405, "Method Not Allowed", "use GET"));
    let redirect = Responder::start(Reply::http(302, "Found", ""));
    let body = Responder::start(Reply::http(200, "OK", "{\"state\": \"ready\"}"));
    let binds: Vec<SocketAddr> = (0..5).map(|_| free_addr()).collect();
    let svc = |name: &str, bind: SocketAddr, port: u16, keys: &str| {
        format!(
            "\n[services.{name}]\nbind = \"{bind}\"\nretries = 0\n\n[services.{name}.check]\nkind = \"http\"\nport = {port}\n\
             interval = \"100ms\"\ntimeout = \"2s\"\nrise = 2\nfall = 2\n{keys}\n{}",
            servers(name, &[("e", e.addr, "")])
        )
    };
    let cfg = [
        global(""),
        svc("head", binds[0], head.addr.port(), "method = \"HEAD\"\nexpect = [200, 405]"),
        svc(
            "options",
            binds[1],
            options.addr.port(),
            "method = \"OPTIONS\"\npath = \"/v3\"\nexpect = [405]\nheaders = { User-Agent = \"custom-agent/1\" }",
        ),
        svc("strict", binds[2], strict.addr.port(), ""),
        svc("redirect", binds[3], redirect.addr.port(), ""),
        svc("body", binds[4], body.addr.port(), "expect_body = \"ready\""),
    ]
    .concat();
    let v = Vipgate::start(&cfg, binds[0]);

    for (i, svc) in ["head", "options", "strict", "redirect", "body"].iter().enumerate() {
        let r = try_which_server(binds[i]);
        let want = if *svc == "strict" { None } else { Some("E") };
        assert_eq!(r.as_deref(), want, "service {svc}: a connection");
    }
    wait_line(&v, WAIT, is_line("server is UP", "head", "e"), "head UP");
    wait_line(&v, WAIT, is_line("server is UP", "options", "e"), "options UP");
    wait_line(&v, WAIT, is_line("server is UP", "redirect", "e"), "redirect UP");
    let strict_down = wait_line(&v, WAIT, is_line("server is DOWN", "strict", "e"), "strict DOWN");
    assert!(reason_of(&strict_down).contains("405"), "reason: {strict_down}");

    let h = head.hits();
    assert!(h[0].request.starts_with("HEAD / HTTP/1.0\r\n"), "HEAD probe request: {:?}", h[0].request);
    let o = options.hits();
    assert_eq!(
        o[0].request, "OPTIONS /v3 HTTP/1.0\r\nUser-Agent: custom-agent/1\r\nConnection: close\r\n\r\n",
        "OPTIONS probe with its own User-Agent (and no Host unless set)"
    );

    // The body stops containing "ready": down, and said why.
    body.set(Reply::http(200, "OK", "{\"state\": \"starting\"}"));
    let line = wait_line(&v, WAIT, is_line("server is DOWN", "body", "e"), "body DOWN");
    assert!(reason_of(&line).contains("ready"), "reason should name the missing text: {line}");
    assert_eq!(try_which_server(binds[4]), None, "body service has no server left");
}

/// `kind = "clustercheck"` against responders that answer on accept without reading the
/// request (one resets after writing): 503 "not synced" moves traffic to the backup with
/// the body as the reason; a refused connect on the check port is down too.
#[test]
fn clustercheck_failover_and_reason() {
    let db: Vec<Backend> = ["db1", "db2", "db3"].iter().map(|n| Backend::echo_any(n)).collect();
    let r1 = Responder::start(Reply::galera(true));
    let mut r2 = Responder::start(Reply::galera(true).with_reset());
    let r3 = Responder::start(Reply::galera(true));
    let bind = free_addr();
    let cfg = format!(
        r#"{}
[services.galera]
bind = "{bind}"
balance = "first"

[services.galera.check]
kind = "clustercheck"
interval = "100ms"
timeout = "2s"
rise = 2
fall = 2
{}"#,
        global(""),
        servers(
            "galera",
            &[
                ("db1", db[0].addr, &format!("check_port = {}", r1.addr.port())),
                ("db2", db[1].addr, &format!("check_port = {}\nbackup = true", r2.addr.port())),
                ("db3", db[2].addr, &format!("check_port = {}\nbackup = true", r3.addr.port())),
            ]
        ),
    );
    let v = Vipgate::start(&cfg, bind);
    for s in ["db1", "db2", "db3"] {
        let up = wait_line(&v, WAIT, is_line("server is UP", "galera", s), &format!("{s} UP"));
        assert!(reason_of(&up).contains("Galera cluster node is synced."), "UP reason is the body: {up}");
    }
    assert!(settle(bind, Some("db1"), 3).is_ok(), "db1 synced: the writer");

    r1.set(Reply::galera(false));
    let down = wait_line(&v, WAIT, is_line("server is DOWN", "galera", "db1"), "db1 DOWN");
    assert!(
        reason_of(&down).contains("Galera cluster node is not synced."),
        "DOWN reason should be the responder's body: {down}"
    );
    if let Err(last) = settle(bind, Some("db2"), 5) {
        panic!("db1 not synced: traffic should go to db2 (whose responder resets), got {last:?}");
    }

    // Nothing listening on db2's check port: down as well; db3 takes over. (The DOWN line
    // looked for is the first one after the stop.)
    let is_db2_down = is_line("server is DOWN", "galera", "db2");
    let earlier = v.log().lines().filter(|l| is_db2_down(l)).count();
    r2.stop();
    let down2 = poll(WAIT, Duration::from_millis(50), || {
        v.log().lines().filter(|l| is_db2_down(l)).nth(earlier).map(str::to_string)
    })
    .unwrap_or_else(|| panic!("no db2 DOWN line after its responder stopped:\n{}", v.log()));
    assert!(reason_of(&down2).to_lowercase().contains("refused"), "refused connect: {down2}");
    if let Err(last) = settle(bind, Some("db3"), 5) {
        panic!("db2's check port refused: traffic should go to db3, got {last:?}");
    }
    // Every probe went to a check port, and the responders never had to read a request.
    assert!(r1.count() > 0 && r3.count() > 0);
}

/// Probes on a separate port (check `port`; per-server `check_address` + `check_port`)
/// never touch the traffic port.
#[test]
fn probe_port_and_address_are_not_the_traffic_port() {
    let t1 = Backend::echo_any("T1");
    let t2 = Backend::echo_any("T2");
    // A plain TCP listener counts the tcp probes.
    let side_tcp = Backend::with_handler("side", "127.0.0.1:0".parse().unwrap(), |_s| {});
    // The http probe goes to 127.0.0.2 (any 127/8 address is local on Linux).
    let side_http = Responder::start_on("127.0.0.2:0".parse().unwrap(), Reply::http(200, "OK", "ok"));
    let (b1, b2) = (free_addr(), free_addr());
    let cfg = format!(
        r#"{}
[services.tcp]
bind = "{b1}"
[services.tcp.check]
kind = "tcp"
port = {p1}
interval = "100ms"
timeout = "2s"
{}
[services.web]
bind = "{b2}"
[services.web.check]
kind = "http"
interval = "100ms"
timeout = "2s"
{}"#,
        global(""),
        servers("tcp", &[("T1", t1.addr, "")]),
        servers(
            "web",
            &[("T2", t2.addr, &format!("check_address = \"127.0.0.2\"\ncheck_port = {}", side_http.addr.port()))]
        ),
        p1 = side_tcp.addr.port(),
    );
    let v = Vipgate::spawn(&cfg);
    let probed =
        eventually(WAIT, || (side_tcp.accepted.load(Ordering::SeqCst) >= 5 && side_http.count() >= 5).then_some(()));
    assert!(
        probed.is_some(),
        "probes should reach the side ports: tcp {} http {}; log:\n{}",
        side_tcp.accepted.load(Ordering::SeqCst),
        side_http.count(),
        v.log()
    );
    assert_eq!(t1.accepted.load(Ordering::SeqCst), 0, "tcp probe touched the traffic port");
    assert_eq!(t2.accepted.load(Ordering::SeqCst), 0, "http probe touched the traffic port");

    assert_eq!(try_which_server(b1).as_deref(), Some("T1"));
    assert_eq!(try_which_server(b2).as_deref(), Some("T2"));
    assert_eq!(t1.accepted.load(Ordering::SeqCst), 1, "one client, one connection on T1");
    assert_eq!(t2.accepted.load(Ordering::SeqCst), 1, "one client, one connection on T2");
}

/// interval 5s, fastinter 100ms, downinter 200ms, rise 3 / fall 3: once the first probe
/// fails the next two come fast, probes keep coming fast while down, and a healthy
/// responder is back up in well under an interval.
#[test]
fn fastinter_and_downinter() {
    let e = Backend::echo_any("S");
    let r = Responder::start(Reply::http(200, "OK", "ok"));
    let bind = free_addr();
    let cfg = format!(
        r#"{}
[services.s]
bind = "{bind}"
retries = 0
[services.s.check]
kind = "http"
port = {p}
interval = "5s"
fastinter = "100ms"
downinter = "200ms"
timeout = "2s"
rise = 3
fall = 3
{}"#,
        global(""),
        servers("s", &[("S", e.addr, "")]),
        p = r.addr.port(),
    );
    let v = Vipgate::start(&cfg, bind);
    wait_line(&v, WAIT, is_line("server is UP", "s", "S"), "S UP");
    r.set(Reply::http(503, "Service Unavailable", "no"));

    // The next probe comes after up to one interval (5 s); then fall 3 at fastinter.
    wait_line(&v, Duration::from_secs(20), is_line("server is DOWN", "s", "S"), "S DOWN");
    let fails: Vec<Instant> = r.hits().iter().filter(|h| h.status == 503).map(|h| h.at).collect();
    assert!(fails.len() >= 3, "three failed probes before DOWN: {}", fails.len());
    let span = fails[2] - fails[0];
    assert!(span < Duration::from_secs(3), "fall 3 at fastinter 100ms took {span:?} (interval is 5 s)");
    assert!(v.log().contains("state=going down"), "a 'going down' state change line is logged");

    // While down, probes come every downinter (200 ms), not every 5 s.
    let n0 = r.count();
    thread::sleep(Duration::from_millis(1500));
    let while_down = r.count() - n0;
    assert!(while_down >= 3, "only {while_down} probes in 1.5 s while down (downinter 200ms)");
    assert_eq!(try_which_server(bind), None, "S is down: no server for a client");

    let healthy_at = Instant::now();
    r.set(Reply::http(200, "OK", "ok"));
    wait_nth_line(&v, Duration::from_secs(10), is_line("server is UP", "s", "S"), 2, "S UP again");
    let oks: Vec<Instant> = r.hits().iter().filter(|h| h.status == 200 && h.at >= healthy_at).map(|h| h.at).collect();
    assert!(oks.len() >= 3, "rise 3 needs three good probes: {}", oks.len());
    let back = oks[2] - healthy_at;
    assert!(back < Duration::from_secs(3), "back up {back:?} after the responder healed (downinter 200ms)");
    assert_eq!(try_which_server(bind).as_deref(), Some("S"));
}

/// `observe_errors = 1`: a refused connect from real traffic marks B down at once (the
/// probe, on a port that still answers, every 10 s, would not notice); the client is
/// retried on A, and later clients go straight to A.
#[test]
fn passive_health_marks_down_on_connect_failure() {
    let ea = Backend::echo_any("A");
    let mut eb = Backend::echo_any("B");
    let ca = Backend::with_handler("checkA", "127.0.0.1:0".parse().unwrap(), |_s| {});
    let cb = Backend::with_handler("checkB", "127.0.0.1:0".parse().unwrap(), |_s| {});
    let bind = free_addr();
    let cfg = format!(
        r#"{}
[services.p]
bind = "{bind}"
balance = "roundrobin"
retries = 3
observe_errors = 1
[services.p.check]
kind = "tcp"
interval = "10s"
timeout = "2s"
rise = 2
fall = 2
{}"#,
        global(""),
        servers(
            "p",
            &[
                ("A", ea.addr, &format!("check_port = {}", ca.addr.port())),
                ("B", eb.addr, &format!("check_port = {}", cb.addr.port())),
            ]
        ),
    );
    let v = Vipgate::start(&cfg, bind);
    let both = names(bind, 4);
    assert_eq!(tally(both.iter().flatten()).len(), 2, "both serve at first: {both:?}");

    eb.stop();
    let after = names(bind, 10);
    assert!(
        after.iter().all(|r| r.as_deref() == Some("A")),
        "every client served, by A, although B's traffic port is closed: {after:?}"
    );
    let passive = wait_line(
        &v,
        Duration::from_secs(5),
        |l| l.contains("server is DOWN (passive health") && field(l, "server").as_deref() == Some("B"),
        "passive DOWN of B",
    );
    assert_eq!(field(&passive, "service").as_deref(), Some("p"));
    let failed =
        v.log().lines().filter(|l| l.contains("connect failed") && field(l, "server").as_deref() == Some("B")).count();
    assert_eq!(failed, 1, "after the first failed connect B got no more clients; log:\n{}", v.log());
    assert!(
        !v.log()
            .lines()
            .any(|l| l.contains("connection closed") && field(l, "end").as_deref() == Some("connect_failure")),
        "no client was refused"
    );
    assert!(cb.accepted.load(Ordering::SeqCst) >= 1, "B's check port was probed");
}

/// A server whose first probe fails never gets a client (long interval: only the first
/// probe can have said so), and a listener does not accept before the first probe round:
/// an early client waits for a slow first probe and is then served.
#[test]
fn startup_waits_for_first_probe() {
    let ea = Backend::echo_any("A");
    let eb = Backend::echo_any("B");
    let ec = Backend::echo_any("C");
    let ra = Responder::start(Reply::http(200, "OK", "ok"));
    let rb = Responder::start(Reply::http(503, "Service Unavailable", "starting"));
    let rc = Responder::start(Reply::http(200, "OK", "ok").with_delay(Duration::from_millis(800)));
    let (b1, b2) = (free_addr(), free_addr());
    let check = |svc: &str| {
        format!("[services.{svc}.check]\nkind = \"http\"\ninterval = \"30s\"\ntimeout = \"5s\"\nrise = 2\nfall = 2\n")
    };
    let cfg = format!(
        "{}\n[services.s]\nbind = \"{b1}\"\nbalance = \"roundrobin\"\nretries = 0\n{}{}\n\
         [services.w]\nbind = \"{b2}\"\nretries = 0\n{}{}",
        global(""),
        check("s"),
        servers(
            "s",
            &[
                ("A", ea.addr, &format!("check_port = {}", ra.addr.port())),
                ("B", eb.addr, &format!("check_port = {}", rb.addr.port())),
            ]
        ),
        check("w"),
        servers("w", &[("C", ec.addr, &format!("check_port = {}", rc.addr.port()))]),
    );
    let mut v = Vipgate::spawn(&cfg);

    // The earliest possible client on w: connect as soon as the port is bound.
    let deadline = Instant::now() + WAIT;
    let mut early = loop {
        if let Some(st) = v.try_wait() {
            panic!("vipgate exited with {st}; log:\n{}", v.log());
        }
        if let Ok(s) = TcpStream::connect_timeout(&b2, Duration::from_secs(2)) {
            break s;
        }
        assert!(Instant::now() < deadline, "w never bound; log:\n{}", v.log());
        thread::sleep(Duration::from_millis(10));
    };
    let connected = Instant::now();
    early.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = read_line(&mut early).unwrap_or_else(|e| panic!("early client: {e}; log:\n{}", v.log()));
    assert_eq!(name, "C", "an early client waits for the first probe, then is served");
    // It connected while C's slow first probe (800 ms) was still running: held, not
    // refused or dropped.
    let first_probe = rc.hits().first().map(|h| h.at).expect("C was probed");
    assert!(connected < first_probe + Duration::from_millis(800), "the client came too late to show anything");

    let results = names(b1, 12);
    assert!(results.iter().all(|r| r.as_deref() == Some("A")), "B failed its first probe: all to A: {results:?}");
    assert_eq!(eb.accepted.load(Ordering::SeqCst), 0, "B never saw a client");
    assert!(rb.count() >= 1 && rb.count() <= 2, "B probed once (interval 30 s): {}", rb.count());
    wait_line(&v, WAIT, is_line("server is DOWN", "s", "B"), "B DOWN at start");
}
