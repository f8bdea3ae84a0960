//! The admin endpoint through the real binary: every endpoint, the bearer token, readiness,
//! drain / maint / weight changes seen in real traffic, reload through the API and the CLI
//! (`vipgate status`, `vipgate reload`), and the unix socket.

mod common;
#[path = "support/http_client.rs"]
mod http_client;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use http_client::Resp;
use vipgate::admin::api::{ErrorView, ReloadView, ServerView, ServicesView};

const TOKEN: &str = "s3cret-Token_42";

/// An `[admin]` block: TCP `addr`, and optionally a token file and a unix socket.
fn admin_block(addr: SocketAddr, token_file: Option<&Path>, socket: Option<&Path>) -> String {
    let mut s = format!("\n[admin]\nbind = \"{addr}\"\n");
    if let Some(t) = token_file {
        s.push_str(&format!("token_file = \"{}\"\n", t.display()));
    }
    if let Some(p) = socket {
        s.push_str(&format!("socket = \"{}\"\n", p.display()));
    }
    s
}

fn token_file() -> PathBuf {
    let p = temp_path("token", "txt");
    std::fs::write(&p, format!("{TOKEN}\n")).expect("write token file");
    p
}

/// One request on a fresh connection (`Connection: close`); a POST says its body is JSON,
/// as every state change must.
fn call(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &str) -> Resp {
    let mut extra = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    if method == "POST" {
        extra.push_str("Content-Type: application/json\r\n");
    }
    raw_call(addr, method, path, &extra, body)
}

fn raw_call(addr: SocketAddr, method: &str, path: &str, extra: &str, body: &str) -> Resp {
    let mut s = http_client::connect(addr);
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    http_client::send(&mut s, &raw).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// One request over the unix socket; returns (status, body).
fn unix_call(socket: &Path, method: &str, path: &str) -> (u16, String) {
    try_unix_call(socket, method, path).unwrap_or_else(|e| panic!("{method} {path} on {}: {e}", socket.display()))
}

fn try_unix_call(socket: &Path, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    try_unix_request(socket, method, path, "", "")
}

/// A POST over the unix socket with `extra` header lines (each ending in CRLF) and `body`.
fn unix_post(socket: &Path, path: &str, extra: &str, body: &str) -> (u16, String) {
    try_unix_request(socket, "POST", path, extra, body)
        .unwrap_or_else(|e| panic!("POST {path} on {}: {e}", socket.display()))
}

fn try_unix_request(
    socket: &Path,
    method: &str,
    path: &str,
    extra: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

fn json<T: serde::de::DeserializeOwned>(r: &Resp) -> T {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("bad JSON ({e}) with status {}: {}", r.status, r.text()))
}

fn services(admin: SocketAddr, token: Option<&str>) -> ServicesView {
    let r = call(admin, "GET", "/api/v1/services", token, "");
    assert_eq!(r.status, 200, "{}", r.text());
    json(&r)
}

fn server(view: &ServicesView, svc: &str, name: &str) -> ServerView {
    let s = view.services.iter().find(|s| s.name == svc).unwrap_or_else(|| panic!("no service {svc}: {view:?}"));
    s.servers.iter().find(|s| s.name == name).cloned().unwrap_or_else(|| panic!("no server {name}: {view:?}"))
}

/// POST a change; returns the answer.
fn change(admin: SocketAddr, token: Option<&str>, svc: &str, srv: &str, body: &str) -> Resp {
    call(admin, "POST", &format!("/api/v1/services/{svc}/servers/{srv}"), token, body)
}

fn change_ok(admin: SocketAddr, token: Option<&str>, svc: &str, srv: &str, body: &str) -> ServerView {
    let r = change(admin, token, svc, srv, body);
    assert_eq!(r.status, 200, "{body}: {}", r.text());
    json(&r)
}

/// Start vipgate on `cfg` and wait until the admin endpoint answers `/healthz` (it starts
/// after the runtime, so the services are listening by then).
fn start(cfg: &str, admin: SocketAddr) -> Vipgate {
    let mut v = Vipgate::spawn(cfg);
    let up = eventually(WAIT, || {
        if let Some(st) = v.try_wait() {
            panic!("vipgate exited with {st}:\n{}", v.log());
        }
        let mut s = std::net::TcpStream::connect_timeout(&admin, Duration::from_millis(500)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        http_client::send(&mut s, "GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .ok()
            .filter(|r| r.status == 200)
    });
    assert!(up.is_some(), "admin endpoint {admin} never answered:\n{}", v.log());
    v
}

/// Two echo backends `a`, `b` behind service `web` (roundrobin), plus the admin block.
fn two_server_setup(admin_extra: &str, service_extra: &str) -> (Vipgate, SocketAddr, SocketAddr, Backend, Backend) {
    let (a, b) = (Backend::echo_any("a"), Backend::echo_any("b"));
    let (bind, admin) = (free_addr(), free_addr());
    let cfg = format!(
        "{}{}",
        service_toml(
            "",
            "web",
            bind,
            &format!("balance = \"roundrobin\"\n{service_extra}"),
            &[("a", a.addr, ""), ("b", b.addr, "")]
        ),
        admin_block(admin, None, None) + admin_extra
    );
    let v = start(&cfg, admin);
    (v, bind, admin, a, b)
}

#[test]
fn endpoints_answer_and_the_token_guards_everything_but_healthz() {
    let (a, b) = (Backend::echo_any("a"), Backend::echo_any("b"));
    let (bind, admin) = (free_addr(), free_addr());
    let token = token_file();
    let socket = temp_path("admin", "sock");
    let _socket = Removed(socket.clone());
    let cfg = format!(
        "{}{}",
        service_toml("", "web", bind, "balance = \"roundrobin\"\n", &[("a", a.addr, ""), ("b", b.addr, "")])
            + &check("web", "200ms", 1, 1),
        admin_block(admin, Some(&token), Some(&socket))
    );
    let v = start(&cfg, admin);

    // /healthz needs no token; it only says the process is alive.
    let r = call(admin, "GET", "/healthz", None, "");
    assert_eq!((r.status, r.text().trim()), (200, "ok"));

    // Everything else: 401 with a challenge without the token, with a wrong one, or with
    // another scheme.
    for auth in ["", "Authorization: Bearer wrong\r\n", &format!("Authorization: Basic {TOKEN}\r\n")] {
        for path in ["/readyz", "/metrics", "/api/v1/services", "/", "/api/v1/services/web/servers/a"] {
            let r = raw_call(admin, "GET", path, auth, "");
            assert_eq!(r.status, 401, "{path} with {auth:?}: {}", r.text());
            assert!(r.header("www-authenticate").is_some_and(|h| h.starts_with("Bearer")), "{:?}", r.headers);
        }
        let r = raw_call(admin, "POST", "/api/v1/services/web/servers/a", auth, r#"{"state":"drain"}"#);
        assert_eq!(r.status, 401);
        let r = raw_call(admin, "POST", "/api/v1/reload", auth, "");
        assert_eq!(r.status, 401);
    }
    assert!(v.log().contains("admin request refused"), "refusals are logged");
    let t = Some(TOKEN);

    let r = call(admin, "GET", "/readyz", t, "");
    assert_eq!(r.status, 200, "{}", r.text());

    let r = call(admin, "GET", "/metrics", t, "");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/plain; version=0.0.4")), "{:?}", r.headers);
    assert!(r.text().contains("vipgate_server_weight"), "{}", r.text());

    // Traffic shows up in the counters.
    let (mut held, name) = hold(bind);
    held.write_all(b"hello\n").unwrap();
    assert_eq!(read_line(&mut held).unwrap(), "hello");
    let view = services(admin, t);
    assert_eq!(view.services.len(), 1);
    let web = &view.services[0];
    assert_eq!((web.name.as_str(), web.mode.as_str()), ("web", "tcp"));
    assert_eq!(web.servers.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    for s in &web.servers {
        assert_eq!((s.state.as_str(), s.health.as_str(), s.admin.as_str()), ("up", "up", "ready"), "{s:?}");
        assert!(s.usable);
        assert_eq!((s.tier, s.weight), (0, 1));
        let p = s.last_probe.as_ref().unwrap_or_else(|| panic!("no last probe: {s:?}"));
        assert!(p.ok && !p.reason.is_empty(), "{p:?}");
        assert!(p.at <= now && p.at + 60 > now, "probe time {} vs now {now}", p.at);
    }
    let mine = server(&view, "web", &name);
    assert_eq!(mine.active, 1, "{mine:?}");
    assert!(mine.connections_total >= 1);
    drop(held);
    let counted = eventually(WAIT, || {
        let s = server(&services(admin, t), "web", &name);
        (s.bytes_in >= 6 && s.bytes_out >= 6 && s.active == 0).then_some(s)
    });
    assert!(counted.is_some(), "bytes never counted: {:?}", server(&services(admin, t), "web", &name));

    // One server, as the POST answers it.
    let r = call(admin, "GET", "/api/v1/services/web/servers/b", t, "");
    assert_eq!(r.status, 200);
    assert_eq!(json::<ServerView>(&r).name, "b");
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("application/json")));

    // The status page.
    let r = call(admin, "GET", "/", t, "");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/html")));
    let csp = r.header("content-security-policy").unwrap_or_default().to_string();
    assert!(csp.contains("script-src 'nonce-") && csp.contains("default-src 'none'"), "{csp}");
    let html = r.text();
    assert!(html.contains("<tr data-server=\"a\" data-state=\"up\""), "{html}");
    assert!(html.contains("data-service=\"web\""));

    // Unknown paths and wrong methods.
    let r = call(admin, "GET", "/nope", t, "");
    assert_eq!(r.status, 404);
    assert!(json::<ErrorView>(&r).error.contains("/nope"));
    let r = call(admin, "DELETE", "/api/v1/services", t, "");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let r = call(admin, "GET", "/api/v1/reload", t, "");
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
    // HEAD: the head only (read raw: the answer has a Content-Length but no body).
    let mut s = http_client::connect(admin);
    write!(s, "HEAD /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 200") && raw.ends_with("\r\n\r\n"), "{raw:?}");

    // Keep-alive: several requests on one connection.
    let mut s = http_client::connect(admin);
    for _ in 0..3 {
        let r = http_client::send(
            &mut s,
            &format!("GET /readyz HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"),
        )
        .expect("keep-alive answer");
        assert_eq!(r.status, 200);
    }

    // The unix socket: same API, no token, owner-only.
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let meta = std::fs::metadata(&socket).expect("socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "socket mode");
    assert_eq!(unix_call(&socket, "GET", "/healthz"), (200, "ok\n".to_string()));
    let (status, body) = unix_call(&socket, "GET", "/api/v1/services");
    assert_eq!(status, 200, "{body}");
    let view: ServicesView = serde_json::from_str(&body).expect("JSON over the socket");
    assert_eq!(view.services[0].servers.len(), 2);

    // `vipgate status` prefers the socket when the config names one.
    let out = run_cli(&["status", "--config", v.config.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "status failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.lines().any(|l| l.starts_with("web") && l.contains(" a ") && l.contains(" up ")), "{stdout}");
    let _ = std::fs::remove_file(&token);
}

#[test]
fn readyz_is_503_while_a_service_has_no_usable_server() {
    let good = Backend::echo_any("g");
    let dead = free_addr();
    let (bind_good, bind_bad, admin) = (free_addr(), free_addr(), free_addr());
    let cfg = format!(
        "{}\n[services.good]\nbind = \"{bind_good}\"\n{}\n[services.bad]\nbind = \"{bind_bad}\"\n{}{}{}",
        global(""),
        servers("good", &[("g", good.addr, "")]),
        servers("bad", &[("d", dead, "")]),
        check("bad", "200ms", 1, 1),
        admin_block(admin, None, None)
    );
    let v = start(&cfg, admin);
    let r = call(admin, "GET", "/readyz", None, "");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("bad") && !r.text().contains("good"), "{}", r.text());
    let d = server(&services(admin, None), "bad", "d");
    assert_eq!((d.state.as_str(), d.usable), ("down", false));
    assert!(d.last_probe.is_some_and(|p| !p.ok && p.reason.contains("refused")), "the probe says why");

    // The server comes up: ready.
    let _backend = Backend::echo("d", dead);
    let ready = eventually(WAIT, || (call(admin, "GET", "/readyz", None, "").status == 200).then_some(()));
    assert!(ready.is_some(), "never ready:\n{}", v.log());

    // Draining the only server of a service makes the process unready again.
    change_ok(admin, None, "good", "g", r#"{"state": "drain"}"#);
    let r = call(admin, "GET", "/readyz", None, "");
    assert_eq!(r.status, 503);
    assert!(r.text().contains("good"), "{}", r.text());
}

#[test]
fn drain_keeps_open_connections_and_takes_no_new_ones_and_maint_takes_none() {
    let (v, bind, admin, _a, _b) = two_server_setup("", "");
    // Hold a connection on a.
    let (mut held, _) = (0..10).map(|_| hold(bind)).find(|(_, n)| n == "a").expect("a connection lands on a");

    let s = change_ok(admin, None, "web", "a", r#"{"state": "drain"}"#);
    assert_eq!((s.state.as_str(), s.admin.as_str(), s.usable), ("drain", "drain", false), "{s:?}");
    assert_eq!(s.active, 1, "the held connection still counts");
    let line = v.wait_log_line(WAIT, |l| l.contains("server changed through the admin API") && l.contains("server=a"));
    let line = line.unwrap_or_else(|| panic!("change not logged:\n{}", v.log()));
    assert!(line.contains("drain") && line.contains("peer=127.0.0.1:"), "{line}");

    assert_eq!(tally(&server_names(bind, 20)), vec![("b".to_string(), 20)], "a drained: no new connection");
    // The open connection through a goes on working.
    held.write_all(b"still here\n").unwrap();
    assert_eq!(read_line(&mut held).unwrap(), "still here");
    assert_eq!(server(&services(admin, None), "web", "a").state, "drain");

    // maint on b, a ready again: everything to a.
    let s = change_ok(admin, None, "web", "b", r#"{"state": "maint"}"#);
    assert_eq!((s.state.as_str(), s.admin.as_str()), ("maint", "maint"));
    change_ok(admin, None, "web", "a", r#"{"state": "ready"}"#);
    assert_eq!(tally(&server_names(bind, 10)), vec![("a".to_string(), 10)]);

    // Both out: no server for new connections, and the process is not ready.
    change_ok(admin, None, "web", "a", r#"{"state": "maint"}"#);
    assert_eq!(try_which_server(bind), None, "every server in maint: the client gets no server");
    assert_eq!(call(admin, "GET", "/readyz", None, "").status, 503);
    held.write_all(b"and now\n").unwrap();
    assert_eq!(read_line(&mut held).unwrap(), "and now", "maint does not cut open connections");

    for srv in ["a", "b"] {
        change_ok(admin, None, "web", srv, r#"{"state": "ready"}"#);
    }
    let got = tally(&server_names(bind, 10));
    assert_eq!(got, vec![("a".to_string(), 5), ("b".to_string(), 5)]);
}

#[test]
fn weight_changes_steer_roundrobin() {
    let (_v, bind, admin, _a, _b) = two_server_setup("", "");
    let s = change_ok(admin, None, "web", "a", r#"{"weight": 3}"#);
    assert_eq!((s.weight, s.state.as_str()), (3, "up"));
    // Smooth weighted round-robin: any 40 picks in a row at 3:1 are exactly 30 and 10.
    let got = tally(&server_names(bind, 40));
    assert_eq!(got, vec![("a".to_string(), 30), ("b".to_string(), 10)]);

    let s = change_ok(admin, None, "web", "b", r#"{"weight": 0, "state": "ready"}"#);
    assert_eq!((s.weight, s.usable), (0, false));
    assert_eq!(tally(&server_names(bind, 10)), vec![("a".to_string(), 10)], "weight 0 takes no new traffic");

    change_ok(admin, None, "web", "b", r#"{"weight": 256}"#);
    change_ok(admin, None, "web", "a", r#"{"weight": 256}"#);
    let got = tally(&server_names(bind, 10));
    assert_eq!(got, vec![("a".to_string(), 5), ("b".to_string(), 5)]);
    let view = services(admin, None);
    assert_eq!((server(&view, "web", "a").weight, server(&view, "web", "b").weight), (256, 256));
}

#[test]
fn bad_changes_are_400_and_unknown_names_404() {
    let (a, odd) = (Backend::echo_any("a"), Backend::echo_any("x y/z"));
    let (bind, admin) = (free_addr(), free_addr());
    let cfg = service_toml("", "web", bind, "", &[("a", a.addr, ""), ("x y/z", odd.addr, "")])
        + &admin_block(admin, None, None);
    let _v = start(&cfg, admin);

    for (body, needle) in [
        ("", "empty body"),
        ("{\"state\": ", "bad JSON"),
        ("not json", "bad JSON"),
        ("[\"drain\"]", "not a JSON object"),
        ("{}", "nothing to change"),
        (r#"{"state": "down"}"#, "unknown state"),
        (r#"{"state": "DRAIN"}"#, "unknown state"),
        (r#"{"weight": 257}"#, "from 0 to 256"),
        (r#"{"weight": -1}"#, "from 0 to 256"),
        (r#"{"weight": 2.5}"#, "from 0 to 256"),
        (r#"{"weight": "2"}"#, "from 0 to 256"),
        (r#"{"state": "drain", "weigth": 2}"#, "unknown field \"weigth\""),
    ] {
        let r = change(admin, None, "web", "a", body);
        assert_eq!(r.status, 400, "{body:?}: {}", r.text());
        let e: ErrorView = json(&r);
        assert!(e.error.contains(needle), "{body:?}: {:?} lacks {needle:?}", e.error);
    }
    // Nothing was half-applied by a refused request.
    let s = server(&services(admin, None), "web", "a");
    assert_eq!((s.admin.as_str(), s.weight), ("ready", 1));

    let r = change(admin, None, "nosuch", "a", r#"{"state": "drain"}"#);
    assert_eq!(r.status, 404);
    assert!(json::<ErrorView>(&r).error.contains("no service named \"nosuch\""));
    let r = change(admin, None, "web", "nosuch", r#"{"state": "drain"}"#);
    assert_eq!(r.status, 404);
    assert!(json::<ErrorView>(&r).error.contains("no server named \"nosuch\""));
    assert_eq!(call(admin, "GET", "/api/v1/services/web/servers/nosuch", None, "").status, 404);
    assert_eq!(change(admin, None, "web", "%zz", r#"{"state": "drain"}"#).status, 400);

    // Server names with spaces and slashes are percent-encoded in the path.
    let s = change_ok(admin, None, "web", "x%20y%2Fz", r#"{"state": "drain"}"#);
    assert_eq!((s.name.as_str(), s.state.as_str()), ("x y/z", "drain"));

    // Bodies are bounded: a declared and a chunked oversize body are both 413.
    let big = "x".repeat(70 * 1024);
    assert_eq!(change(admin, None, "web", "a", &big).status, 413);
    let mut s = http_client::connect(admin);
    let mut raw =
        "POST /api/v1/services/web/servers/a HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_string();
    for _ in 0..20 {
        raw.push_str(&format!("1000\r\n{}\r\n", "y".repeat(0x1000)));
    }
    raw.push_str("0\r\n\r\n");
    let _ = s.write_all(raw.as_bytes());
    let r = http_client::read_response(&mut s).expect("answer to a chunked oversize body");
    assert_eq!(r.status, 413);
}

#[test]
fn reload_through_the_api_and_the_cli() {
    let (a, c) = (Backend::echo_any("a"), Backend::echo_any("c"));
    let (bind, admin) = (free_addr(), free_addr());
    let token = token_file();
    let admin_cfg = admin_block(admin, Some(&token), None);
    let one = service_toml("", "web", bind, "", &[("a", a.addr, "")]) + &admin_cfg;
    let two = service_toml("", "web", bind, "", &[("a", a.addr, ""), ("c", c.addr, "")]) + &admin_cfg;
    let v = start(&one, admin);
    let t = Some(TOKEN);
    let cfg_path = v.config.to_str().unwrap().to_string();

    // `vipgate status` over TCP with the token from token_file.
    let out = run_cli(&["status", "--config", &cfg_path]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("config generation 0"), "{stdout}");
    assert!(stdout.lines().next().is_some_and(|l| l.starts_with("vipgate ")), "{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with("SERVICE") && l.contains("STATE") && l.contains("WEIGHT")),
        "{stdout}"
    );
    assert!(stdout.lines().any(|l| l.starts_with("web") && l.contains(&a.addr.to_string()) && l.contains("up")));

    // Add a server, reload through the API: 200, the report, and the server is there.
    std::fs::write(&v.config, &two).unwrap();
    let r = call(admin, "POST", "/api/v1/reload", t, "");
    assert_eq!(r.status, 200, "{}", r.text());
    let report: ReloadView = json(&r);
    assert_eq!((report.generation, report.services, report.servers_added, report.servers_removed), (1, 1, 1, 0));
    let view = services(admin, t);
    assert_eq!(view.process.generation, 1);
    assert_eq!(server(&view, "web", "c").state, "up");
    let got = tally(&server_names(bind, 10));
    assert_eq!(got, vec![("a".to_string(), 5), ("c".to_string(), 5)]);
    assert!(v.wait_log_line(WAIT, |l| l.contains("config reloaded") && l.contains("Api")).is_some(), "{}", v.log());

    // A broken file: 422 with FILE:LINE:COL, and the running config keeps serving.
    let broken = two.replace(&format!("address = \"{}\"", c.addr), "address = \"127.0.0.1:notaport\"");
    assert_ne!(broken, two);
    std::fs::write(&v.config, &broken).unwrap();
    let r = call(admin, "POST", "/api/v1/reload", t, "");
    assert_eq!(r.status, 422, "{}", r.text());
    let e = json::<ErrorView>(&r).error;
    let line = broken.lines().position(|l| l.contains("notaport")).unwrap() + 1;
    assert!(e.contains(&format!("{cfg_path}:{line}:11: bad address \"127.0.0.1:notaport\"")), "{e}");
    let got = tally(&server_names(bind, 10));
    assert_eq!(got, vec![("a".to_string(), 5), ("c".to_string(), 5)], "the old config still serves");
    let view = services(admin, t);
    assert_eq!(view.process.generation, 1);
    assert!(view.process.last_reload_error.is_some_and(|e| e.contains("notaport")));

    // `vipgate reload` on the broken file: exit 1 and the same lines.
    let out = run_cli(&["reload", "--config", &cfg_path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stdout {}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.contains(&format!("{cfg_path}:{line}:11: bad address")), "{stderr}");
    // `vipgate status` still reads its [admin] table from the broken file, and shows the failure.
    let out = run_cli(&["status", "--config", &cfg_path]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("last reload failed") && stdout.contains("notaport"), "{stdout}");

    // Fixed (and c removed again): `vipgate reload` exits 0 with the report.
    std::fs::write(&v.config, &one).unwrap();
    let out = run_cli(&["reload", "--config", &cfg_path]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("reloaded: config generation 2") && stdout.contains("servers +0 -1"), "{stdout}");
    assert_eq!(tally(&server_names(bind, 4)), vec![("a".to_string(), 4)]);

    // A wrong token: the CLI explains the 401 and exits 1.
    let wrong = temp_path("wrong-token", "txt");
    std::fs::write(&wrong, "nope\n").unwrap();
    let other = write_config("other", &admin_block(admin, Some(&wrong), None));
    let out = run_cli(&["reload", "--config", other.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"), "{}", String::from_utf8_lossy(&out.stderr));

    // Nothing listening: exit 1 with a reason.
    let nobody = free_addr().to_string();
    for cmd in ["status", "reload"] {
        let out = run_cli(&[cmd, "--config", &cfg_path, "--admin", &nobody]);
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the admin endpoint"), "{cmd}");
    }
    // A config without [admin]: the CLI says so.
    let plain = write_config("plain", &service_toml("", "web", free_addr(), "", &[("a", a.addr, "")]));
    let out = run_cli(&["status", "--config", plain.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no [admin] section"));
    for p in [token, wrong, other, plain] {
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn admin_keys_are_validated() {
    let svc = service_toml("", "web", free_addr(), "", &[("a", free_addr(), "")]);
    // [admin] alone is fine: loopback port 9100 by default.
    let ok = write_config("admin-default", &format!("{svc}\n[admin]\n"));
    let out = run_cli(&["check", "--config", ok.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let parsed = vipgate::config::load(&ok).expect("valid");
    let admin = parsed.admin.expect("[admin] present");
    assert_eq!(admin.bind.to_string(), "127.0.0.1:9100");
    assert_eq!((admin.token, admin.socket), (None, None));

    let empty = temp_path("empty-token", "txt");
    std::fs::write(&empty, "\n").unwrap();
    let text = format!(
        "{svc}\n[admin]\nbind = \"127.0.0.1:notaport\"\ntoken_file = \"/nonexistent/vipgate-token\"\nsocket = \"\"\nport = 1\n"
    );
    let bad = write_config("admin-bad", &text);
    let out = run_cli(&["check", "--config", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    let at = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let p = bad.display();
    for want in [
        format!("{p}:{}:8: bad address \"127.0.0.1:notaport\"", at("notaport")),
        format!("{p}:{}:14: cannot read token_file \"/nonexistent/vipgate-token\"", at("/nonexistent")),
        format!("{p}:{}:10: \"socket\" must be a path", at("socket =")),
        format!(
            "{p}:{}:1: unknown key \"port\" in [admin] (known keys: bind, token_file, socket, socket_mode)",
            at("port = 1")
        ),
    ] {
        assert!(stderr.contains(&want), "missing {want:?} in:\n{stderr}");
    }
    let bad2 = write_config("admin-empty-token", &format!("{svc}\n[admin]\ntoken_file = \"{}\"\n", empty.display()));
    let out = run_cli(&["check", "--config", bad2.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is empty"), "{}", String::from_utf8_lossy(&out.stderr));
    for f in [ok, bad, bad2, empty] {
        let _ = std::fs::remove_file(f);
    }
}

#[test]
fn a_new_process_takes_over_the_admin_endpoint_when_the_old_one_exits() {
    // As in a hitless upgrade: the new process starts while the old one still holds the
    // admin address and socket, and takes them over once the old one is gone.
    let (a, b) = (Backend::echo_any("a"), Backend::echo_any("b"));
    let admin = free_addr();
    let socket = temp_path("takeover", "sock");
    let block = admin_block(admin, None, Some(&socket));
    let old = start(&(service_toml("", "old", free_addr(), "", &[("a", a.addr, "")]) + &block), admin);
    let new_bind = free_addr();
    let new = Vipgate::start(&(service_toml("", "new", new_bind, "", &[("b", b.addr, "")]) + &block), new_bind);
    let warned = new.wait_log_line(WAIT, |l| l.contains("admin address in use"));
    assert!(warned.is_some(), "{}", new.log());
    assert_eq!(services(admin, None).services[0].name, "old");

    drop(old); // SIGKILL: the socket file stays behind, stale.
    let took = eventually(WAIT, || {
        let r = std::net::TcpStream::connect_timeout(&admin, Duration::from_millis(500)).ok().and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            http_client::send(&mut s, "GET /api/v1/services HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").ok()
        })?;
        let view: ServicesView = serde_json::from_slice(&r.body).ok()?;
        (view.services[0].name == "new").then_some(())
    });
    assert!(took.is_some(), "the new process never took the admin address:\n{}", new.log());
    let socket_ok = eventually(WAIT, || {
        let (status, body) = try_unix_call(&socket, "GET", "/api/v1/services").ok()?;
        (status == 200 && body.contains("\"new\"")).then_some(())
    });
    assert!(socket_ok.is_some(), "the new process never took the socket:\n{}", new.log());
    let _ = std::fs::remove_file(&socket);
}

#[test]
fn state_changes_need_a_json_content_type() {
    // A browser's cross-site form post can only send a form or text/plain content type
    // (or none): those must change nothing, over TCP and on the socket alike.
    let (a, b) = (Backend::echo_any("a"), Backend::echo_any("b"));
    let (bind, admin) = (free_addr(), free_addr());
    let socket = temp_path("admin-ctype", "sock");
    let _socket = Removed(socket.clone());
    let cfg = service_toml("", "web", bind, "", &[("a", a.addr, ""), ("b", b.addr, "")])
        + &admin_block(admin, None, Some(&socket));
    let v = start(&cfg, admin);
    let drain = r#"{"state": "drain", "weight": 7}"#;
    let refused_types = [
        ("no Content-Type", ""),
        ("a form", "Content-Type: application/x-www-form-urlencoded\r\n"),
        ("text/plain", "Content-Type: text/plain\r\n"),
        ("multipart", "Content-Type: multipart/form-data; boundary=x\r\n"),
        ("JSON as a parameter", "Content-Type: text/plain; type=application/json\r\n"),
    ];
    let mut refused = 0;
    for (what, header) in refused_types {
        for path in ["/api/v1/services/web/servers/a", "/api/v1/reload"] {
            let r = raw_call(admin, "POST", path, header, drain);
            assert_eq!(r.status, 415, "{what} to {path} over TCP: {}", r.text());
            let e: ErrorView = json(&r);
            assert!(e.error.contains("application/json"), "{what}: the error names what is wanted: {e:?}");
            let (status, body) = unix_post(&socket, path, header, drain);
            assert_eq!(status, 415, "{what} to {path} on the socket: {body}");
            assert!(body.contains("application/json"), "{body}");
            refused += 2;
        }
    }
    // Nothing changed: no drain, no weight, no reload.
    let view = services(admin, None);
    let s = server(&view, "web", "a");
    assert_eq!((s.admin.as_str(), s.weight), ("ready", 1), "a refused post changed the server");
    assert_eq!((view.process.generation, view.process.reloads_total), (0, 0), "a refused post reloaded");
    assert_eq!(tally(&server_names(bind, 4)), vec![("a".to_string(), 2), ("b".to_string(), 2)]);

    // JSON is accepted with parameters and in any case.
    for header in ["Content-Type: application/json; charset=utf-8\r\n", "content-type: Application/JSON\r\n"] {
        let r = raw_call(admin, "POST", "/api/v1/services/web/servers/a", header, drain);
        assert_eq!(r.status, 200, "{header:?}: {}", r.text());
    }
    let (status, body) =
        unix_post(&socket, "/api/v1/services/web/servers/b", "Content-Type: application/json\r\n", r#"{"weight": 3}"#);
    assert_eq!(status, 200, "{body}");
    let view = services(admin, None);
    assert_eq!((server(&view, "web", "a").admin.as_str(), server(&view, "web", "b").weight), ("drain", 3));
    assert_eq!(tally(&server_names(bind, 4)), vec![("b".to_string(), 4)], "a drained through a JSON post");

    // vipgate's own clients say JSON: `vipgate reload` over TCP and over the socket.
    let cfg_path = v.config.to_str().unwrap().to_string();
    for via in [admin.to_string(), socket.display().to_string()] {
        let out = run_cli(&["reload", "--config", &cfg_path, "--admin", &via]);
        assert!(out.status.success(), "vipgate reload via {via}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("reloaded: config generation"));
    }
    assert_eq!(services(admin, None).process.generation, 2);
    println!("{refused} posts without a JSON content type answered 415; 3 JSON posts and 2 CLI reloads accepted");
}
