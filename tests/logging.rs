//! One log line per connection on stderr, with service, server, client, byte counts and
//! how the connection ended.

mod common;

use std::io::Write;
use std::net::Shutdown;
use std::time::Duration;

use common::*;

/// The connection log line (the one with `end=`) for the client at local port `port`.
fn line_for(v: &Vipgate, port: u16) -> String {
    v.wait_client_line(port, |l| l.contains("end="))
}

#[test]
fn client_close_line_has_all_fields() {
    let svc = echo_service("logsvc", "", "", &[("db1", "")]);
    let v = &svc.vipgate;
    let (mut s, _) = hold(svc.bind);
    let port = s.local_addr().unwrap().port();
    s.write_all(b"hello\n").unwrap();
    assert_eq!(read_line(&mut s).unwrap(), "hello");
    s.shutdown(Shutdown::Write).unwrap();
    let _ = wait_closed(&mut s, Duration::from_secs(10));
    drop(s);

    let line = line_for(v, port);
    assert_eq!(field(&line, "service").as_deref(), Some("logsvc"), "{line}");
    assert_eq!(field(&line, "server").as_deref(), Some("db1"), "{line}");
    assert_eq!(field(&line, "end").as_deref(), Some("client_close"), "{line}");
    let bin: u64 = field(&line, "bytes_in").and_then(|x| x.parse().ok()).unwrap_or_else(|| panic!("bytes_in: {line}"));
    let bout: u64 =
        field(&line, "bytes_out").and_then(|x| x.parse().ok()).unwrap_or_else(|| panic!("bytes_out: {line}"));
    // Client sent "hello\n" (6); server sent "db1\n" + "hello\n" (10).
    let mut pair = [bin, bout];
    pair.sort();
    assert_eq!(pair, [6, 10], "byte counts in the log line: {line}");
}

#[test]
fn server_close_is_logged() {
    let backend = Backend::with_handler("closer", "127.0.0.1:0".parse().unwrap(), |mut s| {
        let _ = s.write_all(b"closer\n");
        let _ = s.shutdown(Shutdown::Both);
    });
    let (v, bind) = start_service("", "logsvc", "", &[("closer", backend.addr, "")]);
    let mut s = connect(bind);
    let port = s.local_addr().unwrap().port();
    assert_eq!(read_line(&mut s).unwrap(), "closer");
    let _ = wait_closed(&mut s, Duration::from_secs(10));
    drop(s);
    let line = line_for(&v, port);
    assert_eq!(field(&line, "server").as_deref(), Some("closer"), "{line}");
    assert_eq!(field(&line, "end").as_deref(), Some("server_close"), "{line}");
}

#[test]
fn connect_failure_is_logged() {
    let dead = free_addr();
    let (v, bind) = start_service("", "deadsvc", "retries = 0", &[("gone", dead, "")]);
    let mut s = connect(bind);
    let port = s.local_addr().unwrap().port();
    let _ = wait_closed(&mut s, Duration::from_secs(10));
    let line = line_for(&v, port);
    assert_eq!(field(&line, "service").as_deref(), Some("deadsvc"), "{line}");
    assert_eq!(field(&line, "end").as_deref(), Some("connect_failure"), "{line}");
    assert!(field(&line, "server").is_some() && line.contains("bytes_in=") && line.contains("bytes_out="), "{line}");
}

#[test]
fn log_lines_have_no_terminal_escapes() {
    let svc = echo_service("plain", "", "", &[("db1", "")]);
    let v = &svc.vipgate;
    let (s, _) = hold(svc.bind);
    let port = s.local_addr().unwrap().port();
    drop(s);
    let line = line_for(v, port);
    assert!(!v.log().contains('\u{1b}'), "stderr is a file, yet the log has ANSI escapes: {line:?}");
}
