//! A real three-node MariaDB Galera cluster on 127.0.0.1, for integration tests.
//!
//! `GaleraCluster::launch()` gives every node its own temp datadir, MySQL port, Galera
//! group port, IST port, SST port and unix socket, bootstraps node 1 with
//! `--wsrep-new-cluster`, creates the test users on it, then lets nodes 2 and 3 join one
//! at a time (state transfer by rsync) and waits until all three are Synced in a
//! three-node Primary component. It returns `Err(reason)` when MariaDB or Galera is not
//! installed or cannot start here, so the caller can skip with that reason.
//!
//! Nodes are numbered 1..=3 everywhere (`node1` is also `@@wsrep_node_name`).
//!
//! Things that matter on loopback, found by trying:
//! - `mariadbd` wants `--no-defaults` as its very first argument.
//! - Run as root, the node must run as a non-root user (`--user=mysql`): the rsync SST
//!   script starts an rsync daemon without a `uid =` line, and an rsync daemon started by
//!   root drops to `nobody`, which then cannot create anything in the joiner's datadir
//!   ("recv_generator: mkdir "mysql" failed: Permission denied", rsync code 23, and the
//!   joiner aborts with "Will never receive state"). So as root every node directory is
//!   owned by the `mysql` user; not as root, the nodes simply run as the current user.
//! - Joiners start on an empty (but existing, owner-writable) datadir: rsync SST fills it.
//! - Every listening address is pinned to 127.0.0.1: `gmcast.listen_addr`,
//!   `ist.recv_addr`, `--wsrep-sst-receive-address`, `--wsrep-node-address`,
//!   `--bind-address`; ports are distinct per node.
//! - Small sizes (16 MiB redo log, 32 MiB gcache, 64 MiB buffer pool) keep SST fast and
//!   the temp dirs at ~60 MiB a node.
//!
//! Processes: each `mariadbd` is started in a process group of its own; stop is SIGTERM
//! to its pid and a bounded wait, then SIGKILL to the pid and to that group (which holds
//! only what that `mariadbd` started: SST scripts and their rsync). Drop stops every node
//! still running and removes the temp dir (kept, with its path printed, when
//! `VIPGATE_KEEP_GALERA=1`). Every wait is bounded.

#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::Duration;
use tokio::time::Instant;

/// Password of the `app` user (allowed from 127.0.0.%, all privileges on `vipgate_test`).
pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app-s3cret";
/// The database the `app` user owns.
pub const APP_DB: &str = "vipgate_test";
/// The probe user (`PROCESS` only), as the clustercheck script's.
pub const CHECK_USER: &str = "clustercheck";
pub const CHECK_PASSWORD: &str = "check-s3cret";

const BOOTSTRAP_DEADLINE: Duration = Duration::from_secs(60);
/// One joiner: SST of ~60 MiB by rsync, then InnoDB start. ~5 s here; generous bound.
const JOIN_DEADLINE: Duration = Duration::from_secs(120);
const STOP_DEADLINE: Duration = Duration::from_secs(60);
const SQL_DEADLINE: Duration = Duration::from_secs(20);

struct Node {
    n: usize,
    dir: PathBuf,
    datadir: PathBuf,
    socket: PathBuf,
    error_log: PathBuf,
    console_log: PathBuf,
    port: u16,
    group_port: u16,
    ist_port: u16,
    sst_port: u16,
    child: Option<Child>,
}

/// Paths of the programs the cluster needs.
struct Tools {
    mariadbd: PathBuf,
    install_db: PathBuf,
    client: PathBuf,
    provider: PathBuf,
}

pub struct GaleraCluster {
    base: PathBuf,
    tools: Tools,
    /// `Some("mysql")` when running as root (see the module doc), else None.
    run_as: Option<String>,
    nodes: Vec<Node>,
}

// ---------------------------------------------------------------------------------------
// Small process helpers
// ---------------------------------------------------------------------------------------

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
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = (t_out.join(), t_err.join());
                return Err(format!("{what} did not finish within {limit:?}"));
            }
            Err(e) => return Err(format!("waiting for {what}: {e}")),
        }
    };
    let stdout = String::from_utf8_lossy(&t_out.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned();
    Ok(Ran { status, stdout, stderr })
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on the pid of a child this guard started and has not reaped.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// SIGTERM, bounded wait, then SIGKILL to the pid and to the process group it leads
/// (created for it at spawn: only its own SST helpers are in it).
fn stop_child(child: &mut Child, limit: Duration) -> ExitStatus {
    if let Ok(Some(st)) = child.try_wait() {
        return st;
    }
    let pid = child.id();
    signal(pid, libc::SIGTERM);
    if let Some(st) = wait_exit(child, limit) {
        return st;
    }
    signal(pid, libc::SIGKILL);
    let st = child.wait().expect("wait for killed mariadbd");
    // SAFETY: the group was created for this child (process_group(0)), id = its pid.
    unsafe {
        libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
    }
    st
}

fn find_program(name: &str, extra_dirs: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain(extra_dirs.iter().map(PathBuf::from)).map(|d| d.join(name)).find(|p| p.is_file())
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `n` distinct ports that were free on 127.0.0.1 (all held at once while choosing).
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")).collect();
    held.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// uid and gid of a local user, if it exists.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let cname = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam with a valid C string; the record is read at once, before any
    // other passwd call on this thread.
    unsafe {
        let pw = libc::getpwnam(cname.as_ptr());
        if pw.is_null() {
            None
        } else {
            Some(((*pw).pw_uid, (*pw).pw_gid))
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

// ---------------------------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------------------------

impl GaleraCluster {
    /// Bring up three synced nodes, or say why not (nothing is left running on Err).
    pub fn launch() -> Result<GaleraCluster, String> {
        let started = Instant::now();
        let tools = Self::find_tools()?;
        let run_as = if is_root() {
            if user_ids("mysql").is_none() {
                return Err("running as root but there is no `mysql` user: the rsync SST daemon would drop to \
                            `nobody` and fail"
                    .into());
            }
            Some("mysql".to_string())
        } else {
            None
        };
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let base =
            std::env::temp_dir().join(format!("vipgate-galera-{}-{}", std::process::id(), nanos % 1_000_000_000));
        fs::create_dir_all(&base).map_err(|e| format!("mkdir {}: {e}", base.display()))?;
        let _ = fs::set_permissions(&base, fs::Permissions::from_mode(0o755));
        let ports = free_ports(12);
        let mut nodes = Vec::new();
        for n in 1..=3 {
            let dir = base.join(format!("node{n}"));
            let datadir = dir.join("data");
            fs::create_dir_all(&datadir).map_err(|e| format!("mkdir {}: {e}", datadir.display()))?;
            let k = (n - 1) * 4;
            nodes.push(Node {
                n,
                socket: dir.join("mysqld.sock"),
                error_log: dir.join("error.log"),
                console_log: dir.join("console.log"),
                datadir,
                dir,
                port: ports[k],
                group_port: ports[k + 1],
                ist_port: ports[k + 2],
                sst_port: ports[k + 3],
                child: None,
            });
        }
        let mut cluster = GaleraCluster { base, tools, run_as, nodes };
        cluster.chown_dirs()?;
        cluster.install_db()?;
        cluster.spawn_node(1, true)?;
        cluster.wait_synced(1, BOOTSTRAP_DEADLINE)?;
        cluster.create_users()?;
        for n in 2..=3 {
            cluster.spawn_node(n, false)?;
            cluster.wait_synced(n, JOIN_DEADLINE)?;
        }
        for n in 1..=3 {
            cluster.wait_status(n, "wsrep_cluster_size", "3", Duration::from_secs(30))?;
        }
        eprintln!(
            "galera: 3 nodes synced in {:.1}s (mysql ports {}, {}, {}; dir {})",
            started.elapsed().as_secs_f64(),
            cluster.node_port(1),
            cluster.node_port(2),
            cluster.node_port(3),
            cluster.base.display()
        );
        Ok(cluster)
    }

    fn find_tools() -> Result<Tools, String> {
        let sbin = ["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"];
        let mariadbd = find_program("mariadbd", &sbin)
            .ok_or("mariadbd not found (apt-get install mariadb-server galera-4 rsync)")?;
        let install_db = find_program("mariadb-install-db", &sbin).ok_or("mariadb-install-db not found")?;
        let client = find_program("mariadb", &sbin).ok_or("the mariadb client not found")?;
        let provider = [
            "/usr/lib/galera/libgalera_smm.so",
            "/usr/lib/galera-4/libgalera_smm.so",
            "/usr/lib64/galera-4/libgalera_smm.so",
            "/usr/lib64/galera/libgalera_smm.so",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or("libgalera_smm.so not found (apt-get install galera-4)")?;
        find_program("rsync", &sbin).ok_or("rsync not found (needed for SST)")?;
        find_program("wsrep_sst_rsync", &sbin).ok_or("wsrep_sst_rsync not found")?;
        Ok(Tools { mariadbd, install_db, client, provider })
    }

    fn chown_dirs(&self) -> Result<(), String> {
        let Some(user) = &self.run_as else { return Ok(()) };
        let (uid, gid) = user_ids(user).ok_or_else(|| format!("no user {user}"))?;
        for node in &self.nodes {
            for p in [&node.dir, &node.datadir] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).map_err(|e| format!("chown {}: {e}", p.display()))?;
            }
        }
        Ok(())
    }

    fn install_db(&self) -> Result<(), String> {
        let node = &self.nodes[0];
        let mut cmd = Command::new(&self.tools.install_db);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", node.datadir.display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .arg("--skip-name-resolve")
            .arg("--innodb-log-file-size=16M")
            .arg("--innodb-buffer-pool-size=64M");
        if let Some(u) = &self.run_as {
            cmd.arg(format!("--user={u}"));
        }
        let r = run_bounded(cmd, Duration::from_secs(90))?;
        if !r.status.success() {
            return Err(format!("mariadb-install-db failed ({}):\n{}\n{}", r.status, r.stdout, r.stderr));
        }
        Ok(())
    }

    fn node(&self, n: usize) -> &Node {
        assert!((1..=3).contains(&n), "nodes are numbered 1..=3, got {n}");
        &self.nodes[n - 1]
    }

    fn node_mut(&mut self, n: usize) -> &mut Node {
        assert!((1..=3).contains(&n), "nodes are numbered 1..=3, got {n}");
        &mut self.nodes[n - 1]
    }

    fn spawn_node(&mut self, n: usize, bootstrap: bool) -> Result<(), String> {
        let cluster_address = format!(
            "gcomm://127.0.0.1:{},127.0.0.1:{},127.0.0.1:{}",
            self.nodes[0].group_port, self.nodes[1].group_port, self.nodes[2].group_port
        );
        let node = self.node(n);
        let mut cmd = Command::new(&self.tools.mariadbd);
        // --no-defaults must come first.
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", node.datadir.display()))
            .arg(format!("--socket={}", node.socket.display()))
            .arg(format!("--pid-file={}", node.dir.join("mysqld.pid").display()))
            .arg(format!("--log-error={}", node.error_log.display()))
            .arg(format!("--port={}", node.port))
            .arg("--bind-address=127.0.0.1")
            .arg("--skip-name-resolve")
            .arg("--wsrep-on=ON")
            .arg(format!("--wsrep-provider={}", self.tools.provider.display()))
            .arg(format!("--wsrep-cluster-address={cluster_address}"))
            .arg("--wsrep-cluster-name=vipgate-test")
            .arg(format!("--wsrep-node-name=node{n}"))
            .arg(format!("--wsrep-node-address=127.0.0.1:{}", node.group_port))
            .arg(format!(
                "--wsrep-provider-options=gmcast.listen_addr=tcp://127.0.0.1:{};ist.recv_addr=127.0.0.1:{};gcache.size=32M",
                node.group_port, node.ist_port
            ))
            .arg(format!("--wsrep-sst-receive-address=127.0.0.1:{}", node.sst_port))
            .arg("--wsrep-sst-method=rsync")
            .arg("--binlog-format=ROW")
            .arg("--default-storage-engine=InnoDB")
            .arg("--innodb-autoinc-lock-mode=2")
            .arg("--innodb-log-file-size=16M")
            .arg("--innodb-buffer-pool-size=64M")
            .arg("--innodb-flush-log-at-trx-commit=2")
            // A client that connected through the balancer but has not logged in yet is
            // not dropped by the server for a minute (the on_down check relies on it).
            .arg("--connect-timeout=60");
        if let Some(u) = &self.run_as {
            cmd.arg(format!("--user={u}"));
        }
        if bootstrap {
            cmd.arg("--wsrep-new-cluster");
        }
        let console = File::create(&node.console_log).map_err(|e| format!("{}: {e}", node.console_log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(console.try_clone().map_err(|e| e.to_string())?)
            .stderr(console)
            .process_group(0);
        let child = cmd.spawn().map_err(|e| format!("cannot start mariadbd: {e}"))?;
        self.node_mut(n).child = Some(child);
        Ok(())
    }

    fn node_failure(&self, n: usize, what: &str) -> String {
        let node = self.node(n);
        format!(
            "node{n}: {what}\n--- {} (tail) ---\n{}\n--- {} (tail) ---\n{}",
            node.error_log.display(),
            tail(&node.error_log, 25),
            node.console_log.display(),
            tail(&node.console_log, 10)
        )
    }

    /// Wait until node `n` answers and reports `wsrep_local_state = 4` (Synced).
    pub fn wait_synced(&mut self, n: usize, limit: Duration) -> Result<(), String> {
        self.wait_status(n, "wsrep_local_state", "4", limit)
    }

    /// Wait until `SHOW STATUS LIKE 'var'` on node `n` gives `want`.
    pub fn wait_status(&mut self, n: usize, var: &str, want: &str, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let mut last: String;
        loop {
            if let Some(child) = self.node_mut(n).child.as_mut() {
                if let Ok(Some(st)) = child.try_wait() {
                    self.node_mut(n).child = None;
                    return Err(
                        self.node_failure(n, &format!("mariadbd exited with {st} while waiting for {var} = {want}"))
                    );
                }
            } else {
                return Err(format!("node{n} is not running"));
            }
            match self.status(n, var) {
                Ok(v) if v == want => return Ok(()),
                Ok(v) => last = format!("{var} = {v}"),
                Err(e) => last = e,
            }
            if Instant::now() > deadline {
                return Err(
                    self.node_failure(n, &format!("{var} did not become {want} within {limit:?} (last: {last})"))
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// The value of one `SHOW GLOBAL STATUS` variable on node `n`.
    pub fn status(&self, n: usize, var: &str) -> Result<String, String> {
        let out = self.sql(n, &format!("SHOW GLOBAL STATUS LIKE '{var}'"))?;
        let line = out.lines().last().unwrap_or("");
        Ok(line.split('\t').nth(1).unwrap_or("").trim().to_string())
    }

    fn create_users(&self) -> Result<(), String> {
        self.sql(
            1,
            &format!(
                "CREATE DATABASE IF NOT EXISTS {APP_DB};
                 CREATE USER '{APP_USER}'@'127.0.0.%' IDENTIFIED BY '{APP_PASSWORD}';
                 GRANT ALL PRIVILEGES ON {APP_DB}.* TO '{APP_USER}'@'127.0.0.%';
                 CREATE USER '{CHECK_USER}'@'127.0.0.1' IDENTIFIED BY '{CHECK_PASSWORD}';
                 CREATE USER '{CHECK_USER}'@'localhost' IDENTIFIED BY '{CHECK_PASSWORD}';
                 GRANT PROCESS ON *.* TO '{CHECK_USER}'@'127.0.0.1';
                 GRANT PROCESS ON *.* TO '{CHECK_USER}'@'localhost';
                 CREATE TABLE {APP_DB}.t (id INT AUTO_INCREMENT PRIMARY KEY, node VARCHAR(32)) ENGINE=InnoDB;"
            ),
        )
        .map(|_| ())
        .map_err(|e| format!("creating the test users on node1: {e}"))
    }

    /// The MySQL port of node `n` (1..=3).
    pub fn node_port(&self, n: usize) -> u16 {
        self.node(n).port
    }

    /// `127.0.0.1:<mysql port of node n>`.
    pub fn node_addr(&self, n: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.node_port(n)))
    }

    /// Run `query` as root over node `n`'s unix socket; tab-separated rows, no header.
    pub fn sql(&self, n: usize, query: &str) -> Result<String, String> {
        let node = self.node(n);
        let mut cmd = Command::new(&self.tools.client);
        cmd.arg("--no-defaults").arg(format!("--socket={}", node.socket.display())).args([
            "-uroot",
            "-N",
            "-B",
            "--connect-timeout=5",
            "-e",
            query,
        ]);
        let r = run_bounded(cmd, SQL_DEADLINE)?;
        if r.status.success() {
            Ok(r.stdout)
        } else {
            Err(format!("node{n}: `{query}`: {}", r.stderr.trim()))
        }
    }

    /// `SET GLOBAL wsrep_desync = ON`: the node reports state 2 (Donor/Desynced).
    pub fn desync(&self, n: usize) -> Result<(), String> {
        self.sql(n, "SET GLOBAL wsrep_desync = ON")?;
        match self.status(n, "wsrep_local_state")?.as_str() {
            "2" => Ok(()),
            s => Err(format!("node{n}: wsrep_local_state = {s} after wsrep_desync = ON (expected 2)")),
        }
    }

    /// `SET GLOBAL wsrep_desync = OFF`, then wait until the node is Synced again.
    pub fn resync(&mut self, n: usize) -> Result<(), String> {
        self.sql(n, "SET GLOBAL wsrep_desync = OFF")?;
        self.wait_synced(n, Duration::from_secs(30))
    }

    /// Stop node `n` (SIGTERM, bounded wait; SIGKILL past it). Returns its exit status.
    pub fn stop(&mut self, n: usize) -> Option<ExitStatus> {
        let mut child = self.node_mut(n).child.take()?;
        Some(stop_child(&mut child, STOP_DEADLINE))
    }

    /// Start a stopped node again: it rejoins (IST or SST) and is waited for until Synced.
    pub fn start(&mut self, n: usize) -> Result<(), String> {
        if self.node(n).child.is_some() {
            return Err(format!("node{n} is already running"));
        }
        self.spawn_node(n, false)?;
        self.wait_synced(n, JOIN_DEADLINE)
    }

    pub fn is_running(&self, n: usize) -> bool {
        self.node(n).child.is_some()
    }

    /// The temp directory holding the nodes' datadirs and logs.
    pub fn dir(&self) -> &Path {
        &self.base
    }

    /// Path of a file in the cluster's temp dir (for credential files and such).
    pub fn path(&self, name: &str) -> PathBuf {
        self.base.join(name)
    }

    /// Write the `[client]` credentials file `vipgate clustercheck` reads (mode 0600).
    pub fn write_check_credentials(&self) -> PathBuf {
        let p = self.path("clustercheck.cnf");
        fs::write(&p, format!("[client]\nuser={CHECK_USER}\npassword={CHECK_PASSWORD}\n")).expect("write credentials");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).expect("chmod credentials");
        p
    }

    /// Tail of node `n`'s error log.
    pub fn error_log_tail(&self, n: usize, lines: usize) -> String {
        tail(&self.node(n).error_log, lines)
    }
}

impl Drop for GaleraCluster {
    fn drop(&mut self) {
        let panicking = thread::panicking();
        for i in 0..self.nodes.len() {
            if let Some(mut child) = self.nodes[i].child.take() {
                stop_child(&mut child, STOP_DEADLINE);
            }
        }
        if panicking {
            for n in 1..=3 {
                eprintln!("---- node{n} error log (tail) ----\n{}", self.error_log_tail(n, 30));
            }
        }
        if std::env::var("VIPGATE_KEEP_GALERA").as_deref() == Ok("1") {
            eprintln!("galera: keeping {}", self.base.display());
        } else {
            let _ = fs::remove_dir_all(&self.base);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Clients and probes
// ---------------------------------------------------------------------------------------

/// Run `query` with the `mariadb` client over TCP at 127.0.0.1:`port` as `user`; the
/// rows, tab-separated, no header. Bounded (connect 5 s, whole run 20 s).
pub fn client_query(port: u16, user: &str, password: &str, query: &str) -> Result<String, String> {
    let client = find_program("mariadb", &["/usr/bin", "/usr/local/bin"]).ok_or("the mariadb client not found")?;
    let mut cmd = Command::new(client);
    cmd.arg("--no-defaults")
        .args(["--protocol=TCP", "-h127.0.0.1"])
        .arg(format!("-P{port}"))
        .arg(format!("-u{user}"))
        .args(["-N", "-B", "--connect-timeout=5", "-e", query])
        .env("MYSQL_PWD", password);
    let r = run_bounded(cmd, SQL_DEADLINE)?;
    if r.status.success() {
        Ok(r.stdout.trim().to_string())
    } else {
        Err(r.stderr.trim().to_string())
    }
}

/// One HTTP probe of a clustercheck responder: the status line and the body.
pub fn probe_clustercheck(port: u16) -> Result<(String, String), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(b"OPTIONS / HTTP/1.0\r\n\r\n");
    let _ = s.shutdown(Shutdown::Write);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.lines().next().unwrap_or("").trim().to_string();
    if status.is_empty() {
        return Err("empty answer".into());
    }
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").trim().to_string();
    Ok((status, body))
}

/// A running `vipgate clustercheck` for one node; killed (by pid) on drop.
pub struct Responder {
    child: Child,
    pub port: u16,
    pub log_path: PathBuf,
}

impl Responder {
    /// Start `vipgate clustercheck` on a free 127.0.0.1 port for the MariaDB at
    /// 127.0.0.1:`mysql_port`, and wait until it answers a probe (200 or 503).
    pub fn start(bin: &str, mysql_port: u16, credentials: &Path, log_path: PathBuf) -> Result<Responder, String> {
        let port = free_ports(1)[0];
        let log = File::create(&log_path).map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .arg("clustercheck")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(["--mysql-host", "127.0.0.1", "--mysql-port"])
            .arg(mysql_port.to_string())
            .arg("--credentials-file")
            .arg(credentials)
            .args(["--cache", "200ms", "--timeout", "2s"])
            .env_remove("MYSQL_HOST")
            .env_remove("MYSQL_PORT")
            .env_remove("MYSQL_USERNAME")
            .env_remove("MYSQL_PASSWORD")
            .env_remove("AVAILABLE_WHEN_DONOR")
            .env_remove("AVAILABLE_WHEN_READONLY")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {bin} clustercheck: {e}"))?;
        let mut r = Responder { child, port, log_path };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(st)) = r.child.try_wait() {
                return Err(format!("vipgate clustercheck exited with {st}:\n{}", r.log()));
            }
            if probe_clustercheck(port).is_ok() {
                return Ok(r);
            }
            if Instant::now() > deadline {
                return Err(format!("vipgate clustercheck did not answer on port {port} within 15 s:\n{}", r.log()));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn probe(&self) -> Result<(String, String), String> {
        probe_clustercheck(self.port)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal(self.child.id(), libc::SIGKILL);
            let _ = self.child.wait();
        }
        if thread::panicking() {
            eprintln!("---- clustercheck :{} log ----\n{}", self.port, self.log());
        }
        let _ = fs::remove_file(&self.log_path);
    }
}
