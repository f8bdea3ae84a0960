//! Shared harness for the integration tests: free ports, temp config files, a guard
//! around a running `vipgate` child (killed on drop, stderr kept in a file), small
//! thread-per-connection TCP backends that announce their name, and client helpers.
//!
//! Everything talks over real sockets on 127.0.0.0/8 or ::1. Every wait is bounded by a
//! deadline, and deadlines are generous: the machine is small and tests run in parallel.

#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;
use tokio::time::Instant;

/// Path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_vipgate");

/// Default bound for "this should happen soon" waits.
pub const WAIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------
// Ports, temp files
// ---------------------------------------------------------------------------------------

/// A port that was free on 127.0.0.1 a moment ago (bound to :0, then released), and not
/// handed out before in this process: the kernel may give a just-released port again,
/// and two services of one test config must not get the same one.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    for _ in 0..100 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().unwrap().port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no fresh free port after 100 tries");
}

/// `127.0.0.1:<free port>`.
pub fn free_addr() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), free_port())
}

/// `[::1]:<free port>`, or None when ::1 is not available on this machine.
pub fn free_addr_v6() -> Option<SocketAddr> {
    let l = TcpListener::bind("[::1]:0").ok()?;
    l.local_addr().ok()
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh path in the temp dir, unique to this process and call.
pub fn temp_path(tag: &str, ext: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    std::env::temp_dir().join(format!("vipgate-it-{}-{}-{}-{}.{}", std::process::id(), n, nanos, tag, ext))
}

/// A temp file or directory of the test's, removed when this goes out of scope (a failed
/// assertion included).
pub struct Removed(pub PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        if self.0.is_dir() {
            let _ = fs::remove_dir_all(&self.0);
        } else {
            let _ = fs::remove_file(&self.0);
        }
    }
}

/// Write `text` to a fresh temp file and return its path.
pub fn write_config(tag: &str, text: &str) -> PathBuf {
    let p = temp_path(tag, "toml");
    fs::write(&p, text).expect("write temp config");
    p
}

/// Format an address as TOML wants it in `bind`/`address` (`[::1]:p` for v6).
pub fn a(addr: SocketAddr) -> String {
    addr.to_string()
}

// ---------------------------------------------------------------------------------------
// Config building
// ---------------------------------------------------------------------------------------

/// `[global]` block used by most tests: two workers, optional extra lines.
pub fn global(extra: &str) -> String {
    format!("[global]\nworkers = 2\n{extra}\n")
}

/// `[[services.SVC.servers]]` blocks for (name, address, extra-lines) triples.
pub fn servers(svc: &str, list: &[(&str, SocketAddr, &str)]) -> String {
    let mut s = String::new();
    for (name, addr, extra) in list {
        s.push_str(&format!("\n[[services.{svc}.servers]]\nname = \"{name}\"\naddress = \"{}\"\n{extra}\n", a(*addr)));
    }
    s
}

/// `[services.SVC.check]` with kind tcp.
pub fn check(svc: &str, interval: &str, rise: u32, fall: u32) -> String {
    format!("\n[services.{svc}.check]\nkind = \"tcp\"\ninterval = \"{interval}\"\nrise = {rise}\nfall = {fall}\n")
}

/// A whole config with one service `svc` bound to `bind`: the `[global]` block (with
/// `global_extra`), then `[services.SVC]` with the service-level lines `keys`, then its
/// servers as (name, address, extra-lines) triples.
pub fn service_toml(
    global_extra: &str,
    svc: &str,
    bind: SocketAddr,
    keys: &str,
    list: &[(&str, SocketAddr, &str)],
) -> String {
    format!("{}\n[services.{svc}]\nbind = \"{}\"\n{keys}\n{}", global(global_extra), a(bind), servers(svc, list))
}

/// Service-level lines: `balance = "BALANCE"` (left out when `balance` is empty), then
/// `extra`.
pub fn balance_keys(balance: &str, extra: &str) -> String {
    if balance.is_empty() {
        extra.to_string()
    } else {
        format!("balance = \"{balance}\"\n{extra}")
    }
}

// ---------------------------------------------------------------------------------------
// The vipgate child process
// ---------------------------------------------------------------------------------------

/// Run `vipgate ARGS` to completion (bounded), capturing output.
pub fn run_cli(args: &[&str]) -> Output {
    run_cli_in(args, None)
}

pub fn run_cli_in(args: &[&str], dir: Option<&Path>) -> Output {
    let out_path = temp_path("cli-out", "txt");
    let err_path = temp_path("cli-err", "txt");
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("VIPGATE_WORKERS")
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap());
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let mut child = cmd.spawn().expect("spawn vipgate");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`vipgate {}` did not finish within 30 s", args.join(" "));
        }
        thread::sleep(Duration::from_millis(20));
    };
    let stdout = fs::read(&out_path).unwrap_or_default();
    let stderr = fs::read(&err_path).unwrap_or_default();
    let _ = fs::remove_file(&out_path);
    let _ = fs::remove_file(&err_path);
    Output { status, stdout, stderr }
}

/// A running `vipgate run --config FILE`; SIGKILLed on drop if still running. Its stderr
/// goes to a file (printed when the test panics).
pub struct Vipgate {
    child: Child,
    pub config: PathBuf,
    pub log_path: PathBuf,
    out_path: PathBuf,
    exited: Option<ExitStatus>,
}

impl Vipgate {
    /// Write the config and start vipgate on it (does not wait for readiness).
    pub fn spawn(config_text: &str) -> Vipgate {
        Self::spawn_with_env(config_text, &[])
    }

    pub fn spawn_with_env(config_text: &str, env: &[(&str, &str)]) -> Vipgate {
        Self::spawn_inner(Path::new(BIN), config_text, env, None)
    }

    /// Start vipgate with its descriptor limit (RLIMIT_NOFILE, soft and hard) set to
    /// `nofile`, as `ulimit -n` would.
    pub fn spawn_with_nofile(config_text: &str, nofile: u64) -> Vipgate {
        Self::spawn_inner(Path::new(BIN), config_text, &[], Some(nofile))
    }

    /// Start the vipgate binary at `bin` (a copy of the one under test, say).
    pub fn spawn_bin(bin: &Path, config_text: &str) -> Vipgate {
        Self::spawn_inner(bin, config_text, &[], None)
    }

    fn spawn_inner(bin: &Path, config_text: &str, env: &[(&str, &str)], nofile: Option<u64>) -> Vipgate {
        let config = write_config("run", config_text);
        let log_path = temp_path("stderr", "log");
        let out_path = temp_path("stdout", "log");
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .env_remove("VIPGATE_WORKERS")
            .stdin(Stdio::null())
            .stdout(File::create(&out_path).unwrap())
            .stderr(File::create(&log_path).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit { rlim_cur: n as libc::rlim_t, rlim_max: n as libc::rlim_t };
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().expect("spawn vipgate run");
        Vipgate { child, config, log_path, out_path, exited: None }
    }

    /// Start vipgate and wait until `addr` accepts a connection, which is closed at once:
    /// for services that say nothing first (http mode, `accept_proxy`), where a probe that
    /// lingers for a first byte would only wait out a timeout.
    pub fn start_accepting(config_text: &str, addr: SocketAddr) -> Vipgate {
        let mut v = Self::spawn(config_text);
        let ok = eventually(WAIT, || {
            if let Some(st) = v.try_wait() {
                panic!("vipgate exited with {st}:\n{}", v.log());
            }
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()
        });
        assert!(ok.is_some(), "vipgate never listened on {addr}:\n{}", v.log());
        v
    }

    /// Start vipgate and wait until `addr` accepts connections.
    pub fn start(config_text: &str, addr: SocketAddr) -> Vipgate {
        let mut v = Self::spawn(config_text);
        v.wait_ready(addr);
        v
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Poll-connect `addr` until it accepts (panics after the deadline or if vipgate
    /// exits). The probe connection then waits briefly for a first byte or EOF, so that
    /// the balancer has made its pick for it before the test's own connections start.
    pub fn wait_ready(&mut self, addr: SocketAddr) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(st) = self.try_wait() {
                panic!("vipgate exited early with {st} before {addr} accepted; stderr:\n{}", self.log());
            }
            if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
                let mut b = [0u8; 64];
                let _ = s.read(&mut b);
                return;
            }
            if Instant::now() > deadline {
                panic!("vipgate did not accept on {addr} within {WAIT:?}; stderr:\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// The stderr captured so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// Wait until a stderr line satisfies `pred`; returns that line.
    pub fn wait_log_line(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        poll(timeout, Duration::from_millis(50), || self.log().lines().find(|l| pred(l)).map(str::to_string))
    }

    /// Wait for the stderr line whose `client=` field is 127.0.0.1:`port` and which also
    /// satisfies `pred`; panics with the log if none shows up within `WAIT`.
    pub fn wait_client_line(&self, port: u16, pred: impl Fn(&str) -> bool) -> String {
        let client = format!("127.0.0.1:{port}");
        self.wait_log_line(WAIT, |l| field(l, "client").as_deref() == Some(client.as_str()) && pred(l))
            .unwrap_or_else(|| panic!("no log line with client={client}:\n{}", self.log()))
    }

    /// Wait (up to `WAIT`) for the process to exit, and require exit status 0.
    pub fn expect_exit_zero(&mut self, what: &str) {
        let st = self.wait_exit(WAIT).unwrap_or_else(|| panic!("vipgate still running {what}"));
        assert_eq!(st.code(), Some(0), "exit status {what}: {st}");
    }

    pub fn signal(&self, sig: libc::c_int) {
        if self.exited.is_none() {
            // SAFETY: plain kill(2) on the pid of a child we started and have not reaped.
            let rc = unsafe { libc::kill(self.pid(), sig) };
            assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
        }
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.exited = Some(st);
            }
        }
        self.exited
    }

    /// Wait for the process to exit; None if still running at the deadline.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        eventually(timeout, || self.try_wait())
    }
}

impl Drop for Vipgate {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            // SAFETY: SIGKILL to our own, not yet reaped, child.
            unsafe {
                libc::kill(self.pid(), libc::SIGKILL);
            }
            let _ = self.child.wait();
        }
        if thread::panicking() {
            eprintln!("---- vipgate stderr ({}) ----\n{}\n---- end ----", self.log_path.display(), self.log());
        }
        let _ = fs::remove_file(&self.config);
        let _ = fs::remove_file(&self.log_path);
        let _ = fs::remove_file(&self.out_path);
    }
}

/// Start vipgate with the one service of `service_toml(global_extra, svc, BIND, keys,
/// list)` on a fresh 127.0.0.1 port BIND, and wait until BIND accepts.
pub fn start_service(
    global_extra: &str,
    svc: &str,
    keys: &str,
    list: &[(&str, SocketAddr, &str)],
) -> (Vipgate, SocketAddr) {
    let bind = free_addr();
    let v = Vipgate::start(&service_toml(global_extra, svc, bind, keys, list), bind);
    (v, bind)
}

/// Echo backends behind a running vipgate service (see `echo_service`). Dropping it kills
/// vipgate first, then stops the backends.
pub struct EchoService {
    pub vipgate: Vipgate,
    pub bind: SocketAddr,
    /// In the order the servers were given.
    pub backends: Vec<Backend>,
}

impl EchoService {
    /// The backend named `name`.
    pub fn backend(&self, name: &str) -> &Backend {
        self.backends.iter().find(|b| b.name == name).unwrap_or_else(|| panic!("no backend named {name:?}"))
    }

    pub fn backend_mut(&mut self, name: &str) -> &mut Backend {
        self.backends.iter_mut().find(|b| b.name == name).unwrap_or_else(|| panic!("no backend named {name:?}"))
    }
}

/// Start one echo backend per (name, server-extra-lines) pair in `list`, each announcing
/// the name it has as a server, then a vipgate service `svc` (default `[global]`) over them
/// with `balance_keys(balance, extra)`, and wait until it accepts.
pub fn echo_service(svc: &str, balance: &str, extra: &str, list: &[(&str, &str)]) -> EchoService {
    echo_service_in("", svc, balance, extra, list)
}

/// `echo_service` with `global_extra` lines in the `[global]` block.
pub fn echo_service_in(
    global_extra: &str,
    svc: &str,
    balance: &str,
    extra: &str,
    list: &[(&str, &str)],
) -> EchoService {
    let backends: Vec<Backend> = list.iter().map(|(name, _)| Backend::echo_any(name)).collect();
    let servers: Vec<(&str, SocketAddr, &str)> =
        list.iter().zip(&backends).map(|((name, extra), b)| (*name, b.addr, *extra)).collect();
    let (vipgate, bind) = start_service(global_extra, svc, &balance_keys(balance, extra), &servers);
    EchoService { vipgate, bind, backends }
}

// ---------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------

type Handler = dyn Fn(TcpStream) + Send + Sync + 'static;

/// A thread-per-connection TCP server. `stop()` (or drop) closes the listener so new
/// connects are refused; connections already accepted live on in their threads.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    /// Connections accepted (health probes included).
    pub accepted: Arc<AtomicUsize>,
    /// Connections currently open (for echo backends).
    pub active: Arc<AtomicUsize>,
    /// Bytes received in total (for echo backends).
    pub received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    handler: Arc<Handler>,
}

/// Bind `addr`, retrying briefly while it is still in use (restart on the same port).
fn bind_retry(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + WAIT;
    loop {
        match TcpListener::bind(addr) {
            Ok(l) => return l,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("cannot bind backend on {addr}: {e}"),
        }
    }
}

impl Backend {
    /// Echo backend: on each connection write "NAME\n", then echo until EOF, then close.
    pub fn echo(name: &str, addr: SocketAddr) -> Backend {
        let active = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let (act, rec) = (active.clone(), received.clone());
        let greeting = format!("{name}\n");
        let handler = move |mut s: TcpStream| {
            act.fetch_add(1, Ordering::SeqCst);
            // Bounded: a connection nobody closes ends the thread after a minute idle.
            let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
            let _ = s.set_write_timeout(Some(Duration::from_secs(60)));
            let _ = s.write_all(greeting.as_bytes());
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => {
                        let _ = s.shutdown(Shutdown::Write);
                        break;
                    }
                    Ok(n) => {
                        rec.fetch_add(n as u64, Ordering::SeqCst);
                        if s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            act.fetch_sub(1, Ordering::SeqCst);
        };
        let mut b = Backend::with_handler(name, addr, handler);
        b.active = active;
        b.received = received;
        b
    }

    /// Echo backend on a fresh 127.0.0.1 port.
    pub fn echo_any(name: &str) -> Backend {
        Backend::echo(name, "127.0.0.1:0".parse().unwrap())
    }

    /// A backend running `handler` on a thread per accepted connection.
    pub fn with_handler(name: &str, addr: SocketAddr, handler: impl Fn(TcpStream) + Send + Sync + 'static) -> Backend {
        let mut b = Backend {
            name: name.to_string(),
            addr,
            accepted: Arc::new(AtomicUsize::new(0)),
            active: Arc::new(AtomicUsize::new(0)),
            received: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
            handler: Arc::new(handler),
        };
        b.listen();
        b
    }

    fn listen(&mut self) {
        let listener = bind_retry(self.addr);
        self.addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        self.stop = stop.clone();
        let accepted = self.accepted.clone();
        let handler = self.handler.clone();
        let name = self.name.clone();
        self.thread = Some(
            thread::Builder::new()
                .name(format!("backend-{name}"))
                .spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        match listener.accept() {
                            Ok((s, _)) => {
                                accepted.fetch_add(1, Ordering::SeqCst);
                                let _ = s.set_nonblocking(false);
                                let h = handler.clone();
                                let _ = thread::Builder::new().name(format!("conn-{name}")).spawn(move || h(s));
                            }
                            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(5)),
                            Err(_) => thread::sleep(Duration::from_millis(5)),
                        }
                    }
                    // The listener drops here: new connects are refused from now on.
                })
                .unwrap(),
        );
    }

    /// Close the listener (returns once it is closed).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Listen again on the same address.
    pub fn restart(&mut self) {
        assert!(self.thread.is_none(), "restart of a running backend");
        self.listen();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Read one '\n'-terminated line (without the '\n'). Ok("") means EOF before any byte.
pub fn read_line(s: &mut TcpStream) -> io::Result<String> {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(_) => {
                if b[0] == b'\n' {
                    break;
                }
                out.push(b[0]);
                if out.len() > 4096 {
                    return Err(io::Error::new(ErrorKind::InvalidData, "line too long"));
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Connect and read the backend's name line; None if the connection could not be made,
/// was closed before a name arrived, or failed.
pub fn try_which_server(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    named(read_line(&mut s))
}

fn named(r: io::Result<String>) -> Option<String> {
    match r {
        Ok(n) if !n.is_empty() => Some(n),
        _ => None,
    }
}

/// Connect and return the name of the backend the connection landed on.
pub fn which_server(addr: SocketAddr) -> String {
    try_which_server(addr).unwrap_or_else(|| panic!("connection to {addr} got no server name"))
}

/// A new connection through vipgate to an echo backend: read the backend's name, send
/// `trip {i}`, read its echo. `wait` bounds each read and write: tests measuring stalls
/// make it longer than the stall they provoke, so a stalled trip shows as a long gap, not
/// an error. Returns the backend's name.
pub fn echo_round_trip(bind: SocketAddr, i: u64, wait: Duration) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&bind, Duration::from_secs(5)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(wait)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(wait)).map_err(|e| e.to_string())?;
    let name = read_line(&mut s).map_err(|e| format!("read name: {e}"))?;
    if name.is_empty() {
        return Err("closed before the server's name".into());
    }
    let line = format!("trip {i}");
    s.write_all(format!("{line}\n").as_bytes()).map_err(|e| format!("write: {e}"))?;
    let echo = read_line(&mut s).map_err(|e| format!("read echo: {e}"))?;
    if echo != line {
        return Err(format!("echo {echo:?}, sent {line:?}"));
    }
    Ok(name)
}

/// Connect, read the name, and keep the connection open.
pub fn hold(addr: SocketAddr) -> (TcpStream, String) {
    let mut s = connect(addr);
    let name = read_line(&mut s).unwrap_or_else(|e| panic!("read name via {addr}: {e}"));
    assert!(!name.is_empty(), "connection to {addr} closed before a server name");
    (s, name)
}

/// Connect to `addr` from local address `src` (port 0), e.g. 127.0.0.7.
pub fn connect_from(src: IpAddr, addr: SocketAddr) -> io::Result<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let s = rt.block_on(async {
        let sock = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        sock.bind(SocketAddr::new(src, 0))?;
        match tokio::time::timeout(Duration::from_secs(10), sock.connect(addr)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(ErrorKind::TimedOut, "connect timed out")),
        }
    })?;
    let s = s.into_std()?;
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(s)
}

/// Which server a connection from `src` lands on.
pub fn which_server_from(src: IpAddr, addr: SocketAddr) -> Option<String> {
    let mut s = connect_from(src, addr).ok()?;
    named(read_line(&mut s))
}

/// The names of `n` successive connections to `addr` (each must get one).
pub fn server_names(addr: SocketAddr, n: usize) -> Vec<String> {
    (0..n).map(|_| which_server(addr)).collect()
}

/// What `n` successive connections to `addr` got: a server name, or None.
pub fn try_server_names(addr: SocketAddr, n: usize) -> Vec<Option<String>> {
    (0..n).map(|_| try_which_server(addr)).collect()
}

/// Wait until the connection is closed by the peer: Ok(elapsed) on EOF or reset; Err if
/// data arrived instead or nothing happened within `timeout`.
pub fn wait_closed(s: &mut TcpStream, timeout: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut b = [0u8; 256];
    match s.read(&mut b) {
        Ok(0) => Ok(start.elapsed()),
        Ok(n) => Err(format!("unexpected {n} bytes: {:?}", String::from_utf8_lossy(&b[..n]))),
        Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
            Err(format!("still open after {timeout:?}"))
        }
        Err(_) => Ok(start.elapsed()),
    }
}

/// Count names into a sorted (name, count) list.
pub fn tally<'a>(names: impl IntoIterator<Item = &'a String>) -> Vec<(String, usize)> {
    let mut m: std::collections::BTreeMap<String, usize> = Default::default();
    for n in names {
        *m.entry(n.clone()).or_default() += 1;
    }
    m.into_iter().collect()
}

/// Poll `f` until it returns Some, or give up at the deadline.
pub fn eventually<T>(timeout: Duration, f: impl FnMut() -> Option<T>) -> Option<T> {
    poll(timeout, Duration::from_millis(20), f)
}

/// Call `f` every `every` until it returns Some, or give up at the deadline.
pub fn poll<T>(timeout: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(every);
    }
}

// ---------------------------------------------------------------------------------------
// Data: deterministic byte stream and a streaming hash
// ---------------------------------------------------------------------------------------

/// Deterministic pseudo-random bytes (xorshift64*), generated 8 bytes at a time.
pub struct Pattern(u64);

impl Pattern {
    pub fn new(seed: u64) -> Self {
        Pattern(seed | 1)
    }
    /// Fill `buf` (length a multiple of 8).
    pub fn fill(&mut self, buf: &mut [u8]) {
        assert!(buf.len() % 8 == 0);
        for chunk in buf.chunks_exact_mut(8) {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            chunk.copy_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
    }
}

/// FNV-1a-style 64-bit hash over a byte stream, fed in arbitrary pieces, mixing one
/// 8-byte word at a time (fast enough in debug builds for 64 MiB).
#[derive(Clone)]
pub struct StreamHash {
    h: u64,
    pending: [u8; 8],
    npend: usize,
    pub len: u64,
}

impl Default for StreamHash {
    fn default() -> Self {
        StreamHash { h: 0xcbf2_9ce4_8422_2325, pending: [0; 8], npend: 0, len: 0 }
    }
}

impl StreamHash {
    fn mix(&mut self, w: u64) {
        self.h = (self.h ^ w).wrapping_mul(0x0000_0100_0000_01b3);
    }
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.npend > 0 {
            let take = (8 - self.npend).min(data.len());
            self.pending[self.npend..self.npend + take].copy_from_slice(&data[..take]);
            self.npend += take;
            data = &data[take..];
            if self.npend < 8 {
                return;
            }
            let w = u64::from_le_bytes(self.pending);
            self.mix(w);
            self.npend = 0;
        }
        let mut chunks = data.chunks_exact(8);
        for c in &mut chunks {
            self.mix(u64::from_le_bytes(c.try_into().unwrap()));
        }
        let rest = chunks.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.npend = rest.len();
    }
    pub fn finish(&self) -> (u64, u64) {
        let mut h = self.clone();
        for i in 0..h.npend {
            h.h = (h.h ^ u64::from(h.pending[i])).wrapping_mul(0x0000_0100_0000_01b3);
        }
        h.mix(h.len);
        (h.h, h.len)
    }
}

/// Generate `total` bytes of `Pattern::new(seed)`, `chunk` bytes at a time (`total` a
/// multiple of `chunk`, `chunk` a multiple of 8), hand each chunk to `each`, and return the
/// `StreamHash::finish` of the whole stream.
pub fn pattern_stream(seed: u64, chunk: usize, total: u64, mut each: impl FnMut(&[u8])) -> (u64, u64) {
    assert!(total % chunk as u64 == 0, "total {total} is not a multiple of chunk {chunk}");
    let mut pat = Pattern::new(seed);
    let mut h = StreamHash::default();
    let mut buf = vec![0u8; chunk];
    for _ in 0..total / chunk as u64 {
        pat.fill(&mut buf);
        each(&buf);
        h.update(&buf);
    }
    h.finish()
}

/// Write `total` bytes of `Pattern::new(seed)` to `w` in `chunk`-byte writes, then shut
/// down the write side; returns the hash of what was sent.
pub fn send_pattern(w: &mut TcpStream, seed: u64, chunk: usize, total: u64) -> (u64, u64) {
    let sent = pattern_stream(seed, chunk, total, |buf| {
        w.write_all(buf).unwrap_or_else(|e| panic!("write pattern stream: {e}"));
    });
    w.shutdown(Shutdown::Write).expect("shut down write side after the pattern stream");
    sent
}

/// Read `s` to EOF in reads of up to `buf_size` bytes, feeding `h`; panics as soon as more
/// than `limit` bytes have arrived in all. A read error is returned (`h` keeps what came
/// before it).
pub fn hash_to_eof(s: &mut TcpStream, h: &mut StreamHash, buf_size: usize, limit: u64) -> io::Result<()> {
    let mut buf = vec![0u8; buf_size];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => h.update(&buf[..n]),
            Err(e) => return Err(e),
        }
        assert!(h.len <= limit, "received more than {limit} bytes ({})", h.len);
    }
}

/// Extract `key=value` from a log line (value up to whitespace; surrounding quotes removed).
pub fn field(line: &str, key: &str) -> Option<String> {
    let pat = format!("{key}=");
    let mut from = 0;
    while let Some(i) = line[from..].find(&pat) {
        let at = from + i;
        // Must be a whole key: start of line or preceded by a space / non-identifier char.
        let ok = at == 0 || !line.as_bytes()[at - 1].is_ascii_alphanumeric() && line.as_bytes()[at - 1] != b'_';
        if ok {
            let v = &line[at + pat.len()..];
            let v = v.split_whitespace().next().unwrap_or("");
            return Some(v.trim_matches('"').to_string());
        }
        from = at + pat.len();
    }
    None
}

/// Shared slot for a value a backend thread reports to the test.
pub type Slot<T> = Arc<Mutex<Vec<T>>>;

/// A test that needs namespaces (network or mount) and cannot have them here: skip with
/// `why` printed, unless VIPGATE_REQUIRE_NETNS is set (CI), where that is a failure.
pub fn skip_unless_netns_required(test: &str, why: &str) {
    if std::env::var_os("VIPGATE_REQUIRE_NETNS").is_some() {
        panic!("{test} cannot run (VIPGATE_REQUIRE_NETNS is set): {why}");
    }
    eprintln!("SKIP {test}: {why}");
}
