//! `vipgate clustercheck` end to end: the real binary on a free 127.0.0.1 port, real HTTP
//! probes against it, and on the database side a socket this test owns — a small fake
//! MariaDB that speaks just enough of the protocol (greeting, mysql_native_password login
//! with the password checked, the two SHOW statements, COM_QUIT), or plain listeners that
//! stay silent, close at once, or close after a pause. Nothing needs a real database.
//!
//! What is checked: the script's wire format; the verdict for each Galera state and the
//! donor / read-only switches; 503 (never a hang) for a silent, a refusing, or a
//! wrong-password database; the disabled file; the verdict cache; one database check at a
//! time under a burst; credentials only from a file or the environment; clear errors for
//! bad invocations.
//!
//! Every responder is started by `Check`, which kills exactly that child (by pid) on drop.
//! Readiness is the responder's own "listening" log line, not a probe, so that the
//! database connection counts below are exact.

mod common;

use std::fs;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use sha1::{Digest, Sha1};
use tokio::time::Instant;

use common::*;

// The clustercheck script's texts (its contract with HAProxy and operators).
const SYNCED: &str = "Galera cluster node is synced.";
const NOT_SYNCED: &str = "Galera cluster node is not synced.";
const DISABLED: &str = "Galera cluster node is manually disabled.";
const READ_ONLY: &str = "Galera cluster node is read-only.";

const CHECK_USER: &str = "clustercheck";
const CHECK_PASSWORD: &str = "s3cret-pw";

/// Bound on one HTTP probe (connect + answer).
const PROBE_LIMIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// The responder under test
// ---------------------------------------------------------------------------------------

/// A running `vipgate clustercheck`; SIGKILLed (by pid) on drop, its log printed when the
/// test panics.
struct Check {
    child: Child,
    addr: SocketAddr,
    log_path: PathBuf,
    files: Vec<PathBuf>,
    exited: Option<ExitStatus>,
}

/// A temp file of the test's, removed on drop (panics included).
struct TempFile(PathBuf);

impl TempFile {
    fn arg(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// A `[client]` credentials file (mode 0600) for `user` / `password`.
fn credentials_file(user: &str, password: &str) -> PathBuf {
    let p = temp_path("clustercheck-creds", "cnf");
    fs::write(&p, format!("[client]\nuser = {user}\npassword = \"{password}\"\n")).expect("write credentials");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).expect("chmod credentials");
    p
}

/// The command with a clean environment: no MYSQL_* / AVAILABLE_* / log settings from
/// whoever runs the tests.
fn clustercheck_command() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("clustercheck");
    for var in [
        "MYSQL_HOST",
        "MYSQL_PORT",
        "MYSQL_USERNAME",
        "MYSQL_PASSWORD",
        "AVAILABLE_WHEN_DONOR",
        "AVAILABLE_WHEN_READONLY",
        "VIPGATE_LOG",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
    cmd
}

impl Check {
    /// Start the responder for the database at `db`, with the right credentials in a file
    /// and `args` (e.g. `--cache 0`), and wait until it listens.
    fn start(db: SocketAddr, args: &[&str]) -> Check {
        let creds = credentials_file(CHECK_USER, CHECK_PASSWORD);
        let mut all = vec!["--credentials-file".to_string(), creds.display().to_string()];
        all.extend(args.iter().map(|s| s.to_string()));
        let mut c = Check::spawn(db, &all, &[]);
        c.files.push(creds);
        c.wait_ready();
        c
    }

    /// Spawn `vipgate clustercheck --listen <free> --mysql-host/port <db> ARGS` with `env`
    /// added (does not wait).
    fn spawn(db: SocketAddr, args: &[String], env: &[(&str, &str)]) -> Check {
        let addr = free_addr();
        let log_path = temp_path("clustercheck", "log");
        let log = fs::File::create(&log_path).expect("create log");
        let mut cmd = clustercheck_command();
        cmd.arg("--listen")
            .arg(addr.to_string())
            .arg("--mysql-host")
            .arg(db.ip().to_string())
            .arg("--mysql-port")
            .arg(db.port().to_string())
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn vipgate clustercheck");
        Check { child, addr, log_path, files: Vec::new(), exited: None }
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.exited = Some(st);
            }
        }
        self.exited
    }

    /// Wait for the "listening" log line (the socket is bound by then).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(st) = self.try_wait() {
                panic!("vipgate clustercheck exited with {st} before listening:\n{}", self.log());
            }
            if self.log().contains("clustercheck responder listening") {
                return;
            }
            assert!(Instant::now() < deadline, "vipgate clustercheck not listening within {WAIT:?}:\n{}", self.log());
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// One probe as HAProxy's `option httpchk` sends it.
    fn get(&self) -> Answer {
        probe(self.addr, b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: clustercheck-test\r\n\r\n")
            .unwrap_or_else(|e| panic!("probe {}: {e}\n{}", self.addr, self.log()))
    }

    /// Probe until the answer satisfies `pred` (bounded by `limit`); the last answer.
    fn get_until(&self, limit: Duration, pred: impl Fn(&Answer) -> bool) -> Answer {
        let deadline = Instant::now() + limit;
        loop {
            let a = self.get();
            if pred(&a) || Instant::now() > deadline {
                return a;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Check {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            // SAFETY: kill(2) on the pid of our own child, not yet reaped.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL);
            }
            let _ = self.child.wait();
        }
        if thread::panicking() {
            eprintln!("---- vipgate clustercheck {} log ----\n{}\n---- end ----", self.addr, self.log());
        }
        let _ = fs::remove_file(&self.log_path);
        for f in &self.files {
            let _ = fs::remove_file(f);
        }
    }
}

// ---------------------------------------------------------------------------------------
// HTTP client
// ---------------------------------------------------------------------------------------

/// A parsed answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    status_line: String,
    /// Header names lower-cased, in order.
    headers: Vec<(String, String)>,
    /// Exactly Content-Length bytes.
    body: String,
    elapsed: Duration,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The body without its CRLF.
    fn text(&self) -> &str {
        self.body.strip_suffix("\r\n").unwrap_or(&self.body)
    }

    fn is(&self, status: u16, text: &str) -> bool {
        self.status == status && self.text() == text
    }
}

/// Send `request` (it may be empty: nothing sent), half-close, read to EOF and parse the
/// answer strictly: status line, headers, a Content-Length that matches the body.
fn probe(addr: SocketAddr, request: &[u8]) -> Result<Answer, String> {
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(|e| format!("connect: {e}"))?;
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    if !request.is_empty() {
        s.write_all(request).map_err(|e| format!("send: {e}"))?;
    }
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = PROBE_LIMIT.checked_sub(start.elapsed()).filter(|d| !d.is_zero());
        let Some(left) = left else { return Err(format!("no complete answer within {PROBE_LIMIT:?}")) };
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read after {} bytes: {e}", raw.len())),
        }
        if raw.len() > 64 * 1024 {
            return Err("answer larger than 64 KiB".into());
        }
    }
    let elapsed = start.elapsed();
    parse_answer(&raw, elapsed)
}

fn parse_answer(raw: &[u8], elapsed: Duration) -> Result<Answer, String> {
    let shown = String::from_utf8_lossy(raw).into_owned();
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| format!("no end of head in {shown:?}"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| format!("head is not UTF-8: {shown:?}"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("").to_string();
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if version != "HTTP/1.1" {
        return Err(format!("status line {status_line:?} is not HTTP/1.1"));
    }
    let status: u16 = code.parse().map_err(|_| format!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (n, v) = line.split_once(':').ok_or_else(|| format!("bad header line {line:?}"))?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let body = &raw[end + 4..];
    let declared: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .ok_or_else(|| format!("no Content-Length in {shown:?}"))?
        .1
        .parse()
        .map_err(|_| format!("bad Content-Length in {shown:?}"))?;
    if declared != body.len() {
        return Err(format!("Content-Length {declared} but {} body bytes in {shown:?}", body.len()));
    }
    let body = String::from_utf8(body.to_vec()).map_err(|_| format!("body is not UTF-8: {shown:?}"))?;
    Ok(Answer { status, status_line, headers, body, elapsed })
}

/// `n` probes at the same moment (threads released together); all answers.
fn burst(addr: SocketAddr, n: usize) -> Vec<Answer> {
    let gate = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let gate = gate.clone();
            thread::spawn(move || {
                gate.wait();
                probe(addr, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            })
        })
        .collect();
    threads
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.join().expect("probe thread").unwrap_or_else(|e| panic!("probe {i} of the burst: {e}")))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Database stand-ins
// ---------------------------------------------------------------------------------------

/// A database port that accepts and then: says nothing until the peer goes (bounded),
/// closes at once, or closes after `pause`. Tracks how many connections are open at once.
struct PlainDb {
    backend: Backend,
    max_open: Arc<AtomicUsize>,
}

impl PlainDb {
    fn start(pause: Option<Duration>, silent: bool) -> PlainDb {
        let open = Arc::new(AtomicUsize::new(0));
        let max_open = Arc::new(AtomicUsize::new(0));
        let (o, m) = (open.clone(), max_open.clone());
        let backend = Backend::with_handler("db", "127.0.0.1:0".parse().unwrap(), move |mut s: TcpStream| {
            let now = o.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            if silent {
                let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
                let mut b = [0u8; 256];
                while matches!(s.read(&mut b), Ok(n) if n > 0) {}
            } else if let Some(p) = pause {
                thread::sleep(p);
            }
            // Count down before the close the responder waits for.
            o.fetch_sub(1, Ordering::SeqCst);
            drop(s);
        });
        PlainDb { backend, max_open }
    }

    /// Accepts, never writes.
    fn silent() -> PlainDb {
        PlainDb::start(None, true)
    }

    /// Accepts and closes at once.
    fn closing() -> PlainDb {
        PlainDb::start(None, false)
    }

    /// Accepts, waits `pause`, closes.
    fn slow(pause: Duration) -> PlainDb {
        PlainDb::start(Some(pause), false)
    }

    fn addr(&self) -> SocketAddr {
        self.backend.addr
    }

    fn connections(&self) -> usize {
        self.backend.accepted.load(Ordering::SeqCst)
    }
}

/// What the fake MariaDB reports, changeable while it runs.
struct GaleraState {
    /// `wsrep_local_state`; 0 = no such status row (not a Galera node).
    wsrep: AtomicU32,
    read_only: AtomicBool,
    /// User names of every login attempt, in order.
    users: Mutex<Vec<String>>,
    logins_ok: AtomicUsize,
    logins_refused: AtomicUsize,
    quits: AtomicUsize,
}

/// A fake MariaDB 10.11 Galera node: greeting with a fresh scramble, mysql_native_password
/// login checked against `CHECK_PASSWORD` (ERR 1045 otherwise), text result sets for the
/// two SHOW statements, and a close on COM_QUIT.
struct GaleraDb {
    backend: Backend,
    state: Arc<GaleraState>,
}

impl GaleraDb {
    fn start(wsrep: u32, read_only: bool) -> GaleraDb {
        let state = Arc::new(GaleraState {
            wsrep: AtomicU32::new(wsrep),
            read_only: AtomicBool::new(read_only),
            users: Mutex::new(Vec::new()),
            logins_ok: AtomicUsize::new(0),
            logins_refused: AtomicUsize::new(0),
            quits: AtomicUsize::new(0),
        });
        let st = state.clone();
        let conn_id = Arc::new(AtomicU32::new(100));
        let backend = Backend::with_handler("galera", "127.0.0.1:0".parse().unwrap(), move |s: TcpStream| {
            let id = conn_id.fetch_add(1, Ordering::SeqCst);
            let _ = serve_mysql(s, &st, id);
        });
        GaleraDb { backend, state }
    }

    fn addr(&self) -> SocketAddr {
        self.backend.addr
    }

    fn connections(&self) -> usize {
        self.backend.accepted.load(Ordering::SeqCst)
    }

    fn set_wsrep(&self, v: u32) {
        self.state.wsrep.store(v, Ordering::SeqCst);
    }
}

fn write_packet(s: &mut TcpStream, seq: u8, payload: &[u8]) -> io::Result<()> {
    let len = payload.len() as u32;
    let mut frame = len.to_le_bytes()[..3].to_vec();
    frame.push(seq);
    frame.extend_from_slice(payload);
    s.write_all(&frame)
}

fn read_packet(s: &mut TcpStream) -> io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h)?;
    let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
    let mut p = vec![0u8; len];
    s.read_exact(&mut p)?;
    Ok((h[3], p))
}

fn lenenc_str(out: &mut Vec<u8>, v: &str) {
    assert!(v.len() < 251);
    out.push(v.len() as u8);
    out.extend_from_slice(v.as_bytes());
}

fn column_definition(name: &str) -> Vec<u8> {
    let mut p = Vec::new();
    for part in ["def", "", "", "", name, name] {
        lenenc_str(&mut p, part);
    }
    p.push(0x0c);
    p.extend_from_slice(&33u16.to_le_bytes()); // utf8
    p.extend_from_slice(&1024u32.to_le_bytes());
    p.push(0xfd); // VAR_STRING
    p.extend_from_slice(&0u16.to_le_bytes());
    p.push(0);
    p.extend_from_slice(&[0, 0]);
    p
}

const EOF_PACKET: [u8; 5] = [0xfe, 0, 0, 0x02, 0];

/// The answer to `SHOW ... LIKE 'name'`: two columns, and one row when `value` is Some.
fn show_result(s: &mut TcpStream, name: &str, value: Option<&str>) -> io::Result<()> {
    write_packet(s, 1, &[2])?;
    write_packet(s, 2, &column_definition("Variable_name"))?;
    write_packet(s, 3, &column_definition("Value"))?;
    write_packet(s, 4, &EOF_PACKET)?;
    let mut seq = 5;
    if let Some(v) = value {
        let mut row = Vec::new();
        lenenc_str(&mut row, name);
        lenenc_str(&mut row, v);
        write_packet(s, seq, &row)?;
        seq += 1;
    }
    write_packet(s, seq, &EOF_PACKET)
}

fn native_token(password: &[u8], scramble: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let stage1 = Sha1::digest(password);
    let stage2 = Sha1::digest(stage1);
    let mut h = Sha1::new();
    h.update(scramble);
    h.update(stage2);
    let mix = h.finalize();
    stage1.iter().zip(mix.iter()).map(|(a, b)| a ^ b).collect()
}

fn serve_mysql(mut s: TcpStream, st: &GaleraState, id: u32) -> io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    // A 20-byte scramble without NULs, different per connection.
    let scramble: Vec<u8> = (0..20u32).map(|i| b'A' + ((id.wrapping_mul(7) + i * 3) % 26) as u8).collect();
    let caps: u32 = (1 << 9) | (1 << 13) | (1 << 15) | (1 << 19); // 4.1, transactions, secure conn, plugin auth
    let mut g = vec![10];
    g.extend_from_slice(b"5.5.5-10.11.99-MariaDB-fake\0");
    g.extend_from_slice(&id.to_le_bytes());
    g.extend_from_slice(&scramble[..8]);
    g.push(0);
    g.extend_from_slice(&(caps as u16).to_le_bytes());
    g.push(33);
    g.extend_from_slice(&2u16.to_le_bytes());
    g.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    g.push(21);
    g.extend_from_slice(&[0; 10]);
    g.extend_from_slice(&scramble[8..]);
    g.push(0);
    g.extend_from_slice(b"mysql_native_password\0");
    write_packet(&mut s, 0, &g)?;

    // HandshakeResponse41: caps 4, max packet 4, charset 1, 23 reserved, user NUL, token.
    let (seq, resp) = read_packet(&mut s)?;
    let bad = || io::Error::new(ErrorKind::InvalidData, "bad handshake response");
    if seq != 1 || resp.len() < 33 {
        return Err(bad());
    }
    let rest = &resp[32..];
    let nul = rest.iter().position(|&b| b == 0).ok_or_else(bad)?;
    let user = String::from_utf8_lossy(&rest[..nul]).into_owned();
    let rest = &rest[nul + 1..];
    let tlen = usize::from(*rest.first().ok_or_else(bad)?);
    let token = rest.get(1..1 + tlen).ok_or_else(bad)?;
    st.users.lock().unwrap().push(user.clone());
    if user != CHECK_USER || token != native_token(CHECK_PASSWORD.as_bytes(), &scramble).as_slice() {
        st.logins_refused.fetch_add(1, Ordering::SeqCst);
        let mut e = vec![0xff];
        e.extend_from_slice(&1045u16.to_le_bytes());
        e.extend_from_slice(b"#28000");
        e.extend_from_slice(format!("Access denied for user '{user}'@'localhost' (using password: YES)").as_bytes());
        write_packet(&mut s, 2, &e)?;
        return Ok(());
    }
    st.logins_ok.fetch_add(1, Ordering::SeqCst);
    write_packet(&mut s, 2, &[0, 0, 0, 0x02, 0, 0, 0])?;

    loop {
        let (seq, cmd) = read_packet(&mut s)?;
        if seq != 0 {
            return Err(io::Error::new(ErrorKind::InvalidData, "command with a non-zero sequence id"));
        }
        match cmd.first() {
            Some(0x01) => {
                st.quits.fetch_add(1, Ordering::SeqCst);
                let _ = s.shutdown(Shutdown::Both);
                return Ok(());
            }
            Some(0x03) => {
                let sql = String::from_utf8_lossy(&cmd[1..]).to_ascii_lowercase();
                if sql.contains("wsrep_local_state") {
                    let v = st.wsrep.load(Ordering::SeqCst);
                    show_result(&mut s, "wsrep_local_state", (v != 0).then(|| v.to_string()).as_deref())?;
                } else if sql.contains("read_only") {
                    let v = if st.read_only.load(Ordering::SeqCst) { "ON" } else { "OFF" };
                    show_result(&mut s, "read_only", Some(v))?;
                } else {
                    let mut e = vec![0xff];
                    e.extend_from_slice(&1064u16.to_le_bytes());
                    e.extend_from_slice(b"#42000unexpected query");
                    write_packet(&mut s, 1, &e)?;
                }
            }
            _ => return Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn synced_node_answers_200_in_the_scripts_wire_format() {
    let db = GaleraDb::start(4, false);
    let check = Check::start(db.addr(), &["--cache", "0"]);

    let a = check.get();
    assert_eq!(a.status_line, "HTTP/1.1 200 OK");
    assert_eq!(a.body, format!("{SYNCED}\r\n"));
    assert_eq!(a.header("content-type"), Some("text/plain"));
    assert_eq!(a.header("connection"), Some("close"));
    assert_eq!(a.header("content-length"), Some("32"));

    // The login used the file's credentials (password verified by the fake server) and
    // ended politely with COM_QUIT.
    assert_eq!(db.state.users.lock().unwrap().as_slice(), [CHECK_USER]);
    assert_eq!(db.state.logins_ok.load(Ordering::SeqCst), 1);
    assert_eq!(db.state.quits.load(Ordering::SeqCst), 1);

    // HAProxy's default check request (HTTP/1.0 OPTIONS) gets the same answer.
    let a = probe(check.addr, b"OPTIONS / HTTP/1.0\r\n\r\n").unwrap();
    assert!(a.is(200, SYNCED), "{a:?}");
    // Like the script, it answers even a client that sends nothing at all (after its
    // 2 s wait for a request head).
    let a = probe(check.addr, b"").unwrap();
    assert!(a.is(200, SYNCED), "{a:?}");
    assert!(a.elapsed < Duration::from_secs(10), "silent client answered after {:?}", a.elapsed);
}

#[test]
fn galera_states_and_the_donor_and_read_only_switches() {
    let db = GaleraDb::start(4, true);
    // Defaults: donors do not count, read-only nodes do (AVAILABLE_WHEN_READONLY=1).
    let default = Check::start(db.addr(), &["--cache", "0"]);
    // The other way round, by the environment (as the script's variables).
    let creds = credentials_file(CHECK_USER, CHECK_PASSWORD);
    let creds_arg = creds.display().to_string();
    let args: Vec<String> = ["--credentials-file", &creds_arg, "--cache", "0"].iter().map(|s| s.to_string()).collect();
    let mut strict = Check::spawn(db.addr(), &args, &[("AVAILABLE_WHEN_DONOR", "1"), ("AVAILABLE_WHEN_READONLY", "0")]);
    strict.files.push(creds);
    strict.wait_ready();

    // Synced and read-only.
    assert!(default.get().is(200, SYNCED));
    let a = strict.get();
    assert!(a.is(503, READ_ONLY), "{a:?}");
    assert_eq!(a.status_line, "HTTP/1.1 503 Service Unavailable");

    db.state.read_only.store(false, Ordering::SeqCst);
    assert!(strict.get().is(200, SYNCED));

    // Donor/desynced (2).
    db.set_wsrep(2);
    let a = default.get();
    assert!(a.is(503, NOT_SYNCED), "{a:?}");
    assert!(strict.get().is(200, SYNCED));

    // Joining (1), joined (3), and a server without Galera status at all.
    for state in [1, 3, 0] {
        db.set_wsrep(state);
        for c in [&default, &strict] {
            let a = c.get();
            assert!(a.is(503, NOT_SYNCED), "wsrep_local_state {state}: {a:?}");
        }
    }
    assert_eq!(db.state.logins_refused.load(Ordering::SeqCst), 0);
}

#[test]
fn silent_database_gives_503_within_the_timeout() {
    let db = PlainDb::silent();
    let check = Check::start(db.addr(), &["--timeout", "1s", "--cache", "0"]);
    let a = check.get();
    assert!(a.is(503, NOT_SYNCED), "{a:?}");
    assert!(!a.text().is_empty());
    assert!(a.elapsed >= Duration::from_millis(800), "answered after {:?}, before the 1 s timeout", a.elapsed);
    assert!(a.elapsed < Duration::from_secs(8), "answered only after {:?}", a.elapsed);
    assert_eq!(db.connections(), 1);
    assert!(check.log().contains("timed out"), "{}", check.log());
}

#[test]
fn refusing_database_gives_503_promptly() {
    // Nothing listens there (the port was free a moment ago).
    let nowhere = free_addr();
    let check = Check::start(nowhere, &["--timeout", "10s", "--cache", "0"]);
    let a = check.get();
    assert!(a.is(503, NOT_SYNCED), "{a:?}");
    assert!(a.elapsed < Duration::from_secs(5), "a refused connect took {:?} (timeout is 10 s)", a.elapsed);
    assert!(check.log().contains("database check failed"), "{}", check.log());
}

#[test]
fn wrong_password_gives_503() {
    let db = GaleraDb::start(4, false);
    let creds = credentials_file(CHECK_USER, "not-the-password");
    let args = vec!["--credentials-file".to_string(), creds.display().to_string(), "--cache".into(), "0".into()];
    let mut check = Check::spawn(db.addr(), &args, &[]);
    check.files.push(creds);
    check.wait_ready();
    let a = check.get();
    assert!(a.is(503, NOT_SYNCED), "{a:?}");
    assert_eq!(db.state.logins_refused.load(Ordering::SeqCst), 1);
    assert_eq!(db.state.logins_ok.load(Ordering::SeqCst), 0);
}

#[test]
fn disabled_file_forces_503_while_it_exists() {
    let db = GaleraDb::start(4, false);
    let flag = TempFile(temp_path("clustercheck-disabled", "flag"));
    fs::write(&flag.0, "maintenance\n").unwrap();
    let flag_arg = flag.arg();
    let check = Check::start(db.addr(), &["--cache", "0", "--disabled-file", &flag_arg]);

    let a = check.get();
    assert!(a.is(503, DISABLED), "{a:?}");
    assert_eq!(a.header("content-length"), Some((DISABLED.len() + 2).to_string().as_str()));
    // Disabled means the database is not even asked.
    assert_eq!(db.connections(), 0);

    fs::remove_file(&flag.0).unwrap();
    let a = check.get();
    assert!(a.is(200, SYNCED), "{a:?}");

    // Back again: immediately disabled, whatever the database says...
    fs::write(&flag.0, "").unwrap();
    assert!(check.get().is(503, DISABLED));
    // ...and once removed, what the database says, unsynced included.
    db.set_wsrep(1);
    fs::remove_file(&flag.0).unwrap();
    let a = check.get();
    assert!(a.is(503, NOT_SYNCED), "{a:?}");
}

#[test]
fn disabled_file_overrides_a_cached_verdict() {
    let db = GaleraDb::start(4, false);
    let flag = TempFile(temp_path("clustercheck-disabled", "flag"));
    let flag_arg = flag.arg();
    let check = Check::start(db.addr(), &["--cache", "60s", "--disabled-file", &flag_arg]);
    assert!(check.get().is(200, SYNCED));
    fs::write(&flag.0, "").unwrap();
    let a = check.get();
    fs::remove_file(&flag.0).unwrap();
    assert!(a.is(503, DISABLED), "a cached 200 outlived the disabled file: {a:?}");
    assert!(check.get().is(200, SYNCED));
    assert_eq!(db.connections(), 1);
}

#[test]
fn cache_answers_a_run_of_probes_with_one_database_connection() {
    let db = PlainDb::closing();
    let check = Check::start(db.addr(), &["--cache", "3s", "--timeout", "5s"]);
    let start = Instant::now();
    for i in 0..10 {
        let a = check.get();
        assert!(a.is(503, NOT_SYNCED), "probe {i}: {a:?}");
    }
    let run = start.elapsed();
    assert!(run < Duration::from_secs(3), "10 probes took {run:?}, longer than the cache; cannot judge it");
    assert_eq!(db.connections(), 1, "10 probes within the 3 s cache");

    // Past the cache time, the next probe asks again.
    thread::sleep(Duration::from_millis(3500));
    assert!(check.get().is(503, NOT_SYNCED));
    assert_eq!(db.connections(), 2, "a probe after the cache expired");
}

#[test]
fn without_cache_every_probe_asks_the_database() {
    let db = PlainDb::closing();
    let check = Check::start(db.addr(), &["--cache", "0", "--timeout", "5s"]);
    for i in 0..10 {
        let a = check.get();
        assert!(a.is(503, NOT_SYNCED), "probe {i}: {a:?}");
        assert_eq!(db.connections(), i + 1, "after probe {i}");
    }
}

#[test]
fn cached_verdict_holds_until_it_expires_then_follows_the_database() {
    let db = GaleraDb::start(4, false);
    let check = Check::start(db.addr(), &["--cache", "2s"]);
    let start = Instant::now();
    assert!(check.get().is(200, SYNCED));
    db.set_wsrep(1);
    let a = check.get();
    assert!(a.is(200, SYNCED), "the cached verdict: {a:?}");
    assert_eq!(db.connections(), 1);
    let a = check.get_until(Duration::from_secs(20), |a| a.status == 503);
    assert!(a.is(503, NOT_SYNCED), "never followed the database: {a:?}");
    let after = start.elapsed();
    assert!(after >= Duration::from_millis(1900), "the 2 s cache ended after {after:?}");
    assert_eq!(db.connections(), 2);
}

#[test]
fn burst_of_probes_makes_one_database_connection() {
    // Each check takes 1 s; the 20 probes all wait for the first one and share it.
    let db = PlainDb::slow(Duration::from_secs(1));
    let check = Check::start(db.addr(), &["--cache", "3s", "--timeout", "5s"]);
    let start = Instant::now();
    let answers = burst(check.addr, 20);
    let took = start.elapsed();
    for (i, a) in answers.iter().enumerate() {
        assert!(a.is(503, NOT_SYNCED), "probe {i}: {a:?}");
    }
    assert_eq!(db.connections(), 1, "20 simultaneous probes (all answered within {took:?})");
    assert!(took < Duration::from_secs(10), "the burst took {took:?}");
}

#[test]
fn without_cache_checks_still_run_one_at_a_time() {
    let pause = Duration::from_millis(300);
    let db = PlainDb::slow(pause);
    let check = Check::start(db.addr(), &["--cache", "0", "--timeout", "5s"]);
    let start = Instant::now();
    let answers = burst(check.addr, 5);
    let took = start.elapsed();
    for (i, a) in answers.iter().enumerate() {
        assert!(a.is(503, NOT_SYNCED), "probe {i}: {a:?}");
    }
    assert_eq!(db.connections(), 5, "no cache: one check per probe");
    assert_eq!(db.max_open.load(Ordering::SeqCst), 1, "database checks overlapped");
    assert!(took >= pause * 4, "5 serial checks of {pause:?} finished in {took:?}");
}

#[test]
fn credentials_from_the_environment() {
    let db = GaleraDb::start(4, false);
    let mut check = Check::spawn(
        db.addr(),
        &["--cache".into(), "0".into()],
        &[("MYSQL_USERNAME", CHECK_USER), ("MYSQL_PASSWORD", CHECK_PASSWORD)],
    );
    check.wait_ready();
    assert!(check.get().is(200, SYNCED));
    assert_eq!(db.state.users.lock().unwrap().as_slice(), [CHECK_USER]);
    assert_eq!(db.state.logins_ok.load(Ordering::SeqCst), 1);
}

#[test]
fn password_is_never_a_command_line_option() {
    let out = run_cli(&["clustercheck", "--help"]);
    assert!(out.status.success(), "clustercheck --help: {}", out.status);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--credentials-file"), "{help}");
    assert!(help.contains("MYSQL_PASSWORD"), "{help}");
    for line in help.lines().map(str::trim_start).filter(|l| l.starts_with('-')) {
        let flag = line.split([' ', ',', '=', '<']).next().unwrap_or("");
        assert!(!flag.to_ascii_lowercase().contains("pass"), "a password flag is offered: {line:?}\n{help}");
        assert!(!flag.to_ascii_lowercase().contains("user"), "a user flag is offered: {line:?}\n{help}");
    }
    // And it is refused if tried.
    let out = run_cli(&["clustercheck", "--password", "x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--password"));
}

/// Run `vipgate clustercheck ARGS` with a clean environment and `env`, bounded; it must
/// exit by itself. Returns (status, stderr + stdout).
fn run_clustercheck(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String) {
    let log_path = temp_path("clustercheck-cli", "log");
    let log = fs::File::create(&log_path).unwrap();
    let mut cmd = clustercheck_command();
    cmd.args(args).stdout(log.try_clone().unwrap()).stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn vipgate clustercheck");
    let status = eventually(Duration::from_secs(30), || child.try_wait().ok().flatten());
    let Some(status) = status else {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGKILL);
        }
        let _ = child.wait();
        let _ = fs::remove_file(&log_path);
        panic!("`vipgate clustercheck {}` still running after 30 s", args.join(" "));
    };
    let text = String::from_utf8_lossy(&fs::read(&log_path).unwrap_or_default()).into_owned();
    let _ = fs::remove_file(&log_path);
    (status, text)
}

#[test]
fn bad_invocations_exit_nonzero_naming_the_problem() {
    let creds = TempFile(credentials_file(CHECK_USER, CHECK_PASSWORD));
    let creds_arg = creds.arg();
    let listen = free_addr().to_string();
    let ok = ["--credentials-file", creds_arg.as_str()];

    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["--listen", "not-an-address"], vec!["--listen", "not-an-address"]),
        (vec!["--listen", &listen, "--mysql-port", "99999"], vec!["--mysql-port", "99999"]),
        (vec!["--listen", &listen, "--cache", "5x"], vec!["--cache", "5x"]),
        (vec!["--listen", &listen, "--timeout", "soon"], vec!["--timeout", "soon"]),
    ];
    for (args, wants) in cases {
        let mut all: Vec<&str> = ok.to_vec();
        all.extend(&args);
        let (st, text) = run_clustercheck(&all, &[]);
        assert!(!st.success(), "{all:?} exited with {st}");
        for w in wants {
            assert!(text.contains(w), "{all:?}: error does not name {w:?}:\n{text}");
        }
    }
    let mut all: Vec<&str> = ok.to_vec();
    all.extend(["--listen", listen.as_str()]);
    let (st, text) = run_clustercheck(&all, &[("AVAILABLE_WHEN_DONOR", "maybe")]);
    assert!(!st.success(), "AVAILABLE_WHEN_DONOR=maybe exited with {st}");
    assert!(text.contains("--available-when-donor") && text.contains("maybe"), "{text}");

    // No credentials anywhere.
    let (st, text) = run_clustercheck(&["--listen", &listen], &[]);
    assert!(!st.success(), "no credentials: {st}");
    assert!(text.contains("no credentials"), "{text}");
    assert!(text.contains("--credentials-file") && text.contains("MYSQL_USERNAME"), "{text}");

    // A credentials file that is not there, or has no user.
    let missing = temp_path("clustercheck-missing", "cnf");
    let missing_arg = missing.display().to_string();
    let (st, text) = run_clustercheck(&["--listen", &listen, "--credentials-file", &missing_arg], &[]);
    assert!(!st.success());
    assert!(text.contains(&missing_arg), "{text}");
    let nouser = TempFile(temp_path("clustercheck-nouser", "cnf"));
    fs::write(&nouser.0, "[client]\npassword=x\n").unwrap();
    let nouser_arg = nouser.arg();
    let (st, text) = run_clustercheck(&["--listen", &listen, "--credentials-file", &nouser_arg], &[]);
    assert!(!st.success());
    assert!(text.contains("no user"), "{text}");

    // The listen port is taken: it exits (not hangs) and says why.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_arg = taken.local_addr().unwrap().to_string();
    let mut all: Vec<&str> = ok.to_vec();
    all.extend(["--listen", taken_arg.as_str()]);
    let (st, text) = run_clustercheck(&all, &[]);
    assert!(!st.success(), "listen on a taken port: {st}");
    assert!(text.to_ascii_lowercase().contains("address already in use"), "{text}");
    drop(taken);
}

/// `--available-when-donor 1` / `--available-when-readonly 0`, the value forms the help
/// and the 0/1 value parser promise. Today both flags are plain switches (clap's default
/// for a `bool` field), so the value is refused and read-only nodes cannot be excluded
/// from the command line at all.
#[test]
fn donor_and_read_only_switches_take_values_on_the_command_line() {
    let db = GaleraDb::start(2, true);
    let check =
        Check::start(db.addr(), &["--cache", "0", "--available-when-donor", "1", "--available-when-readonly", "0"]);
    let a = check.get();
    assert!(a.is(503, READ_ONLY), "{a:?}");
    db.state.read_only.store(false, Ordering::SeqCst);
    let a = check.get();
    assert!(a.is(200, SYNCED), "{a:?}");
}

/// The responder's default cap on connections served at once.
const DEFAULT_CAP: usize = 64;

#[test]
fn connections_over_the_cap_are_closed_at_accept_and_the_responder_recovers() {
    let db = GaleraDb::start(4, false);
    let check = Check::start(db.addr(), &["--cache", "0"]);
    // Clients that connect and send nothing hold a slot each for the 2 s the responder
    // waits for a request head.
    let mut idle: Vec<TcpStream> =
        (0..DEFAULT_CAP).map(|i| TcpStream::connect(check.addr).unwrap_or_else(|e| panic!("idle {i}: {e}"))).collect();
    // One more, behind them in the accept queue: closed at once, without an answer.
    let start = Instant::now();
    let mut over = TcpStream::connect(check.addr).unwrap();
    over.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = over.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let mut got = Vec::new();
    let _ = over.read_to_end(&mut got);
    let refused_after = start.elapsed();
    assert!(got.is_empty(), "connection {} was answered: {:?}", DEFAULT_CAP + 1, String::from_utf8_lossy(&got));
    assert!(refused_after < Duration::from_millis(1500), "closed only after {refused_after:?}: it was queued");
    // The idle ones are answered in turn (the script answers even a silent client)...
    for (i, s) in idle.iter_mut().enumerate() {
        s.set_read_timeout(Some(PROBE_LIMIT)).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap_or_else(|e| panic!("idle client {i}: {e}"));
        let a = parse_answer(&raw, Duration::ZERO).unwrap_or_else(|e| panic!("idle client {i}: {e}"));
        assert!(a.is(200, SYNCED), "idle client {i}: {a:?}");
    }
    // ...and once they are, probes get in again.
    let a = check.get_until(Duration::from_secs(10), |a| a.is(200, SYNCED));
    assert!(a.is(200, SYNCED), "the responder did not recover: {a:?}");
    assert!(check.log().contains("max-connections"), "the refusal is logged:\n{}", check.log());
    println!("{DEFAULT_CAP} idle clients held; client {} closed after {refused_after:?}; then 200", DEFAULT_CAP + 1);
}

#[test]
fn credentials_come_from_the_client_section_only() {
    let db = GaleraDb::start(4, false);
    let creds = TempFile(temp_path("clustercheck-sections", "cnf"));
    fs::write(
        &creds.0,
        format!(
            "# my.cnf style, as DEFAULTS_EXTRA_FILE\n[mysqld]\nuser = mysql\npassword = \"server-side\"\n\n\
             [client]\nuser = {CHECK_USER}\npassword = \"{CHECK_PASSWORD}\"\n\n\
             [client_server]\nuser = root\npassword = \"not-this\"\n[mysql]\npassword = \"nor-this\"\n"
        ),
    )
    .unwrap();
    fs::set_permissions(&creds.0, fs::Permissions::from_mode(0o600)).unwrap();
    let mut check =
        Check::spawn(db.addr(), &["--credentials-file".into(), creds.arg(), "--cache".into(), "0".into()], &[]);
    check.wait_ready();
    let a = check.get();
    assert!(a.is(200, SYNCED), "{a:?}");
    assert_eq!(db.state.users.lock().unwrap().as_slice(), [CHECK_USER], "logged in as the [client] user");
    assert_eq!(db.state.logins_refused.load(Ordering::SeqCst), 0, "the [client] password was used");

    // A user only in another section is no user at all.
    let other = TempFile(temp_path("clustercheck-mysqld-only", "cnf"));
    fs::write(&other.0, "[mysqld]\nuser = mysql\npassword = x\n[client_server]\nuser = root\n").unwrap();
    fs::set_permissions(&other.0, fs::Permissions::from_mode(0o600)).unwrap();
    let (st, text) = run_clustercheck(&["--listen", &free_addr().to_string(), "--credentials-file", &other.arg()], &[]);
    assert!(!st.success(), "credentials outside [client] were taken: {text}");
    assert!(text.contains("[client]") && text.contains("no user"), "{text}");
}

#[test]
fn a_credentials_file_others_can_read_is_warned_about() {
    let db = GaleraDb::start(4, false);
    for (mode, warned) in [(0o640, true), (0o604, true), (0o600, false), (0o400, false)] {
        let creds = credentials_file(CHECK_USER, CHECK_PASSWORD);
        fs::set_permissions(&creds, fs::Permissions::from_mode(mode)).unwrap();
        let mut check = Check::spawn(db.addr(), &["--credentials-file".into(), creds.display().to_string()], &[]);
        check.files.push(creds.clone());
        check.wait_ready();
        let log = check.log();
        let line = log.lines().find(|l| l.contains("readable by group or others"));
        if warned {
            let line = line.unwrap_or_else(|| panic!("mode {mode:04o}: no warning:\n{log}"));
            assert!(line.contains("WARN") && line.contains(&creds.display().to_string()), "{line}");
            assert!(line.contains(&format!("{mode:04o}")), "names the mode: {line}");
        } else {
            assert!(line.is_none(), "mode {mode:04o} warned:\n{log}");
        }
    }
}
