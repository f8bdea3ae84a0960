//! systemd's notify protocol, for `Type=notify` units: READY=1 once the listeners are
//! open and the first health checks are in, RELOADING=1 while a reload runs, STOPPING=1
//! when draining starts, MAINPID when an upgraded process takes over. Without
//! NOTIFY_SOCKET (not under systemd) every call does nothing.
//!
//! The protocol is one datagram of `KEY=VALUE` lines to the unix socket systemd names in
//! NOTIFY_SOCKET (a path, or `@name` for the abstract namespace).

use std::io;
use std::os::unix::net::UnixDatagram;

use tracing::debug;

/// Send `state` (newline-separated `KEY=VALUE` lines) to systemd, if it is listening.
pub fn notify(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else { return };
    if let Err(e) = send(&target, state) {
        // systemd gone or misconfigured: the balancer itself is unaffected.
        debug!(error = %e, "sd_notify failed");
    }
}

fn send(target: &std::ffi::OsStr, state: &str) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let sock = UnixDatagram::unbound()?;
    let bytes = target.as_bytes();
    match bytes.first() {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        Some(b'@') => {
            #[cfg(target_os = "android")]
            use std::os::android::net::SocketAddrExt;
            #[cfg(target_os = "linux")]
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(&bytes[1..])?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        }
        Some(b'/') => {
            sock.send_to(state.as_bytes(), target)?;
        }
        _ => return Err(io::Error::new(io::ErrorKind::InvalidInput, "NOTIFY_SOCKET is neither a path nor @name")),
    }
    Ok(())
}

/// READY=1, with a status line systemctl shows.
pub fn ready(status: &str) {
    notify(&format!("READY=1\nSTATUS={status}"));
}

/// RELOADING=1 with the monotonic timestamp systemd (≥ 253) wants alongside it.
pub fn reloading() {
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
}

pub fn stopping() {
    notify("STOPPING=1");
}

/// After an upgrade the new process is the one systemd must follow (needs
/// `NotifyAccess=all` in the unit, since the sender is not the old main PID).
pub fn main_pid_ready(status: &str) {
    notify(&format!("MAINPID={}\nREADY=1\nSTATUS={status}", std::process::id()));
}

fn monotonic_usec() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}
