//! The accept stage of both modes: reading a client's PROXY header off its connection.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use super::{parse, Addresses, ProxyError, MAX_HEADER_LEN};
use crate::config::AcceptProxy;

/// Where a client connection comes from and goes to, as the rest of vipgate sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    /// The client: the PROXY header's source, else the TCP peer.
    pub client: SocketAddr,
    /// The address the client connected to: the header's destination, else ours.
    pub local: SocketAddr,
}

/// The accept stage of both modes: a peer that `expected` names must open with a PROXY
/// header, read within `wait`; any other peer's connection is taken as it came. Only the
/// header is consumed, so whatever follows it is the client's stream, unread.
///
/// A relayed header names the original destination too, as HAProxy relays it.
pub async fn accept(
    stream: &TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    expected: Option<&AcceptProxy>,
    wait: Duration,
) -> Result<Endpoints, ProxyError> {
    let direct = Endpoints { client: peer, local };
    if !expected.is_some_and(|ap| ap.expects(peer.ip())) {
        return Ok(direct);
    }
    Ok(match read_header(stream, wait).await? {
        Addresses::Tcp { source, destination } => Endpoints { client: source, local: destination },
        Addresses::Local => direct,
    })
}

/// Longest pause between peeks while a header is incomplete: short enough that a header
/// split across packets costs little latency.
const PEEK_BACKOFF_MAX: Duration = Duration::from_millis(50);

/// Read exactly the header from the start of `stream`, leaving every byte after it unread
/// for whatever handles the connection next, within `timeout` overall.
pub async fn read_header(stream: &TcpStream, timeout: Duration) -> Result<Addresses, ProxyError> {
    let mut received = 0;
    match tokio::time::timeout(timeout, read_header_inner(stream, &mut received)).await {
        Ok(result) => result,
        Err(_) => Err(ProxyError::Timeout { after: timeout, received }),
    }
}

async fn read_header_inner(stream: &TcpStream, received: &mut usize) -> Result<Addresses, ProxyError> {
    let mut buf = vec![0u8; MAX_HEADER_LEN];
    let mut backoff = Duration::from_millis(1);
    let (addresses, consumed) = loop {
        // Peeking, not reading, because the header's end is only known once it is all
        // here, and the bytes after it belong to the client's stream.
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(ProxyError::Closed { received: *received });
        }
        if let Some(done) = parse(&buf[..n])? {
            break done;
        }
        if n == buf.len() {
            // Unreachable while MAX_HEADER_LEN bounds both versions; guards against a spin.
            return Err(ProxyError::MalformedV2("header does not fit the read buffer".into()));
        }
        if n > *received {
            *received = n;
            backoff = Duration::from_millis(1);
            continue;
        }
        // Peek keeps returning the buffered bytes without waiting, and readiness stays set
        // while they are unread, so only a sleep avoids a busy loop. A FIN behind those
        // bytes never makes peek return 0, but it does mark the readiness read-closed.
        let ready = stream.ready(tokio::io::Interest::READABLE).await?;
        if ready.is_read_closed() {
            // Everything sent before the FIN is buffered now: one last look.
            let n = stream.peek(&mut buf).await?;
            match parse(&buf[..n])? {
                Some(done) => break done,
                None => return Err(ProxyError::Closed { received: n }),
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(PEEK_BACKOFF_MAX);
    };
    let mut done = 0;
    while done < consumed {
        stream.readable().await?;
        match stream.try_read(&mut buf[done..consumed]) {
            Ok(0) => return Err(ProxyError::Closed { received: done }),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::time::Instant;

    use super::*;
    use crate::config::ProxyVersion;
    use crate::proxy::proxy_protocol::encode;
    use crate::proxy::proxy_protocol::testing::{sa, tcp};

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    async fn read_rest(mut server: TcpStream) -> Vec<u8> {
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        rest
    }

    #[tokio::test]
    async fn read_header_leaves_the_payload() {
        for version in [ProxyVersion::V1, ProxyVersion::V2] {
            let (mut client, server) = pair().await;
            let mut bytes = encode(version, sa("192.0.2.7:51234"), sa("10.0.0.1:443"));
            bytes.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            client.write_all(&bytes).await.unwrap();
            client.shutdown().await.unwrap();
            let got = read_header(&server, Duration::from_secs(5)).await.unwrap();
            assert_eq!(got, tcp("192.0.2.7:51234", "10.0.0.1:443"));
            assert_eq!(read_rest(server).await, b"GET / HTTP/1.1\r\n\r\n");
        }
    }

    #[tokio::test]
    async fn read_header_in_slow_pieces() {
        for version in [ProxyVersion::V1, ProxyVersion::V2] {
            let (mut client, server) = pair().await;
            client.set_nodelay(true).unwrap();
            let header = encode(version, sa("[2001:db8::7]:1"), sa("[2001:db8::1]:2"));
            let (a, b) = (header.len() / 3, 2 * header.len() / 3);
            let writer = tokio::spawn(async move {
                for piece in [&header[..a], &header[a..b], &header[b..]] {
                    client.write_all(piece).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(60)).await;
                }
                client.write_all(b"payload").await.unwrap();
            });
            let got = read_header(&server, Duration::from_secs(5)).await.unwrap();
            assert_eq!(got, tcp("[2001:db8::7]:1", "[2001:db8::1]:2"));
            writer.await.unwrap();
            assert_eq!(read_rest(server).await, b"payload");
        }
    }

    #[tokio::test]
    async fn read_header_times_out_on_a_stalled_header() {
        let (mut client, server) = pair().await;
        client.write_all(b"PROXY TCP4 192.0.2.7 ").await.unwrap();
        let started = Instant::now();
        let err = read_header(&server, Duration::from_millis(300)).await.unwrap_err();
        let took = started.elapsed();
        assert!(matches!(err, ProxyError::Timeout { received: 21, .. }), "{err:?}");
        assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(2), "{took:?}");
        assert_eq!(err.to_string(), "no complete PROXY header within 300ms (21 bytes received)");
        drop(client);
    }

    #[tokio::test]
    async fn read_header_rejects_http_at_once() {
        let (mut client, server) = pair().await;
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let started = Instant::now();
        let err = read_header(&server, Duration::from_secs(10)).await.unwrap_err();
        assert!(matches!(err, ProxyError::NotProxy { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
        drop(client);
    }

    #[tokio::test]
    async fn read_header_reports_a_close_mid_header() {
        let (mut client, server) = pair().await;
        client.write_all(b"PROXY TCP4 192.0.2.7").await.unwrap();
        client.shutdown().await.unwrap();
        let started = Instant::now();
        let err = read_header(&server, Duration::from_secs(10)).await.unwrap_err();
        assert!(matches!(err, ProxyError::Closed { received: 20 }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(1));

        let (client, server) = pair().await;
        drop(client);
        let err = read_header(&server, Duration::from_secs(10)).await.unwrap_err();
        assert!(matches!(err, ProxyError::Closed { received: 0 }), "{err:?}");
    }

    #[tokio::test]
    async fn accept_reads_a_header_only_from_the_expected() {
        let front: crate::config::IpNet = crate::config::IpNet::parse("127.0.0.1/32").unwrap();
        let header = encode(ProxyVersion::V2, sa("192.0.2.7:51234"), sa("10.0.0.1:443"));
        for (expected, want_client) in [
            (Some(AcceptProxy::All), "192.0.2.7:51234"),
            (Some(AcceptProxy::From(vec![front])), "192.0.2.7:51234"),
            (None, "127.0.0.1:1"),
        ] {
            let (mut client, server) = pair().await;
            client.write_all(&header).await.unwrap();
            client.shutdown().await.unwrap();
            let (peer, local) = (sa("127.0.0.1:1"), sa("127.0.0.1:2"));
            let got = accept(&server, peer, local, expected.as_ref(), Duration::from_secs(5)).await.unwrap();
            assert_eq!(got.client, sa(want_client), "{expected:?}");
            let rest = read_rest(server).await;
            // Without an expected header, the header's bytes are the client's stream.
            assert_eq!(rest.is_empty(), expected.is_some(), "{expected:?}");
        }
        let (mut client, server) = pair().await;
        client.write_all(&encode(ProxyVersion::V1, sa("192.0.2.7:9"), sa("10.0.0.1:80"))).await.unwrap();
        let (peer, local) = (sa("127.0.0.1:1"), sa("127.0.0.1:2"));
        let got = accept(&server, peer, local, Some(&AcceptProxy::All), Duration::from_secs(5)).await.unwrap();
        assert_eq!(got, Endpoints { client: sa("192.0.2.7:9"), local: sa("10.0.0.1:80") });
        let (mut client, server) = pair().await;
        client.write_all(b"PROXY UNKNOWN\r\n").await.unwrap();
        let got = accept(&server, peer, local, Some(&AcceptProxy::All), Duration::from_secs(5)).await.unwrap();
        assert_eq!(got, Endpoints { client: peer, local });
    }
}
