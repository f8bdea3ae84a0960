//! Hitless binary upgrade. The running process starts the new binary with the same
//! arguments and hands it every listening socket over a unix socket (SCM_RIGHTS); the new
//! process binds nothing it was handed, runs its first health-check round, starts
//! accepting and says "ready"; only then does the old process stop accepting and drain.
//! The listening sockets are never closed in between, so no connect is refused: a
//! connection waits in the shared accept queue for whichever process accepts it.
//!
//! Whoever connects to the hand-over socket first gets every listener, so it is kept from
//! everyone else three ways: its path is random, it sits in a directory created 0700 (the
//! kernel lets no other user reach it), and a connection whose peer is another user
//! (SO_PEERCRED) is refused and logged while the wait for the new process goes on.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
    listeners: Vec<(SocketAddr, OwnedFd)>,
    ready_within: Duration,
) -> Result<u32, String> {
    if listeners.len() > MAX_FDS {
        return Err(format!("{} listeners: an upgrade hands over at most {MAX_FDS}", listeners.len()));
    }
    let place = Private::create()?;
    let socket =
        UnixListener::bind(&place.socket).map_err(|e| format!("upgrade socket {}: {e}", place.socket.display()))?;
    let mut child = Command::new(&exec.exe)
        .args(&exec.args)
        .env(ENV, &place.socket)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exec.exe.display()))?;
    let pid = child.id();
    info!(pid, exe = %exec.exe.display(), "upgrade: new process started");
    let result =
        tokio::task::spawn_blocking(move || converse(socket, &mut child, listeners, ready_within).map(|()| child))
            .await
            .map_err(|e| format!("upgrade task failed: {e}"))
            .and_then(|r| r);
    drop(place);
    match result {
        Ok(child) => {
            // The new process outlives us; nobody waits for it here.
            drop(child);
            Ok(pid)
        }
        Err(e) => Err(e),
    }
}

/// Where the hand-over socket lives: `$TMPDIR/vipgate-upgrade-<random>/listeners.sock`.
///
/// Not the abstract namespace: an abstract name has no permission check at all (any local
/// user may connect) and every abstract name is listed in /proc/net/unix, so it would rest
/// on the peer check alone. A directory created 0700 in one mkdir(2) is closed to other
/// users from its first moment, so no bind-then-chmod window exists and the socket's own
/// mode does not matter; its random name (16 bytes from the kernel) means nobody can
/// create that path first, or point a link at it, in the world-writable temp directory.
/// Removed, with the socket, when the hand-over ends either way.
struct Private {
    dir: PathBuf,
    socket: PathBuf,
}

impl Private {
    fn create() -> Result<Private, String> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = std::env::temp_dir().join(format!("vipgate-upgrade-{}", random_hex(16)?));
        // `create`, not `create_all`: an existing directory of that name is not ours.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("upgrade: cannot create the private directory {}: {e}", dir.display()))?;
        let socket = dir.join("listeners.sock");
        Ok(Private { dir, socket })
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `bytes` random bytes from the kernel, as hex.
fn random_hex(bytes: usize) -> Result<String, String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| format!("upgrade: cannot read /dev/urandom for the hand-over socket's name: {e}"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The user and process on the other end of a unix socket, as the kernel recorded them at
/// connect(2) (SO_PEERCRED): a peer cannot claim another's.
fn peer_credentials(stream: &UnixStream) -> io::Result<rustix::net::UCred> {
    Ok(rustix::net::sockopt::socket_peercred(stream)?)
}

/// The user this process runs as, which the new process (started by us) runs as too.
fn own_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn converse(
    socket: UnixListener,
    child: &mut Child,
    listeners: Vec<(SocketAddr, OwnedFd)>,
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
    let uid = own_uid();
    let stream = loop {
        match socket.accept() {
            Ok((s, _)) => match peer_credentials(&s) {
                Ok(peer) if peer.uid.as_raw() == uid => break s,
                Ok(peer) => warn!(
                    peer_uid = peer.uid.as_raw(),
                    peer_pid = peer.pid.as_raw_nonzero().get(),
                    uid,
                    "upgrade: refused a connection to the hand-over socket from another user; waiting for the new process"
                ),
                Err(e) => warn!(
                    error = %e,
                    "upgrade: refused a connection to the hand-over socket whose user is unknown; waiting for the new process"
                ),
            },
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
    if let Err(e) = send_listeners(&stream, names.as_bytes(), &listeners) {
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
    // The descriptors come owned: none can leak, whatever fails below.
    let (mut n, fds) =
        receive_listeners(&stream, &mut bytes).map_err(|e| format!("upgrade: receiving listeners: {e}"))?;
    // The names may arrive in more than one read; the descriptors came with the first.
    while !bytes[..n].ends_with(b"\n\n") && n < bytes.len() {
        let more = (&stream).read(&mut bytes[n..]).map_err(|e| format!("upgrade: receiving listeners: {e}"))?;
        if more == 0 {
            break;
        }
        n += more;
    }
    let owned: Vec<std::net::TcpListener> = fds.into_iter().map(std::net::TcpListener::from).collect();
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

/// Send `names` with the listening sockets attached (SCM_RIGHTS): the kernel installs
/// copies of them in the receiving process.
fn send_listeners(stream: &UnixStream, names: &[u8], listeners: &[(SocketAddr, OwnedFd)]) -> io::Result<()> {
    use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let fds: Vec<std::os::fd::BorrowedFd<'_>> = listeners.iter().map(|(_, fd)| fd.as_fd()).collect();
    let mut space = vec![std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("too many descriptors for one message"));
    }
    let sent = sendmsg(stream, &[io::IoSlice::new(names)], &mut control, SendFlags::empty())?;
    // The descriptors went with the first byte; the rest of the names follow as bytes.
    (&*stream).write_all(&names[sent..])
}

/// Receive the first part of the names and the listening sockets sent with them, owned.
fn receive_listeners(stream: &UnixStream, bytes: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut space = vec![std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS + 3))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = recvmsg(stream, &mut [io::IoSliceMut::new(bytes)], &mut control, RecvFlags::CMSG_CLOEXEC)?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if got.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
        return Err(io::Error::other("more descriptors than one hand-over carries"));
    }
    Ok((got.bytes, fds))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hand_over_place_is_random_private_and_removed() {
        use std::os::unix::fs::PermissionsExt;
        let (a, b) = (Private::create().unwrap(), Private::create().unwrap());
        assert_ne!(a.dir, b.dir);
        for p in [&a, &b] {
            let name = p.dir.file_name().unwrap().to_string_lossy().into_owned();
            let random = name.strip_prefix("vipgate-upgrade-").unwrap();
            assert!(random.len() == 32 && random.bytes().all(|c| c.is_ascii_hexdigit()), "{name}");
            let mode = std::fs::metadata(&p.dir).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode, 0o700, "{}", p.dir.display());
            assert_eq!(p.socket.parent(), Some(p.dir.as_path()));
        }
        let dir = a.dir.clone();
        let _listener = UnixListener::bind(&a.socket).unwrap();
        drop(a);
        assert!(!dir.exists(), "{} left behind", dir.display());
    }

    #[test]
    fn the_peer_of_a_socket_pair_is_this_process() {
        let (left, _right) = UnixStream::pair().unwrap();
        let peer = peer_credentials(&left).unwrap();
        assert_eq!((peer.uid.as_raw(), peer.pid.as_raw_nonzero().get()), (own_uid(), std::process::id() as i32));
    }
}
