//! A real HAProxy (Debian's `haproxy` package) as a child process for tests: found on PATH
//! or in the sbin dirs, run in the foreground (`haproxy -db -f CFG`) on the test's own
//! loopback ports, killed by PID on drop.

#![allow(dead_code)]

use std::fs::{self, File};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use super::common::{eventually, temp_path, WAIT};

/// Set to 1 (CI) to make a missing `haproxy` a test failure instead of a skip.
pub const REQUIRE_ENV: &str = "VIPGATE_REQUIRE_HAPROXY";

/// `haproxy` on PATH or in the sbin dirs (a non-root PATH often lacks /usr/sbin); None
/// (with "skipped: ..." printed) when it is not installed, a panic under `REQUIRE_ENV=1`.
pub fn haproxy_bin() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    if let Some(p) = dirs.iter().map(|d| d.join("haproxy")).find(|p| p.is_file()) {
        return Some(p);
    }
    let why = "haproxy not found on PATH or in /usr/sbin (apt-get install haproxy)";
    assert!(std::env::var(REQUIRE_ENV).as_deref() != Ok("1"), "{why}, and {REQUIRE_ENV}=1 makes that a failure");
    println!("skipped: {why}");
    None
}

pub struct Haproxy {
    child: Child,
    cfg: PathBuf,
    log_path: PathBuf,
}

impl Haproxy {
    /// Start HAProxy on the whole config `text` and wait until every address in
    /// `listening` accepts connections.
    pub fn start_cfg(bin: &PathBuf, text: &str, listening: &[SocketAddr]) -> Haproxy {
        let cfg = temp_path("haproxy", "cfg");
        fs::write(&cfg, text).expect("write haproxy config");
        let log_path = temp_path("haproxy", "log");
        // One open file for both streams, so neither overwrites the other.
        let out = File::create(&log_path).expect("create haproxy log");
        let child = Command::new(bin)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup haproxy log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let mut h = Haproxy { child, cfg, log_path };
        for addr in listening {
            let ok = eventually(WAIT, || {
                if let Ok(Some(st)) = h.child.try_wait() {
                    panic!("haproxy exited with {st} before {addr} accepted; config:\n{text}\noutput:\n{}", h.log());
                }
                // Connect and close at once: a readiness probe, nothing more.
                TcpStream::connect_timeout(addr, Duration::from_millis(500)).ok()
            });
            assert!(ok.is_some(), "haproxy never listened on {addr} within {WAIT:?}; output:\n{}", h.log());
        }
        h
    }

    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        // Child::kill is kill(pid, SIGKILL) on this one child, never by name.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("---- haproxy output ({}) ----\n{}\n---- end ----", self.log_path.display(), self.log());
        }
        let _ = fs::remove_file(&self.cfg);
        let _ = fs::remove_file(&self.log_path);
    }
}
