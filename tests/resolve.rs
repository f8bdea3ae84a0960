//! Servers named by HOST:PORT are resolved again every `resolve_interval` (containers get
//! new IPs when replaced). The real binary runs in a private mount namespace whose
//! /etc/hosts is a file this test rewrites, so glibc's own lookup sees the name move from
//! one loopback address to another, then vanish.

mod common;
#[path = "support/http_backend.rs"]
mod http_backend;
#[path = "support/http_client.rs"]
mod http_client;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// vipgate under `unshare --mount`, with `hosts` bind-mounted over /etc/hosts.
struct Namespaced {
    child: Child,
    log: PathBuf,
    config: PathBuf,
}

impl Namespaced {
    fn start(config_text: &str, hosts: &std::path::Path) -> Result<Namespaced, String> {
        let config = write_config("resolve", config_text);
        let log = temp_path("resolve", "log");
        let script = format!(
            "mount --bind '{}' /etc/hosts && exec '{}' run --config '{}'",
            hosts.display(),
            BIN,
            config.display()
        );
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .env_remove("VIPGATE_WORKERS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("unshare: {e}"))?;
        Ok(Namespaced { child, log, config })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Namespaced {
    fn drop(&mut self) {
        if self.exited().is_none() {
            // SAFETY: kill(2) on the process this test spawned (unshare, then sh, exec
            // into vipgate: one PID), not yet reaped.
            unsafe {
                libc::kill(self.child.id() as i32, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- vipgate stderr ----\n{}\n---- end ----", self.log());
        }
        let _ = std::fs::remove_file(&self.log);
        let _ = std::fs::remove_file(&self.config);
    }
}

/// Two echo backends on the same port of 127.0.0.21 ("A") and 127.0.0.22 ("B").
fn two_backends() -> (Backend, Backend, u16) {
    for _ in 0..20 {
        let port = free_port();
        let a: std::net::SocketAddr = format!("127.0.0.21:{port}").parse().unwrap();
        let b: std::net::SocketAddr = format!("127.0.0.22:{port}").parse().unwrap();
        if std::net::TcpListener::bind(a).is_ok() && std::net::TcpListener::bind(b).is_ok() {
            return (Backend::echo("A", a), Backend::echo("B", b), port);
        }
    }
    panic!("no port free on both 127.0.0.21 and 127.0.0.22");
}

fn greeting(bind: std::net::SocketAddr) -> Option<String> {
    let mut c = std::net::TcpStream::connect_timeout(&bind, Duration::from_secs(2)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    read_line(&mut c).ok()
}

fn setup(interval: &str) -> Option<(Namespaced, std::net::SocketAddr, PathBuf, Backend, Backend)> {
    let (a, b, port) = two_backends();
    let hosts = temp_path("hosts", "txt");
    std::fs::write(&hosts, "127.0.0.1 localhost\n127.0.0.21 backend.test\n").unwrap();
    let bind = free_addr();
    let cfg = format!(
        "[global]\nresolve_interval = \"{interval}\"\n[services.api]\nbind = \"{bind}\"\n\
         [[services.api.servers]]\nname = \"be\"\naddress = \"backend.test:{port}\"\n"
    );
    let mut v = match Namespaced::start(&cfg, &hosts) {
        Ok(v) => v,
        Err(why) => {
            skip_unless_netns_required("resolve", &why);
            return None;
        }
    };
    let up = eventually(WAIT, || {
        if v.exited().is_some() {
            return Some(false);
        }
        greeting(bind).map(|_| true)
    });
    if up != Some(true) {
        let log = v.log();
        if log.contains("mount") || log.contains("unshare") {
            skip_unless_netns_required("resolve", &format!("no private mount namespace here: {log}"));
            return None;
        }
        panic!("vipgate did not serve:\n{log}");
    }
    Some((v, bind, hosts, a, b))
}

#[test]
fn a_server_name_is_resolved_again_and_a_failed_lookup_keeps_the_last_address() {
    let Some((v, bind, hosts, _a, _b)) = setup("200ms") else { return };
    assert_eq!(greeting(bind).as_deref(), Some("A"));

    // The container was replaced: the name now points elsewhere (same file, same inode,
    // so the bind mount shows the new text).
    std::fs::write(&hosts, "127.0.0.1 localhost\n127.0.0.22 backend.test\n").unwrap();
    let moved = eventually(Duration::from_secs(10), || (greeting(bind).as_deref() == Some("B")).then_some(()));
    assert!(moved.is_some(), "new connections still go to the old address:\n{}", v.log());
    let line = v.log().lines().find(|l| l.contains("server address changed")).map(str::to_string);
    let line = line.unwrap_or_else(|| panic!("no address-change line:\n{}", v.log()));
    assert!(line.contains("127.0.0.21:") && line.contains("127.0.0.22:"), "{line}");

    // The name stops resolving: the server keeps its last address, and says so once.
    std::fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
    let warned =
        eventually(Duration::from_secs(10), || v.log().contains("cannot resolve the server's name").then_some(()));
    assert!(warned.is_some(), "no warning for a failed lookup:\n{}", v.log());
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(greeting(bind).as_deref(), Some("B"));
    assert_eq!(v.log().matches("cannot resolve the server's name").count(), 1, "warned more than once:\n{}", v.log());
    let _ = std::fs::remove_file(&hosts);
}

#[test]
fn resolve_interval_zero_resolves_only_at_load() {
    let Some((v, bind, hosts, _a, _b)) = setup("0") else { return };
    assert_eq!(greeting(bind).as_deref(), Some("A"));
    std::fs::write(&hosts, "127.0.0.1 localhost\n127.0.0.22 backend.test\n").unwrap();
    // Ten times the interval the other test re-resolves at: nothing looks again here.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(greeting(bind).as_deref(), Some("A"), "{}", v.log());
    assert!(!v.log().contains("server address changed"));
    let _ = std::fs::remove_file(&hosts);
}

/// HTTP servers named A and B on the same port of 127.0.0.21 and 127.0.0.22.
fn two_http_backends(h2c: bool) -> (http_backend::HttpBackend, http_backend::HttpBackend, u16) {
    for _ in 0..20 {
        let port = free_port();
        let a: std::net::SocketAddr = format!("127.0.0.21:{port}").parse().unwrap();
        let b: std::net::SocketAddr = format!("127.0.0.22:{port}").parse().unwrap();
        if std::net::TcpListener::bind(a).is_ok() && std::net::TcpListener::bind(b).is_ok() {
            return (
                http_backend::HttpBackend::start_on("A", a, h2c),
                http_backend::HttpBackend::start_on("B", b, h2c),
                port,
            );
        }
    }
    panic!("no port free on both 127.0.0.21 and 127.0.0.22");
}

#[test]
fn pooled_server_connections_to_an_old_address_are_not_reused() {
    for h2 in [false, true] {
        let (a, _b, port) = two_http_backends(h2);
        let hosts = temp_path("hosts", "txt");
        std::fs::write(&hosts, "127.0.0.1 localhost\n127.0.0.21 backend.test\n").unwrap();
        let bind = free_addr();
        // Idle server connections are kept for a minute: only the address change may
        // retire them.
        let cfg = format!(
            "[global]\nresolve_interval = \"200ms\"\n[services.api]\nbind = \"{bind}\"\nmode = \"http\"\n\
             pool_idle_timeout = \"60s\"\nserver_http2 = {h2}\n\
             [[services.api.servers]]\nname = \"be\"\naddress = \"backend.test:{port}\"\n"
        );
        let mut v = match Namespaced::start(&cfg, &hosts) {
            Ok(v) => v,
            Err(why) => return skip_unless_netns_required("resolve", &why),
        };
        let server_of = |bind| {
            let mut c = http_client::connect(bind);
            let r = http_client::send(&mut c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
            r.field("server")
        };
        let up = eventually(WAIT, || {
            if v.exited().is_some() {
                return Some(None);
            }
            std::net::TcpStream::connect_timeout(&bind, Duration::from_millis(200)).ok().map(|_| Some(()))
        });
        if up != Some(Some(())) {
            let log = v.log();
            if log.contains("mount") || log.contains("unshare") {
                return skip_unless_netns_required("resolve", &format!("no private mount namespace here: {log}"));
            }
            panic!("vipgate did not serve:\n{log}");
        }
        for _ in 0..3 {
            assert_eq!(server_of(bind).as_deref(), Some("A"), "{}", v.log());
        }
        let opened_to_a = a.connections();

        std::fs::write(&hosts, "127.0.0.1 localhost\n127.0.0.22 backend.test\n").unwrap();
        let moved = eventually(Duration::from_secs(10), || v.log().contains("server address changed").then_some(()));
        assert!(moved.is_some(), "the address change was not noticed:\n{}", v.log());
        // The very next request goes to the new address, not down a pooled connection.
        let next: Vec<Option<String>> = (0..3).map(|_| server_of(bind)).collect();
        println!("server_http2 = {h2}: {opened_to_a} connection(s) to A before the move; after it {next:?}");
        assert!(next.iter().all(|s| s.as_deref() == Some("B")), "server_http2 = {h2}: {next:?}\n{}", v.log());
        let _ = std::fs::remove_file(&hosts);
    }
}
