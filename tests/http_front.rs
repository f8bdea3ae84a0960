//! The HTTP front as a client (or an attacker) meets it, through the real binary: one
//! authority per request, the shapes vipgate refuses before routing, the protocol policy
//! (h2c, Transfer-Encoding, bodies on any method, forwarding headers), and client faults
//! that never count against a server.

mod common;
#[path = "support/http_backend.rs"]
mod http_backend;
#[path = "support/http_client.rs"]
mod http_client;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use http_backend::HttpBackend;
use http_client::{connect, read_response, send, Resp};

fn http_service(bind: SocketAddr, keys: &str, backends: &[&HttpBackend]) -> String {
    let list: Vec<(&str, SocketAddr, &str)> = backends.iter().map(|b| (b.name.as_str(), b.addr, "")).collect();
    service_toml("", "api", bind, &format!("mode = \"http\"\n{keys}"), &list)
}

/// One raw request on a new connection; the response (or the error reading it).
fn raw(bind: SocketAddr, request: &str) -> std::io::Result<Resp> {
    let mut s = connect(bind);
    send(&mut s, request)
}

fn status(bind: SocketAddr, request: &str) -> u16 {
    raw(bind, request).map(|r| r.status).unwrap_or(0)
}

#[test]
fn each_request_has_one_authority_the_one_routing_used() {
    let other = HttpBackend::start("other");
    let example = HttpBackend::start("example");
    let bind = free_addr();
    let cfg = format!(
        "{}\n[services.api]\nbind = \"{bind}\"\nmode = \"http\"\n\
         [[services.api.routes]]\nhost = \"other.test\"\npool = \"o\"\n\
         [[services.api.routes]]\nhost = \"example.test\"\npool = \"e\"\n{}",
        global(""),
        servers("api", &[("other", other.addr, "pool = \"o\""), ("example", example.addr, "pool = \"e\"")])
    );
    let v = Vipgate::start_accepting(&cfg, bind);

    // Absolute-form: its authority routes the request and replaces Host (RFC 9112 §3.2.2).
    let r = raw(bind, "GET http://other.test/v3 HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(r.status, 200, "{}", v.log());
    assert_eq!(r.field("server").as_deref(), Some("other"));
    assert_eq!(r.seen_header("host"), vec!["other.test"], "the server sees the authority routing used, once");
    assert_eq!(r.field("path").as_deref(), Some("/v3"));
    let line = v.wait_log_line(WAIT, |l| l.contains("path=/v3")).expect("log line");
    assert!(line.contains("host=other.test"), "the log names the one authority: {line}");

    // Origin-form: Host is the authority, forwarded as it came.
    let r = raw(bind, "GET /x HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(r.field("server").as_deref(), Some("example"));
    assert_eq!(r.seen_header("host"), vec!["example.test"]);

    let refused = [
        ("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 400, "HTTP/1.1 without Host"),
        ("GET / HTTP/1.1\r\nHost: example.test\r\nHost: other.test\r\n\r\n", 400, "two Hosts"),
        ("GET / HTTP/1.1\r\nHost: example.test\r\nHost: example.test\r\n\r\n", 400, "two equal Hosts"),
        ("GET / HTTP/1.1\r\nHost: example.test/x\r\n\r\n", 400, "Host not host[:port]"),
        ("GET / HTTP/1.1\r\nHost: example.test:http\r\n\r\n", 400, "Host with a bad port"),
        ("GET / HTTP/1.1\r\nHost: user@example.test\r\n\r\n", 400, "Host with userinfo"),
        ("GET http://u:p@other.test/ HTTP/1.1\r\nHost: other.test\r\n\r\n", 400, "userinfo in the target"),
        ("GET ftp://other.test/ HTTP/1.1\r\nHost: other.test\r\n\r\n", 400, "another scheme"),
        ("GET rl HTTP/1.1\r\nHost: example.test\r\n\r\n", 400, "authority-form for GET"),
        ("GET * HTTP/1.1\r\nHost: example.test\r\n\r\n", 400, "* for GET"),
        ("CONNECT other.test:443 HTTP/1.1\r\nHost: other.test:443\r\n\r\n", 405, "CONNECT"),
    ];
    for (req, want, what) in refused {
        let r = raw(bind, req).unwrap_or_else(|e| panic!("{what}: {e}\n{}", v.log()));
        assert_eq!(r.status, want, "{what}: {}", r.text());
        assert_eq!(r.header("connection"), Some("close"), "{what}: the connection closes after a refusal");
    }
    assert_eq!(other.requests() + example.requests(), 2, "no refused request reached a server");

    // `*` is OPTIONS' target, and passes.
    let r = raw(bind, "OPTIONS * HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.field("path").as_deref(), Some("*"));
}

#[test]
fn redirect_https_uses_the_one_authority() {
    let bind = free_addr();
    let cfg = format!("{}\n[services.web]\nbind = \"{bind}\"\nmode = \"http\"\nredirect_https = true\n", global(""));
    let _v = Vipgate::start_accepting(&cfg, bind);
    let r = raw(bind, "GET http://horizon.test/auth HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("https://horizon.test/auth"));
}

/// HTTP/2 over h2c: `:authority` and a `host` header that disagree are refused; when they
/// agree, or only one is sent, an HTTP/1.1 server gets exactly one Host.
#[test]
fn http2_authority_and_host_must_agree() {
    let b = HttpBackend::start("b1");
    let bind = free_addr();
    let v = Vipgate::start_accepting(&http_service(bind, "h2c = true\n", &[&b]), bind);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let got = rt.block_on(async {
        use http_body_util::{BodyExt, Empty};
        let mut send = http_client::h2c(bind).await;
        let mut out = Vec::new();
        for host in [None, Some("api.example"), Some("other.example")] {
            let mut req = http::Request::get("http://api.example/h2");
            if let Some(h) = host {
                req = req.header("host", h);
            }
            let resp = send.send_request(req.body(Empty::<bytes::Bytes>::new()).unwrap()).await.expect("h2 response");
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            out.push((status, String::from_utf8_lossy(&body).into_owned()));
        }
        out
    });
    for (status, text) in &got[..2] {
        assert_eq!(*status, 200, "{text}\n{}", v.log());
        let hosts: Vec<&str> = text.lines().filter(|l| l.starts_with("h:host=")).collect();
        assert_eq!(hosts, ["h:host=api.example"], "{text}");
    }
    assert_eq!(got[2].0, 400, "{}", got[2].1);
    assert_eq!(b.requests(), 2);
}

#[test]
fn h2c_is_served_only_where_it_is_on() {
    let b = HttpBackend::start("b1");
    let bind = free_addr();
    let v = Vipgate::start_accepting(&http_service(bind, "", &[&b]), bind);
    // A prior-knowledge preface and a request on a plain bind with h2c off (the default).
    let mut s = connect(bind);
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").unwrap();
    let mut seen = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.read_to_end(&mut seen);
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 9 <= seen.len() {
        let len = (usize::from(seen[at]) << 16) | (usize::from(seen[at + 1]) << 8) | usize::from(seen[at + 2]);
        frames.push((seen[at + 3], seen.get(at + 9..at + 9 + len).unwrap_or_default().to_vec()));
        at += 9 + len;
    }
    let goaway = frames.iter().find(|(kind, _)| *kind == 7).map(|(_, p)| p.clone());
    let code = goaway.as_ref().and_then(|p| p.get(4..8)).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    assert_eq!(code, Some(0xd), "GOAWAY with HTTP_1_1_REQUIRED expected, got {seen:?}\n{}", v.log());
    assert_eq!(b.requests(), 0);
    // HTTP/1.1 on the same bind is served.
    assert_eq!(status(bind, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"), 200);
}

#[test]
fn protocol_policy_upgrade_h2c_transfer_encoding_and_bodies() {
    let b = HttpBackend::start("b1");
    let bind = free_addr();
    let v = Vipgate::start_accepting(&http_service(bind, "", &[&b]), bind);

    // An h2c upgrade is not passed on: the request goes on as plain HTTP/1.1.
    let r = raw(
        bind,
        "GET /up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
         HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.seen_header("upgrade").is_empty(), "Upgrade: h2c reached the server:\n{}", r.text());
    assert!(r.seen_header("http2-settings").is_empty(), "{}", r.text());
    // A WebSocket upgrade still is.
    let mut s = connect(bind);
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s).unwrap().status, 101);
    drop(s);

    let before = b.requests();
    for (req, what) in [
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            "gzip, chunked",
        ),
        (
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "two lines",
        ),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", "chunked twice"),
        ("POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "TE in HTTP/1.0"),
    ] {
        assert_eq!(status(bind, req), 400, "{what}\n{}", v.log());
    }
    assert_eq!(b.requests(), before, "a request with refused framing reached the server");
    // Transfer-Encoding beside Content-Length: framed by the chunked coding alone, and the
    // server gets no Content-Length to read it another way (RFC 9112 §6.3).
    let r = raw(
        bind,
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\nConnection: close\r\n\r\n\
         5\r\nhello\r\n0\r\n\r\n",
    )
    .unwrap();
    if r.status != 400 {
        assert_eq!(r.field("body_len").as_deref(), Some("5"), "{}", r.text());
        assert!(r.seen_header("content-length").is_empty(), "{}", r.text());
    }

    // A body on a GET (or DELETE) goes to the server, chunked or of known length.
    for req in [
        "GET /g HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "GET /g HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        "DELETE /g HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ] {
        let r = raw(bind, req).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.field("body_len").as_deref(), Some("5"), "{req:?}:\n{}", r.text());
    }
}

#[test]
fn forwarding_headers_in_any_spelling_are_stripped_from_the_untrusted() {
    let b = HttpBackend::start("b1");
    let bind = free_addr();
    let _v = Vipgate::start_accepting(&http_service(bind, "trusted_forwarders = [\"10.0.0.0/8\"]\n", &[&b]), bind);
    let spoofed = "X_Forwarded_For: 6.6.6.6\r\nX-Forwarded_Proto: https\r\nx_forwarded_host: evil\r\n\
                   X-Forwarded-Prefix: /evil\r\nX_Forwarded_Prefix: /evil\r\nX-Real-IP: 6.6.6.6\r\n\
                   Forwarded: for=6.6.6.6\r\nX-Forwarded-For: 6.6.6.6\r\n";
    let r = raw(bind, &format!("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n{spoofed}\r\n")).unwrap();
    assert_eq!(r.status, 200);
    let seen: Vec<String> = r
        .text()
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase().replace('_', "-");
            l.starts_with("h:x-forwarded") || l.starts_with("h:forwarded") || l.starts_with("h:x-real-ip")
        })
        .map(str::to_string)
        .collect();
    assert_eq!(seen, ["h:x-forwarded-for=127.0.0.1", "h:x-forwarded-proto=http"], "only vipgate's own");
}

/// `trusted_forwarders` is matched against the TCP peer that sent the PROXY header, not
/// against the source address the header claims.
#[test]
fn trusted_forwarders_match_the_peer_not_the_proxy_header() {
    let b = HttpBackend::start("b1");
    let (untrusted, trusted) = (free_addr(), free_addr());
    let svc = |name: &str, bind: SocketAddr, nets: &str| {
        format!(
            "\n[services.{name}]\nbind = \"{bind}\"\nmode = \"http\"\naccept_proxy = true\ntrusted_forwarders = [{nets}]\n{}",
            servers(name, &[("b1", b.addr, "")])
        )
    };
    let cfg =
        format!("{}{}{}", global(""), svc("u", untrusted, "\"10.0.0.0/8\""), svc("t", trusted, "\"127.0.0.1/32\""));
    let v = Vipgate::start_accepting(&cfg, untrusted);
    let ask = |bind: SocketAddr| {
        raw(
            bind,
            "PROXY TCP4 10.9.9.9 127.0.0.1 40000 80\r\nGET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n",
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", v.log()))
    };
    // The header claims 10.9.9.9 (inside the trusted range) from an untrusted peer.
    assert_eq!(ask(untrusted).seen_header("x-forwarded-for"), vec!["10.9.9.9"]);
    // A trusted front balancer relays a client: its chain is kept and the client added.
    assert_eq!(ask(trusted).seen_header("x-forwarded-for"), vec!["6.6.6.6, 10.9.9.9"]);
}

/// Bodies the client breaks are its own fault: 400 (or a close), logged as the client's,
/// and no passive-health failure of the server, even with `observe_errors = 1`.
#[test]
fn broken_uploads_never_mark_a_server_down() {
    let b1 = HttpBackend::start("b1");
    let b2 = HttpBackend::start("b2");
    let bind = free_addr();
    let keys = "observe_errors = 1\nh2c = true\n[services.api.check]\nkind = \"tcp\"\ninterval = \"30s\"\n";
    let list = [("b1", b1.addr, ""), ("b2", b2.addr, "")];
    let cfg = service_toml("", "api", bind, &format!("mode = \"http\"\n{keys}"), &list);
    let v = Vipgate::start_accepting(&cfg, bind);
    let good = || status(bind, "GET /good HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    // Both servers up after the first probe round.
    assert!(eventually(WAIT, || (good() == 200).then_some(())).is_some(), "{}", v.log());

    let mut malformed_400 = 0;
    for i in 0..50 {
        // Chunked framing that breaks after the head went to the server.
        let r =
            raw(bind, "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n\r\n");
        if r.as_ref().is_ok_and(|r| r.status == 400) {
            malformed_400 += 1;
        }
        // A hang-up mid-upload.
        let mut s = connect(bind);
        s.write_all(b"PUT /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n").unwrap();
        s.write_all(&[b'x'; 1000]).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        drop(s);
        // More bytes than Content-Length: the extra ones are the next "request".
        let extra = raw(bind, "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhello world\r\n\r\n");
        let extra = extra.map(|r| r.status);
        assert!(matches!(extra, Ok(200)), "the declared body is served: {extra:?}\n{}", v.log());
        assert_eq!(good(), 200, "good request {i} between broken uploads\n{}", v.log());
    }
    assert_eq!(malformed_400, 50, "malformed chunked uploads get 400\n{}", v.log());
    // HTTP/2: DATA beyond the declared content-length, and a stream reset mid-upload.
    h2_broken_uploads(bind, 10);
    assert_eq!(good(), 200);
    std::thread::sleep(Duration::from_millis(300));
    let log = v.log();
    assert!(!log.contains("is DOWN"), "a client's broken upload marked a server down:\n{log}");
    for _ in 0..4 {
        assert_eq!(good(), 200);
    }
    let client_errors = log.lines().filter(|l| l.contains("status=400") && l.contains("request body failed")).count();
    assert!(client_errors >= 50, "broken bodies logged as the client's: {client_errors}\n{log}");
    assert!(b1.requests() > 0 && b2.requests() > 0);
}

/// `n` HTTP/2 uploads that declare 5 bytes and send 11.
fn h2_broken_uploads(bind: SocketAddr, n: usize) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        for _ in 0..n {
            let mut send = http_client::h2c(bind).await;
            let req = http::Request::post("http://a/upload")
                .header("content-length", "5")
                .body(Unsized(Some(bytes::Bytes::from_static(b"hello world"))))
                .unwrap();
            if let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(10), send.send_request(req)).await {
                assert_ne!(resp.status(), 200, "an oversized h2 body was accepted");
            }
        }
    });
}

/// One data frame, of a length the body does not announce.
struct Unsized(Option<bytes::Bytes>);

impl http_body::Body for Unsized {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>>> {
        std::task::Poll::Ready(self.0.take().map(|b| Ok(hyper::body::Frame::data(b))))
    }
}
