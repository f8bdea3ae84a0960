//! Whole conversations of [`super::check`] against a scripted server on an in-memory pipe.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;

const T: Duration = Duration::from_secs(5);

fn hex(s: &str) -> Vec<u8> {
    let s: Vec<u8> = s.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
    s.chunks(2).map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap()).collect()
}

/// The MariaDB 10.11 greeting of `greeting.rs`.
fn greeting_payload() -> Vec<u8> {
    hex("0a352e352e352d31302e31312e31392d4d6172696144422d302b6465623132753100730d00006f3e27466a\
         622e5d00fef7080200ff81150000000000001d0000006b246a6e673b2e75275c7c7d006d7973716c5f6e61746976655f\
         70617373776f726400")
}
const SCRAMBLE: &[u8] = b"o>'Fjb.]k$jng;.u'\\|}";
const OK_PACKET: &[u8] = b"\x00\x00\x00\x02\x00\x00\x00";

/// The server end of the pipe.
struct Server(DuplexStream);

impl Server {
    async fn send(&mut self, seq: u8, payload: &[u8]) {
        let len = (payload.len() as u32).to_le_bytes();
        self.0.write_all(&[len[0], len[1], len[2], seq]).await.unwrap();
        self.0.write_all(payload).await.unwrap();
    }
    async fn recv(&mut self) -> (u8, Vec<u8>) {
        let mut h = [0u8; 4];
        self.0.read_exact(&mut h).await.unwrap();
        let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
        let mut p = vec![0; len];
        self.0.read_exact(&mut p).await.unwrap();
        (h[3], p)
    }
    /// Answer a SHOW ... LIKE with one (name, value) row, or none.
    async fn show(&mut self, row: Option<(&str, &str)>) {
        let (seq, p) = self.recv().await;
        assert_eq!(seq, 0);
        assert_eq!(p[0], 0x03);
        self.send(1, b"\x02").await;
        self.send(2, b"\x03def\x00\x00\x00\x0dVariable_name").await;
        self.send(3, b"\x03def\x00\x00\x00\x05Value").await;
        self.send(4, b"\xfe\x00\x00\x22\x00").await;
        let mut seq = 5;
        if let Some((n, v)) = row {
            let mut r = vec![n.len() as u8];
            r.extend_from_slice(n.as_bytes());
            r.push(v.len() as u8);
            r.extend_from_slice(v.as_bytes());
            self.send(5, &r).await;
            seq = 6;
        }
        self.send(seq, b"\xfe\x00\x00\x22\x00").await;
    }
    /// Expect COM_QUIT, then close.
    async fn expect_quit(mut self) {
        assert_eq!(self.recv().await, (0, vec![0x01]));
    }
}

/// The user name and auth response of a HandshakeResponse41 (as `auth.rs` lays it out).
fn user_and_token(p: &[u8]) -> (String, Vec<u8>) {
    let rest = &p[32..];
    let nul = rest.iter().position(|&b| b == 0).unwrap();
    let user = String::from_utf8(rest[..nul].to_vec()).unwrap();
    let len = usize::from(rest[nul + 1]);
    (user, rest[nul + 2..nul + 2 + len].to_vec())
}

fn creds(user: &str, password: &str) -> Credentials {
    Credentials { user: user.into(), password: password.into() }
}

#[tokio::test]
async fn login_and_status_of_a_server_without_galera() {
    let (client, server) = tokio::io::duplex(8192);
    let srv = tokio::spawn(async move {
        let mut s = Server(server);
        s.send(0, &greeting_payload()).await;
        let (seq, p) = s.recv().await;
        assert_eq!(seq, 1);
        let (user, token) = user_and_token(&p);
        assert_eq!(user, "vg");
        assert_eq!(token, auth::native_password_token(b"pw", SCRAMBLE).unwrap());
        assert!(p.ends_with(b"mysql_native_password\0"));
        s.send(2, OK_PACKET).await;
        s.show(None).await;
        s.show(Some(("read_only", "OFF"))).await;
        s.expect_quit().await;
    });
    let (g, status) = check(client, Some(&creds("vg", "pw")), T).await.unwrap();
    assert_eq!(g.server_version, "10.11.19-MariaDB-0+deb12u1");
    assert_eq!(status, Some(GaleraStatus { wsrep_local_state: None, read_only: Some(false) }));
    srv.await.unwrap();
}

#[tokio::test]
async fn auth_switch_to_native_and_galera_values() {
    let (client, server) = tokio::io::duplex(8192);
    let srv = tokio::spawn(async move {
        let mut s = Server(server);
        s.send(0, &greeting_payload()).await;
        let _ = s.recv().await;
        let fresh = b"ABCDEFGHIJKLMNOPQRST";
        let mut sw = b"\xfemysql_native_password\0".to_vec();
        sw.extend_from_slice(fresh);
        sw.push(0);
        s.send(2, &sw).await;
        let (seq, token) = s.recv().await;
        assert_eq!(seq, 3);
        assert_eq!(token, auth::native_password_token(b"secret", fresh).unwrap());
        s.send(4, OK_PACKET).await;
        s.show(Some(("wsrep_local_state", "4"))).await;
        s.show(Some(("read_only", "ON"))).await;
        s.expect_quit().await;
    });
    let (_, status) = check(client, Some(&creds("app", "secret")), T).await.unwrap();
    let status = status.unwrap();
    assert_eq!(status, GaleraStatus { wsrep_local_state: Some(4), read_only: Some(true) });
    assert_eq!(galera_verdict(&status, false, true), Ok(()));
    assert_eq!(galera_verdict(&status, false, false), Err(READ_ONLY.to_string()));
    srv.await.unwrap();
}

#[tokio::test]
async fn wrong_password_is_the_servers_error() {
    let (client, server) = tokio::io::duplex(8192);
    let srv = tokio::spawn(async move {
        let mut s = Server(server);
        s.send(0, &greeting_payload()).await;
        let _ = s.recv().await;
        s.send(2, b"\xff\x15\x04#28000Access denied for user 'vg'@'127.0.0.2' (using password: YES)").await;
    });
    match check(client, Some(&creds("vg", "nope")), T).await {
        Err(MysqlError::Server { code: 1045, message }) => assert!(message.contains("Access denied"), "{message}"),
        other => panic!("{other:?}"),
    }
    srv.await.unwrap();
}

#[tokio::test]
async fn another_plugin_is_declined_with_a_wrong_answer() {
    let (client, server) = tokio::io::duplex(8192);
    let srv = tokio::spawn(async move {
        let mut s = Server(server);
        s.send(0, &greeting_payload()).await;
        let _ = s.recv().await;
        s.send(2, b"\xfeclient_ed25519\0abcdefghijklmnopqrstuvwxyz012345").await;
        // The client answers (a wrong 64-byte signature) instead of hanging up.
        assert_eq!(s.recv().await, (3, vec![0u8; 64]));
        s.send(4, b"\xff\x15\x04#28000Access denied").await;
    });
    match check(client, Some(&creds("vg", "pw")), T).await {
        Err(e @ MysqlError::UnsupportedAuth(_)) => {
            assert!(e.to_string().contains("client_ed25519"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    srv.await.unwrap();
}

#[tokio::test]
async fn a_dialog_plugin_is_declined_prompt_by_prompt() {
    let (client, server) = tokio::io::duplex(8192);
    let srv = tokio::spawn(async move {
        let mut s = Server(server);
        s.send(0, &greeting_payload()).await;
        let _ = s.recv().await;
        s.send(2, b"\xfedialog\0").await;
        assert_eq!(s.recv().await, (3, Vec::new()));
        s.send(4, b"\x04Password: ").await;
        assert_eq!(s.recv().await, (5, Vec::new()));
        s.send(6, b"\xff\x15\x04#28000Access denied").await;
    });
    assert!(
        matches!(check(client, Some(&creds("pm", "pw")), T).await, Err(MysqlError::UnsupportedAuth(p)) if p == "dialog")
    );
    srv.await.unwrap();
}

#[tokio::test]
async fn without_credentials_the_greeting_is_answered_as_anonymous() {
    // Refused: Ok all the same, the server greeted.
    let (client, server) = tokio::io::duplex(8192);
    let srv = tokio::spawn(async move {
        let mut s = Server(server);
        s.send(0, &greeting_payload()).await;
        let (seq, p) = s.recv().await;
        assert_eq!(seq, 1);
        assert_eq!(user_and_token(&p), (String::new(), Vec::new()));
        s.send(2, b"\xff\x15\x04#28000Access denied for user ''@'127.0.0.2' (using password: NO)").await;
    });
    let (g, status) = check(client, None, T).await.unwrap();
    assert_eq!((g.connection_id, status), (0x0d73, None));
    srv.await.unwrap();

    // Let in (an anonymous account exists): logged out with COM_QUIT.
    let (client, server) = tokio::io::duplex(8192);
    let srv = tokio::spawn(async move {
        let mut s = Server(server);
        s.send(0, &greeting_payload()).await;
        let _ = s.recv().await;
        s.send(2, OK_PACKET).await;
        s.expect_quit().await;
    });
    assert!(check(client, None, T).await.unwrap().1.is_none());
    srv.await.unwrap();

    // A server that hangs up instead of answering: still Ok (the greeting came).
    let (client, server) = tokio::io::duplex(8192);
    let srv = tokio::spawn(async move {
        let mut s = Server(server);
        s.send(0, &greeting_payload()).await;
        let _ = s.recv().await;
    });
    assert!(check(client, None, T).await.is_ok());
    srv.await.unwrap();
}

#[tokio::test]
async fn err_instead_of_greeting() {
    let (client, server) = tokio::io::duplex(8192);
    let mut s = Server(server);
    s.send(0, b"\xffi\x04Host '127.0.0.2' is blocked because of many connection errors; unblock with 'mariadb-admin flush-hosts'")
        .await;
    for c in [None, Some(creds("vg", "pw"))] {
        let (client, server) = tokio::io::duplex(8192);
        let mut s = Server(server);
        s.send(0, b"\xff\x10\x04Too many connections").await;
        assert!(matches!(check(client, c.as_ref(), T).await, Err(MysqlError::Server { code: 1040, .. })));
    }
    match check(client, None, T).await {
        Err(e @ MysqlError::Server { code: 1129, .. }) => assert!(e.to_string().contains("is blocked"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn silence_is_a_timeout_and_not_mysql_is_a_protocol_error() {
    let (client, _server) = tokio::io::duplex(8192);
    let r = check(client, None, Duration::from_millis(100)).await;
    assert!(matches!(r, Err(MysqlError::Timeout)), "{r:?}");

    // An HTTP server on the port: its first bytes read as an absurd packet length.
    let (client, mut server) = tokio::io::duplex(8192);
    server.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await.unwrap();
    let r = check(client, None, T).await;
    assert!(matches!(r, Err(MysqlError::Protocol(_))), "{r:?}");

    // Closed before the greeting.
    let (client, server) = tokio::io::duplex(8192);
    drop(server);
    assert!(matches!(check(client, None, T).await, Err(MysqlError::Closed)));

    // Stalls after the login: the timeout covers the queries too.
    let (client, server) = tokio::io::duplex(8192);
    let srv = tokio::spawn(async move {
        let mut s = Server(server);
        s.send(0, &greeting_payload()).await;
        let _ = s.recv().await;
        s.send(2, OK_PACKET).await;
        let _ = s.recv().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    });
    let r = check(client, Some(&creds("vg", "pw")), Duration::from_millis(300)).await;
    assert!(matches!(r, Err(MysqlError::Timeout)), "{r:?}");
    srv.abort();
}

#[tokio::test]
async fn a_failing_query_is_reported_and_the_session_still_quits() {
    let (client, server) = tokio::io::duplex(8192);
    let srv = tokio::spawn(async move {
        let mut s = Server(server);
        s.send(0, &greeting_payload()).await;
        let _ = s.recv().await;
        s.send(2, OK_PACKET).await;
        let _ = s.recv().await;
        s.send(1, b"\xff\x7c\x04#42000Access denied; you need (at least one of) the PROCESS privilege(s)").await;
        s.expect_quit().await;
    });
    match check(client, Some(&creds("vg", "pw")), T).await {
        Err(MysqlError::Server { code: 1148, message }) => assert!(message.contains("PROCESS"), "{message}"),
        other => panic!("{other:?}"),
    }
    srv.await.unwrap();
}

#[test]
fn credentials_debug_hides_the_password() {
    let d = format!("{:?}", creds("clustercheck", "s3cret"));
    assert!(d.contains("clustercheck") && !d.contains("s3cret"), "{d}");
}

#[test]
fn error_texts_are_short() {
    assert_eq!(MysqlError::Timeout.to_string(), "timed out");
    assert_eq!(
        MysqlError::Server { code: 1045, message: "Access denied".into() }.to_string(),
        "server error 1045: Access denied"
    );
    assert_eq!(MysqlError::Closed.to_string(), "server closed the connection");
}
