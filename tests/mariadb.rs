//! `vipgate::mysql` against a real MariaDB (its own temp server per test, see
//! tests/support/mariadb.rs), and which ways of ending a probe MariaDB counts against the
//! prober's address.
//!
//! MariaDB blocks a client host ("Host '...' is blocked because of many connection
//! errors", ERR 1129) once `max_connect_errors` connections from it ended in the middle
//! of the handshake; a successful login from the host resets its count. Loopback
//! (127.0.0.1, ::1) is exempt and so is every host under `--skip-name-resolve`, so these
//! servers run with name resolution on and probes come from 127.0.0.2 / 127.0.0.3.
//! `performance_schema.host_cache` shows the count (SUM_CONNECT_ERRORS).
//!
//! Without mariadbd installed every test prints a skip line and passes, unless
//! VIPGATE_REQUIRE_MARIADB=1.

#[path = "support/mariadb.rs"]
mod mariadb_support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use mariadb_support::MariaDb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use vipgate::mysql::{self, Credentials, GaleraStatus, MysqlError};

const USER: &str = "vgprobe";
const PASSWORD: &str = "pr0be-s3cret";
/// Small, so that a handful of counted errors shows.
const MAX_CONNECT_ERRORS: u64 = 5;
/// Probes per closing method.
const PROBES: usize = 300;
const PROBE_GAP: Duration = Duration::from_millis(10);
const T: Duration = Duration::from_secs(10);

const PROBER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const CONTROL: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

fn creds() -> Credentials {
    Credentials { user: USER.into(), password: PASSWORD.into() }
}

/// A server for host-blocking tests, with the probe user (allowed from 127.0.0.%; the
/// anonymous user does not exist).
fn start_server() -> Option<MariaDb> {
    let db = MariaDb::start(&[
        &format!("--max-connect-errors={MAX_CONNECT_ERRORS}"),
        "--performance-schema=ON",
        "--log-warnings=2",
    ])?;
    db.sql(&format!(
        "CREATE USER '{USER}'@'127.0.0.%' IDENTIFIED BY '{PASSWORD}'; GRANT PROCESS ON *.* TO '{USER}'@'127.0.0.%';"
    ))
    .expect("create probe user");
    Some(db)
}

async fn connect_from(src: Ipv4Addr, addr: SocketAddr) -> TcpStream {
    vipgate::net::connect(addr, Some(IpAddr::V4(src)), Some(T)).await.expect("connect")
}

/// A full login from `src` (the thing a blocked host can no longer do).
async fn login_from(src: Ipv4Addr, db: &MariaDb) -> Result<GaleraStatus, MysqlError> {
    let s = connect_from(src, db.addr()).await;
    mysql::check(s, Some(&creds()), T).await.map(|(_, status)| status.unwrap_or_default())
}

/// (SUM_CONNECT_ERRORS, COUNT_HANDSHAKE_ERRORS) of `ip` in the host cache; (0, 0) when
/// it has no entry.
fn host_errors(db: &MariaDb, ip: Ipv4Addr) -> (u64, u64) {
    let out = db
        .sql(&format!(
            "SELECT SUM_CONNECT_ERRORS, COUNT_HANDSHAKE_ERRORS FROM performance_schema.host_cache WHERE IP = '{ip}'"
        ))
        .expect("host_cache");
    let mut it = out.split_whitespace().map(|v| v.parse::<u64>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

fn global_status(db: &MariaDb, name: &str) -> u64 {
    let out = db.sql(&format!("SHOW GLOBAL STATUS LIKE '{name}'")).expect("status");
    out.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn error_log_lines(db: &MariaDb) -> usize {
    std::fs::read_to_string(db.error_log()).map(|t| t.lines().count()).unwrap_or(0)
}

/// What every probe method reports.
struct Tally {
    method: &'static str,
    probes: usize,
    counted: u64,
    peer_address_errors: u64,
    aborted_connects: u64,
    access_denied: u64,
    error_log_lines: usize,
    elapsed: Duration,
}

impl Tally {
    fn key(&self) -> (u64, u64, u64, u64) {
        (self.counted, self.peer_address_errors, self.aborted_connects, self.access_denied)
    }

    fn print(&self) {
        println!(
            "{}: {} probes in {:.1}s from {PROBER}: host errors counted {} (max_connect_errors {MAX_CONNECT_ERRORS}); \
             Connection_errors_peer_address +{}, Aborted_connects +{}, Access_denied_errors +{}; error log +{} lines",
            self.method,
            self.probes,
            self.elapsed.as_secs_f64(),
            self.counted,
            self.peer_address_errors,
            self.aborted_connects,
            self.access_denied,
            self.error_log_lines
        );
    }
}

/// Run `PROBES` probes from 127.0.0.2 with `probe`, then read what the server counted.
async fn run_probes<F, Fut>(db: &MariaDb, method: &'static str, mut probe: F) -> Tally
where
    F: FnMut(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    db.sql("FLUSH HOSTS").expect("flush hosts");
    let peer0 = global_status(db, "Connection_errors_peer_address");
    let aborted0 = global_status(db, "Aborted_connects");
    let denied0 = global_status(db, "Access_denied_errors");
    let log0 = error_log_lines(db);
    let started = tokio::time::Instant::now();
    for _ in 0..PROBES {
        probe(db.addr()).await;
        tokio::time::sleep(PROBE_GAP).await;
    }
    let elapsed = started.elapsed();
    let read = || Tally {
        method,
        probes: PROBES,
        counted: host_errors(db, PROBER).0,
        peer_address_errors: global_status(db, "Connection_errors_peer_address") - peer0,
        aborted_connects: global_status(db, "Aborted_connects") - aborted0,
        access_denied: global_status(db, "Access_denied_errors") - denied0,
        error_log_lines: error_log_lines(db).saturating_sub(log0),
        elapsed,
    };
    // The server may still be finishing the last connections: read until two reads
    // 300 ms apart agree (bounded).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut tally = read();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let again = read();
        let same = again.key() == tally.key();
        tally = again;
        if same || tokio::time::Instant::now() >= deadline {
            break;
        }
    }
    tally.print();
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_against_real_mariadb() {
    let Some(db) = start_server() else { return };
    // Unix-socket clients are 'localhost', which '127.0.0.%' does not cover.
    db.sql(&format!(
        "CREATE USER '{USER}'@'localhost' IDENTIFIED BY '{PASSWORD}'; GRANT PROCESS ON *.* TO '{USER}'@'localhost';"
    ))
    .expect("create user");

    // TCP, with credentials.
    let s = TcpStream::connect(db.addr()).await.unwrap();
    let (g, status) = mysql::check(s, Some(&creds()), T).await.expect("check over TCP");
    assert!(g.server_version.contains("MariaDB"), "{g:?}");
    assert_eq!(g.protocol, 10);
    assert_eq!(g.scramble.len(), 20);
    assert_eq!(status, Some(GaleraStatus { wsrep_local_state: None, read_only: Some(false) }));
    assert_eq!(
        mysql::galera_verdict(&status.unwrap_or_default(), true, true),
        Err(mysql::NOT_SYNCED.to_string()),
        "no Galera is not synced, as the clustercheck script judges it"
    );
    println!("greeting: {} (connection {}, plugin {})", g.server_version, g.connection_id, g.auth_plugin);

    // The unix socket, and read_only = ON.
    db.sql("SET GLOBAL read_only = ON").unwrap();
    let s = UnixStream::connect(db.socket()).await.unwrap();
    let (_, status) = mysql::check(s, Some(&creds()), T).await.expect("check over the unix socket");
    assert_eq!(status, Some(GaleraStatus { wsrep_local_state: None, read_only: Some(true) }));
    db.sql("SET GLOBAL read_only = OFF").unwrap();

    // Wrong password: the server's 1045.
    let s = TcpStream::connect(db.addr()).await.unwrap();
    let wrong = Credentials { user: USER.into(), password: "wrong".into() };
    match mysql::check(s, Some(&wrong), T).await {
        Err(MysqlError::Server { code: 1045, message }) => assert!(message.contains("Access denied"), "{message}"),
        other => panic!("wrong password: {other:?}"),
    }

    // An account on another auth plugin: a clear error naming it — and, because the
    // client answers the switch request (empty) instead of hanging up, not a handshake
    // error: more than max_connect_errors of them leave the address unblocked.
    db.sql("INSTALL SONAME 'auth_ed25519'").expect("install ed25519");
    db.sql("CREATE USER 'edprobe'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('x')").unwrap();
    let other = Ipv4Addr::new(127, 0, 0, 4);
    let ed = Credentials { user: "edprobe".into(), password: "x".into() };
    for _ in 0..(MAX_CONNECT_ERRORS + 2) {
        let s = connect_from(other, db.addr()).await;
        match mysql::check(s, Some(&ed), T).await {
            Err(e @ MysqlError::UnsupportedAuth(_)) => assert!(e.to_string().contains("client_ed25519"), "{e}"),
            other => panic!("ed25519 account: {other:?}"),
        }
    }
    assert_eq!(host_errors(&db, other), (0, 0), "declined auth switches were counted");

    // No credentials, and an anonymous account exists: the probe is let in and logs out,
    // which is no aborted connect at all.
    let aborted = global_status(&db, "Aborted_connects");
    let s = TcpStream::connect(db.addr()).await.unwrap();
    let (_, status) = mysql::check(s, None, T).await.expect("greeting-only check");
    assert!(status.is_none());
    assert_eq!(global_status(&db, "Aborted_connects"), aborted + 1, "no anonymous account: refused");
    db.sql("CREATE USER ''@'%'").unwrap();
    let s = TcpStream::connect(db.addr()).await.unwrap();
    mysql::check(s, None, T).await.expect("greeting-only check");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(global_status(&db, "Aborted_connects"), aborted + 1, "anonymous login + COM_QUIT is clean");
}

/// Negative control: the test can see a host get blocked. From 127.0.0.3, each of the
/// ways of abandoning a handshake that a careless probe uses counts, and after
/// max_connect_errors of them the next connection gets ERR 1129 in place of the greeting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_abandoned_handshakes_get_the_host_blocked() {
    let Some(db) = start_server() else { return };
    type Ending = fn(TcpStream) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
    let endings: [(&str, Ending); 3] = [
        ("greeting read, then close (FIN)", |s| Box::pin(async move { drop(s) })),
        ("greeting read, then reset (SO_LINGER 0)", |s| Box::pin(async move { vipgate::net::abort(s) })),
        ("greeting read, then garbage (an HTTP request)", |mut s| {
            Box::pin(async move {
                let _ = s.write_all(b"OPTIONS / HTTP/1.0\r\n\r\n").await;
                let mut sink = [0u8; 256];
                let _ = tokio::time::timeout(T, s.read(&mut sink)).await;
            })
        }),
    ];
    for (name, end) in endings {
        db.sql("FLUSH HOSTS").unwrap();
        let mut blocked_at = None;
        for attempt in 1..=(MAX_CONNECT_ERRORS as usize + 3) {
            let mut s = connect_from(CONTROL, db.addr()).await;
            // Read the first packet by hand: the greeting, or the ERR that replaces it.
            let mut head = [0u8; 5];
            s.read_exact(&mut head).await.expect("first packet");
            if head[4] == 0xFF {
                let mut rest = vec![0u8; usize::from(head[0]) - 1];
                s.read_exact(&mut rest).await.unwrap();
                let code = u16::from_le_bytes([rest[0], rest[1]]);
                assert_eq!(code, 1129, "{}", String::from_utf8_lossy(&rest[2..]));
                blocked_at = Some(attempt);
                break;
            }
            let mut greeting = vec![0u8; usize::from(head[0]) - 1];
            s.read_exact(&mut greeting).await.unwrap();
            end(s).await;
            // Wait until the server has counted this one (or not: bounded) before the next.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while host_errors(&db, CONTROL).0 < attempt as u64 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let (counted, handshake) = host_errors(&db, CONTROL);
        println!("negative control, {name}: blocked at connection {blocked_at:?}; counted {counted} ({handshake} handshake errors)");
        assert_eq!(
            blocked_at,
            Some(MAX_CONNECT_ERRORS as usize + 1),
            "{name}: expected {CONTROL} blocked after {MAX_CONNECT_ERRORS} abandoned handshakes"
        );
        // And a real client from that host is refused too, with the reason.
        match login_from(CONTROL, &db).await {
            Err(e @ MysqlError::Server { code: 1129, .. }) => assert!(e.to_string().contains("is blocked"), "{e}"),
            other => panic!("{name}: a blocked host logged in: {other:?}"),
        }
    }
    // FLUSH HOSTS unblocks it.
    db.sql("FLUSH HOSTS").unwrap();
    login_from(CONTROL, &db).await.expect("login after FLUSH HOSTS");
}

/// (a) A bare TCP probe: connect, then reset at once without reading
/// (vipgate::net::connect + vipgate::net::abort, what src/health/tcp.rs first did and what
/// issue 2 suggested).
///
/// Finding: this is NOT traceless, which is why `kind = "tcp"` now answers a MySQL
/// greeting politely (src/health/tcp.rs; proven in tests/mariadb_soak.rs). Whether MariaDB counts such a connection is a race:
/// when the reset arrives before the server thread asks for the peer address, the
/// connection is dropped as Connection_errors_peer_address (not counted); when the server
/// got there first, it sends the greeting, its read fails, and that is a handshake error
/// counted against the address. Measured here: 17–34% of vipgate's probes counted, more
/// under load (a blocking Python client that resets right after connect(): ~0.3–2%). So the test
/// asserts what always holds — every probe is exactly one of the two — and shows the
/// consequence with max_connect_errors = 5 rather than asserting that the host stays
/// unblocked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connect_then_reset_probes_are_counted_when_they_lose_a_race() {
    let Some(db) = start_server() else { return };
    let probe = |addr| async move {
        let s = connect_from(PROBER, addr).await;
        vipgate::net::abort(s);
    };

    // Measure without blocking in the way.
    db.sql("SET GLOBAL max_connect_errors = 1000000").unwrap();
    let tally = run_probes(&db, "(a) tcp connect + immediate reset", probe).await;
    assert_eq!(
        tally.counted + tally.peer_address_errors,
        tally.probes as u64,
        "every reset probe is either dropped before the handshake or counted as a handshake error"
    );
    assert_eq!(tally.aborted_connects, tally.probes as u64);
    println!(
        "(a) {:.1}% of tcp probes counted as handshake errors against {PROBER}",
        100.0 * tally.counted as f64 / tally.probes as f64
    );

    // The consequence at a small max_connect_errors: as soon as MAX_CONNECT_ERRORS of
    // them lost the race, the prober's address is blocked for real clients too.
    db.sql(&format!("SET GLOBAL max_connect_errors = {MAX_CONNECT_ERRORS}")).unwrap();
    let tally = run_probes(&db, "(a) tcp connect + immediate reset, max_connect_errors 5", probe).await;
    let login = login_from(PROBER, &db).await;
    println!("(a) login from {PROBER} after the tcp probes: {login:?}");
    if tally.counted >= MAX_CONNECT_ERRORS {
        assert!(matches!(login, Err(MysqlError::Server { code: 1129, .. })), "{login:?}");
    } else {
        assert!(login.is_ok(), "{login:?}");
    }
}

/// (b) `mysql::check` without credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greeting_only_check_probes_leave_the_host_unblocked() {
    let Some(db) = start_server() else { return };
    let tally = run_probes(&db, "(b) mysql check without credentials", |addr| async move {
        let s = connect_from(PROBER, addr).await;
        let (g, status) = mysql::check(s, None, T).await.expect("greeting-only check");
        assert!(g.server_version.contains("MariaDB") && status.is_none());
    })
    .await;
    assert_eq!(tally.counted, 0, "greeting-only probes were counted against {PROBER}");
    login_from(PROBER, &db).await.expect("login from the prober after greeting-only probes");
}

/// (c) `mysql::check` with credentials: login, two SHOW statements, COM_QUIT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentialed_check_probes_leave_no_trace() {
    let Some(db) = start_server() else { return };
    let tally = run_probes(&db, "(c) mysql check with credentials + COM_QUIT", |addr| async move {
        let s = connect_from(PROBER, addr).await;
        let (_, status) = mysql::check(s, Some(&creds()), T).await.expect("credentialed check");
        assert_eq!(status, Some(GaleraStatus { wsrep_local_state: None, read_only: Some(false) }));
    })
    .await;
    assert_eq!(tally.counted, 0, "credentialed probes were counted against {PROBER}");
    assert_eq!(tally.aborted_connects, 0, "a login + COM_QUIT is not an aborted connect");
    assert_eq!(tally.access_denied, 0);
    login_from(PROBER, &db).await.expect("login from the prober after credentialed probes");
}

/// Why these servers run with name resolution on: under `--skip-name-resolve` MariaDB
/// 10.11 keeps no host cache for clients, so no number of abandoned handshakes blocks
/// anyone (and a TCP probe on 3306 cannot get the balancer blocked there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_name_resolve_never_blocks_hosts() {
    let Some(db) = MariaDb::start(&[
        &format!("--max-connect-errors={MAX_CONNECT_ERRORS}"),
        "--skip-name-resolve",
        "--performance-schema=ON",
    ]) else {
        return;
    };
    db.sql(&format!("CREATE USER '{USER}'@'127.0.0.%' IDENTIFIED BY '{PASSWORD}'")).expect("create user");
    for _ in 0..(3 * MAX_CONNECT_ERRORS) {
        let mut s = connect_from(CONTROL, db.addr()).await;
        let mut head = [0u8; 5];
        s.read_exact(&mut head).await.expect("first packet");
        assert_ne!(head[4], 0xFF, "refused under --skip-name-resolve");
        drop(s);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(host_errors(&db, CONTROL), (0, 0));
    login_from(CONTROL, &db).await.expect("login under --skip-name-resolve");
}
