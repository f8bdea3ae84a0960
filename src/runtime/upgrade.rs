//! Hitless binary upgrade. The running process starts the new binary with the same
//! arguments and hands it every listening socket over a unix socket (SCM_RIGHTS); the new
//! process binds nothing it was handed, runs its first health-check round, starts
//! accepting and says "ready"; only then does the old process stop accepting and drain.
//! The listening sockets are never closed in between, so no connect is refused: a
//! connection waits in the shared accept queue for whichever process accepts it.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sendfd::{RecvWithFd, SendWithFd};
use tokio::time::Instant;
use tracing::{info, warn};

/// Set in the new process's environment: the unix socket to fetch listeners from.
pub const ENV: &str = "VIPGATE_UPGRADE_FROM";
/// One SCM_RIGHTS message carries at most this many descriptors (Linux: 253).
const MAX_FDS: usize = 250;
const READY: &[u8] = b"ready\n";

/// How the process was started, captured at start: after a package upgrade the file at
/// this path is the new binary, while /proc/self/exe still names the old (deleted) one.
#[derive(Debug, Clone)]
pub struct Exec {
    pub exe: PathBuf,
    pub args: Vec<OsString>,
}

impl Exec {
    pub fn current() -> io::Result<Exec> {
        Ok(Exec { exe: std::env::current_exe()?, args: std::env::args_os().skip(1).collect() })
    }
}

/// Old side: start `exec`, hand it `listeners` (configured bind, descriptor), and wait
/// until it accepts on them (bounded by `ready_within`). Returns the new process's pid.
/// On any error the new process is stopped and the old one goes on serving.
pub async fn hand_over(
    exec: &Exec,
    listeners: Vec<(SocketAddr, RawFd)>,
    ready_within: Duration,
) -> Result<u32, String> {
    if listeners.len() > MAX_FDS {
        return Err(format!("{} listeners: an upgrade hands over at most {MAX_FDS}", listeners.len()));
    }
    let path = std::env::temp_dir().join(format!("vipgate-upgrade-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let socket = UnixListener::bind(&path).map_err(|e| format!("upgrade socket {}: {e}", path.display()))?;
    restrict(&path);
    let mut child = Command::new(&exec.exe)
        .args(&exec.args)
        .env(ENV, &path)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exec.exe.display()))?;
    let pid = child.id();
    info!(pid, exe = %exec.exe.display(), "upgrade: new process started");
    let path2 = path.clone();
    let result =
        tokio::task::spawn_blocking(move || converse(socket, &mut child, listeners, ready_within).map(|()| child))
            .await
            .map_err(|e| format!("upgrade task failed: {e}"))
            .and_then(|r| r);
    let _ = std::fs::remove_file(&path2);
    match result {
        Ok(child) => {
            // The new process outlives us; nobody waits for it here.
            drop(child);
            Ok(pid)
        }
        Err(e) => Err(e),
    }
}

fn restrict(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

fn converse(
    socket: UnixListener,
    child: &mut Child,
    listeners: Vec<(SocketAddr, RawFd)>,
    ready_within: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + ready_within;
    let fail = |child: &mut Child, why: String| {
        let _ = child.kill();
        let _ = child.wait();
        Err(why)
    };
    // Accept the new process's connection, watching for it dying first.
    if let Err(e) = socket.set_nonblocking(true) {
        return fail(child, format!("upgrade socket: {e}"));
    }
    let stream = loop {
        match socket.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return fail(child, format!("upgrade socket accept: {e}")),
        }
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("the new process exited ({st}) before taking the listeners"));
        }
        if Instant::now() > deadline {
            return fail(child, "the new process never connected to take the listeners".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stream = stream;
    if stream.set_nonblocking(false).is_err() {
        return fail(child, "upgrade socket: cannot make it blocking".into());
    }
    let names: String = listeners.iter().map(|(a, _)| format!("{a}\n")).collect::<String>() + "\n";
    let fds: Vec<RawFd> = listeners.iter().map(|(_, fd)| *fd).collect();
    if let Err(e) = stream.send_with_fd(names.as_bytes(), &fds) {
        return fail(child, format!("handing over the listeners: {e}"));
    }
    // Ready comes once the new process accepts; it may take a health-check round.
    let mut got = Vec::new();
    let mut buf = [0u8; 16];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return fail(child, format!("the new process was not ready within {ready_within:?}"));
        }
        let _ = stream.set_read_timeout(Some(left.min(Duration::from_millis(500))));
        match stream.read(&mut buf) {
            Ok(0) => {
                return fail(child, "the new process closed the upgrade socket without being ready".into());
            }
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.starts_with(READY) {
                    return Ok(());
                }
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) => return fail(child, format!("upgrade socket: {e}")),
        }
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("the new process exited ({st}) before it was ready"));
        }
    }
}

/// New side: the listeners handed over by the old process, by configured bind address,
/// and the line to tell it we accept.
pub struct Inherited {
    pub listeners: HashMap<SocketAddr, std::net::TcpListener>,
    notify: UnixStream,
}

/// If this process was started by an upgrade, take the listeners.
pub fn inherit() -> Result<Option<Inherited>, String> {
    let Some(path) = std::env::var_os(ENV) else { return Ok(None) };
    let stream = UnixStream::connect(&path)
        .map_err(|e| format!("upgrade: cannot reach the old process at {}: {e}", Path::new(&path).display()))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut bytes = vec![0u8; 64 * 1024];
    let mut fds = [0 as RawFd; MAX_FDS + 3];
    let (mut n, nfds) =
        stream.recv_with_fd(&mut bytes, &mut fds).map_err(|e| format!("upgrade: receiving listeners: {e}"))?;
    // The names may arrive in more than one read; the descriptors came with the first.
    while !bytes[..n].ends_with(b"\n\n") && n < bytes.len() {
        let more = (&stream).read(&mut bytes[n..]).map_err(|e| format!("upgrade: receiving listeners: {e}"))?;
        if more == 0 {
            break;
        }
        n += more;
    }
    // Own every descriptor received before anything can fail, so none leaks.
    let owned: Vec<std::net::TcpListener> = fds[..nfds].iter().map(|&fd| unsafe_listener_from_fd(fd)).collect();
    for l in &owned {
        // A later upgrade's child must get them by hand-over, not by inheritance.
        let _ = socket2::SockRef::from(l).set_cloexec(true);
    }
    let text = String::from_utf8_lossy(&bytes[..n]);
    let names: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    if names.len() != owned.len() {
        return Err(format!("upgrade: got {} listener names for {} descriptors", names.len(), owned.len()));
    }
    let mut listeners = HashMap::new();
    for (name, listener) in names.into_iter().zip(owned) {
        let addr: SocketAddr = name.parse().map_err(|_| format!("upgrade: bad listener address {name:?}"))?;
        listener.set_nonblocking(true).map_err(|e| format!("upgrade: listener {addr}: {e}"))?;
        listeners.insert(addr, listener);
    }
    info!(listeners = listeners.len(), "upgrade: took over the listeners");
    Ok(Some(Inherited { listeners, notify: stream }))
}

/// Wrap a descriptor the kernel just gave us (SCM_RIGHTS): it is open, a listening TCP
/// socket of the old process, and owned by nobody else in this process.
fn unsafe_listener_from_fd(fd: RawFd) -> std::net::TcpListener {
    // SAFETY: `fd` was installed into this process by recvmsg(SCM_RIGHTS) a moment ago;
    // nothing else refers to it, so the TcpListener becomes its only owner.
    unsafe { std::net::TcpListener::from_raw_fd(fd) }
}

impl Inherited {
    pub fn split(self) -> (HashMap<SocketAddr, std::net::TcpListener>, Notify) {
        (self.listeners, Notify(self.notify))
    }
}

/// The line back to the old process.
pub struct Notify(UnixStream);

impl Notify {
    /// Tell the old process we accept; it stops accepting and drains.
    pub fn ready(mut self) {
        if let Err(e) = self.0.write_all(READY) {
            warn!(error = %e, "upgrade: could not tell the old process we are ready; it keeps serving too");
        }
    }
}
