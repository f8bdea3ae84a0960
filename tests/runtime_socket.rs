//! The admin unix socket speaks HAProxy's runtime API: the commands kolla, openstack-ansible
//! and hatop send to HAProxy's stats socket, answered in HAProxy's text formats, acting on
//! the live servers. Driven with real `socat` (as kolla's check_alive does) and raw
//! unix-socket connections.

mod common;
#[path = "support/http_client.rs"]
mod http_client;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

struct Setup {
    v: Vipgate,
    bind: std::net::SocketAddr,
    socket: PathBuf,
    _backends: Vec<Backend>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Service `api` (roundrobin over b1, b2) with the admin socket at a temp path.
fn setup() -> Setup {
    let b1 = Backend::echo_any("b1");
    let b2 = Backend::echo_any("b2");
    let bind = free_addr();
    let socket = temp_path("cli", "sock");
    let cfg = format!(
        "[admin]\nbind = \"{}\"\nsocket = \"{}\"\n{}",
        free_addr(),
        socket.display(),
        service_toml("", "api", bind, "balance = \"roundrobin\"\n", &[("b1", b1.addr, ""), ("b2", b2.addr, "")])
    );
    let v = Vipgate::start(&cfg, bind);
    let ok = eventually(WAIT, || UnixStream::connect(&socket).ok());
    assert!(ok.is_some(), "admin socket never appeared:\n{}", v.log());
    Setup { v, bind, socket, _backends: vec![b1, b2] }
}

/// Send `input` and read until the server closes.
fn cli(socket: &Path, input: &str) -> String {
    let mut s = UnixStream::connect(socket).expect("connect admin socket");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(input.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read until close");
    out
}

/// `echo CMD | socat unix-connect:SOCK stdio`, as kolla's check_alive runs it.
fn socat(socket: &Path, cmd: &str) -> (bool, String) {
    let mut child = std::process::Command::new("socat")
        .arg(format!("unix-connect:{}", socket.display()))
        .arg("stdio")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run socat");
    child.stdin.take().unwrap().write_all(format!("{cmd}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().expect("socat output");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `status` column of `show stat` for `svc,srv`.
fn stat_status(socket: &Path, svc: &str, srv: &str) -> String {
    let out = cli(socket, "show stat\n");
    let header: Vec<String> =
        out.lines().next().unwrap_or("").trim_start_matches("# ").split(',').map(str::to_string).collect();
    let col = header.iter().position(|c| c == "status").expect("status column");
    out.lines()
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&svc) && f.get(1) == Some(&srv))
        .and_then(|f| f.get(col).map(|s| s.to_string()))
        .unwrap_or_else(|| panic!("no row {svc},{srv} in:\n{out}"))
}

/// Without socat the tests that need it skip, unless CI says it must be there.
fn socat_installed() -> bool {
    if std::path::Path::new("/usr/bin/socat").exists() {
        return true;
    }
    if std::env::var_os("VIPGATE_REQUIRE_SOCAT").is_some() {
        panic!("socat is not installed (VIPGATE_REQUIRE_SOCAT is set)");
    }
    eprintln!("SKIP: socat is not installed");
    false
}

fn greeting(bind: std::net::SocketAddr) -> String {
    let mut c = connect(bind);
    read_line(&mut c).expect("backend greeting")
}

#[test]
fn show_info_answers_socat_like_haproxy() {
    if !socat_installed() {
        return;
    }
    let s = setup();
    let (ok, out) = socat(&s.socket, "show info");
    assert!(ok, "socat failed");
    assert!(out.lines().any(|l| l == "Name: vipgate"), "{out}");
    assert!(out.lines().any(|l| l == format!("Pid: {}", s.v.pid())), "{out}");
    assert!(out.lines().any(|l| l.starts_with("Uptime_sec: ")), "{out}");
    // Each answer ends with an empty line, then the server closes (socat exits).
    assert!(out.ends_with("\n\n"), "{out:?}");
}

#[test]
fn disable_enable_and_drain_act_on_traffic() {
    let s = setup();
    assert_eq!(stat_status(&s.socket, "api", "b1"), "no check");
    // Errors in HAProxy's words.
    assert_eq!(cli(&s.socket, "disable server api/nope\n"), "No such server.\n\n");
    assert_eq!(cli(&s.socket, "disable server nope/b1\n"), "No such backend.\n\n");
    assert_eq!(cli(&s.socket, "disable server b1\n"), "Require 'backend/server'.\n\n");
    assert!(cli(&s.socket, "frobnicate\n").starts_with("Unknown command"));

    assert_eq!(cli(&s.socket, "disable server api/b1\n"), "\n");
    assert_eq!(stat_status(&s.socket, "api", "b1"), "MAINT");
    for _ in 0..4 {
        assert_eq!(greeting(s.bind), "b2", "a server in maintenance got a connection");
    }
    let line = s.v.wait_log_line(WAIT, |l| l.contains("changed through the command socket")).expect("log line");
    assert!(line.contains("admin=\"maint\"") || line.contains("admin=maint"), "{line}");

    assert_eq!(cli(&s.socket, "enable server api/b1\n"), "\n");
    assert_eq!(stat_status(&s.socket, "api", "b1"), "no check");
    let seen: std::collections::BTreeSet<String> = (0..4).map(|_| greeting(s.bind)).collect();
    assert!(seen.contains("b1"), "b1 back in rotation: {seen:?}");

    assert_eq!(cli(&s.socket, "set server api/b2 state drain\n"), "\n");
    assert_eq!(stat_status(&s.socket, "api", "b2"), "DRAIN");
    for _ in 0..4 {
        assert_eq!(greeting(s.bind), "b1", "a draining server got a new connection");
    }
    assert!(cli(&s.socket, "set server api/b2 state sideways\n").contains("expects 'ready', 'drain' and 'maint'"));
    assert_eq!(cli(&s.socket, "set server api/b2 state ready\n"), "\n");
    assert_eq!(stat_status(&s.socket, "api", "b2"), "no check");
}

#[test]
fn weights_and_servers_state() {
    let s = setup();
    assert_eq!(cli(&s.socket, "set server api/b1 weight 7\n"), "\n");
    assert_eq!(cli(&s.socket, "set weight api/b2 50%\n"), "\n");
    assert!(cli(&s.socket, "set server api/b1 weight 9999\n").starts_with("Weight must be"));
    let state = cli(&s.socket, "show servers state api\n");
    let mut lines = state.lines();
    assert_eq!(lines.next(), Some("1"));
    assert!(lines.next().unwrap_or("").starts_with("# be_id be_name srv_id srv_name srv_addr"));
    let rows: Vec<Vec<&str>> = lines.filter(|l| !l.is_empty()).map(|l| l.split(' ').collect()).collect();
    assert_eq!(rows.len(), 2, "{state}");
    // be_id be_name srv_id srv_name srv_addr op admin uweight iweight ...
    assert_eq!(&rows[0][1..5], &["api", "1", "b1", "127.0.0.1"]);
    assert_eq!(rows[0][7], "7", "b1's weight: {state}");
    assert_eq!(rows[1][7], "0", "50% of weight 1 rounds down to 0: {state}");
    assert_eq!(rows[1][8], "1", "initial weight: {state}");
    assert_eq!(cli(&s.socket, "show servers state nope\n"), "Can't find backend 'nope'.\n\n");
}

#[test]
fn shutdown_sessions_closes_a_servers_connections() {
    let s = setup();
    assert_eq!(cli(&s.socket, "disable server api/b2\n"), "\n");
    let mut c = connect(s.bind);
    assert_eq!(read_line(&mut c).unwrap(), "b1");
    assert_eq!(cli(&s.socket, "shutdown sessions server api/b1\n"), "\n");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 16];
    let n = c.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the session on b1 is closed");
}

#[test]
fn several_commands_a_line_and_interactive_prompt() {
    let s = setup();
    let out = cli(&s.socket, "show info;show stat\n");
    assert!(out.starts_with("Name: vipgate\n"), "{out}");
    assert!(out.contains("\n\n# pxname,svname,"), "{out}");
    assert!(out.contains("api,FRONTEND,") && out.contains("api,BACKEND,") && out.contains("api,b2,"), "{out}");

    let mut c = UnixStream::connect(&s.socket).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"prompt\n").unwrap();
    let mut buf = [0u8; 2];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"> ");
    c.write_all(b"set server api/b1 state drain\nquit\n").unwrap();
    let mut rest = String::new();
    c.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "\n> ", "answer, prompt, then the server closes on quit");
    assert_eq!(stat_status(&s.socket, "api", "b1"), "DRAIN");
}

#[test]
fn the_same_socket_still_serves_the_http_api() {
    let s = setup();
    let mut c = UnixStream::connect(&s.socket).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"GET /api/v1/services HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("\"api\""), "{out}");
}

#[test]
fn socket_mode_is_configurable_but_never_world_writable() {
    use std::os::unix::fs::PermissionsExt;
    let b = Backend::echo_any("b1");
    let bind = free_addr();
    let socket = temp_path("cli-mode", "sock");
    let cfg = |mode: &str| {
        format!(
            "[admin]\nbind = \"{}\"\nsocket = \"{}\"\nsocket_mode = {mode}\n{}",
            free_addr(),
            socket.display(),
            service_toml("", "api", bind, "", &[("b1", b.addr, "")])
        )
    };
    let v = Vipgate::start(&cfg("\"0660\""), bind);
    let ok = eventually(WAIT, || std::fs::metadata(&socket).ok());
    let meta = ok.unwrap_or_else(|| panic!("no socket:\n{}", v.log()));
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    drop(v);
    let _ = std::fs::remove_file(&socket);

    for (mode, want) in [("\"0666\"", "lets every local user write"), ("\"rw-rw----\"", "octal file mode")] {
        let path = write_config("cli-mode-bad", &cfg(mode));
        let out = run_cli(&["check", "--config", path.to_str().unwrap()]);
        let _ = std::fs::remove_file(&path);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{mode}: {err}");
        assert!(err.contains(want) && err.contains(":4:"), "{mode}: {err}");
    }
    // A TOML octal integer works too.
    let path = write_config("cli-mode-int", &cfg("0o640"));
    let out = run_cli(&["check", "--config", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The TCP admin port's connection cap (`MAX_CONNECTIONS` in src/admin/mod.rs).
const TCP_CAP: usize = 128;

#[test]
fn a_full_tcp_admin_port_does_not_lock_out_the_socket() {
    if !socat_installed() {
        return;
    }
    let b1 = Backend::echo_any("b1");
    let (bind, admin) = (free_addr(), free_addr());
    let socket = temp_path("cli-slots", "sock");
    let cfg = format!(
        "[admin]\nbind = \"{admin}\"\nsocket = \"{}\"\n{}",
        socket.display(),
        service_toml("", "api", bind, "", &[("b1", b1.addr, "")])
    );
    let s = Setup { v: Vipgate::start(&cfg, bind), bind, socket, _backends: vec![b1] };
    let (v, socket) = (&s.v, &s.socket);
    assert!(eventually(WAIT, || UnixStream::connect(socket).ok()).is_some(), "no admin socket:\n{}", v.log());

    // Fill every TCP slot with keep-alive clients that asked once and now sit idle (an
    // idle keep-alive connection is closed after 10 s, so what follows must fit in that).
    let started = tokio::time::Instant::now();
    let healthz = "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut held: Vec<std::net::TcpStream> = (0..TCP_CAP)
        .map(|i| {
            let mut s = http_client::connect(admin);
            let r = http_client::send(&mut s, healthz).unwrap_or_else(|e| panic!("keep-alive client {i}: {e}"));
            assert_eq!(r.status, 200, "client {i}");
            s
        })
        .collect();
    // The cap holds on TCP: one more connection is closed without an answer.
    let mut extra = http_client::connect(admin);
    extra.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let refused = http_client::send(&mut extra, healthz);
    assert!(refused.is_err(), "connection {} over the TCP cap was served: {refused:?}", TCP_CAP + 1);

    // The socket has slots of its own: kolla's check and the CLI still get answers.
    let (ok, out) = socat(socket, "show info");
    assert!(ok && out.lines().any(|l| l == "Name: vipgate"), "socat show info with the TCP port full: {out:?}");
    let out = run_cli(&["status", "--config", v.config.to_str().unwrap(), "--admin", socket.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "vipgate status over the socket: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.lines().any(|l| l.starts_with("api") && l.contains(" b1 ")), "{stdout}");

    // And the TCP clients were held all along: each still answers on its connection.
    for (i, c) in held.iter_mut().enumerate() {
        let r = http_client::send(c, healthz).unwrap_or_else(|e| panic!("held client {i} after the socket calls: {e}"));
        assert_eq!(r.status, 200, "held client {i}");
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(9), "took {elapsed:?}: idle clients may have timed out meanwhile");
    println!("{TCP_CAP} idle TCP admin clients held; connection {} refused; socat and vipgate status answered on the socket in {elapsed:?}", TCP_CAP + 1);
}
