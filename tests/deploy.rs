//! What a service manager and a container runtime see of the real binary: systemd's
//! notify protocol (READY, RELOADING, STOPPING) on a real unix datagram socket, the config
//! path from VIPGATE_CONFIG, and JSON log lines with VIPGATE_LOG_FORMAT=json.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::*;
use tokio::time::Instant;

/// A socket standing in for systemd's NOTIFY_SOCKET.
struct Notifications {
    sock: UnixDatagram,
    path: std::path::PathBuf,
}

impl Notifications {
    fn new() -> Notifications {
        let path = temp_path("notify", "sock");
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        Notifications { sock, path }
    }

    /// The next datagram that contains `want`, within 15 s; every datagram seen on the way
    /// goes into the panic message.
    fn wait_for(&self, want: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                if msg.lines().any(|l| l == want) {
                    return msg;
                }
                seen.push(msg);
            }
        }
        panic!("no notification with {want:?} within {WAIT:?}; got {seen:?}");
    }
}

impl Drop for Notifications {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn one_service(bind: std::net::SocketAddr, backend: std::net::SocketAddr) -> String {
    service_toml("", "s", bind, "balance = \"roundrobin\"\n", &[("b1", backend, "")])
}

#[test]
fn sd_notify_ready_reloading_and_stopping() {
    let b = Backend::echo_any("b1");
    let bind = free_addr();
    let n = Notifications::new();
    let path = n.path.to_str().unwrap().to_string();
    let mut v = Vipgate::spawn_with_env(&one_service(bind, b.addr), &[("NOTIFY_SOCKET", path.as_str())]);

    let ready = n.wait_for("READY=1");
    assert!(ready.contains("STATUS=serving 1 services"), "{ready}");
    // READY means serving: the listener accepts by then.
    let mut c = connect(bind);
    assert_eq!(read_line(&mut c).unwrap(), "b1");

    v.signal(libc::SIGHUP);
    let reloading = n.wait_for("RELOADING=1");
    let usec = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("RELOADING=1 without a numeric MONOTONIC_USEC: {reloading:?}"));
    assert!(usec > 0);
    let again = n.wait_for("READY=1");
    assert!(again.contains("config generation 1"), "{again}");

    // A config that fails to load: still READY, on the old config.
    std::fs::write(&v.config, "this is not toml = = =").unwrap();
    v.signal(libc::SIGHUP);
    n.wait_for("RELOADING=1");
    let failed = n.wait_for("READY=1");
    assert!(failed.contains("reload failed"), "{failed}");

    // STOPPING comes as draining starts, not when it ends: the connection stays open.
    v.signal(libc::SIGTERM);
    n.wait_for("STOPPING=1");
    drop(c);
    v.expect_exit_zero("after SIGTERM");
}

#[test]
fn sd_notify_to_an_abstract_socket() {
    let b = Backend::echo_any("b1");
    let bind = free_addr();
    let name = format!("vipgate-test-{}-{}", std::process::id(), free_port());
    let addr = {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap()
    };
    let sock = UnixDatagram::bind_addr(&addr).expect("bind abstract notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let env = format!("@{name}");
    let _v = Vipgate::spawn_with_env(&one_service(bind, b.addr), &[("NOTIFY_SOCKET", env.as_str())]);
    let mut buf = [0u8; 1024];
    let n = sock.recv(&mut buf).expect("a notification within 15 s");
    let msg = String::from_utf8_lossy(&buf[..n]);
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg}");
}

#[test]
fn config_path_from_vipgate_config() {
    let b = Backend::echo_any("b1");
    let bind = free_addr();
    let cfg = write_config("env", &one_service(bind, b.addr));
    let out =
        std::process::Command::new(BIN).arg("check").env("VIPGATE_CONFIG", &cfg).output().expect("run vipgate check");
    assert!(out.status.success(), "check with VIPGATE_CONFIG: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"), "{}", String::from_utf8_lossy(&out.stdout));

    // `run` too: nothing on the command line but the verb.
    let log = temp_path("env-run", "log");
    let mut child = std::process::Command::new(BIN)
        .arg("run")
        .env("VIPGATE_CONFIG", &cfg)
        .env_remove("VIPGATE_WORKERS")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn vipgate run");
    let ok = eventually(WAIT, || std::net::TcpStream::connect(bind).ok()).is_some();
    // SAFETY: kill(2) on the child we started and have not reaped yet.
    let _ = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&cfg);
    assert!(ok, "vipgate run with VIPGATE_CONFIG never listened:\n{text}");

    // Neither flag nor variable: a clear usage error naming the missing option.
    let out = std::process::Command::new(BIN).arg("check").env_remove("VIPGATE_CONFIG").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn json_log_lines_with_vipgate_log_format() {
    let b = Backend::echo_any("b1");
    let bind = free_addr();
    let mut v = Vipgate::spawn_with_env(&one_service(bind, b.addr), &[("VIPGATE_LOG_FORMAT", "json")]);
    v.wait_ready(bind);
    let mut c = connect(bind);
    assert_eq!(read_line(&mut c).unwrap(), "b1");
    let port = c.local_addr().unwrap().port();
    drop(c);
    let client = format!("127.0.0.1:{port}");
    let line = v
        .wait_log_line(WAIT, |l| l.contains("connection closed") && l.contains(&client))
        .unwrap_or_else(|| panic!("no connection line for {client}:\n{}", v.log()));
    let obj: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(obj["level"], "INFO", "{line}");
    assert_eq!(obj["message"], "connection closed", "{line}");
    assert_eq!(obj["client"], client.as_str(), "{line}");
    assert_eq!(obj["service"], "s", "{line}");
    assert_eq!(obj["server"], "b1", "{line}");
    assert!(obj["timestamp"].is_string(), "{line}");
    // Every line is JSON, not only the connection lines.
    for l in v.log().lines().filter(|l| !l.trim().is_empty()) {
        assert!(serde_json::from_str::<serde_json::Value>(l).is_ok(), "a log line that is not JSON: {l}");
    }
    v.signal(libc::SIGTERM);
    v.expect_exit_zero("after SIGTERM");
}

/// deploy/vipgate.service passes `systemd-analyze verify` (with its binary path pointed at
/// the one just built), and keeps the settings the README promises.
#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/vipgate.service"))
        .expect("deploy/vipgate.service");
    for line in [
        "Type=notify",
        "NotifyAccess=all",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "User=vipgate",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks {line:?}");
    }
    let analyze =
        ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"].into_iter().find(|p| std::path::Path::new(p).exists());
    let Some(analyze) = analyze else {
        if std::env::var_os("VIPGATE_REQUIRE_SYSTEMD").is_some() {
            panic!("systemd-analyze is not installed (VIPGATE_REQUIRE_SYSTEMD is set)");
        }
        eprintln!("SKIP systemd_unit_verifies: systemd-analyze is not installed");
        return;
    };
    // verify wants the unit's file name to end in .service and its binaries to exist.
    let dir = temp_path("unit", "d");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vipgate.service");
    std::fs::write(&path, unit.replace("/usr/bin/vipgate", BIN)).unwrap();
    let out = std::process::Command::new(analyze).arg("verify").arg(&path).output().expect("run systemd-analyze");
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.trim().is_empty(), "systemd-analyze verify: {:?}\n{text}", out.status);
}
