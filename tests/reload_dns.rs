//! A reload whose config names a server by a slow-to-resolve HOST:PORT must not stall
//! traffic, even with `workers = 1` (everything on one current-thread runtime): the file
//! is loaded, and its names resolved with glibc's blocking getaddrinfo, off that thread.
//!
//! The test builds a private world so the lookup really goes through glibc and a slow DNS
//! server, without touching the machine's resolver:
//! - a network namespace with only `lo`, and `/etc/netns/NS/{resolv.conf,hosts,
//!   nsswitch.conf}`, which `ip netns exec` bind-mounts over /etc for vipgate: hosts from
//!   files then DNS, the one nameserver at 127.0.0.1;
//! - in it, a DNS server (a thread of this test, entered with setns) that answers
//!   `slow.vipgate.test` with 127.0.0.1 only after 3 s, and everything else at once;
//! - echo backends and a client thread, also in the namespace, the client doing
//!   back-to-back round trips (one connection each) through vipgate while it reloads.
//!
//! Without network namespaces (not root, no iproute2) the test prints SKIP and passes,
//! unless VIPGATE_REQUIRE_NETNS is set (CI), where that is a failure.

mod common;

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use common::*;
use tokio::time::Instant;

/// The name only the namespace's DNS server knows (the test's own hosts file does not
/// list it, and `.test` is reserved, so no real resolver would answer it either).
const SLOW_NAME: &str = "slow.vipgate.test";
/// How long the DNS server sits on each query for SLOW_NAME.
const DNS_DELAY: Duration = Duration::from_secs(3);
/// The reload must take at least this long, or the slow lookup did not happen and the
/// test proves nothing.
const MIN_RELOAD: Duration = Duration::from_millis(2500);
/// Longest allowed pause between two successful round trips while the reload runs: a
/// stalled runtime shows the whole DNS delay here, a healthy one a few milliseconds.
const MAX_GAP: Duration = Duration::from_secs(1);
/// No thread of this test runs longer than this, whatever happens.
const HARD_CAP: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------
// The network namespace
// ---------------------------------------------------------------------------------------

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// A network namespace of this test's, with its own resolver files; deleted on drop
/// (after everything started in it has been dropped, by declaration order in the test).
struct Netns {
    name: String,
    etc: PathBuf,
    /// Whether /etc/netns itself is the test's (iproute2 does not create it): then it is
    /// removed again once empty.
    made_etc_netns: bool,
}

impl Netns {
    fn create() -> Result<Netns, String> {
        // One per test process: a leftover of that name can only be from a killed earlier
        // run that had the same pid, so it is ours to replace.
        let name = format!("vgdns-{}", std::process::id());
        let etc = PathBuf::from(format!("/etc/netns/{name}"));
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["ip", "netns", "add", &name])?;
        // From here on the guard cleans up, whatever fails next.
        let made_etc_netns = !std::path::Path::new("/etc/netns").exists();
        let ns = Netns { name, etc, made_etc_netns };
        ns.write_etc().map_err(|e| format!("writing {}: {e}", ns.etc.display()))?;
        run(&["ip", "-n", &ns.name, "link", "set", "lo", "up"])?;
        // Entering it from a thread is how this test's own sockets get there.
        ns.spawn("probe", || ()).join().map_err(|_| "cannot enter the namespace with setns".to_string())?;
        Ok(ns)
    }

    /// The files `ip netns exec` mounts over /etc: a resolver that asks only the test's
    /// DNS server, once, and waits longer than DNS_DELAY for it (glibc's default 5 s
    /// timeout, written out so a changed default cannot turn the delay into a retry);
    /// a hosts file that cannot know SLOW_NAME; and a host lookup order of files then
    /// DNS, whatever this machine's nsswitch says (mdns, systemd-resolved).
    fn write_etc(&self) -> std::io::Result<()> {
        fs::create_dir_all(&self.etc)?;
        fs::write(self.etc.join("resolv.conf"), "nameserver 127.0.0.1\noptions timeout:5 attempts:1\n")?;
        fs::write(self.etc.join("hosts"), "127.0.0.1 localhost\n::1 localhost\n")?;
        // The other databases stay as the machine has them: only the hosts line changes.
        let machine = fs::read_to_string("/etc/nsswitch.conf").unwrap_or_default();
        let mut nss: String =
            machine.lines().filter(|l| !l.trim_start().starts_with("hosts:")).map(|l| format!("{l}\n")).collect();
        nss.push_str("hosts: files dns\n");
        fs::write(self.etc.join("nsswitch.conf"), nss)
    }

    /// Run `f` on a new thread that has entered the namespace (a network namespace is a
    /// per-thread attribute; threads it starts inherit it). Panics there if setns fails.
    fn spawn<T: Send + 'static>(&self, what: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        thread::Builder::new()
            .name(format!("netns-{what}"))
            .spawn(move || {
                let file = fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                // SAFETY: setns(2) on a descriptor we hold open; it changes only this
                // thread's network namespace.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
                drop(file);
                f()
            })
            .expect("spawn thread")
    }

    /// Run `f` in the namespace and wait for its result.
    fn within<T: Send + 'static>(&self, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(what, f).join().unwrap_or_else(|_| panic!("{what} in the namespace panicked"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        let _ = fs::remove_dir_all(&self.etc);
        if self.made_etc_netns {
            // Fails, as it should, while another namespace's files are in it.
            let _ = fs::remove_dir("/etc/netns");
        }
    }
}

// ---------------------------------------------------------------------------------------
// A DNS server that is slow for one name
// ---------------------------------------------------------------------------------------

/// One question the DNS server got.
#[derive(Clone, Debug)]
struct Query {
    name: String,
    qtype: u16,
}

const TYPE_A: u16 = 1;

/// The question of a DNS query: (lower-case name, qtype, offset just past the question).
/// None for anything but a plain one-question query.
fn parse_question(q: &[u8]) -> Option<(String, u16, usize)> {
    if q.len() < 12 || q[2] & 0x80 != 0 || u16::from_be_bytes([q[4], q[5]]) != 1 {
        return None;
    }
    let mut labels: Vec<String> = Vec::new();
    let mut at = 12;
    loop {
        let len = *q.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        // Compression pointers do not occur in a question a stub resolver sends.
        if len > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(q.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*q.get(at)?, *q.get(at + 1)?]);
    q.get(at + 2..at + 4)?;
    Some((labels.join("."), qtype, at + 4))
}

/// The reply to `q` and whether it is for SLOW_NAME (to be held back): A 127.0.0.1 for
/// SLOW_NAME, no record for its other types (AAAA: the name is IPv4-only, so glibc's
/// parallel AAAA query ends in an empty NOERROR, not an error), NXDOMAIN for other names.
fn reply(q: &[u8], name: &str, qtype: u16, question_end: usize) -> (Vec<u8>, bool) {
    let ours = name == SLOW_NAME;
    let answers: u16 = if ours && qtype == TYPE_A { 1 } else { 0 };
    let rcode: u8 = if ours { 0 } else { 3 };
    let mut r = Vec::with_capacity(question_end + 16);
    r.extend_from_slice(&q[0..2]); // id
                                   // QR, the query's opcode, AA, the query's RD; then RA and the rcode.
    r.push(0x80 | (q[2] & 0x78) | 0x04 | (q[2] & 0x01));
    r.push(0x80 | rcode);
    r.extend_from_slice(&[0, 1]);
    r.extend_from_slice(&answers.to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]); // no authority, no additional records
    r.extend_from_slice(&q[12..question_end]);
    if answers == 1 {
        // Name: pointer to the question's; type A, class IN, TTL 0, 4 bytes of address.
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
        r.extend_from_slice(&Ipv4Addr::LOCALHOST.octets());
    }
    (r, ours)
}

/// The DNS server thread on 127.0.0.1:53/udp in the namespace. Replies for SLOW_NAME are
/// queued with a due time rather than slept on, so glibc's A and AAAA queries (sent
/// together on one socket) are each answered DNS_DELAY after they arrived, and the whole
/// lookup takes DNS_DELAY, not twice that.
struct SlowDns {
    stop: Arc<AtomicBool>,
    queries: Arc<Mutex<Vec<Query>>>,
    thread: Option<JoinHandle<()>>,
}

impl SlowDns {
    fn start(ns: &Netns) -> SlowDns {
        let stop = Arc::new(AtomicBool::new(false));
        let queries: Arc<Mutex<Vec<Query>>> = Arc::default();
        let (bound_tx, bound_rx) = mpsc::channel();
        let (stop2, queries2) = (stop.clone(), queries.clone());
        let thread = ns.spawn("dns", move || {
            let sock = match UdpSocket::bind("127.0.0.1:53") {
                Ok(s) => s,
                Err(e) => {
                    let _ = bound_tx.send(Err(format!("bind 127.0.0.1:53 in the namespace: {e}")));
                    return;
                }
            };
            let _ = bound_tx.send(Ok(()));
            let mut held: Vec<(Instant, SocketAddr, Vec<u8>)> = Vec::new();
            let started = Instant::now();
            let mut buf = [0u8; 1500];
            while !stop2.load(SeqCst) && started.elapsed() < HARD_CAP {
                // Wake for the next reply due, or every 20 ms to see the stop flag.
                let now = Instant::now();
                let wait = held
                    .iter()
                    .map(|(due, _, _)| due.saturating_duration_since(now))
                    .min()
                    .unwrap_or(Duration::from_millis(20))
                    .clamp(Duration::from_millis(1), Duration::from_millis(20));
                let _ = sock.set_read_timeout(Some(wait));
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let q = &buf[..n];
                    if let Some((name, qtype, end)) = parse_question(q) {
                        let (r, slow) = reply(q, &name, qtype, end);
                        queries2.lock().unwrap().push(Query { name, qtype });
                        if slow {
                            held.push((Instant::now() + DNS_DELAY, from, r));
                        } else {
                            let _ = sock.send_to(&r, from);
                        }
                    }
                }
                let now = Instant::now();
                held.retain(|(due, to, r)| {
                    if *due <= now {
                        let _ = sock.send_to(r, to);
                        false
                    } else {
                        true
                    }
                });
            }
        });
        match bound_rx.recv_timeout(WAIT) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => panic!("the DNS server thread did not start within {WAIT:?}"),
        }
        SlowDns { stop, queries, thread: Some(thread) }
    }

    fn queries(&self) -> Vec<Query> {
        self.queries.lock().unwrap().clone()
    }
}

impl Drop for SlowDns {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------

/// One round trip as the client saw it.
struct Trip {
    done: Instant,
    /// The server's name, or what went wrong.
    result: Result<String, String>,
}

/// Each read and write of a round trip waits this long: longer than the DNS delay, so a
/// round trip stalled by the reload shows as a long gap rather than as an error, which
/// tells the two failure modes apart.
const TRIP_WAIT: Duration = Duration::from_secs(10);

fn round_trip(bind: SocketAddr, i: u64) -> Result<String, String> {
    echo_round_trip(bind, i, TRIP_WAIT)
}

/// Round trips back to back from inside the namespace until stopped (or HARD_CAP).
struct Client {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Trip>>>,
}

impl Client {
    fn start(ns: &Netns, bind: SocketAddr) -> Client {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = ns.spawn("client", move || {
            let started = Instant::now();
            let mut trips = Vec::new();
            let mut i = 0;
            while !stop2.load(SeqCst) && started.elapsed() < HARD_CAP {
                let result = round_trip(bind, i);
                trips.push(Trip { done: Instant::now(), result });
                i += 1;
                // A breath between trips keeps the count of TIME_WAIT sockets modest; it
                // is far below the gaps the test looks for.
                thread::sleep(Duration::from_millis(2));
            }
            trips
        });
        Client { stop, thread: Some(thread) }
    }

    fn finish(mut self) -> Vec<Trip> {
        self.stop.store(true, SeqCst);
        self.thread.take().unwrap().join().expect("client thread panicked")
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The longest time without a successful round trip in [from, to], counted from the last
/// success at or before `from` to the first one after `to` (so a trip that stalls across
/// the whole window counts in full). None if there is no success on either side.
fn longest_gap(trips: &[Trip], from: Instant, to: Instant) -> Option<Duration> {
    let ok: Vec<Instant> = trips.iter().filter(|t| t.result.is_ok()).map(|t| t.done).collect();
    let first = ok.iter().rposition(|&d| d <= from)?;
    let last = ok.iter().position(|&d| d > to)?;
    ok[first..=last].windows(2).map(|w| w[1] - w[0]).max()
}

// ---------------------------------------------------------------------------------------
// vipgate in the namespace
// ---------------------------------------------------------------------------------------

/// A wrapper that runs the binary under test inside the namespace. `ip netns exec` execs
/// without forking, as does `exec` here, so the pid the harness kills is vipgate's own.
fn netns_wrapper(ns: &Netns) -> Removed {
    let path = temp_path("in-netns", "sh");
    fs::write(&path, format!("#!/bin/sh\nexec ip netns exec '{}' '{}' \"$@\"\n", ns.name, BIN)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    Removed(path)
}

fn config(bind: SocketAddr, direct: SocketAddr, named_port: Option<u16>) -> String {
    let mut c = format!(
        "[global]\nworkers = 1\n\n[services.echo]\nbind = \"{bind}\"\n\n\
         [[services.echo.servers]]\nname = \"direct\"\naddress = \"{direct}\"\n"
    );
    if let Some(port) = named_port {
        c.push_str(&format!("\n[[services.echo.servers]]\nname = \"named\"\naddress = \"{SLOW_NAME}:{port}\"\n"));
    }
    c
}

/// The log from byte `from` on.
fn log_from(v: &Vipgate, from: u64) -> String {
    let Ok(mut f) = fs::File::open(&v.log_path) else { return String::new() };
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(from)).is_ok() {
        let _ = f.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[test]
fn a_reload_waiting_on_a_slow_dns_answer_does_not_stall_traffic_with_one_worker() {
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(why) => return skip_unless_netns_required("reload_dns", &format!("no network namespace: {why}")),
    };
    let dns = SlowDns::start(&ns);
    // Bound in the namespace, so their ports (and the service's) are the namespace's.
    let (direct, named, bind) =
        ns.within("backends", || (Backend::echo_any("direct"), Backend::echo_any("named"), free_addr()));
    let wrapper = netns_wrapper(&ns);
    let mut v = Vipgate::spawn_bin(&wrapper.0, &config(bind, direct.addr, None));

    let up = eventually(WAIT, || {
        if let Some(st) = v.try_wait() {
            panic!("vipgate exited with {st}:\n{}", v.log());
        }
        ns.within("ready", move || round_trip(bind, 0).ok())
    });
    assert!(up.is_some(), "vipgate never served on {bind} in the namespace:\n{}", v.log());
    let exe = fs::read_link(format!("/proc/{}/exe", v.pid())).unwrap_or_default();
    assert!(
        exe.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vipgate")),
        "pid {} is {}, not vipgate: killing it would leave vipgate running",
        v.pid(),
        exe.display()
    );

    let client = Client::start(&ns, bind);
    // A second of traffic before the reload: the baseline the gap is judged against.
    thread::sleep(Duration::from_secs(1));

    let log_len = fs::metadata(&v.log_path).map(|m| m.len()).unwrap_or(0);
    let next = config(bind, direct.addr, Some(named.addr.port()));
    let tmp = v.config.with_extension("toml.new");
    fs::write(&tmp, next).unwrap();
    // Renamed into place, so the reload never reads half a file.
    fs::rename(&tmp, &v.config).unwrap();
    let signalled = Instant::now();
    v.signal(libc::SIGHUP);
    let outcome = poll(Duration::from_secs(20), Duration::from_millis(10), || {
        log_from(&v, log_len)
            .lines()
            .find(|l| {
                (l.contains("config reloaded") && field(l, "generation").as_deref() == Some("1"))
                    || l.contains("reload failed")
            })
            .map(str::to_string)
    });
    let reloaded = Instant::now();
    let line = outcome.unwrap_or_else(|| panic!("no `config reloaded generation=1` within 20 s:\n{}", v.log()));
    // On a machine running nscd, glibc would ask it (a socket path in the file system,
    // which the namespace still sees) and get the machine's answer, none: the reload fails.
    assert!(line.contains("config reloaded"), "the reload failed (nscd running?): {line}\n{}", v.log());
    // Some traffic after the reload too: a stall that ends just as the line is logged
    // must be measured to its end, and the new server should take its share.
    thread::sleep(Duration::from_secs(1));
    let trips = client.finish();

    let took = reloaded - signalled;
    let during = trips.iter().filter(|t| t.done > signalled && t.done <= reloaded).count();
    let failed: Vec<&String> = trips.iter().filter_map(|t| t.result.as_ref().err()).collect();
    let gap = longest_gap(&trips, signalled, reloaded);
    let to_named = trips.iter().filter(|t| t.result.as_deref() == Ok("named")).count();
    let slow_queries: Vec<Query> = dns.queries().into_iter().filter(|q| q.name == SLOW_NAME).collect();
    println!(
        "reload took {took:?}; {} round trips in all, {during} during the reload, {} failed; longest gap during \
         the reload {gap:?}; {to_named} went to the new server; DNS queries for {SLOW_NAME}: {slow_queries:?}",
        trips.len(),
        failed.len()
    );

    assert!(
        slow_queries.iter().any(|q| q.qtype == TYPE_A),
        "the reload never asked the namespace's DNS server for {SLOW_NAME}: {:?}\n{}",
        dns.queries(),
        v.log()
    );
    assert!(
        took >= MIN_RELOAD,
        "the reload took {took:?}, less than the {DNS_DELAY:?} DNS delay: the slow lookup did not happen\n{}",
        v.log()
    );
    assert!(failed.is_empty(), "{} round trips failed, first: {}\n{}", failed.len(), failed[0], v.log());
    let gap = gap.unwrap_or_else(|| panic!("no successful round trip before or after the reload\n{}", v.log()));
    assert!(
        gap < MAX_GAP,
        "traffic stalled for {gap:?} while the reload waited for DNS ({during} round trips in {took:?})\n{}",
        v.log()
    );
    assert!(during >= 10, "only {during} round trips in the {took:?} of the reload\n{}", v.log());
    assert!(to_named > 0, "no round trip reached the server added by name after the reload\n{}", v.log());
}
