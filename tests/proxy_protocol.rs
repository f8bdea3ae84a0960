//! The PROXY protocol against a real HAProxy (Debian's `haproxy` package), both
//! directions, both versions, tcp and http mode:
//!
//! - HAProxy in front (`server ... send-proxy` / `send-proxy-v2`) and vipgate with
//!   `accept_proxy`: the real client drives vipgate's log line, `X-Forwarded-For` and
//!   `source` hashing, though the TCP peer is always HAProxy.
//! - vipgate in front (`send_proxy`) and HAProxy behind it (`bind ... accept-proxy`, mode
//!   http, answering with `%[src]`): HAProxy accepts our header and reads the address.
//! - Both at once (a relay), mismatches (no header where one is required, a header where
//!   none is expected), and IPv6 clients.
//!
//! Every HAProxy runs in the foreground as a child (`haproxy -db -f CFG`) on ephemeral
//! 127.0.0.1 / ::1 ports and is killed by PID on drop. Without `haproxy` installed the
//! tests print "skipped: ..." and pass, unless `VIPGATE_REQUIRE_HAPROXY=1` (CI).
//!
//! Written against HAProxy 2.6 (Debian 12); `http-request return ... lf-string` needs 2.2+.

mod common;
#[path = "support/haproxy.rs"]
mod haproxy;
#[path = "support/http_backend.rs"]
mod http_backend;
#[path = "support/http_client.rs"]
mod http_client;

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use common::*;
use haproxy::{haproxy_bin, Haproxy};
use http_backend::HttpBackend;
use http_client::{send, Resp};
use tokio::time::Instant;

/// HAProxy on `sections` (`listen` blocks) after a small global/defaults block.
fn start_haproxy(bin: &PathBuf, sections: &str, listening: &[SocketAddr]) -> Haproxy {
    let text = format!(
        "global\n    nbthread 1\n    maxconn 1000\n    log stderr format raw local0 info\n\
         defaults\n    log global\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\n\
         {sections}"
    );
    Haproxy::start_cfg(bin, &text, listening)
}

/// A tcp-mode proxy from `bind` to `server`; `opts` is `send-proxy`, `send-proxy-v2` or "".
fn hap_tcp(name: &str, bind: SocketAddr, server: SocketAddr, opts: &str) -> String {
    format!("listen {name}\n    mode tcp\n    bind {bind}\n    server s {server} {opts}\n\n")
}

/// An http-mode HAProxy that requires a PROXY header (v1 or v2) and answers every request
/// with the addresses it read from it.
fn hap_reporter(name: &str, bind: SocketAddr) -> String {
    format!(
        "listen {name}\n    mode http\n    bind {bind} accept-proxy\n    \
         http-request return status 200 content-type text/plain \
         lf-string \"src=%[src] sport=%[src_port] dst=%[dst] dport=%[dst_port]\"\n\n"
    )
}

/// What `hap_reporter` answers for a header naming `src` -> `dst`.
fn report(src: SocketAddr, dst: SocketAddr) -> String {
    format!("src={} sport={} dst={} dport={}", src.ip(), src.port(), dst.ip(), dst.port())
}

// ---------------------------------------------------------------------------------------
// vipgate, clients
// ---------------------------------------------------------------------------------------

/// One `[services.NAME]` block with its servers, to put several in one config.
fn svc(name: &str, bind: SocketAddr, keys: &str, list: &[(&str, SocketAddr, &str)]) -> String {
    format!("\n[services.{name}]\nbind = \"{}\"\n{keys}\n{}", a(bind), servers(name, list))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Through to an echo backend from `src`: read its name, echo "ping\n" exactly (no stray
/// PROXY header bytes in front), half-close, and require a clean EOF with nothing more.
/// Returns the client's own address and the server's name.
fn echo_through(src: IpAddr, addr: SocketAddr) -> (SocketAddr, String) {
    let mut s = connect_from(src, addr).unwrap_or_else(|e| panic!("connect {addr} from {src}: {e}"));
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let local = s.local_addr().unwrap();
    let name = read_line(&mut s).unwrap_or_else(|e| panic!("read the server name via {addr}: {e}"));
    assert!(!name.is_empty(), "connection from {local} via {addr} closed before a server name");
    s.write_all(b"ping\n").unwrap();
    let mut echo = [0u8; 5];
    s.read_exact(&mut echo).unwrap_or_else(|e| panic!("echo via {addr}: {e}"));
    assert_eq!(&echo, b"ping\n", "the echo came back altered");
    s.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap_or_else(|e| panic!("EOF after the echo via {addr}: {e}"));
    assert!(rest.is_empty(), "unexpected bytes after the echo: {:?}", String::from_utf8_lossy(&rest));
    (local, name)
}

/// The name of the server a connection from `src` to `addr` lands on.
fn server_from(src: IpAddr, addr: SocketAddr) -> String {
    which_server_from(src, addr).unwrap_or_else(|| panic!("no server name via {addr} from {src}"))
}

/// A vipgate log line with message `msg` whose `client=` is exactly `client`.
fn client_line(v: &Vipgate, client: SocketAddr, msg: &str) -> String {
    client_line_with(v, client, msg, "")
}

/// `client_line` for a line that also contains `also`.
fn client_line_with(v: &Vipgate, client: SocketAddr, msg: &str, also: &str) -> String {
    let want = client.to_string();
    v.wait_log_line(WAIT, |l| {
        l.contains(msg) && l.contains(also) && field(l, "client").as_deref() == Some(want.as_str())
    })
    .unwrap_or_else(|| panic!("no \"{msg}\" line with client={want} and {also:?}:\n{}", v.log()))
}

/// `GET /` from `src` to `addr` on a new connection (closed after the response); returns
/// the client's address and the response.
fn get_from(src: IpAddr, addr: SocketAddr) -> (SocketAddr, Resp) {
    let mut s = connect_from(src, addr).unwrap_or_else(|e| panic!("connect {addr} from {src}: {e}"));
    let local = s.local_addr().unwrap();
    let r = send(&mut s, "GET / HTTP/1.1\r\nHost: test.example\r\nConnection: close\r\n\r\n")
        .unwrap_or_else(|e| panic!("GET via {addr} from {src}: {e}"));
    (local, r)
}

// ---------------------------------------------------------------------------------------
// HAProxy in front, vipgate accepts
// ---------------------------------------------------------------------------------------

/// HAProxy (tcp, `send-proxy` and `send-proxy-v2`) -> vipgate tcp `accept_proxy =
/// ["127.0.0.1"]` -> echo backend: vipgate logs the client HAProxy saw, and the server
/// gets the client's bytes only.
#[test]
fn haproxy_in_front_names_the_real_client_in_tcp_mode() {
    let Some(bin) = haproxy_bin() else { return };
    let started = Instant::now();
    let backend = Backend::echo_any("b1");
    let bind = free_addr();
    let cfg = service_toml("", "db", bind, "accept_proxy = [\"127.0.0.1\"]\n", &[("b1", backend.addr, "")]);
    let v = Vipgate::start_accepting(&cfg, bind);
    let (f1, f2) = (free_addr(), free_addr());
    let sections = hap_tcp("v1", f1, bind, "send-proxy") + &hap_tcp("v2", f2, bind, "send-proxy-v2");
    let _h = start_haproxy(&bin, &sections, &[f1, f2]);

    for (version, front) in [("v1", f1), ("v2", f2)] {
        let (client, server) = echo_through(ip("127.0.0.7"), front);
        assert_eq!(server, "b1");
        let line = client_line(&v, client, "connection closed");
        assert_eq!(field(&line, "server").as_deref(), Some("b1"), "{version}: {line}");
        assert_eq!(field(&line, "bytes_in").as_deref(), Some("5"), "{version}: header counted as payload: {line}");
        assert_eq!(field(&line, "bytes_out").as_deref(), Some("8"), "{version}: {line}");
        assert!(field(&line, "error").is_none(), "{version}: {line}");
    }
    assert_eq!(backend.received.load(SeqCst), 10, "the server got more than the two pings: a PROXY header leaked");
    println!("tcp mode behind HAProxy, v1 and v2: {:?}", started.elapsed());
}

/// HAProxy (tcp, v1 and v2) -> vipgate http `accept_proxy = true` -> HTTP server: the
/// server sees the real client in X-Forwarded-For, on every request of a kept-alive
/// connection, and the access log names it.
#[test]
fn haproxy_in_front_names_the_real_client_in_http_mode() {
    let Some(bin) = haproxy_bin() else { return };
    let started = Instant::now();
    let backend = HttpBackend::start("b1");
    let bind = free_addr();
    let keys = "mode = \"http\"\naccept_proxy = true\n";
    let v = Vipgate::start_accepting(&service_toml("", "api", bind, keys, &[("b1", backend.addr, "")]), bind);
    let (f1, f2) = (free_addr(), free_addr());
    let sections = hap_tcp("v1", f1, bind, "send-proxy") + &hap_tcp("v2", f2, bind, "send-proxy-v2");
    let _h = start_haproxy(&bin, &sections, &[f1, f2]);

    for (version, front) in [("v2", f2), ("v1", f1)] {
        let mut s = connect_from(ip("127.0.0.7"), front).unwrap_or_else(|e| panic!("connect {front}: {e}"));
        let client = s.local_addr().unwrap();
        for i in 0..2 {
            let close = if i == 1 { "Connection: close\r\n" } else { "" };
            let r = send(&mut s, &format!("GET /{version}/{i} HTTP/1.1\r\nHost: test.example\r\n{close}\r\n"))
                .unwrap_or_else(|e| panic!("{version} request {i}: {e}\n{}", v.log()));
            assert_eq!(r.status, 200, "{version} request {i}: {}\n{}", r.text(), v.log());
            assert_eq!(r.seen_header("x-forwarded-for"), vec!["127.0.0.7"], "{version} request {i}:\n{}", r.text());
            assert_eq!(r.field("path"), Some(format!("/{version}/{i}")), "{version}: PROXY bytes in the request?");
        }
        for i in 0..2 {
            let line = client_line_with(&v, client, "request", &format!(" path=/{version}/{i} "));
            assert_eq!(field(&line, "status").as_deref(), Some("200"), "{version}: {line}");
            assert_eq!(field(&line, "server").as_deref(), Some("b1"), "{version}: {line}");
        }
    }
    assert_eq!(backend.requests(), 4);
    println!("http mode behind HAProxy, v1 and v2: {:?}", started.elapsed());
}

/// `balance = "source"` behind HAProxy hashes the client from the header: each source IP
/// lands where it lands when it connects to vipgate directly, 127.0.0.7 always on the
/// same server, and 24 source IPs spread over several servers. Control: without a header
/// every connection comes from HAProxy's one address and lands on one server.
#[test]
fn source_hashing_uses_the_client_from_the_header() {
    let Some(bin) = haproxy_bin() else { return };
    let started = Instant::now();
    let backends: Vec<Backend> = ["s1", "s2", "s3"].iter().map(|n| Backend::echo_any(n)).collect();
    let list: Vec<(&str, SocketAddr, &str)> = backends.iter().map(|b| (b.name.as_str(), b.addr, "")).collect();
    let (bind, plain) = (free_addr(), free_addr());
    let cfg = global("")
        + &svc("pp", bind, "balance = \"source\"\naccept_proxy = [\"127.0.0.1\"]\n", &list)
        + &svc("plain", plain, "balance = \"source\"\n", &list);
    let v = Vipgate::start_accepting(&cfg, bind);
    let (f1, f2, f0) = (free_addr(), free_addr(), free_addr());
    let sections = hap_tcp("v1", f1, bind, "send-proxy")
        + &hap_tcp("v2", f2, bind, "send-proxy-v2")
        + &hap_tcp("plain", f0, plain, "");
    let _h = start_haproxy(&bin, &sections, &[f1, f2, f0]);

    let first = server_from(ip("127.0.0.7"), f1);
    for front in [f1, f2, f1, f2, f1, f2] {
        assert_eq!(server_from(ip("127.0.0.7"), front), first, "127.0.0.7 moved between servers:\n{}", v.log());
    }
    let mut via_header = Vec::new();
    for last in 7..=30u8 {
        let src = IpAddr::from([127, 0, 0, last]);
        // 127.0.0.x is not in accept_proxy's list: a direct connection is hashed by its peer.
        let direct = server_from(src, bind);
        for (version, front) in [("v1", f1), ("v2", f2)] {
            let got = server_from(src, front);
            assert_eq!(got, direct, "{src} via HAProxy {version} hashed differently from a direct connection");
            via_header.push(got);
        }
    }
    let spread = tally(&via_header);
    assert!(spread.len() > 1, "24 source IPs behind HAProxy all landed on one server: {spread:?}");
    let control: Vec<String> = (7..=30u8).map(|last| server_from(IpAddr::from([127, 0, 0, last]), f0)).collect();
    let control = tally(&control);
    assert_eq!(control.len(), 1, "without a header every client is HAProxy, one hash: {control:?}");
    println!("source hashing: via header {spread:?}, without header {control:?}, {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------
// vipgate in front, HAProxy accepts
// ---------------------------------------------------------------------------------------

/// vipgate `send_proxy = "v1"` / `"v2"` (tcp mode) and `"v2"` / `"v1"` (http mode) ->
/// HAProxy `accept-proxy`: HAProxy takes our header and reports the client's address and
/// port and the address it connected to. In http mode, server connections carry one
/// client's header, so a second client must not reuse the first one's connection.
#[test]
fn haproxy_behind_accepts_what_vipgate_sends() {
    let Some(bin) = haproxy_bin() else { return };
    let started = Instant::now();
    let reporter = free_addr();
    let _h = start_haproxy(&bin, &hap_reporter("reporter", reporter), &[reporter]);
    let hap = [("hap", reporter, "")];
    let (tv1, tv2, hv2, hv1) = (free_addr(), free_addr(), free_addr(), free_addr());
    let cfg = global("")
        + &svc("tv1", tv1, "send_proxy = \"v1\"\n", &hap)
        + &svc("tv2", tv2, "send_proxy = \"v2\"\n", &hap)
        + &svc("hv2", hv2, "mode = \"http\"\nsend_proxy = \"v2\"\n", &hap)
        + &svc("hv1", hv1, "mode = \"http\"\nsend_proxy = \"v1\"\n", &hap);
    let v = Vipgate::start_accepting(&cfg, tv1);

    for (what, bind) in [("tcp v1", tv1), ("tcp v2", tv2), ("http v2", hv2), ("http v1", hv1)] {
        let (client, r) = get_from(ip("127.0.0.8"), bind);
        assert_eq!(r.status, 200, "{what}: {}\n{}", r.text(), v.log());
        assert_eq!(r.text(), report(client, bind), "{what}: HAProxy read another address from our header");
    }

    // http mode, keep-alive: the same client twice on one connection, then another client.
    for bind in [hv2, hv1] {
        let mut s = connect_from(ip("127.0.0.8"), bind).unwrap();
        let a = s.local_addr().unwrap();
        for i in 0..2 {
            let r = send(&mut s, "GET / HTTP/1.1\r\nHost: test.example\r\n\r\n").expect("keep-alive response");
            assert_eq!(r.text(), report(a, bind), "request {i} of a kept-alive connection");
        }
        let (b, r) = get_from(ip("127.0.0.9"), bind);
        assert_eq!(r.text(), report(b, bind), "a second client got a server connection opened for the first");
        drop(s);
    }
    println!("HAProxy accepts vipgate's v1 and v2 headers (tcp, http): {:?}", started.elapsed());
}

/// A relay: client -> HAProxy (send-proxy-v2) -> vipgate (`accept_proxy` and
/// `send_proxy`) -> HAProxy (accept-proxy): the last HAProxy sees the first client, in tcp
/// and http mode.
#[test]
fn vipgate_relays_the_client_from_the_header_it_accepted() {
    let Some(bin) = haproxy_bin() else { return };
    let started = Instant::now();
    let (reporter, tcp_bind, http_bind, f_tcp, f_http) =
        (free_addr(), free_addr(), free_addr(), free_addr(), free_addr());
    let hap = [("hap", reporter, "")];
    let cfg = global("")
        + &svc("t", tcp_bind, "accept_proxy = [\"127.0.0.1\"]\nsend_proxy = \"v1\"\n", &hap)
        + &svc("h", http_bind, "mode = \"http\"\naccept_proxy = true\nsend_proxy = \"v2\"\n", &hap);
    let v = Vipgate::start_accepting(&cfg, tcp_bind);
    let sections = hap_reporter("reporter", reporter)
        + &hap_tcp("ft", f_tcp, tcp_bind, "send-proxy-v2")
        + &hap_tcp("fh", f_http, http_bind, "send-proxy-v2");
    let _h = start_haproxy(&bin, &sections, &[reporter, f_tcp, f_http]);

    for (what, front, bind) in [("tcp", f_tcp, tcp_bind), ("http", f_http, http_bind)] {
        let (client, r) = get_from(ip("127.0.0.7"), front);
        assert_eq!(r.status, 200, "{what}: {}\n{}", r.text(), v.log());
        // Relayed as HAProxy relays it: the original client and the original destination
        // (the front HAProxy), not vipgate's own listener.
        let _ = bind;
        assert_eq!(r.text(), report(client, front), "{what}: the relayed header lost the client");
    }
    println!("relay through vipgate: {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------
// Mismatches
// ---------------------------------------------------------------------------------------

/// `accept_proxy = true` and a client that speaks HTTP straight away: closed at once
/// (the first byte already rules a header out), nothing reaches the server, and the log
/// says why. A truncated header and a silent client are cut off at the header timeout.
#[test]
fn a_required_header_that_is_missing_or_broken_closes_the_connection() {
    let started = Instant::now();
    // tcp mode.
    let backend = Backend::echo_any("b1");
    let bind = free_addr();
    let keys = "accept_proxy = true\nclient_timeout = \"1s\"\n";
    let v = Vipgate::start_accepting(&service_toml("", "db", bind, keys, &[("b1", backend.addr, "")]), bind);

    let mut s = connect(bind);
    let client = s.local_addr().unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let took = wait_closed(&mut s, Duration::from_secs(10)).unwrap_or_else(|e| panic!("plain HTTP: {e}"));
    assert!(took < Duration::from_secs(3), "plain HTTP was refused only after {took:?} (header wait is 1s..5s)");
    let line = client_line(&v, client, "connection closed");
    assert!(line.contains("end=bad_proxy_header") && line.contains("expected a PROXY protocol header"), "{line}");
    assert!(line.contains("GET / HTTP/1.1"), "the log should quote what the client sent: {line}");
    assert_eq!(field(&line, "server").as_deref(), Some("-"), "{line}");

    let mut s = connect(bind);
    let bad = s.local_addr().unwrap();
    s.write_all(b"PROXY TCP4 127.0.0.7 127.0.0.1 x").unwrap();
    let took = wait_closed(&mut s, Duration::from_secs(10)).unwrap_or_else(|e| panic!("malformed v1: {e}"));
    assert!(took < Duration::from_secs(3), "a malformed v1 line was refused only after {took:?}");
    let line = client_line(&v, bad, "connection closed");
    assert!(line.contains("end=bad_proxy_header") && line.contains("malformed PROXY v1 header"), "{line}");

    let mut silent = connect(bind);
    let silent_addr = silent.local_addr().unwrap();
    let mut partial = connect(bind);
    let partial_addr = partial.local_addr().unwrap();
    partial.write_all(b"PROXY TCP4 127.0.0.7").unwrap();
    for (what, s, addr, received) in
        [("silent", &mut silent, silent_addr, 0), ("partial", &mut partial, partial_addr, 20)]
    {
        let took = wait_closed(s, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(took < Duration::from_secs(4), "{what} client cut off after {took:?}, header wait is 1s");
        let line = client_line(&v, addr, "connection closed");
        let want = format!("no complete PROXY header within 1s ({received} bytes received)");
        assert!(line.contains(&want), "{what}: want {want:?} in {line}");
    }
    assert_eq!(backend.accepted.load(SeqCst), 0, "a connection without a good header reached the server");
    drop(v);

    // http mode.
    let backend = HttpBackend::start("h1");
    let bind = free_addr();
    let keys = "mode = \"http\"\naccept_proxy = true\n";
    let v = Vipgate::start_accepting(&service_toml("", "api", bind, keys, &[("h1", backend.addr, "")]), bind);
    let mut s = connect(bind);
    let client = s.local_addr().unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let took = wait_closed(&mut s, Duration::from_secs(10)).unwrap_or_else(|e| panic!("plain HTTP, http mode: {e}"));
    assert!(took < Duration::from_secs(3), "http mode: plain HTTP refused after {took:?}");
    let line = client_line(&v, client, "connection closed");
    assert!(line.contains("end=bad_proxy_header") && line.contains("expected a PROXY protocol header"), "{line}");
    assert_eq!((backend.connections(), backend.requests()), (0, 0), "a request without a header reached the server");
    println!("missing and broken headers: {:?}", started.elapsed());
}

/// `accept_proxy = ["10.9.9.9"]`: a client from elsewhere is not expected to send a
/// header and is served as it is; a header it sends anyway is its data, passed on
/// untouched, and cannot spoof its address.
#[test]
fn clients_outside_the_accept_proxy_list_are_served_without_a_header() {
    let started = Instant::now();
    let backend = Backend::echo_any("b1");
    let bind = free_addr();
    let cfg =
        service_toml("", "db", bind, "accept_proxy = [\"10.9.9.9\", \"10.10.0.0/16\"]\n", &[("b1", backend.addr, "")]);
    let v = Vipgate::start_accepting(&cfg, bind);

    let (client, server) = echo_through(ip("127.0.0.1"), bind);
    assert_eq!(server, "b1");
    let line = client_line(&v, client, "connection closed");
    assert_eq!(field(&line, "server").as_deref(), Some("b1"), "{line}");
    assert!(field(&line, "error").is_none(), "{line}");

    let spoof = b"PROXY TCP4 6.6.6.6 127.0.0.1 1111 2222\r\n";
    let mut s = connect(bind);
    let client = s.local_addr().unwrap();
    assert_eq!(read_line(&mut s).unwrap(), "b1");
    s.write_all(spoof).unwrap();
    let mut echo = vec![0u8; spoof.len()];
    s.read_exact(&mut echo).expect("the would-be header echoed back as data");
    assert_eq!(echo, spoof);
    drop(s);
    let line = client_line(&v, client, "connection closed");
    assert_eq!(field(&line, "bytes_in"), Some(spoof.len().to_string()), "{line}");
    assert!(!v.log().contains("6.6.6.6"), "a header from outside the list was believed:\n{}", v.log());
    println!("clients outside accept_proxy: {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------
// IPv6
// ---------------------------------------------------------------------------------------

/// A client on ::1: HAProxy on [::1] sends TCP6 headers (v1 and v2) to vipgate on
/// 127.0.0.1, which logs `client=[::1]:PORT`; vipgate on [::1] sends TCP6 headers that
/// HAProxy reads as ::1; and relaying an IPv6 client from an IPv4 listener maps the
/// listener's address to ::ffff:127.0.0.1, as a header has one family.
#[test]
fn ipv6_clients_in_both_directions() {
    let Some(bin) = haproxy_bin() else { return };
    let (Some(f1), Some(f2), Some(sv1), Some(sv2)) = (free_addr_v6(), free_addr_v6(), free_addr_v6(), free_addr_v6())
    else {
        println!("skipped: ::1 is not available on this machine");
        return;
    };
    let started = Instant::now();
    let backend = Backend::echo_any("b1");
    let (bind, relay, reporter, f_relay) = (free_addr(), free_addr(), free_addr(), free_addr_v6().unwrap());
    let hap = [("hap", reporter, "")];
    let cfg = global("")
        + &svc("in", bind, "accept_proxy = [\"127.0.0.1\"]\n", &[("b1", backend.addr, "")])
        + &svc("out1", sv1, "send_proxy = \"v1\"\n", &hap)
        + &svc("out2", sv2, "send_proxy = \"v2\"\n", &hap)
        + &svc("relay", relay, "accept_proxy = [\"127.0.0.1\"]\nsend_proxy = \"v2\"\n", &hap);
    let v = Vipgate::start_accepting(&cfg, bind);
    let sections = hap_tcp("v1", f1, bind, "send-proxy")
        + &hap_tcp("v2", f2, bind, "send-proxy-v2")
        + &hap_tcp("relay", f_relay, relay, "send-proxy-v2")
        + &hap_reporter("reporter", reporter);
    let _h = start_haproxy(&bin, &sections, &[f1, f2, f_relay, reporter]);
    let lo6 = ip("::1");

    for (version, front) in [("v1", f1), ("v2", f2)] {
        let (client, server) = echo_through(lo6, front);
        assert_eq!(server, "b1");
        let line = client_line(&v, client, "connection closed");
        assert!(line.contains(&format!("client=[::1]:{}", client.port())), "{version}: {line}");
        assert_eq!(field(&line, "bytes_in").as_deref(), Some("5"), "{version}: {line}");
    }

    for (what, bind) in [("v1", sv1), ("v2", sv2)] {
        let (client, r) = get_from(lo6, bind);
        assert_eq!(r.status, 200, "{what}: {}\n{}", r.text(), v.log());
        assert_eq!(r.text(), report(client, bind), "{what}: HAProxy read another address from our TCP6 header");
    }

    let (client, r) = get_from(lo6, f_relay);
    assert_eq!(r.status, 200, "relay: {}\n{}", r.text(), v.log());
    // The original destination (the front HAProxy on ::1) is relayed, not vipgate's listener.
    let _ = relay;
    assert_eq!(r.text(), report(client, f_relay), "relay of an IPv6 client through an IPv4 listener");
    println!("IPv6 both directions: {:?}", started.elapsed());
}
