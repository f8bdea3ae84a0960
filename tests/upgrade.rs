//! Hitless binary upgrade (SIGUSR2): the running vipgate starts the binary again, hands it
//! the listening sockets, and drains once the new process accepts. No connect may be
//! refused during the handover, and a connection opened before it keeps working.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use tokio::time::Instant;

/// The pid in `upgrade: new process started pid=N`.
fn new_pid(log: &str) -> Option<i32> {
    log.lines()
        .find(|l| l.contains("upgrade: new process started"))?
        .split("pid=")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
}

/// Stops the process the upgrade started (it is not our child) when the test ends.
struct Adopted(i32);

impl Drop for Adopted {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(self.0) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        if alive(self.0) {
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
}

#[test]
fn sigusr2_hands_over_without_refusing_a_connect() {
    let mut svc = echo_service_in("grace = \"5s\"", "db", "roundrobin", "", &[("b1", ""), ("b2", "")]);
    let bind = svc.bind;
    let v = &mut svc.vipgate;

    // A session opened before the upgrade: it must keep working on the old process.
    let mut held = TcpStream::connect(bind).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let name = read_line(&mut held).expect("held session greets");

    // Clients connecting as fast as they can through the handover.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (stop, ok, failed, errors) = (stop.clone(), ok.clone(), failed.clone(), errors.clone());
            thread::spawn(move || {
                while !stop.load(SeqCst) {
                    match try_which_server(bind) {
                        Some(_) => ok.fetch_add(1, SeqCst),
                        None => {
                            errors.lock().unwrap().push(format!("{:?}", TcpStream::connect(bind).err()));
                            failed.fetch_add(1, SeqCst)
                        }
                    };
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    let before = ok.load(SeqCst);
    let t = Instant::now();
    // `vipgate upgrade --pid` sends SIGUSR2.
    let out = run_cli(&["upgrade", "--pid", &v.pid().to_string()]);
    assert!(out.status.success(), "vipgate upgrade: {}", String::from_utf8_lossy(&out.stderr));
    let line = v
        .wait_log_line(WAIT, |l| l.contains("upgrade: the new process accepts"))
        .unwrap_or_else(|| panic!("no handover:\n{}", v.log()));
    let handover = t.elapsed();
    let pid = new_pid(&v.log()).unwrap_or_else(|| panic!("no new pid in the log:\n{}", v.log()));
    let _adopted = Adopted(pid);
    assert!(line.contains(&format!("pid={pid}")), "{line}");
    // The held session still works on the old, draining process.
    held.write_all(b"ping\n").unwrap();
    let mut echo = [0u8; 5];
    held.read_exact(&mut echo).expect("held session answered after the handover");
    assert_eq!(&echo, b"ping\n", "held session on {name}");
    drop(held);
    // The old process drains and exits 0.
    v.expect_exit_zero("after handing over");
    thread::sleep(Duration::from_millis(500));
    stop.store(true, SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let (ok, failed) = (ok.load(SeqCst), failed.load(SeqCst));
    println!(
        "upgrade: handover in {handover:?}; {ok} connections served ({} during and after), {failed} failed",
        ok - before
    );
    assert_eq!(failed, 0, "connects failed during the upgrade: {:?}\n{}", errors.lock().unwrap(), v.log());
    assert!(ok > before + 10, "clients made no progress across the upgrade");
    // The new process alone serves now.
    assert!(alive(pid));
    assert!(try_which_server(bind).is_some(), "the new process does not serve:\n{}", v.log());
}

#[test]
fn upgrade_refuses_a_process_that_is_not_vipgate() {
    let out = run_cli(&["upgrade", "--pid", &std::process::id().to_string()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a running vipgate"));
}

#[test]
fn upgrade_by_config_finds_the_process_through_the_admin_endpoint() {
    let b = Backend::echo_any("b1");
    let (bind, admin) = (free_addr(), free_addr());
    let cfg = format!(
        "{}\n[admin]\nbind = \"{admin}\"\n\n[services.db]\nbind = \"{bind}\"\n{}",
        global("grace = \"2s\""),
        servers("db", &[("b1", b.addr, "")])
    );
    let mut v = Vipgate::start(&cfg, bind);
    // The admin endpoint answers once it is up.
    assert!(eventually(WAIT, || TcpStream::connect(admin).ok()).is_some());
    let out = run_cli(&["upgrade", "--config", &v.config.display().to_string()]);
    assert!(out.status.success(), "vipgate upgrade --config: {}", String::from_utf8_lossy(&out.stderr));
    v.wait_log_line(WAIT, |l| l.contains("upgrade: the new process accepts"))
        .unwrap_or_else(|| panic!("no handover:\n{}", v.log()));
    let pid = new_pid(&v.log()).unwrap_or_else(|| panic!("no new pid:\n{}", v.log()));
    let _adopted = Adopted(pid);
    v.expect_exit_zero("after handing over");
    assert_eq!(try_which_server(bind).as_deref(), Some("b1"), "the new process serves:\n{}", v.log());
    // The new process takes over the admin endpoint too.
    let ok = eventually(WAIT, || {
        let out = run_cli(&["status", "--config", &v.config.display().to_string()]);
        out.status.success().then_some(())
    });
    assert!(ok.is_some(), "the new process never served the admin endpoint:\n{}", v.log());
}

/// VIPGATE_UPGRADE_FROM in the environment of process `pid`.
fn upgrade_from(pid: i32) -> Option<std::path::PathBuf> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ.split(|&b| b == 0).find_map(|kv| {
        let value = kv.strip_prefix(b"VIPGATE_UPGRADE_FROM=")?;
        Some(std::path::PathBuf::from(String::from_utf8_lossy(value).into_owned()))
    })
}

#[test]
fn the_handover_socket_is_private_and_refuses_another_user() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::process::CommandExt;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !std::path::Path::new("/usr/bin/socat").exists() {
        assert!(std::env::var_os("CI").is_none(), "CI runs this as root with socat installed");
        eprintln!("SKIP: needs root (to connect as another user) and socat");
        return;
    }
    // vipgate runs from a copy whose path then holds a script: the upgrade starts the
    // script, which keeps the real new process back until the test has tried the
    // hand-over socket as another user.
    let dir = temp_path("upgrade-peer", "d");
    std::fs::create_dir_all(&dir).unwrap();
    let _dir = Removed(dir.clone());
    let exe = dir.join("vipgate");
    std::fs::copy(BIN, &exe).unwrap();
    let go = dir.join("go");
    let b = Backend::echo_any("b1");
    let bind = free_addr();
    let cfg = format!(
        "{}\n[services.db]\nbind = \"{bind}\"\n{}",
        global("grace = \"2s\""),
        servers("db", &[("b1", b.addr, "")])
    );
    let mut v = Vipgate::spawn_bin(&exe, &cfg);
    v.wait_ready(bind);
    let script = dir.join("vipgate.script");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ni=0\nwhile [ ! -e '{}' ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\nexec '{BIN}' \"$@\"\n",
            go.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&script, &exe).unwrap();

    v.signal(libc::SIGUSR2);
    v.wait_log_line(WAIT, |l| l.contains("upgrade: new process started")).unwrap_or_else(|| panic!("{}", v.log()));
    let pid = new_pid(&v.log()).unwrap_or_else(|| panic!("no new pid:\n{}", v.log()));
    let _adopted = Adopted(pid);
    let path = eventually(WAIT, || upgrade_from(pid)).unwrap_or_else(|| panic!("no VIPGATE_UPGRADE_FROM in {pid}"));

    // Not guessable, and in a directory only vipgate's user can enter, made so from the start.
    let old_pid = v.pid().to_string();
    let name = path.to_string_lossy().into_owned();
    assert!(
        !name.contains(&format!("vipgate-upgrade-{old_pid}")),
        "the socket path {name} is derived from the pid {old_pid}"
    );
    let private = path.parent().unwrap().to_path_buf();
    let meta = std::fs::metadata(&private).unwrap();
    assert!(meta.is_dir() && private != std::env::temp_dir(), "{name} is not in a private directory");
    assert_eq!((meta.permissions().mode() & 0o7777, meta.uid()), (0o700, 0), "{}", private.display());

    // Root opens the way; a process of another user connects, and is refused.
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = std::process::Command::new("socat")
        .args(["-u", "OPEN:/dev/null"])
        .arg(format!("UNIX-CONNECT:{name}"))
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run socat as nobody");
    assert!(out.status.success(), "nobody could not even connect: {}", String::from_utf8_lossy(&out.stderr));
    let refusal = v.wait_log_line(WAIT, |l| l.contains("upgrade") && l.contains("refused") && l.contains("65534"));
    assert!(refusal.is_some(), "a peer of uid 65534 was not refused:\n{}", v.log());
    assert!(!v.log().contains("upgrade failed"), "the upgrade gave up on a stranger:\n{}", v.log());

    // The real new process (same user) connects after that and takes over.
    std::fs::write(&go, "").unwrap();
    v.wait_log_line(WAIT, |l| l.contains("upgrade: the new process accepts"))
        .unwrap_or_else(|| panic!("no handover after the refusal:\n{}", v.log()));
    v.expect_exit_zero("after handing over");
    assert_eq!(try_which_server(bind).as_deref(), Some("b1"), "the new process serves:\n{}", v.log());
    assert!(!private.exists(), "the hand-over directory {} was left behind", private.display());
    println!("hand-over socket {name}: refused uid 65534, then handed over to pid {pid}");
}
