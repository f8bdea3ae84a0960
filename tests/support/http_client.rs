//! A small blocking HTTP/1.1 client over a raw socket: tests need to send exactly the
//! bytes they mean (slow heads, huge headers, garbage) and read exactly what came back.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A `key=value` line of the test backend's report.
    pub fn field(&self, key: &str) -> Option<String> {
        let prefix = format!("{key}=");
        self.text().lines().find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
    }

    /// Every value the backend saw for request header `name` (lower-case).
    pub fn seen_header(&self, name: &str) -> Vec<String> {
        let prefix = format!("h:{name}=");
        self.text().lines().filter_map(|l| l.strip_prefix(&prefix).map(str::to_string)).collect()
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to vipgate");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// `GET path` on a new connection with `extra` header lines ("Name: value\r\n"...).
pub fn get(addr: SocketAddr, path: &str, extra: &str) -> Resp {
    let mut s = connect(addr);
    send(&mut s, &format!("GET {path} HTTP/1.1\r\nHost: test.example\r\nConnection: close\r\n{extra}\r\n"))
        .expect("response")
}

pub fn send(s: &mut TcpStream, raw: &str) -> io::Result<Resp> {
    s.write_all(raw.as_bytes())?;
    read_response(s)
}

pub fn read_response(s: &mut TcpStream) -> io::Result<Resp> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("EOF in head after {head:?}")));
        }
        head.push(byte[0]);
        if head.len() > 1 << 20 {
            return Err(io::Error::other("head too long"));
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
        .collect();
    let find = |n: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if status == 101 || status == 204 || status == 304 {
        // no body
    } else if let Some(len) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(len, 0);
        s.read_exact(&mut body)?;
    } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut line = Vec::new();
            while !line.ends_with(b"\r\n") {
                if s.read(&mut byte)? == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF in chunk size"));
                }
                line.push(byte[0]);
            }
            let size = usize::from_str_radix(String::from_utf8_lossy(&line).trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| io::Error::other("bad chunk size"))?;
            let mut chunk = vec![0u8; size + 2];
            s.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        s.read_to_end(&mut body)?;
    }
    Ok(Resp { status, headers, body })
}

/// One sample of the admin endpoint's `/metrics`: the first series of `name` whose labels
/// start with `service`. Panics with the page if there is none.
pub fn metric(admin: SocketAddr, name: &str, service: &str) -> f64 {
    let text = get(admin, "/metrics", "").text();
    let prefix = format!("{name}{{service=\"{service}\"");
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
}

/// An HTTP/2 (prior knowledge) client connection to `bind`, its connection task spawned.
pub async fn h2c<B>(bind: SocketAddr) -> hyper::client::conn::http2::SendRequest<B>
where
    B: http_body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // One CI run saw this connect reset once, before any byte was sent, and it never
    // recurred in hundreds of runs; a second try tells a kernel hiccup from vipgate
    // resetting h2c clients (which would fail every try).
    let mut tcp = None;
    for attempt in 0..3 {
        match tokio::net::TcpStream::connect(bind).await {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => eprintln!("connect attempt {attempt}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tcp = tcp.expect("connect to vipgate");
    let (send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("h2 handshake with vipgate");
    tokio::spawn(conn);
    send
}
