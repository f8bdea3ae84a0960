//! `vipgate status` and `vipgate reload`: ask the running process through its admin API.
//!
//! The endpoint and token come from the `[admin]` table of the config file, read leniently:
//! `vipgate reload` is most needed right after an edit, and the rest of the file may be
//! broken (the running process reports exactly how). A plain blocking HTTP/1.1 exchange
//! over a TCP or unix socket is all a one-shot command needs.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use super::api::{ErrorView, ReloadView, ServicesView};
use super::page::bytes;
use crate::config::keys;
use crate::config::{parse_bind, Admin};
use crate::net::response_head::HeadError;

/// Bound on connecting and on each read or write of a status request.
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);
/// A reload waits for new servers' first probes before it answers.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest answer read (a status of thousands of servers is a few MiB).
const MAX_RESPONSE: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "{a}"),
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Where to ask, in order of preference, and with which token (TCP only).
#[derive(Debug, Clone)]
pub struct Target {
    pub endpoints: Vec<Endpoint>,
    pub token: Option<String>,
}

/// The admin endpoint of the vipgate running with `config`; `admin` (an `IP:PORT` or a
/// socket path) overrides where to connect. Without it the unix socket is tried first
/// (no token needed), then the TCP address.
pub fn target(config: &Path, admin: Option<&str>) -> Result<Target, String> {
    let file = config.display();
    let text = std::fs::read_to_string(config).map_err(|e| format!("{file}: cannot read: {e}"))?;
    let (root, _syntax_errors) = DeTable::parse_recoverable(&text);
    let section = root.get_ref().get(keys::ADMIN_SECTION).map(|v| v.get_ref());
    let get = |key: &str| -> Result<Option<String>, String> {
        match section {
            Some(DeValue::Table(t)) => match t.get(key).map(|v| v.get_ref()) {
                None => Ok(None),
                Some(DeValue::String(s)) => Ok(Some(s.to_string())),
                Some(_) => Err(format!("{file}: [admin] {key} must be a string")),
            },
            _ => Ok(None),
        }
    };
    if admin.is_none() && !matches!(section, Some(DeValue::Table(_))) {
        return Err(format!(
            "{file} has no [admin] section, so the running vipgate serves no admin API (or give --admin ADDR)"
        ));
    }
    let token = match get(keys::ADMIN_TOKEN_FILE)? {
        Some(path) => match std::fs::read_to_string(&path) {
            Ok(t) => Some(t.trim().to_string()),
            Err(e) => return Err(format!("cannot read token_file \"{path}\" (from {file}): {e}")),
        },
        None => None,
    };
    let endpoints = match admin {
        Some(a) if a.starts_with('/') || a.starts_with('.') => vec![Endpoint::Unix(a.into())],
        Some(a) => vec![Endpoint::Tcp(parse_bind(a).map_err(|e| format!("--admin \"{a}\": {e}"))?)],
        None => {
            let mut list = Vec::new();
            if let Some(socket) = get(keys::ADMIN_SOCKET)? {
                list.push(Endpoint::Unix(socket.into()));
            }
            let bind = match get(keys::ADMIN_BIND)? {
                Some(b) => parse_bind(&b).map_err(|e| format!("{file}: [admin] bind \"{b}\": {e}"))?,
                None => Admin::DEFAULT_BIND,
            };
            list.push(Endpoint::Tcp(bind));
            list
        }
    };
    let endpoints = endpoints.into_iter().map(reachable).collect();
    Ok(Target { endpoints, token })
}

/// A wildcard bind is reached on loopback.
fn reachable(e: Endpoint) -> Endpoint {
    match e {
        Endpoint::Tcp(a) if a.ip() == IpAddr::V4(Ipv4Addr::UNSPECIFIED) => {
            Endpoint::Tcp(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), a.port()))
        }
        Endpoint::Tcp(a) if a.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) => {
            Endpoint::Tcp(SocketAddr::new(Ipv6Addr::LOCALHOST.into(), a.port()))
        }
        other => other,
    }
}

/// One answer: status code and body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    /// The API's `{"error": ...}` text, else the body as text.
    fn error_text(&self) -> String {
        match serde_json::from_slice::<ErrorView>(&self.body) {
            Ok(e) => e.error,
            Err(_) => String::from_utf8_lossy(&self.body).trim().to_string(),
        }
    }
}

/// Send `method path` to the first endpoint that accepts a connection.
pub fn request(target: &Target, method: &str, path: &str, timeout: Duration) -> Result<Answer, String> {
    let mut failures = Vec::new();
    for endpoint in &target.endpoints {
        let result = match endpoint {
            Endpoint::Unix(p) => match UnixStream::connect(p) {
                Ok(s) => {
                    let _ = s.set_read_timeout(Some(timeout));
                    let _ = s.set_write_timeout(Some(timeout));
                    exchange(s, method, path, None, endpoint)
                }
                Err(e) => Err(Failure::Connect(e.to_string())),
            },
            Endpoint::Tcp(a) => match TcpStream::connect_timeout(a, STATUS_TIMEOUT) {
                Ok(s) => {
                    let _ = s.set_read_timeout(Some(timeout));
                    let _ = s.set_write_timeout(Some(timeout));
                    exchange(s, method, path, target.token.as_deref(), endpoint)
                }
                Err(e) => Err(Failure::Connect(e.to_string())),
            },
        };
        match result {
            Ok(a) => return Ok(a),
            // Only a refused or unreachable endpoint moves on; a half-done request must not be
            // sent twice (a reload).
            Err(Failure::Connect(e)) => failures.push(format!("{endpoint}: {e}")),
            Err(Failure::Exchange(e)) => return Err(format!("admin endpoint {endpoint}: {e}")),
        }
    }
    Err(format!("cannot reach the admin endpoint (is vipgate running?): {}", failures.join("; ")))
}

enum Failure {
    Connect(String),
    Exchange(String),
}

fn exchange(
    mut s: impl Read + Write,
    method: &str,
    path: &str,
    token: Option<&str>,
    endpoint: &Endpoint,
) -> Result<Answer, Failure> {
    let host = match endpoint {
        Endpoint::Tcp(a) => a.to_string(),
        Endpoint::Unix(_) => "localhost".to_string(),
    };
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    // The endpoint takes state changes only as JSON (a browser's form post is not).
    let content_type = if method == "POST" { "Content-Type: application/json\r\n" } else { "" };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: vipgate-cli/{}\r\nAccept: application/json\r\n\
         Connection: close\r\n{content_type}Content-Length: 0\r\n{auth}\r\n",
        env!("CARGO_PKG_VERSION")
    );
    s.write_all(head.as_bytes()).map_err(|e| Failure::Exchange(format!("sending the request: {e}")))?;
    let mut raw = Vec::new();
    s.take(MAX_RESPONSE).read_to_end(&mut raw).map_err(|e| Failure::Exchange(format!("reading the answer: {e}")))?;
    parse_response(&raw).map_err(Failure::Exchange)
}

/// Status line, headers, then a body by Content-Length, chunked, or up to the close.
pub fn parse_response(raw: &[u8]) -> Result<Answer, String> {
    let head = match crate::net::response_head::parse(raw) {
        Ok(head) => head,
        Err(HeadError::NoStatusLine) => return Err("no complete HTTP answer".into()),
        Err(e) => return Err(e.to_string()),
    };
    let body_start = head.body_start.ok_or("no complete HTTP answer")?;
    let rest = &raw[body_start..];
    let body = if head.chunked {
        dechunk(rest)?
    } else if let Some(n) = head.content_length {
        rest.get(..n).ok_or("answer shorter than its Content-Length")?.to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Answer { status: head.status, body })
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").ok_or("truncated chunked body")?;
        let size = std::str::from_utf8(&b[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok());
        let size = size.ok_or("bad chunk size")?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(b.get(..size).ok_or("truncated chunk")?);
        b = b.get(size + 2..).ok_or("truncated chunk")?;
    }
}

fn check_ok(answer: &Answer, what: &str) -> Result<(), String> {
    match answer.status {
        200 => Ok(()),
        401 => Err(format!(
            "{what}: the admin endpoint wants a bearer token (401): {}; is token_file in [admin] the one it runs with?",
            answer.error_text()
        )),
        s => Err(format!("{what}: HTTP {s}: {}", answer.error_text())),
    }
}

/// `vipgate status`: a table of every service and server.
pub fn status(config: &Path, admin: Option<&str>) -> Result<String, String> {
    Ok(format_status(&services(config, admin, "status")?))
}

/// `GET /api/v1/services` from the running vipgate; `what` prefixes errors.
fn services(config: &Path, admin: Option<&str>, what: &str) -> Result<ServicesView, String> {
    let target = target(config, admin)?;
    let answer = request(&target, "GET", "/api/v1/services", STATUS_TIMEOUT)?;
    check_ok(&answer, what)?;
    serde_json::from_slice(&answer.body).map_err(|e| format!("{what}: unexpected answer ({e})"))
}

/// The pid of the vipgate that serves this admin endpoint.
pub fn pid(config: &Path, admin: Option<&str>) -> Result<u32, String> {
    match services(config, admin, "upgrade")?.process.pid {
        0 => Err("upgrade: the admin endpoint did not name its process".into()),
        pid => Ok(pid),
    }
}

pub fn format_status(view: &ServicesView) -> String {
    let p = &view.process;
    let hash: String = p.config_hash.chars().take(12).collect();
    let mut out = format!(
        "vipgate {}: config generation {} (sha1 {}), {} reloads, {} failed\n\n",
        view.version,
        p.generation,
        if hash.is_empty() { "-" } else { &hash },
        p.reloads_total,
        p.reloads_failed
    );
    let mut rows: Vec<Vec<String>> = vec![[
        "SERVICE",
        "MODE",
        "SERVER",
        "ADDRESS",
        "STATE",
        "TIER",
        "WEIGHT",
        "ACTIVE",
        "CONNS",
        "IN",
        "OUT",
        "FAILS",
        "LAST PROBE",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()];
    for svc in &view.services {
        for s in &svc.servers {
            let probe = match &s.last_probe {
                Some(p) => format!("{} {} ms: {}", if p.ok { "ok" } else { "failed" }, p.duration_ms, p.reason),
                None => "-".to_string(),
            };
            rows.push(vec![
                svc.name.clone(),
                svc.mode.clone(),
                s.name.clone(),
                s.address.clone(),
                s.state.clone(),
                s.tier.to_string(),
                s.weight.to_string(),
                s.active.to_string(),
                s.connections_total.to_string(),
                bytes(s.bytes_in),
                bytes(s.bytes_out),
                s.connect_failures.to_string(),
                // One line per server: a multi-line probe reason is folded.
                probe.replace(['\r', '\n'], " "),
            ]);
        }
    }
    let columns = rows[0].len();
    let widths: Vec<usize> =
        (0..columns).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    for r in &rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == columns {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if let Some(e) = &p.last_reload_error {
        out.push_str(&format!("\nlast reload failed (the running config stayed):\n{e}\n"));
    }
    out
}

/// `vipgate reload`: Ok with a summary, or Err with why (the `FILE:LINE:COL` lines of an
/// invalid file).
pub fn reload(config: &Path, admin: Option<&str>) -> Result<String, String> {
    let target = target(config, admin)?;
    let answer = request(&target, "POST", "/api/v1/reload", RELOAD_TIMEOUT)?;
    // An invalid file's answer is the `FILE:LINE:COL` lines themselves, as `vipgate check` prints them.
    if answer.status == 422 {
        return Err(answer.error_text());
    }
    check_ok(&answer, "reload")?;
    let r: ReloadView = serde_json::from_slice(&answer.body).map_err(|e| format!("reload: unexpected answer ({e})"))?;
    let list = |v: &[String]| if v.is_empty() { "none".to_string() } else { v.join(", ") };
    Ok(format!(
        "reloaded: config generation {}, {} services, servers +{} -{}, binds added: {}, binds removed: {}",
        r.generation,
        r.services,
        r.servers_added,
        r.servers_removed,
        list(&r.binds_added),
        list(&r.binds_removed)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse() {
        let a = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA").unwrap();
        assert_eq!((a.status, a.body.as_slice()), (200, &b"ok"[..]));
        let a =
            parse_response(b"HTTP/1.1 422 X\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x\r\nde\r\n0\r\n\r\n")
                .unwrap();
        assert_eq!((a.status, a.body.as_slice()), (422, &b"abcde"[..]));
        let a = parse_response(b"HTTP/1.1 500 X\r\n\r\nto the end").unwrap();
        assert_eq!(a.body, b"to the end");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").is_err());
    }

    #[test]
    fn target_reads_only_the_admin_table_even_from_a_broken_file() {
        let dir = std::env::temp_dir().join(format!("vipgate-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let cfg = dir.join("c.toml");
        let text = format!(
            "[admin]\nbind = \"0.0.0.0:9200\"\nsocket = \"/run/x.sock\"\ntoken_file = \"{}\"\n\n\
             [services.x]\nbind = [broken\n",
            token.display()
        );
        std::fs::write(&cfg, text).unwrap();
        let t = target(&cfg, None).unwrap();
        assert_eq!(t.token.as_deref(), Some("s3cret"));
        assert_eq!(
            t.endpoints,
            vec![Endpoint::Unix("/run/x.sock".into()), Endpoint::Tcp("127.0.0.1:9200".parse().unwrap())]
        );
        let t = target(&cfg, Some("[::1]:9300")).unwrap();
        assert_eq!(t.endpoints, vec![Endpoint::Tcp("[::1]:9300".parse().unwrap())]);

        std::fs::write(&cfg, "[admin]\n").unwrap();
        let t = target(&cfg, None).unwrap();
        assert_eq!(t.endpoints, vec![Endpoint::Tcp(Admin::DEFAULT_BIND)]);
        assert_eq!(t.token, None);

        std::fs::write(&cfg, "[global]\n").unwrap();
        assert!(target(&cfg, None).unwrap_err().contains("no [admin] section"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
