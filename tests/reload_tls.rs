//! A reload whose new service reads a certificate or a CA file slowly must not stall
//! traffic, even with `workers = 1` (everything on one current-thread runtime): listener
//! certificates, server CAs and https probes' CA files are read in the load step, off that
//! thread, and the snapshot and its checks are built without touching a file.
//!
//! The file is a named pipe: each reader waits until the test's writer thread, after
//! READ_DELAY, writes the PEM and closes. The reload reads it twice (validation checks it,
//! the load step loads it), so it takes about twice the delay; meanwhile a client does
//! back-to-back round trips through a tcp service of the same process. Before the load
//! step existed, the second read ran on the runtime thread and every round trip waited.

mod common;

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use common::*;
use tokio::time::Instant;

/// How long the pipe makes each reader wait for the certificate.
const READ_DELAY: Duration = Duration::from_millis(1500);
/// The reload must take at least this long, or the certificate was not read both times
/// and the test proves nothing.
const MIN_RELOAD: Duration = Duration::from_millis(2500);
/// Longest allowed pause between two successful round trips while the reload runs.
const MAX_GAP: Duration = Duration::from_secs(1);
/// No thread of this test runs longer than this, whatever happens.
const HARD_CAP: Duration = Duration::from_secs(60);

/// Writes `pem` to the pipe at `path` for each reader that opens it, READ_DELAY after
/// the open, until stopped. Opening non-blocking fails (ENXIO) while no reader is there,
/// so the thread polls and can always be stopped.
struct SlowPipe {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
    _path: Removed,
}

impl SlowPipe {
    fn start(pem: String) -> SlowPipe {
        let path = temp_path("slow-cert", "pem");
        let c_path = std::ffi::CString::new(path.to_string_lossy().as_bytes()).unwrap();
        // SAFETY: mkfifo on a NUL-terminated path we own.
        let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
        assert_eq!(rc, 0, "mkfifo {}: {}", path.display(), std::io::Error::last_os_error());
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let (stop2, served2, path2) = (stop.clone(), served.clone(), path.clone());
        let thread = thread::spawn(move || {
            let started = Instant::now();
            while !stop2.load(SeqCst) && started.elapsed() < HARD_CAP {
                let opened = fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&path2);
                let Ok(mut pipe) = opened else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                thread::sleep(READ_DELAY);
                // A reader that gave up makes this fail; the next one gets its own open.
                if pipe.write_all(pem.as_bytes()).is_ok() {
                    served2.fetch_add(1, SeqCst);
                }
                drop(pipe);
                // Let the reader see the end of the file before the next open.
                thread::sleep(Duration::from_millis(20));
            }
        });
        SlowPipe { stop, served, thread: Some(thread), _path: Removed(path) }
    }

    fn path(&self) -> &Path {
        &self._path.0
    }
}

impl Drop for SlowPipe {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One connection through the service that stays. Each read waits longer than the read
/// delay: a stalled round trip shows as a long gap, not an error.
fn round_trip(bind: SocketAddr, i: usize) -> Result<String, String> {
    echo_round_trip(bind, i as u64, Duration::from_secs(10))
}

fn config(bind: SocketAddr, backend: SocketAddr, extra: &str) -> String {
    format!(
        "[global]\nworkers = 1\n\n[services.echo]\nbind = \"{bind}\"\n\n\
         [[services.echo.servers]]\nname = \"direct\"\naddress = \"{backend}\"\n{extra}"
    )
}

/// A new http service terminating TLS with the slow certificate.
fn listener_certificate(web: SocketAddr, backend: SocketAddr, cert: &Path, key: &Path) -> String {
    format!(
        "\n[services.web]\nbind = \"{web}\"\nmode = \"http\"\n\
         certificates = [{{ cert = \"{}\", key = \"{}\" }}]\n\n\
         [[services.web.servers]]\nname = \"web\"\naddress = \"{backend}\"\n",
        cert.display(),
        key.display()
    )
}

/// A new tcp service whose https probe checks servers against the slow CA file.
fn probe_ca_file(web: SocketAddr, backend: SocketAddr, ca: &Path, _key: &Path) -> String {
    format!(
        "\n[services.probed]\nbind = \"{web}\"\n\n[services.probed.check]\nkind = \"https\"\n\
         ca_file = \"{}\"\ninterval = \"10s\"\n\n\
         [[services.probed.servers]]\nname = \"probed\"\naddress = \"{backend}\"\n",
        ca.display()
    )
}

#[test]
fn a_reload_reading_a_slow_certificate_does_not_stall_traffic_with_one_worker() {
    reload_with_a_slow_file(listener_certificate);
}

#[test]
fn a_reload_reading_a_slow_probe_ca_file_does_not_stall_traffic_with_one_worker() {
    reload_with_a_slow_file(probe_ca_file);
}

/// Reload to a config that adds `service(new bind, backend, the pipe, a key file)` while a
/// client does round trips through the service that stays.
fn reload_with_a_slow_file(service: fn(SocketAddr, SocketAddr, &Path, &Path) -> String) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = temp_path("slow-cert-key", "pem");
    fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let key = Removed(key);
    let pipe = SlowPipe::start(ck.cert.pem());

    let backend = Backend::echo_any("direct");
    let (bind, web) = (free_addr(), free_addr());
    let v = Vipgate::start(&config(bind, backend.addr, ""), bind);
    round_trip(bind, 0).unwrap_or_else(|e| panic!("no round trip before the reload: {e}\n{}", v.log()));

    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let client = thread::spawn(move || {
        let started = Instant::now();
        let mut trips: Vec<(Instant, Result<String, String>)> = Vec::new();
        let mut i = 1;
        while !stop2.load(SeqCst) && started.elapsed() < HARD_CAP {
            let result = round_trip(bind, i);
            trips.push((Instant::now(), result));
            i += 1;
            thread::sleep(Duration::from_millis(2));
        }
        trips
    });
    thread::sleep(Duration::from_millis(500));

    let tmp = v.config.with_extension("toml.new");
    fs::write(&tmp, config(bind, backend.addr, &service(web, backend.addr, pipe.path(), &key.0))).unwrap();
    fs::rename(&tmp, &v.config).unwrap();
    let signalled = Instant::now();
    v.signal(libc::SIGHUP);
    let line =
        v.wait_log_line(Duration::from_secs(20), |l| l.contains("config reloaded") || l.contains("reload failed"));
    let reloaded = Instant::now();
    thread::sleep(Duration::from_millis(500));
    stop.store(true, SeqCst);
    let trips = client.join().expect("client thread panicked");

    let line = line.unwrap_or_else(|| panic!("no reload outcome within 20 s:\n{}", v.log()));
    assert!(line.contains("config reloaded"), "the reload failed: {line}\n{}", v.log());
    let took = reloaded - signalled;
    let ok: Vec<Instant> = trips.iter().filter(|t| t.1.is_ok()).map(|t| t.0).collect();
    let failed: Vec<&String> = trips.iter().filter_map(|t| t.1.as_ref().err()).collect();
    let before = ok.iter().rposition(|&d| d <= signalled).expect("a round trip before the reload");
    let after = ok.iter().position(|&d| d > reloaded).expect("a round trip after the reload");
    let gap = ok[before..=after].windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    println!(
        "reload took {took:?}; {} round trips, {} failed; longest gap {gap:?}; certificate reads served: {}",
        trips.len(),
        failed.len(),
        pipe.served.load(SeqCst)
    );
    assert!(took >= MIN_RELOAD, "the reload took only {took:?}: the certificate was not read twice\n{}", v.log());
    assert!(failed.is_empty(), "{} round trips failed, first: {}\n{}", failed.len(), failed[0], v.log());
    assert!(gap < MAX_GAP, "traffic stalled for {gap:?} while the reload read the slow file\n{}", v.log());
    assert!(TcpStream::connect_timeout(&web, Duration::from_secs(5)).is_ok(), "the new service does not listen");
}
