//! A throwaway MariaDB server for integration tests.
//!
//! `MariaDb::start(extra_args)` creates a temp datadir (`mariadb-install-db`), starts its
//! own `mariadbd` on a free 127.0.0.1 port and a unix socket in that dir (never the
//! system service, never the system config: `--no-defaults`), and waits until it answers
//! SQL as root over the socket. Drop stops that one process by its pid (SIGTERM, bounded
//! wait, then SIGKILL) and removes the dir (kept, path printed, with
//! `VIPGATE_KEEP_MARIADB=1`).
//!
//! When `mariadbd` is not installed, `start` prints "skipped: mariadbd not found (install
//! mariadb-server)" and returns None, so the test can return early and pass — unless
//! `VIPGATE_REQUIRE_MARIADB=1` (CI), where that is a failure. A server that is installed
//! but fails to start is always a failure, with its error log.
//!
//! Things found by trying (MariaDB 10.11, Debian 12):
//! - `--no-defaults` must be the very first argument.
//! - With `--skip-name-resolve` MariaDB never blocks a host for connection errors (the
//!   host cache is bypassed along with name resolution), so tests about
//!   `max_connect_errors` must run without it.
//! - Loopback clients (127.0.0.1, ::1) are never put in the host cache; any other
//!   127/8 address is (Linux routes all of 127/8 to `lo`).
//!
//! Usage from another test file:
//! ```ignore
//! #[path = "support/mariadb.rs"]
//! mod mariadb_support;
//! let Some(db) = mariadb_support::MariaDb::start(&["--max-connect-errors=5"]) else { return };
//! db.sql("CREATE USER 'u'@'%' IDENTIFIED BY 'p'").unwrap();
//! ```

#![allow(dead_code)]

use std::fs::{self, File};
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;
use tokio::time::Instant;

/// Set to 1 (CI) to make a missing mariadbd a test failure instead of a skip.
pub const REQUIRE_ENV: &str = "VIPGATE_REQUIRE_MARIADB";
/// Set to 1 to keep the temp dir (datadir, error log) after the test.
pub const KEEP_ENV: &str = "VIPGATE_KEEP_MARIADB";

const INSTALL_DEADLINE: Duration = Duration::from_secs(120);
const READY_DEADLINE: Duration = Duration::from_secs(60);
const STOP_DEADLINE: Duration = Duration::from_secs(20);
const SQL_DEADLINE: Duration = Duration::from_secs(30);

/// Programs the server needs.
#[derive(Debug, Clone)]
pub struct Tools {
    pub mariadbd: PathBuf,
    pub install_db: PathBuf,
    pub client: PathBuf,
}

/// Find a program on PATH or in the sbin dirs (`mariadbd` lives in /usr/sbin, which a
/// non-root PATH often lacks).
pub fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    for extra in ["/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/libexec", "/usr/local/bin", "/usr/bin"] {
        dirs.push(PathBuf::from(extra));
    }
    for name in names {
        for dir in &dirs {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// The tools, or None after printing the skip line (or panicking under REQUIRE_ENV).
pub fn tools_or_skip() -> Option<Tools> {
    let found = (
        find_program(&["mariadbd", "mysqld"]),
        find_program(&["mariadb-install-db", "mysql_install_db"]),
        find_program(&["mariadb", "mysql"]),
    );
    match found {
        (Some(mariadbd), Some(install_db), Some(client)) => Some(Tools { mariadbd, install_db, client }),
        (mariadbd, install_db, client) => {
            let mut missing = Vec::new();
            if mariadbd.is_none() {
                missing.push("mariadbd");
            }
            if install_db.is_none() {
                missing.push("mariadb-install-db");
            }
            if client.is_none() {
                missing.push("mariadb (client)");
            }
            let msg = format!("skipped: {} not found (install mariadb-server)", missing.join(", "));
            if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
                panic!("{REQUIRE_ENV}=1 but {msg}");
            }
            // Straight to stderr (past libtest's capture), once per test binary, so the
            // skip shows in a plain `cargo test` run.
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                use std::io::Write;
                let _ = writeln!(std::io::stderr(), "{msg}");
            });
            None
        }
    }
}

/// Output of a bounded command run.
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Run `cmd` with stdin closed, capturing both outputs; kill it (by its pid) if it is
/// still running after `limit`.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> Result<Ran, String> {
    let what = format!("{:?}", cmd.get_program());
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {what}: {e}"))?;
    let out = child.stdout.take();
    let err = child.stderr.take();
    let collect = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let t_out = collect(out.map(|p| Box::new(p) as Box<dyn Read + Send>));
    let t_err = collect(err.map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{what} still running after {limit:?}; killed"));
            }
            Err(e) => return Err(format!("waiting for {what}: {e}")),
        }
    };
    let stdout = t_out.join().unwrap_or_default();
    let stderr = t_err.join().unwrap_or_default();
    Ok(Ran { status, stdout, stderr })
}

fn running_as_root() -> bool {
    fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// A port that was free on 127.0.0.1 a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind 127.0.0.1:0")
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// One running `mariadbd` of this test process.
pub struct MariaDb {
    dir: PathBuf,
    tools: Tools,
    port: u16,
    socket: PathBuf,
    error_log: PathBuf,
    child: Option<Child>,
}

impl MariaDb {
    /// Create a datadir and start a server with the base options plus `extra_args` (any
    /// `--option=value` of mariadbd, e.g. `--max-connect-errors=5`). None = not installed
    /// (skip); panics if it is installed but will not start.
    pub fn start(extra_args: &[&str]) -> Option<MariaDb> {
        let tools = tools_or_skip()?;
        let started = Instant::now();
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "vipgate-mariadb-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let datadir = dir.join("data");
        // A private tmpdir: bootstraps running side by side in /tmp have been seen to
        // trip over each other's temporary tables ("Error on delete of
        // '/tmp/#sql-temptable-...MAI'", install fails).
        let tmpdir = dir.join("tmp");
        fs::create_dir_all(&tmpdir).unwrap_or_else(|e| panic!("create {}: {e}", tmpdir.display()));
        let root = running_as_root();

        let mut install = Command::new(&tools.install_db);
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", datadir.display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .arg(format!("--tmpdir={}", tmpdir.display()))
            .env("TMPDIR", &tmpdir)
            .current_dir(&dir);
        if root {
            install.arg("--user=root");
        }
        match run_bounded(install, INSTALL_DEADLINE) {
            Ok(r) if r.status.success() => {}
            Ok(r) => panic!("mariadb-install-db failed ({}):\n{}\n{}", r.status, r.stdout, r.stderr),
            Err(e) => panic!("mariadb-install-db: {e}"),
        }

        // A free port can be taken between the probe and the bind: retry on a new one.
        let mut last_error = String::new();
        for _attempt in 0..3 {
            let mut db = MariaDb {
                dir: dir.clone(),
                tools: tools.clone(),
                port: free_port(),
                socket: dir.join("mariadb.sock"),
                error_log: dir.join("error.log"),
                child: None,
            };
            let _ = fs::remove_file(&db.error_log);
            let mut cmd = Command::new(&tools.mariadbd);
            cmd.arg("--no-defaults")
                .arg(format!("--datadir={}", datadir.display()))
                .arg(format!("--socket={}", db.socket.display()))
                .arg(format!("--port={}", db.port))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--pid-file={}", dir.join("mariadbd.pid").display()))
                .arg(format!("--log-error={}", db.error_log.display()))
                .arg(format!("--tmpdir={}", tmpdir.display()))
                .arg("--innodb-buffer-pool-size=32M")
                .arg("--max-connections=200")
                .args(extra_args)
                .current_dir(&dir)
                .stdin(Stdio::null());
            if root {
                cmd.arg("--user=root");
            }
            let console = File::create(dir.join("console.log")).expect("console log");
            let console2 = console.try_clone().expect("console log");
            cmd.stdout(console).stderr(console2);
            let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", tools.mariadbd.display()));
            db.child = Some(child);
            match db.wait_ready() {
                Ok(()) => {
                    eprintln!(
                        "mariadb: {} ready on 127.0.0.1:{} in {:.1}s (dir {})",
                        tools.mariadbd.display(),
                        db.port,
                        started.elapsed().as_secs_f64(),
                        dir.display()
                    );
                    return Some(db);
                }
                Err(e) => {
                    let log = tail(&db.error_log, 30);
                    let retry = log.contains("Address already in use") || log.contains("Do you already have another");
                    last_error = format!(
                        "{e}\n--- error log ---\n{log}\n--- console ---\n{}",
                        tail(&dir.join("console.log"), 20)
                    );
                    db.stop();
                    // Keep the datadir for the next attempt: forget the dir so Drop does not remove it.
                    db.dir = PathBuf::new();
                    if !retry {
                        break;
                    }
                }
            }
        }
        panic!("mariadbd did not start (dir {}):\n{last_error}", dir.display());
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("mariadbd exited: {status}"));
                }
            }
            if self.socket.exists() {
                if let Ok(r) = self.sql_raw("SELECT 1", Duration::from_secs(5)) {
                    if r.status.success() {
                        return Ok(());
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("not ready after {READY_DEADLINE:?}"));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn sql_raw(&self, query: &str, limit: Duration) -> Result<Ran, String> {
        let mut cmd = Command::new(&self.tools.client);
        cmd.arg("--no-defaults").arg(format!("--socket={}", self.socket.display())).args([
            "-uroot",
            "--batch",
            "--skip-column-names",
            "-e",
            query,
        ]);
        run_bounded(cmd, limit)
    }

    /// Run SQL as root over the unix socket; Ok(stdout: tab-separated rows, no header).
    pub fn sql(&self, query: &str) -> Result<String, String> {
        let r = self.sql_raw(query, SQL_DEADLINE)?;
        if r.status.success() {
            Ok(r.stdout)
        } else {
            Err(format!("{query}: {}{}", r.stderr.trim(), r.stdout.trim()))
        }
    }

    /// The single value of a one-row, one-column query.
    pub fn sql_value(&self, query: &str) -> Result<String, String> {
        Ok(self.sql(query)?.trim().to_string())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn error_log(&self) -> &Path {
        &self.error_log
    }

    /// The last `lines` lines of the error log.
    pub fn error_log_tail(&self, lines: usize) -> String {
        tail(&self.error_log, lines)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Stop the server now (as Drop does); the dir stays until Drop.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if let Ok(None) = child.try_wait() {
            // SIGTERM to this pid only: a clean shutdown.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + STOP_DEADLINE;
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => return,
                    Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
                    _ => break,
                }
            }
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.stop();
        if self.dir.as_os_str().is_empty() {
            return;
        }
        if std::env::var(KEEP_ENV).as_deref() == Ok("1") {
            eprintln!("mariadb: kept {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
