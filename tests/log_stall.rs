//! A stderr nobody reads must not stop traffic. vipgate's log goes to a pipe the test
//! holds open and never reads until the end: the pipe's 64 KiB fill after a few hundred
//! connection lines, and a worker that wrote its own lines would block there, with
//! `workers = 1` taking every connection with it. The log thread (`log_batch`) blocks
//! instead, and the lines wait in its batch (bounded; past the bound they are dropped
//! and counted, see the unit test) until the pipe is read. The process still stops
//! cleanly on SIGTERM.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use tokio::time::Instant;

/// Enough connections for several times the pipe's capacity in log lines.
const CONNECTIONS: usize = 3000;

fn round_trip(bind: SocketAddr, i: usize) -> Result<(), String> {
    match echo_round_trip(bind, i as u64, Duration::from_secs(5))? {
        name if name == "direct" => Ok(()),
        name => Err(format!("server said {name:?}")),
    }
}

#[test]
#[ignore = "a known fault: fails until log_batch is the default writer (it stalls after ~366 connections); \
            that waits for tests that read the log to poll it"]
fn a_full_stderr_pipe_stalls_no_connection_with_one_worker() {
    let backend = Backend::echo_any("direct");
    let bind = free_addr();
    let config = Removed(write_config(
        "log-stall",
        &format!(
            "[global]\nworkers = 1\n\n[services.echo]\nbind = \"{bind}\"\n\n\
             [[services.echo.servers]]\nname = \"direct\"\naddress = \"{}\"\n",
            backend.addr
        ),
    ));
    let mut child = Command::new(BIN)
        .arg("run")
        .arg("--config")
        .arg(&config.0)
        .env_remove("RUST_LOG")
        .env("VIPGATE_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vipgate run");
    let mut stderr = child.stderr.take().expect("the stderr pipe");

    let started = Instant::now();
    let up = eventually(WAIT, || round_trip(bind, 0).ok());
    let mut failed = None;
    let mut done = 0;
    if up.is_some() {
        for i in 1..=CONNECTIONS {
            if started.elapsed() > Duration::from_secs(120) {
                break;
            }
            if let Err(e) = round_trip(bind, i) {
                failed = Some(format!("connection {i}: {e}"));
                break;
            }
            done = i;
        }
    }
    let took = started.elapsed();

    // Now read the pipe: what was kept, then the count of what was dropped.
    // SAFETY: fcntl on a descriptor this test owns; it only sets O_NONBLOCK.
    unsafe {
        let fd = stderr.as_raw_fd();
        libc::fcntl(fd, libc::F_SETFL, libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK);
    }
    let mut log = Vec::new();
    let mut buf = [0u8; 64 << 10];
    // Every connection's line is kept in the batch (far below its bound) and arrives.
    let lines_of = |log: &[u8]| String::from_utf8_lossy(log).lines().filter(|l| l.contains("end=")).count();
    let drained = poll(Duration::from_secs(15), Duration::from_millis(10), || {
        while let Ok(n @ 1..) = stderr.read(&mut buf) {
            log.extend_from_slice(&buf[..n]);
        }
        (lines_of(&log) > done).then_some(())
    });
    let text = String::from_utf8_lossy(&log).into_owned();

    // Stopping with the pipe read again must still work (and be quick).
    // SAFETY: kill on the pid of the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let stop = Instant::now();
    let mut status = None;
    while stop.elapsed() < Duration::from_secs(20) {
        let _ = stderr.read(&mut buf);
        if let Ok(Some(st)) = child.try_wait() {
            status = Some(st);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if status.is_none() {
        let _ = child.kill();
    }
    let _ = child.wait();

    println!(
        "{done} of {CONNECTIONS} connections in {took:?} with stderr unread; {} bytes of log read after, \
         {} lines; stopped: {status:?}",
        log.len(),
        text.lines().count()
    );
    assert!(up.is_some(), "vipgate never served on {bind}:\n{text}");
    assert!(
        failed.is_none(),
        "{} after {done} connections (stderr unread):\n{}",
        failed.unwrap_or_default(),
        tail(&text)
    );
    assert_eq!(done, CONNECTIONS, "only {done} connections within the time bound");
    assert!(
        drained.is_some(),
        "{} connection lines once the pipe was read, for {} connections:\n{}",
        lines_of(&log),
        done + 1,
        tail(&text)
    );
    assert!(status.is_some_and(|s| s.success()), "vipgate did not stop cleanly on SIGTERM: {status:?}");
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
