//! End-to-end VIP failover on real network namespaces, with Debian's keepalived: two
//! "controllers" each run vipgate and keepalived sharing a VIP in front of one backend;
//! keepalived's track_script asks the local vipgate's `/readyz`. A client in a third
//! namespace keeps asking the VIP. Stopping the VIP holder's vipgate moves the VIP and
//! the client's requests succeed again; the time that takes is measured and printed.
//!
//! Everything lives in namespaces this test creates (a bridge in its own "switch"
//! namespace, 10.77.0.0/24 inside them): nothing touches the host's interfaces. Skipped,
//! saying why, where namespaces cannot be created or a tool is missing, unless
//! VIPGATE_REQUIRE_NETNS is set (CI), where that is a failure.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use tokio::time::Instant;

const VIP: &str = "10.77.0.10";
const BACKEND: &str = "10.77.0.50";

/// The namespaces, processes and files of one run; all removed on drop.
struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    dir: PathBuf,
}

impl Lab {
    fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn spawn(&mut self, ns: &str, argv: &[&str], log: &str) -> u32 {
        let out = std::fs::File::create(self.dir.join(log)).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(ns)])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {argv:?} in {ns}: {e}"));
        let pid = child.id();
        self.children.push(child);
        pid
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    /// One HTTP request from the client namespace to the VIP: success within 1 s?
    fn client_ok(&self) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.ns("cl"), "curl", "-fsS", "-o", "/dev/null", "--max-time", "1"])
            .arg(format!("http://{VIP}:8080/"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    fn holds_vip(&self, ns: &str) -> bool {
        let out = Command::new("ip").args(["-n", &self.ns(ns), "-4", "addr", "show", "dev", "eth0"]).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("inet {VIP}/"))).unwrap_or(false)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Only what this test started, by PID.
        for c in &mut self.children {
            // SAFETY: kill(2) on a child we spawned and have not reaped.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for c in &mut self.children {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        if std::thread::panicking() {
            for f in ["vg1.log", "vg2.log", "ka1.log", "ka2.log", "backend.log"] {
                eprintln!("---- {f} ----\n{}", self.log(f));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(argv: &[&str]) -> Result<(), String> {
    let out = Command::new(argv[0]).args(&argv[1..]).output().map_err(|e| format!("{argv:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{argv:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// The lab: switch, two controllers, client, backend on one bridge.
fn build_lab() -> Result<Lab, String> {
    for tool in ["ip", "keepalived", "curl", "python3"] {
        let found =
            std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists())).unwrap_or(false)
                || std::path::Path::new("/usr/sbin").join(tool).exists();
        if !found {
            return Err(format!("{tool} is not installed"));
        }
    }
    let dir = temp_path("vipfail", "d");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut lab =
        Lab { prefix: format!("vg{}", std::process::id()), namespaces: Vec::new(), children: Vec::new(), dir };
    for name in ["sw", "c1", "c2", "cl", "be"] {
        let ns = lab.ns(name);
        run(&["ip", "netns", "add", &ns])?;
        lab.namespaces.push(ns.clone());
        run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
    }
    let sw = lab.ns("sw");
    run(&["ip", "-n", &sw, "link", "add", "br0", "type", "bridge"])?;
    run(&["ip", "-n", &sw, "link", "set", "br0", "up"])?;
    for (i, (name, ip)) in
        [("c1", "10.77.0.11"), ("c2", "10.77.0.12"), ("cl", "10.77.0.100"), ("be", BACKEND)].into_iter().enumerate()
    {
        let ns = lab.ns(name);
        let port = format!("p{i}");
        run(&["ip", "link", "add", &port, "netns", &sw, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
        run(&["ip", "-n", &sw, "link", "set", &port, "master", "br0", "up"])?;
        run(&["ip", "-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
    }
    Ok(lab)
}

#[test]
fn keepalived_moves_the_vip_when_vipgate_stops() {
    let mut lab = match build_lab() {
        Ok(l) => l,
        Err(why) => return skip_unless_netns_required("vip_failover", &why),
    };
    let www = lab.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello\n").unwrap();
    let www_s = www.to_str().unwrap().to_string();
    lab.spawn("be", &["python3", "-m", "http.server", "8000", "--bind", BACKEND, "--directory", &www_s], "backend.log");

    let mut vipgate_pids = Vec::new();
    for (c, priority) in [(1, 100), (2, 90)] {
        let cfg = lab.dir.join(format!("vg{c}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[admin]\nbind = \"127.0.0.1:9100\"\n[services.api]\nbind = \"{VIP}:8080\"\n\
                 [[services.api.servers]]\nname = \"be\"\naddress = \"{BACKEND}:8000\"\n"
            ),
        )
        .unwrap();
        let cfg_s = cfg.to_str().unwrap().to_string();
        vipgate_pids.push(lab.spawn(&format!("c{c}"), &[BIN, "run", "--config", &cfg_s], &format!("vg{c}.log")));
        // The example in deploy/keepalived.conf, on this lab's interface and VIP.
        let ka = lab.dir.join(format!("ka{c}.conf"));
        std::fs::write(
            &ka,
            format!(
                "global_defs {{\n  enable_script_security\n  script_user root\n}}\n\
                 vrrp_script check_vipgate {{\n  script \"/usr/bin/curl -fsS -o /dev/null --max-time 1 http://127.0.0.1:9100/readyz\"\n\
                   interval 1\n  timeout 1\n  fall 1\n  rise 1\n}}\n\
                 vrrp_instance api {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 77\n  priority {priority}\n\
                   advert_int 1\n  virtual_ipaddress {{\n    {VIP}/24 dev eth0\n  }}\n  track_script {{\n    check_vipgate\n  }}\n}}\n"
            ),
        )
        .unwrap();
        let d = lab.dir.to_str().unwrap().to_string();
        let ka_s = ka.to_str().unwrap().to_string();
        lab.spawn(
            &format!("c{c}"),
            &[
                "keepalived",
                "-n",
                "-l",
                "-D",
                "-f",
                &ka_s,
                "-p",
                &format!("{d}/ka{c}.pid"),
                "-r",
                &format!("{d}/ka{c}.vrrp.pid"),
            ],
            &format!("ka{c}.log"),
        );
    }

    // The VIP comes up on the higher priority controller and serves.
    let started = Instant::now();
    let first = eventually(Duration::from_secs(30), || lab.client_ok().then_some(()));
    assert!(first.is_some(), "the VIP never served within 30 s");
    let holder = if lab.holds_vip("c1") { 1 } else { 2 };
    assert!(lab.holds_vip(&format!("c{holder}")));
    eprintln!("VIP served after {:?}, held by c{holder}", started.elapsed());

    // Stop the holder's vipgate (SIGTERM, as systemd would).
    let pid = vipgate_pids[holder - 1];
    // SAFETY: kill(2) on the vipgate process this test spawned.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let stopped = Instant::now();
    let again = eventually(Duration::from_secs(20), || lab.client_ok().then_some(()));
    let took = stopped.elapsed();
    assert!(again.is_some(), "no request succeeded within 20 s of stopping c{holder}'s vipgate");
    let other = 3 - holder;
    assert!(lab.holds_vip(&format!("c{other}")), "the VIP did not move to c{other}");
    assert!(!lab.holds_vip(&format!("c{holder}")), "c{holder} still holds the VIP");
    eprintln!("MEASURED: requests to the VIP succeed again {took:?} after stopping c{holder}'s vipgate");
    // Generous bound: keepalived checks every second and adverts every second.
    assert!(took < Duration::from_secs(15), "failover took {took:?}");
    for _ in 0..5 {
        assert!(lab.client_ok(), "requests through c{other} keep succeeding");
    }
}
