//! `mode = "http"` request and response rules through the real binary: header set/del,
//! deny rules, cookie persistence, host/path routes, retries with passive health, head
//! limits, and the `vipgate check` diagnostics of the http keys.
//!
//! Everything runs over loopback sockets against `vipgate run`; every wait is bounded.

mod common;
#[path = "support/http_backend.rs"]
mod http_backend;
#[path = "support/http_client.rs"]
mod http_client;

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use http_backend::HttpBackend;
use http_client::{get, read_response, send, Resp};
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Start vipgate on `cfg` and wait until every address in `binds` accepts (connect, then
/// close at once: an http listener would otherwise wait for a request head).
fn start(cfg: &str, binds: &[SocketAddr]) -> Vipgate {
    let mut v = Vipgate::spawn(cfg);
    for bind in binds {
        let ok = eventually(WAIT, || {
            if let Some(st) = v.try_wait() {
                panic!("vipgate exited with {st}:\n{}", v.log());
            }
            TcpStream::connect_timeout(bind, Duration::from_millis(500)).ok()
        });
        assert!(ok.is_some(), "vipgate never listened on {bind}:\n{}", v.log());
    }
    v
}

/// `[[services.SVC.servers]]` for one server with extra lines.
fn server(svc: &str, name: &str, addr: SocketAddr, extra: &str) -> String {
    format!("\n[[services.{svc}.servers]]\nname = \"{name}\"\naddress = \"{addr}\"\n{extra}\n")
}

/// A connection with bounded reads and writes.
fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to vipgate");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(15))).unwrap();
    s
}

/// `GET path` with `Host: host` on a fresh connection, plus `extra` header lines.
fn get_host(addr: SocketAddr, host: &str, path: &str, extra: &str) -> Resp {
    let mut s = connect(addr);
    send(&mut s, &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}\r\n"))
        .unwrap_or_else(|e| panic!("no response to GET {path} (Host {host}): {e}"))
}

/// `GET path` with a `Cookie` header (test.example host, new connection).
fn get_cookie(addr: SocketAddr, path: &str, cookie: &str) -> Resp {
    get(addr, path, &format!("Cookie: {cookie}\r\n"))
}

/// The server name the test backend reported.
fn served_by(r: &Resp) -> String {
    assert_eq!(r.status, 200, "expected a backend answer:\n{}", r.text());
    r.field("server").unwrap_or_else(|| panic!("no server= in the body:\n{}", r.text()))
}

/// Same checksum as the test backend's `body_sum`.
fn body_sum(data: &[u8]) -> u64 {
    data.iter().fold(0u64, |sum, b| sum.wrapping_mul(31).wrapping_add(u64::from(*b)))
}

/// Log lines that satisfy `pred`, right now.
fn log_lines(v: &Vipgate, pred: impl Fn(&str) -> bool) -> Vec<String> {
    v.log().lines().filter(|l| pred(l)).map(str::to_string).collect()
}

/// A plain HTTP/1.1 server on a thread per connection, for what the hyper test backend
/// cannot do: it answers every request head (GET only, keep-alive) with 200, the fixed
/// response header lines `headers`, and the request head it received as the body.
struct RawBackend {
    backend: Backend,
    requests: Arc<AtomicUsize>,
}

impl RawBackend {
    fn start(headers: &'static str) -> RawBackend {
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        let handler = move |mut s: TcpStream| {
            let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
            let _ = s.set_write_timeout(Some(Duration::from_secs(30)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match s.read(&mut chunk) {
                        Ok(0) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => return,
                    }
                };
                let head: Vec<u8> = buf.drain(..end).collect();
                counter.fetch_add(1, SeqCst);
                let mut out = format!(
                    "HTTP/1.1 200 OK\r\n{headers}Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
                    head.len()
                )
                .into_bytes();
                out.extend_from_slice(&head);
                if s.write_all(&out).is_err() {
                    return;
                }
            }
        };
        RawBackend { backend: Backend::with_handler("raw", "127.0.0.1:0".parse().unwrap(), handler), requests }
    }

    fn addr(&self) -> SocketAddr {
        self.backend.addr
    }
}

/// Values of request header `name` in a request head the raw backend echoed back.
fn echoed_header(r: &Resp, name: &str) -> Vec<String> {
    r.text()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------
// 1. set_headers / del_headers
// ---------------------------------------------------------------------------------------

#[test]
fn request_and_response_header_rules() {
    let b = HttpBackend::start("b1");
    let raw = RawBackend::start(
        "Server: Apache/2.4.41 (Ubuntu)\r\nX-Powered-By: PHP/7.4.3\r\nX-Content-Type-Options: sniff\r\nX-Keep: yes\r\n",
    );
    let (api, web) = (free_addr(), free_addr());
    let cfg = format!(
        r#"{}
[services.api]
bind = "{api}"
mode = "http"
set_headers = {{ X-Tenant = "vip", X-Forwarded-Ssl = "off" }}
del_headers = ["X-Debug", "x-internal-token"]
{}
[services.web]
bind = "{web}"
mode = "http"
[services.web.request]
set_headers = {{ X-Client-Cert = "none" }}
del_headers = ["X-Debug"]
[services.web.response]
set_headers = {{ Strict-Transport-Security = "max-age=63072000; includeSubDomains", X-Frame-Options = "DENY", X-Content-Type-Options = "nosniff" }}
del_headers = ["Server", "x-powered-by"]
{}"#,
        global(""),
        server("api", "b1", b.addr, ""),
        server("web", "raw", raw.addr(), ""),
    );
    let v = start(&cfg, &[api, web]);

    // Service-level keys act on the request.
    let r = get(api, "/v3", "X-Tenant: evil\r\nX-Tenant: evil2\r\nX-Debug: 1\r\nX-Internal-Token: t\r\nX-Keep: k\r\n");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), v.log());
    assert_eq!(r.seen_header("x-tenant"), ["vip"], "set_headers must replace every client value:\n{}", r.text());
    assert_eq!(r.seen_header("x-forwarded-ssl"), ["off"]);
    assert!(r.seen_header("x-debug").is_empty(), "del_headers X-Debug reached the server:\n{}", r.text());
    assert!(r.seen_header("x-internal-token").is_empty(), "del_headers x-internal-token reached the server");
    assert_eq!(r.seen_header("x-keep"), ["k"], "an unrelated header must pass");
    assert!(r.header("strict-transport-security").is_none(), "api has no response rules");

    // [services.web.request] and [services.web.response].
    let r = get(web, "/", "X-Client-Cert: forged\r\nX-Debug: 1\r\nX-Other: o\r\n");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), v.log());
    assert_eq!(echoed_header(&r, "x-client-cert"), ["none"], "request head at the server:\n{}", r.text());
    assert!(echoed_header(&r, "x-debug").is_empty(), "{}", r.text());
    assert_eq!(echoed_header(&r, "x-other"), ["o"]);
    assert_eq!(r.headers_named("strict-transport-security"), ["max-age=63072000; includeSubDomains"], "{r:?}");
    assert_eq!(r.headers_named("x-frame-options"), ["DENY"]);
    assert_eq!(r.headers_named("x-content-type-options"), ["nosniff"], "set must replace the server's value");
    assert!(r.header("server").is_none(), "del_headers Server: still sent {:?}", r.header("server"));
    assert!(r.header("x-powered-by").is_none(), "del_headers x-powered-by: still sent");
    assert_eq!(r.headers_named("x-keep"), ["yes"], "a server header without a rule must pass");
    assert_eq!(raw.requests.load(SeqCst), 1);
}

// ---------------------------------------------------------------------------------------
// 2. Deny rules
// ---------------------------------------------------------------------------------------

#[test]
fn deny_rules_answer_without_reaching_the_server() {
    let b = HttpBackend::start("b1");
    let bind = free_addr();
    let keys = r#"mode = "http"
[[services.api.deny]]
path_prefix = "/server-status"
[[services.api.deny]]
path_contains = "/."
[[services.api.deny]]
path_regex = "\\.php$"
status = 404
"#;
    let v = start(&service_toml("", "api", bind, keys, &[("b1", b.addr, "")]), &[bind]);

    let denied = [
        ("/server-status", 403),
        ("/SERVER-STATUS", 403),
        ("/Server-Status?auto", 403),
        ("/server-status/x", 403),
        ("//server-status", 403),
        ("/%73erver-status", 403),
        ("/console/%2e%2e/etc", 403),
        ("/console/%2E%2E/etc/passwd", 403),
        ("/a/.git", 403),
        ("/a/.git/config", 403),
        ("/x/shell.php", 404),
        ("/x/shell.php?cmd=id", 404),
        ("/x/shell%2ephp", 404),
    ];
    for (path, status) in denied {
        let r = get(bind, path, "");
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert!(r.text().contains("denied"), "{path}: vipgate's own answer expected:\n{}", r.text());
        assert_eq!(b.requests(), 0, "{path} reached the server");
    }

    let allowed = ["/", "/v3/auth/tokens", "/server", "/status/server-status", "/a.b/c", "/x/php", "/x/shell.PHP"];
    for (i, path) in allowed.iter().enumerate() {
        let r = get(bind, path, "");
        assert_eq!(r.status, 200, "{path} should pass:\n{}", r.text());
        assert_eq!(r.field("path").as_deref(), Some(*path));
        assert_eq!(b.requests(), i + 1);
    }
    let line = v
        .wait_log_line(WAIT, |l| l.contains("path=/x/shell.php") && l.contains("status=404"))
        .unwrap_or_else(|| panic!("no access log line for the 404:\n{}", v.log()));
    assert!(line.contains("server=-"), "a denied request has no server: {line}");
}

// ---------------------------------------------------------------------------------------
// 3. Cookie persistence
// ---------------------------------------------------------------------------------------

#[test]
fn cookie_persistence_sticks_strips_and_fails_over() {
    let mut b1 = HttpBackend::start("b1");
    let mut b2 = HttpBackend::start("b2");
    let bind = free_addr();
    let keys =
        format!("mode = \"http\"\nbalance = \"roundrobin\"\ncookie = \"SERVERID\"\n{}", check("api", "200ms", 1, 1));
    let list = [("b1", b1.addr, "cookie = \"c1\""), ("b2", b2.addr, "cookie = \"c2\"")];
    let v = start(&service_toml("", "api", bind, &keys, &list), &[bind]);
    let id_of = |server: &str| if server == "b1" { "c1" } else { "c2" };

    // A first request gets the cookie of the server that answered, and is not cacheable.
    let r = get(bind, "/", "");
    let first = served_by(&r);
    let id = id_of(&first);
    assert_eq!(r.headers_named("set-cookie"), [format!("SERVERID={id}; path=/; HttpOnly")], "{r:?}");
    assert!(
        r.headers_named("cache-control").iter().any(|v| v.split(',').any(|d| d.trim() == "private")),
        "a response carrying the server cookie must be private: {r:?}"
    );

    // Sent back, it always lands on that server, which never sees it, and is not re-set.
    for i in 0..10 {
        let r = get_cookie(bind, &format!("/again/{i}"), &format!("SERVERID={id}"));
        assert_eq!(served_by(&r), first, "request {i} with SERVERID={id} left its server");
        assert!(r.header("set-cookie").is_none(), "request {i}: cookie set again: {r:?}");
        assert!(r.header("cache-control").is_none(), "request {i}: no cookie, nothing to make private: {r:?}");
        assert!(r.seen_header("cookie").is_empty(), "the server saw vipgate's cookie:\n{}", r.text());
    }

    // Other cookies pass byte for byte.
    let r = get_cookie(bind, "/", "a=1; SERVERID=c1; b=2");
    assert_eq!(served_by(&r), "b1");
    assert_eq!(r.seen_header("cookie"), ["a=1; b=2"], "{}", r.text());
    assert!(r.header("set-cookie").is_none());
    let r = get_cookie(bind, "/", "SERVERID=c2;sessionid=\"x y\";  theme=dark");
    assert_eq!(served_by(&r), "b2");
    assert_eq!(r.seen_header("cookie"), ["sessionid=\"x y\";  theme=dark"], "{}", r.text());

    // An unknown value: balanced normally, stripped, and replaced by a valid cookie.
    let mut seen = BTreeSet::new();
    for _ in 0..4 {
        let r = get_cookie(bind, "/", "SERVERID=zzz; a=1");
        let s = served_by(&r);
        assert_eq!(r.headers_named("set-cookie"), [format!("SERVERID={}; path=/; HttpOnly", id_of(&s))], "{r:?}");
        assert_eq!(r.seen_header("cookie"), ["a=1"], "{}", r.text());
        seen.insert(s);
    }
    assert_eq!(seen.len(), 2, "an unknown cookie must not pin a server: {seen:?}");

    // The cookie's server goes down: its clients move and get the other server's cookie.
    let (down, other) = if first == "b1" { ("b1", "b2") } else { ("b2", "b1") };
    if down == "b1" {
        b1.stop();
    } else {
        b2.stop();
    }
    let t = Instant::now();
    v.wait_log_line(WAIT, |l| l.contains("server is DOWN") && field(l, "server").as_deref() == Some(down))
        .unwrap_or_else(|| panic!("{down} never marked DOWN:\n{}", v.log()));
    println!("{down} marked DOWN {:?} after stop", t.elapsed());
    let r = get_cookie(bind, "/", &format!("SERVERID={id}"));
    assert_eq!(served_by(&r), other, "the old cookie's server is down");
    let new_id = id_of(other);
    assert_eq!(r.headers_named("set-cookie"), [format!("SERVERID={new_id}; path=/; HttpOnly")], "{r:?}");
    let r = get_cookie(bind, "/", &format!("SERVERID={new_id}"));
    assert_eq!(served_by(&r), other);
    assert!(r.header("set-cookie").is_none());
}

// ---------------------------------------------------------------------------------------
// 4. Routes
// ---------------------------------------------------------------------------------------

#[test]
fn routes_by_host_and_path_prefix() {
    let ks = HttpBackend::start("ks");
    let nova = HttpBackend::start("nova");
    let def = HttpBackend::start("def");
    let (api, strict) = (free_addr(), free_addr());
    let cfg = format!(
        r#"{}
[services.api]
bind = "{api}"
mode = "http"
[[services.api.routes]]
host = "identity.example"
pool = "keystone"
[[services.api.routes]]
host = "*.compute.example"
pool = "nova"
[[services.api.routes]]
path_prefix = "/identity"
pool = "keystone"
{}{}{}
[services.strict]
bind = "{strict}"
mode = "http"
[[services.strict.routes]]
host = "identity.example"
pool = "keystone"
[[services.strict.routes]]
path_prefix = "/compute"
pool = "nova"
{}{}"#,
        global(""),
        server("api", "ks", ks.addr, "pool = \"keystone\""),
        server("api", "nova", nova.addr, "pool = \"nova\""),
        server("api", "def", def.addr, ""),
        server("strict", "ks", ks.addr, "pool = \"keystone\""),
        server("strict", "nova", nova.addr, "pool = \"nova\""),
    );
    let v = start(&cfg, &[api, strict]);

    let cases = [
        ("identity.example", "/v3/auth/tokens", "ks"),
        ("IDENTITY.Example:5000", "/v3", "ks"),
        ("identity.example.", "/", "ks"),
        ("nova.compute.example:8774", "/v2.1/servers", "nova"),
        ("a.b.compute.example", "/", "nova"),
        ("compute.example", "/", "def"),
        ("xcompute.example", "/", "def"),
        ("other.example", "/identity/v3", "ks"),
        ("other.example:80", "/identity", "ks"),
        ("other.example", "/Identity/v3", "def"),
        ("other.example", "/", "def"),
        ("identity.example.org", "/", "def"),
    ];
    for (host, path, want) in cases {
        let r = get_host(api, host, path, "");
        assert_eq!(r.status, 200, "Host {host} {path}: {}\n{}", r.text(), v.log());
        assert_eq!(served_by(&r), want, "Host {host} path {path}");
        assert_eq!(r.seen_header("host"), [host], "Host must reach the server unchanged");
    }
    // An absolute-form target's authority wins over Host (RFC 9112 §3.2.2).
    let mut s = connect(api);
    let r = send(
        &mut s,
        "GET http://identity.example:5000/v3 HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
    )
    .expect("response to an absolute-form request");
    assert_eq!(served_by(&r), "ks");

    let total = || ks.requests() + nova.requests() + def.requests();
    let before = total();
    assert_eq!(served_by(&get_host(strict, "identity.example", "/", "")), "ks");
    assert_eq!(served_by(&get_host(strict, "other.example", "/compute/v2.1", "")), "nova");
    let r = get_host(strict, "other.example", "/", "");
    assert_eq!(r.status, 404, "no route and no untagged server: {}", r.text());
    assert!(r.text().contains("no route"), "{}", r.text());
    assert_eq!(total(), before + 2, "the 404 must not reach a server");
}

// ---------------------------------------------------------------------------------------
// 5. `vipgate check` diagnostics
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct Diag {
    line: usize,
    col: usize,
    msg: String,
}

/// Run `vipgate check` on `text`: it must exit 1 and every stderr line must be
/// `FILE:LINE:COL: message`.
fn check_rejects(text: &str) -> (Vec<Diag>, String) {
    let path = write_config("http-rules-check", text);
    let p = path.to_str().unwrap().to_string();
    let out = run_cli(&["check", "--config", &p]);
    let _ = std::fs::remove_file(&path);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "check should exit 1; stderr:\n{stderr}\nconfig:\n{text}");
    let diags = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let parse = || -> Option<Diag> {
                let rest = l.strip_prefix(&p)?.strip_prefix(':')?;
                let mut it = rest.splitn(3, ':');
                let line = it.next()?.parse().ok()?;
                let col = it.next()?.parse().ok()?;
                let msg = it.next()?.strip_prefix(' ')?.to_string();
                (line > 0 && col > 0).then_some(Diag { line, col, msg })
            };
            parse().unwrap_or_else(|| panic!("not `{p}:LINE:COL: message`: {l:?}\nstderr:\n{stderr}"))
        })
        .collect();
    (diags, stderr)
}

/// 1-based (line, column) of the first occurrence of `needle` in `text`.
fn position_of(text: &str, needle: &str) -> (usize, usize) {
    let at = text.find(needle).unwrap_or_else(|| panic!("{needle:?} not in the config"));
    let line = text[..at].matches('\n').count() + 1;
    let col = at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

/// Where a diagnostic must point.
enum At {
    /// The first occurrence of this text.
    Text(&'static str),
    /// Column 1 of the `[[...]]` header of the array-of-tables entry holding this text.
    HeaderOf(&'static str),
}

impl At {
    fn position(&self, text: &str) -> (usize, usize) {
        match self {
            At::Text(needle) => position_of(text, needle),
            At::HeaderOf(needle) => {
                let at = text.find(needle).unwrap_or_else(|| panic!("{needle:?} not in the config"));
                let header = text[..at].rfind("\n[[").map_or(0, |i| i + 1);
                (text[..header].matches('\n').count() + 1, 1)
            }
        }
    }
}

/// `vipgate check` rejects `text` with exactly one diagnostic, which contains every
/// phrase and points at `at`.
fn expect_one_diagnostic(what: &str, text: &str, phrases: &[&str], at: At) {
    let (diags, stderr) = check_rejects(text);
    let d = diags
        .iter()
        .find(|d| phrases.iter().all(|p| d.msg.contains(p)))
        .unwrap_or_else(|| panic!("{what}: no diagnostic containing {phrases:?}; stderr:\n{stderr}"));
    println!("{what}: {}:{}: {}", d.line, d.col, d.msg);
    let (line, col) = at.position(text);
    assert_eq!((d.line, d.col), (line, col), "{what}: wrong position; stderr:\n{stderr}\nconfig:\n{text}");
    assert_eq!(diags.len(), 1, "{what}: exactly one problem expected; stderr:\n{stderr}");
}

const TWO_SERVERS: &str = "[[services.api.servers]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n\
                           [[services.api.servers]]\nname = \"b\"\naddress = \"127.0.0.1:2\"\n";

fn api_head(mode: &str) -> String {
    format!("[services.api]\nbind = \"127.0.0.1:{}\"\nmode = \"{mode}\"\n", free_port())
}

#[test]
fn check_reports_http_config_errors_with_positions() {
    let head = api_head("http");
    expect_one_diagnostic(
        "route to a pool no server has",
        &format!(
            "{head}[[services.api.routes]]\nhost = \"identity.example\"\npool = \"ghost\"\n\
             [[services.api.servers]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\npool = \"keystone\"\n"
        ),
        &["route pool \"ghost\"", "no server", "pool = \"ghost\""],
        At::HeaderOf("pool = \"ghost\""),
    );
    expect_one_diagnostic(
        "deny rule without a condition",
        &format!("{head}[[services.api.deny]]\nstatus = 404\n{TWO_SERVERS}"),
        &["deny rule has no condition", "deny everything"],
        At::HeaderOf("status = 404"),
    );
    expect_one_diagnostic(
        "http-only key in a tcp service",
        &format!("{}header_timeout = \"5s\"\n{TWO_SERVERS}", api_head("tcp")),
        &["\"header_timeout\"", "mode = \"http\" only", "tcp"],
        At::Text("header_timeout"),
    );
    expect_one_diagnostic(
        "two servers with one cookie value",
        &format!(
            "{head}cookie = \"SERVERID\"\n[[services.api.servers]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n\
             cookie = \"same\"\n[[services.api.servers]]\nname = \"b\"\naddress = \"127.0.0.1:2\"\ncookie = \"same\"\n"
        ),
        &["cookie value \"same\"", "server \"b\"", "another server"],
        At::HeaderOf("name = \"b\""),
    );
    expect_one_diagnostic(
        "a cookie value equal to another server's default (its name)",
        &format!(
            "{head}cookie = \"SERVERID\"\n[[services.api.servers]]\nname = \"c1\"\naddress = \"127.0.0.1:1\"\n\
             [[services.api.servers]]\nname = \"b\"\naddress = \"127.0.0.1:2\"\ncookie = \"c1\"\n"
        ),
        &["cookie value \"c1\"", "server \"b\"", "another server"],
        At::HeaderOf("name = \"b\""),
    );
    expect_one_diagnostic(
        "accept_proxy = \"yes\"",
        &format!("{head}accept_proxy = \"yes\"\n{TWO_SERVERS}"),
        &["\"accept_proxy\" must be true, false, or a list"],
        At::Text("\"yes\""),
    );
}

#[test]
fn check_reports_a_bad_path_regex_on_one_line() {
    expect_one_diagnostic(
        "bad path_regex",
        &format!("{}[[services.api.deny]]\npath_regex = \"/(unclosed\"\n{TWO_SERVERS}", api_head("http")),
        &["bad path_regex", "unclosed group"],
        At::Text("\"/(unclosed\""),
    );
}

// ---------------------------------------------------------------------------------------
// 6. Retries and passive health
// ---------------------------------------------------------------------------------------

#[test]
fn connect_failures_are_retried_for_gets_and_posts() {
    let dead = free_addr();
    let alive = HttpBackend::start("alive");
    let bind = free_addr();
    let keys = "mode = \"http\"\nbalance = \"roundrobin\"\n";
    let v = start(&service_toml("", "api", bind, keys, &[("dead", dead, ""), ("alive", alive.addr, "")]), &[bind]);
    let t = Instant::now();
    for i in 0..20 {
        let r = get(bind, &format!("/get/{i}"), "");
        assert_eq!(served_by(&r), "alive", "GET {i}:\n{}", v.log());
    }
    // POSTs with bodies, on one kept-alive client connection: a connect failure happens
    // before any byte of the body left, so the body goes whole to the next server.
    let mut s = connect(bind);
    for i in 0..20usize {
        let body: Vec<u8> = (0..3000 + i).map(|j| (j * 7 + i) as u8).collect();
        let mut raw = format!(
            "POST /post/{i} HTTP/1.1\r\nHost: test.example\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(&body);
        s.write_all(&raw).unwrap();
        let r = read_response(&mut s).unwrap_or_else(|e| panic!("POST {i}: {e}\n{}", v.log()));
        assert_eq!(served_by(&r), "alive", "POST {i}");
        assert_eq!(r.field("method").as_deref(), Some("POST"));
        assert_eq!(r.field("body_len"), Some(body.len().to_string()), "POST {i} body length");
        assert_eq!(r.field("body_sum"), Some(body_sum(&body).to_string()), "POST {i} body bytes");
    }
    println!("40 requests over [dead, alive] in {:?}", t.elapsed());
    assert_eq!(alive.requests(), 40);
    let failed = log_lines(&v, |l| l.contains("connect failed") && field(l, "server").as_deref() == Some("dead"));
    println!("connect failures to dead: {}", failed.len());
    assert!(
        failed.len() >= 10,
        "roundrobin should have tried the dead server often, got {}:\n{}",
        failed.len(),
        v.log()
    );
    assert!(!v.log().contains("status=503"), "{}", v.log());
}

/// With `observe_errors`, real traffic marks a server down before the check does. The
/// check of `dead` is pointed at a live port (`check_port`) so that the checker keeps it
/// up: a dead port probed directly is marked down by the very first probe, at start,
/// and passive health would have nothing to do.
#[test]
fn observe_errors_marks_a_failing_server_down_passively() {
    let dead = free_addr();
    let alive = HttpBackend::start("alive");
    let bind = free_addr();
    let keys = "mode = \"http\"\nbalance = \"roundrobin\"\nobserve_errors = 2\n[services.api.check]\nkind = \"tcp\"\n\
                interval = \"5s\"\nfastinter = \"5s\"\ndowninter = \"5s\"\nrise = 5\nfall = 3\n";
    let list = [("dead", dead, format!("check_port = {}", alive.addr.port())), ("alive", alive.addr, String::new())];
    let list: Vec<(&str, SocketAddr, &str)> = list.iter().map(|(n, a, e)| (*n, *a, e.as_str())).collect();
    let v = start(&service_toml("", "api", bind, keys, &list), &[bind]);
    let is_passive = |l: &str| l.contains("passive health") && field(l, "server").as_deref() == Some("dead");
    let is_failure = |l: &str| l.contains("connect failed") && field(l, "server").as_deref() == Some("dead");
    assert!(!v.log().contains("server is DOWN"), "the check must keep dead up at start:\n{}", v.log());

    let t = Instant::now();
    let mut sent = 0;
    while log_lines(&v, is_passive).is_empty() {
        assert!(sent < 20, "no passive DOWN after {sent} requests:\n{}", v.log());
        assert_eq!(served_by(&get(bind, "/", "")), "alive", "request {sent}");
        sent += 1;
    }
    let line = &log_lines(&v, is_passive)[0];
    println!("passive DOWN after {sent} requests, {:?}: {line}", t.elapsed());
    assert!(line.contains("server is DOWN"), "{line}");
    let failures = log_lines(&v, is_failure).len();
    assert_eq!(failures, 2, "observe_errors = 2 means DOWN on the second failure in a row:\n{}", v.log());

    // Down now: further requests do not try it (the check needs 5 successes at 5 s).
    for i in 0..10 {
        assert_eq!(served_by(&get(bind, "/", "")), "alive", "request {i} after DOWN");
    }
    assert_eq!(log_lines(&v, is_failure).len(), failures, "the dead server was tried after passive DOWN:\n{}", v.log());
}

// ---------------------------------------------------------------------------------------
// 7. Head limits
// ---------------------------------------------------------------------------------------

fn request_with_headers(n: usize) -> String {
    let mut raw = String::from("GET /many HTTP/1.1\r\nHost: test.example\r\n");
    for i in 0..n {
        raw.push_str(&format!("X-H{i}: v\r\n"));
    }
    raw.push_str("\r\n");
    raw
}

#[test]
fn too_many_headers_or_bytes_get_431() {
    let b = HttpBackend::start("b1");
    let bind = free_addr();
    let keys = "mode = \"http\"\nmax_headers = 100\nmax_header_bytes = 4096\n";
    let v = start(&service_toml("", "api", bind, keys, &[("b1", b.addr, "")]), &[bind]);

    // 150 small headers (about 1.6 KB, under max_header_bytes).
    let raw = request_with_headers(150);
    assert!(raw.len() < 4096);
    let r = send(&mut connect(bind), &raw).expect("a 431, not a silent close");
    assert_eq!(r.status, 431, "{}\n{}", r.text(), v.log());
    assert_eq!(b.requests(), 0);

    // Under the limit: fine, and on the same connection, the next request with too many
    // headers is refused too.
    let mut s = connect(bind);
    let r = send(&mut s, &request_with_headers(90)).expect("response");
    assert_eq!(r.status, 200, "90 headers are under max_headers = 100:\n{}", r.text());
    assert_eq!(r.seen_header("x-h89"), ["v"]);
    let r = send(&mut s, &request_with_headers(150)).expect("431 on a kept-alive connection");
    assert_eq!(r.status, 431, "{}", r.text());
    assert_eq!(b.requests(), 1);

    // max_header_bytes: the first head of a connection, and a later one.
    let big = format!("GET / HTTP/1.1\r\nHost: test.example\r\nX-Big: {}\r\n\r\n", "a".repeat(6000));
    let r = send(&mut connect(bind), &big).expect("431 for an oversized first head");
    assert_eq!(r.status, 431, "{}", r.text());
    let mut s = connect(bind);
    assert_eq!(send(&mut s, "GET / HTTP/1.1\r\nHost: test.example\r\n\r\n").expect("response").status, 200);
    let r = send(&mut s, &big).expect("431 for an oversized later head");
    assert_eq!(r.status, 431, "{}", r.text());
    assert_eq!(b.requests(), 2);
}

#[test]
fn each_pool_keeps_its_own_check_and_disabled_servers_start_in_maintenance() {
    // The default pool's probe (`/`) passes; the static pool's own probe (`/close`: the
    // backend hangs up without answering) fails, so only the routed requests find no
    // server. One server starts `disabled` and must take nothing until enabled.
    let web = HttpBackend::start("web");
    let off = HttpBackend::start("off");
    let stat = HttpBackend::start("static");
    let (api, admin) = (free_addr(), free_addr());
    let cfg = format!(
        r#"{}
[admin]
bind = "{admin}"

[services.api]
bind = "{api}"
mode = "http"
[[services.api.routes]]
path_prefix = "/static"
pool = "static"
[services.api.check]
kind = "http"
path = "/"
interval = "200ms"
rise = 1
fall = 1
[services.api.pools.static.check]
kind = "http"
path = "/close"
interval = "200ms"
rise = 1
fall = 1
{}{}{}"#,
        global(""),
        server("api", "web", web.addr, ""),
        server("api", "off", off.addr, "disabled = true"),
        server("api", "static", stat.addr, "pool = \"static\""),
    );
    let v = start(&cfg, &[api]);
    let ok = eventually(WAIT, || {
        let r = get_host(api, "x.example", "/", "");
        (r.status == 200).then_some(())
    });
    assert!(ok.is_some(), "the default pool never came up:\n{}", v.log());
    for _ in 0..6 {
        assert_eq!(served_by(&get_host(api, "x.example", "/", "")), "web", "a disabled server took a request");
    }
    let r = get_host(api, "x.example", "/static/logo.png", "");
    assert_eq!(r.status, 503, "the static pool's own check must fail it: {}\n{}", r.text(), v.log());
    assert!(log_lines(&v, |l| l.contains("server=off method=")).is_empty(), "a disabled server took a request");

    let view = get(admin, "/api/v1/services", "");
    let all: serde_json::Value = serde_json::from_slice(&view.body).unwrap_or_else(|e| panic!("{e}: {}", view.text()));
    let state = |name: &str| {
        let list = all["services"][0]["servers"].as_array().cloned().unwrap_or_default();
        list.iter().find(|s| s["name"] == name).map(|s| s["state"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(state("web").as_deref(), Some("up"), "{all}");
    assert_eq!(state("off").as_deref(), Some("maint"), "{all}");
    assert_eq!(state("static").as_deref(), Some("down"), "{all}");
}
