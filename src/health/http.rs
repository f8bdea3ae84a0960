//! `kind = "http"`: send one HTTP/1.0 request, judge the status (and optionally the body).
//!
//! Written by hand rather than with an HTTP client library because probe targets are
//! not always well-behaved HTTP servers: the Galera clustercheck responder writes its
//! whole answer on accept without reading the request, then closes, sometimes with a
//! reset. A response that arrived complete counts, whatever happens to the socket after.

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::probe::{Probe, ProbeFuture, Target, Verdict};
use crate::config::HttpCheck;
use crate::net;
use crate::net::response_head::truncate;

/// Most of a response we read: statuses and short bodies are all a probe needs.
const MAX_RESPONSE: usize = 64 * 1024;

pub struct HttpProbe {
    request: Vec<u8>,
    /// https: the connector and, when configured, the name to present and verify
    /// (otherwise the probed IP address).
    tls: Option<(tokio_rustls::TlsConnector, Option<ServerName<'static>>)>,
    head_only: bool,
    expect: Vec<u16>,
    expect_body: Option<String>,
    /// Report the body text as the reason (clustercheck: "Galera cluster node is synced.").
    body_is_reason: bool,
}

impl HttpProbe {
    pub fn new(check: &HttpCheck, body_is_reason: bool) -> Result<Self, String> {
        let mut req = format!("{} {} HTTP/1.0\r\n", check.method, check.path);
        if let Some(host) = &check.host {
            req.push_str(&format!("Host: {host}\r\n"));
        }
        let has_ua = check.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("user-agent"));
        if !has_ua {
            req.push_str("User-Agent: vipgate-check\r\n");
        }
        for (name, value) in &check.headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        req.push_str("Connection: close\r\n\r\n");
        let tls = match &check.tls {
            None => None,
            Some(t) => {
                let config = crate::tls::client_config(t.ca_file.as_deref(), t.verify)?;
                let name = t.server_name.as_deref().map(crate::tls::server_name).transpose()?;
                Some((tokio_rustls::TlsConnector::from(config), name))
            }
        };
        Ok(HttpProbe {
            request: req.into_bytes(),
            tls,
            head_only: check.method == "HEAD",
            expect: check.expect.clone(),
            expect_body: check.expect_body.clone(),
            body_is_reason,
        })
    }

    fn judge(&self, resp: &Response<'_>) -> Result<String, String> {
        let status_ok =
            if self.expect.is_empty() { (200..400).contains(&resp.status) } else { self.expect.contains(&resp.status) };
        let text = summary(resp.body);
        let detail =
            if self.body_is_reason && !text.is_empty() { text.clone() } else { format!("HTTP {}", resp.status) };
        if !status_ok {
            return Err(if self.body_is_reason || text.is_empty() {
                format!("HTTP {}: {}", resp.status, if text.is_empty() { resp.reason } else { &text })
            } else {
                format!("HTTP {} (expected {}): {text}", resp.status, self.expected())
            });
        }
        if let Some(needle) = &self.expect_body {
            if !contains(resp.body, needle.as_bytes()) {
                return Err(format!("HTTP {}: body lacks \"{needle}\"", resp.status));
            }
        }
        Ok(detail)
    }

    fn expected(&self) -> String {
        if self.expect.is_empty() {
            "2xx or 3xx".into()
        } else {
            self.expect.iter().map(u16::to_string).collect::<Vec<_>>().join(" or ")
        }
    }
}

impl Probe for HttpProbe {
    fn probe<'a>(&'a self, target: &'a Target) -> ProbeFuture<'a> {
        Box::pin(async move {
            let stream = net::connect_for_probe(target.addr, target.source)
                .await
                .map_err(|e| format!("connect to {}: {e}", target.addr))?;
            match &self.tls {
                None => self.exchange(stream, target).await,
                Some((connector, name)) => {
                    let name = name.clone().unwrap_or_else(|| ServerName::IpAddress(target.addr.ip().into()));
                    let tls = connector
                        .connect(name, stream)
                        .await
                        .map_err(|e| format!("TLS handshake with {}: {e}", target.addr))?;
                    self.exchange(tls, target).await
                }
            }
        })
    }
}

impl HttpProbe {
    async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(&self, mut stream: S, target: &Target) -> Verdict {
        // The responder may answer and close before reading us: a failed write is
        // not a verdict yet; what we can read decides.
        let write_err = stream.write_all(&self.request).await.err();
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 4096];
        let read_err = loop {
            if let Ok(r) = parse_response(&buf, self.head_only) {
                if r.complete {
                    break None;
                }
            }
            if buf.len() >= MAX_RESPONSE {
                break None;
            }
            match stream.read(&mut chunk).await {
                Ok(0) => break None,
                Ok(n) => buf.extend_from_slice(&chunk[..n.min(MAX_RESPONSE - buf.len())]),
                Err(e) => break Some(e),
            }
        };
        match parse_response(&buf, self.head_only) {
            Ok(resp) => self.judge(&resp),
            Err(_) if buf.is_empty() => Err(match (read_err, write_err) {
                (Some(e), _) | (None, Some(e)) => format!("no response from {}: {e}", target.addr),
                (None, None) => format!("{} closed the connection without a response", target.addr),
            }),
            Err(e) => Err(format!("bad HTTP response from {}: {e}", target.addr)),
        }
    }
}

/// A parsed HTTP response (as much as a probe needs).
#[derive(Debug, PartialEq, Eq)]
pub struct Response<'a> {
    pub status: u16,
    pub reason: &'a str,
    /// Body bytes received (up to Content-Length when it is given).
    pub body: &'a [u8],
    /// Headers complete and, with a Content-Length, the whole body is here.
    pub complete: bool,
}

/// Parse what has arrived so far. `Err` while no full status line is there or when it is
/// not HTTP. Headers without their blank line yet give `complete = false`.
pub fn parse_response(buf: &[u8], head_only: bool) -> Result<Response<'_>, String> {
    let head = net::response_head::parse(buf).map_err(|e| e.to_string())?;
    let (status, reason) = (head.status, head.reason);
    let Some(body_start) = head.body_start else {
        return Ok(Response { status, reason, body: &[], complete: false });
    };
    let body = &buf[body_start.min(buf.len())..];
    if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(Response { status, reason, body: &[], complete: true });
    }
    Ok(match head.content_length {
        Some(n) if body.len() >= n => Response { status, reason, body: &body[..n], complete: true },
        Some(_) => Response { status, reason, body, complete: false },
        None => Response { status, reason, body, complete: false },
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || find(hay, needle).is_some()
}

/// The body as one short line of text for logs.
fn summary(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(512)]);
    truncate(text.split_whitespace().collect::<Vec<_>>().join(" ").trim(), 200).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clustercheck_wire_format() {
        let synced = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 40\r\n\r\nPercona XtraDB Cluster Node is synced.\r\n";
        let r = parse_response(synced, false).unwrap();
        assert_eq!((r.status, r.complete), (200, true));
        assert_eq!(summary(r.body), "Percona XtraDB Cluster Node is synced.");
        let not = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 36\r\n\r\nGalera cluster node is not synced.\r\n";
        let r = parse_response(not, false).unwrap();
        assert_eq!((r.status, r.reason, r.complete), (503, "Service Unavailable", true));
    }

    #[test]
    fn partial_and_garbage() {
        assert!(parse_response(b"", false).is_err());
        assert!(parse_response(b"HTTP/1.1 200", false).is_err());
        assert!(!parse_response(b"HTTP/1.1 200 OK\r\nContent-", false).unwrap().complete);
        assert!(!parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", false).unwrap().complete);
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\n", true).unwrap().complete);
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n", false).is_err());
        assert!(parse_response(b"HTTP/1.1 99999 X\r\n\r\n", false).is_err());
        assert!(parse_response(&[0xff, 0xfe, b'\n'], false).is_err());
        // No Content-Length: the body runs to EOF, never complete before it.
        let r = parse_response(b"HTTP/1.0 200 OK\n\nhello", false).unwrap();
        assert_eq!((r.body, r.complete), (&b"hello"[..], false));
    }

    fn probe(expect: Vec<u16>, expect_body: Option<&str>, body_is_reason: bool) -> HttpProbe {
        let check = HttpCheck {
            method: "GET".into(),
            path: "/".into(),
            host: None,
            headers: vec![],
            expect,
            expect_body: expect_body.map(str::to_string),
            tls: None,
        };
        HttpProbe::new(&check, body_is_reason).unwrap()
    }

    #[test]
    fn verdicts() {
        let resp = |status, body: &'static [u8]| Response { status, reason: "X", body, complete: true };
        assert!(probe(vec![], None, false).judge(&resp(204, b"")).is_ok());
        assert!(probe(vec![], None, false).judge(&resp(302, b"")).is_ok());
        assert!(probe(vec![], None, false).judge(&resp(404, b"")).is_err());
        assert!(probe(vec![200, 405], None, false).judge(&resp(405, b"")).is_ok());
        assert!(probe(vec![200], Some("synced"), false).judge(&resp(200, b"not here")).is_err());
        let cc = probe(vec![200], None, true);
        assert_eq!(
            cc.judge(&resp(200, b"Galera cluster node is synced.\r\n")).unwrap(),
            "Galera cluster node is synced."
        );
        assert_eq!(
            cc.judge(&resp(503, b"Galera cluster node is not synced.\r\n")).unwrap_err(),
            "HTTP 503: Galera cluster node is not synced."
        );
    }

    #[test]
    fn request_shape() {
        let check = HttpCheck {
            method: "HEAD".into(),
            path: "/healthcheck".into(),
            host: Some("keystone".into()),
            headers: vec![("Authorization".into(), "Basic Zm9vOmJhcg==".into())],
            expect: vec![],
            expect_body: None,
            tls: None,
        };
        let p = HttpProbe::new(&check, false).unwrap();
        assert_eq!(
            String::from_utf8(p.request.clone()).unwrap(),
            "HEAD /healthcheck HTTP/1.0\r\nHost: keystone\r\nUser-Agent: vipgate-check\r\nAuthorization: Basic Zm9vOmJhcg==\r\nConnection: close\r\n\r\n"
        );
        assert!(p.head_only);
    }
}
