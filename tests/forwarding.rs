//! Bytes through the proxy: a large transfer both ways (splice and copy paths), TCP
//! half-close, and IPv6.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::*;

const BIG: u64 = 64 * 1024 * 1024;

/// Every one-server `fwd` service here balances roundrobin.
const BALANCE: &str = "roundrobin";

fn one_server_config(bind: SocketAddr, backend: SocketAddr, global_extra: &str) -> String {
    service_toml(global_extra, "fwd", bind, &balance_keys(BALANCE, ""), &[("b1", backend, "")])
}

/// Vipgate service `fwd` (roundrobin, `global_extra` in `[global]`) with `backend` as its
/// one server `b1`, started on a fresh port.
fn start_one_server(backend: SocketAddr, global_extra: &str) -> (Vipgate, SocketAddr) {
    start_service(global_extra, "fwd", &balance_keys(BALANCE, ""), &[("b1", backend, "")])
}

/// Echo backend `b1` behind service `fwd` (see `start_one_server`).
fn one_echo_server(global_extra: &str) -> EchoService {
    echo_service_in(global_extra, "fwd", BALANCE, "", &[("b1", "")])
}

/// Send BIG pseudo-random bytes through vipgate to an echo backend and read them back.
/// The sender hashes what it sent, the receiver hashes what it got back, and the backend
/// counts what it received.
fn big_transfer(splice: bool) {
    let svc = one_echo_server(&format!("splice = {splice}"));

    let mut s = connect(svc.bind);
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    assert_eq!(read_line(&mut s).unwrap(), "b1");

    let mut w = s.try_clone().unwrap();
    let sender = thread::spawn(move || send_pattern(&mut w, 0x5eed_0001, 64 * 1024, BIG));

    let mut got = StreamHash::default();
    if let Err(e) = hash_to_eof(&mut s, &mut got, 64 * 1024, BIG) {
        panic!("read after {} bytes: {e}", got.len);
    }
    let sent = sender.join().expect("sender thread");
    let received = got.finish();
    assert_eq!(svc.backends[0].received.load(std::sync::atomic::Ordering::SeqCst), BIG, "backend byte count");
    assert_eq!(received.1, BIG, "bytes echoed back");
    assert_eq!(received, sent, "hash of echoed stream differs from what was sent");
}

#[test]
fn transfer_64mib_each_way_splice() {
    big_transfer(true);
}

#[test]
fn transfer_64mib_each_way_copy() {
    big_transfer(false);
}

#[test]
fn small_exchange_round_trips() {
    let svc = one_echo_server("");
    let (mut s, name) = hold(svc.bind);
    assert_eq!(name, "b1");
    for i in 0..20 {
        let msg = format!("message {i}\n");
        s.write_all(msg.as_bytes()).unwrap();
        assert_eq!(read_line(&mut s).unwrap(), msg.trim_end());
    }
}

#[test]
fn half_close_reaches_backend_and_reply_flows_back() {
    half_close(true);
}

#[test]
fn half_close_reaches_backend_and_reply_flows_back_copy() {
    half_close(false);
}

fn half_close(splice: bool) {
    // Backend: read to EOF, report what it read, then reply "bye" and close.
    let seen: Slot<Vec<u8>> = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let backend = Backend::with_handler("hc", "127.0.0.1:0".parse().unwrap(), move |mut s| {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => return, // timed out or reset: no EOF seen, no reply
            }
        }
        let nonempty = !got.is_empty();
        seen2.lock().unwrap().push(got);
        if nonempty {
            let _ = s.write_all(b"bye");
        }
    });
    let (_v, bind) = start_one_server(backend.addr, &format!("splice = {splice}"));

    let mut c = connect(bind);
    c.write_all(b"hello").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut reply = Vec::new();
    c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    c.read_to_end(&mut reply).expect("read reply after half-close");
    assert_eq!(String::from_utf8_lossy(&reply), "bye", "client should get the full reply after its FIN");
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter().any(|g| g.as_slice() == b"hello"),
        "backend should have read exactly \"hello\" then EOF; saw {:?}",
        seen.iter().map(|g| String::from_utf8_lossy(g).into_owned()).collect::<Vec<_>>()
    );
}

#[test]
fn server_half_close_keeps_client_to_server_direction() {
    // Backend: send "early\n", shut its write side, then read the client's data to EOF and
    // report it. The client must still be able to send after it saw the server's FIN.
    let seen: Slot<Vec<u8>> = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let backend = Backend::with_handler("hc2", "127.0.0.1:0".parse().unwrap(), move |mut s| {
        let _ = s.write_all(b"early\n");
        let _ = s.shutdown(Shutdown::Write);
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut got = Vec::new();
        if s.read_to_end(&mut got).is_ok() {
            seen2.lock().unwrap().push(got);
        }
    });
    let (_v, bind) = start_one_server(backend.addr, "");

    let mut c = connect(bind);
    let mut all = Vec::new();
    c.read_to_end(&mut all).expect("read until server FIN");
    assert_eq!(all, b"early\n");
    c.write_all(b"late data").expect("client writes after server FIN");
    c.shutdown(Shutdown::Write).unwrap();
    let got = eventually(WAIT, || seen.lock().unwrap().iter().find(|g| g.as_slice() == b"late data").cloned());
    assert!(
        got.is_some(),
        "backend never got the client's data sent after the server's FIN: {:?}",
        seen.lock().unwrap()
    );
}

#[test]
fn ipv6_bind_and_backend() {
    let (Some(bind), Some(back)) = (free_addr_v6(), free_addr_v6()) else {
        eprintln!("skipping: ::1 is not available");
        return;
    };
    let backend = Backend::echo("six", back);
    let _v = Vipgate::start(&one_server_config(bind, backend.addr, ""), bind);
    let (mut s, name) = hold(bind);
    assert_eq!(name, "six");
    assert!(s.local_addr().unwrap().is_ipv6());
    s.write_all(b"over v6\n").unwrap();
    assert_eq!(read_line(&mut s).unwrap(), "over v6");
}

#[test]
fn workers_env_override_still_forwards() {
    let backend = Backend::echo_any("b1");
    let bind = free_addr();
    let mut v = Vipgate::spawn_with_env(&one_server_config(bind, backend.addr, ""), &[("VIPGATE_WORKERS", "1")]);
    v.wait_ready(bind);
    for _ in 0..3 {
        assert_eq!(which_server(bind), "b1");
    }
}

#[test]
fn one_service_on_several_binds() {
    let backend = Backend::echo_any("multi");
    let b4 = free_addr();
    let b6 = free_addr_v6();
    let binds = match b6 {
        Some(b6) => format!("[\"{}\", \"{}\"]", a(b4), a(b6)),
        None => format!("[\"{}\"]", a(b4)),
    };
    let cfg =
        format!("{}\n[services.fwd]\nbind = {binds}\n{}", global(""), servers("fwd", &[("multi", backend.addr, "")]));
    let mut v = Vipgate::start(&cfg, b4);
    assert_eq!(which_server(b4), "multi");
    if let Some(b6) = b6 {
        v.wait_ready(b6);
        assert_eq!(which_server(b6), "multi");
    }
}

/// The harness's own hash must notice a flipped byte and not depend on read sizes.
#[test]
fn stream_hash_sanity() {
    let mut data = vec![0u8; 4096];
    Pattern::new(7).fill(&mut data);
    let mut whole = StreamHash::default();
    whole.update(&data);
    let mut pieces = StreamHash::default();
    for c in data.chunks(13) {
        pieces.update(c);
    }
    assert_eq!(whole.finish(), pieces.finish());
    data[1000] ^= 0x40;
    let mut flipped = StreamHash::default();
    flipped.update(&data);
    assert_ne!(whole.finish(), flipped.finish());
    let mut short = StreamHash::default();
    short.update(&data[..4095]);
    assert_ne!(flipped.finish(), short.finish());
}

#[test]
fn two_services_route_independently() {
    let (x, y) = (Backend::echo_any("x1"), Backend::echo_any("y1"));
    let (bx, by) = (free_addr(), free_addr());
    let cfg = format!(
        "{}\n[services.xs]\nbind = \"{}\"\n{}\n[services.ys]\nbind = \"{}\"\n{}",
        global(""),
        a(bx),
        servers("xs", &[("x1", x.addr, "")]),
        a(by),
        servers("ys", &[("y1", y.addr, "")])
    );
    let mut v = Vipgate::start(&cfg, bx);
    v.wait_ready(by);
    for _ in 0..3 {
        assert_eq!(which_server(bx), "x1");
        assert_eq!(which_server(by), "y1");
    }
}

#[test]
fn many_concurrent_connections() {
    const CONNS: usize = 40;
    const EACH: u64 = 256 * 1024;
    let svc = one_echo_server("");
    let bind = svc.bind;
    let handles: Vec<_> = (0..CONNS)
        .map(|i| {
            thread::spawn(move || {
                let (mut s, name) = hold(bind);
                assert_eq!(name, "b1");
                let mut w = s.try_clone().unwrap();
                let writer = thread::spawn(move || send_pattern(&mut w, 1000 + i as u64, 16 * 1024, EACH));
                let mut got = StreamHash::default();
                if let Err(e) = hash_to_eof(&mut s, &mut got, 16 * 1024, u64::MAX) {
                    panic!("connection {i}: read after {} bytes: {e}", got.len);
                }
                assert_eq!(got.finish(), writer.join().unwrap(), "connection {i}: echoed data differs");
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a concurrent connection failed");
    }
}
