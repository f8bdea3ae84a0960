//! The PROXY protocol (HAProxy's spec, versions 1 and 2): the header a proxy in front of us
//! sends so we learn the real client, and the header we send to servers so they do.
//!
//! Parsing is incremental and strict: a buffer is either a complete header, a valid prefix
//! of one (wait for more), or an error as soon as a byte rules a header out, so a client
//! that skips the header fails at once instead of waiting for the timeout.

use std::fmt;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;

use crate::config::{format_duration, ProxyVersion};

/// What a PROXY header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addresses {
    /// v2 LOCAL command, v1 "UNKNOWN", or a non-TCP family (AF_UNIX/UNSPEC): use the real peer.
    Local,
    /// The original client (source) and the address it connected to (destination).
    Tcp { source: SocketAddr, destination: SocketAddr },
}

/// The longest v1 line the spec lets a receiver wait for, CRLF included.
pub const V1_MAX_LEN: usize = 107;

/// Largest v2 length field (bytes after the fixed 16) we accept. The spec allows up to
/// 65535, but then a whole header would not fit the single 4 KiB buffer [`read_header`]
/// peeks into; real senders (HAProxy, cloud load balancers) stay far below it even with
/// their TLVs.
pub const MAX_V2_LEN: usize = 4096 - V2_FIXED_LEN;

/// Largest header of either version, so one buffer of this size always suffices.
pub const MAX_HEADER_LEN: usize = V2_FIXED_LEN + MAX_V2_LEN;

const V1_PREFIX: &[u8] = b"PROXY ";
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const V2_FIXED_LEN: usize = 16;
const V2_CMD_LOCAL: u8 = 0x0;
const V2_CMD_PROXY: u8 = 0x1;
const V2_TCP4: u8 = 0x11;
const V2_UDP4: u8 = 0x12;
const V2_TCP6: u8 = 0x21;
const V2_UDP6: u8 = 0x22;
const V2_UNSPEC: u8 = 0x00;
const V2_UNIX_STREAM: u8 = 0x31;
const V2_UNIX_DGRAM: u8 = 0x32;
const V2_ADDR_LEN_V4: usize = 12;
const V2_ADDR_LEN_V6: usize = 36;
const V2_ADDR_LEN_UNIX: usize = 216;

/// How much of unexpected input an error message quotes: enough to recognise the protocol
/// the peer actually spoke, little enough for one log line.
const QUOTE_MAX: usize = 16;

#[derive(Debug)]
pub enum ProxyError {
    /// The first bytes match neither the v1 nor the v2 signature.
    NotProxy {
        seen: String,
    },
    MalformedV1(String),
    MalformedV2(String),
    /// A v1 line with no CRLF within [`V1_MAX_LEN`] bytes.
    V1TooLong,
    /// A v2 header whose length field exceeds [`MAX_V2_LEN`].
    V2TooLong {
        declared: usize,
    },
    /// The v2 version nibble is not 2.
    UnsupportedVersion(u8),
    /// The v2 command nibble is neither LOCAL nor PROXY.
    UnsupportedCommand(u8),
    /// A v2 PROXY command for UDP: there is no stream to forward.
    UnsupportedTransport(u8),
    Io(std::io::Error),
    /// The peer closed its side before a complete header.
    Closed {
        received: usize,
    },
    Timeout {
        after: Duration,
        received: usize,
    },
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::NotProxy { seen } => write!(f, "expected a PROXY protocol header, got \"{seen}\""),
            ProxyError::MalformedV1(what) => write!(f, "malformed PROXY v1 header: {what}"),
            ProxyError::MalformedV2(what) => write!(f, "malformed PROXY v2 header: {what}"),
            ProxyError::V1TooLong => write!(f, "PROXY v1 header has no CRLF within its first {V1_MAX_LEN} bytes"),
            ProxyError::V2TooLong { declared } => write!(
                f,
                "PROXY v2 header declares {declared} bytes of addresses and TLVs, more than the {MAX_V2_LEN} accepted"
            ),
            ProxyError::UnsupportedVersion(v) => {
                write!(f, "PROXY v2 signature with unsupported version {v} (only version 2 exists)")
            }
            ProxyError::UnsupportedCommand(c) => {
                write!(f, "PROXY v2 header with unsupported command {c} (expected 0 LOCAL or 1 PROXY)")
            }
            ProxyError::UnsupportedTransport(fam) => write!(
                f,
                "PROXY v2 header announces a UDP connection (family byte 0x{fam:02x}); only TCP can be proxied"
            ),
            ProxyError::Io(e) => write!(f, "reading the PROXY header: {e}"),
            ProxyError::Closed { received } => {
                write!(f, "connection closed after {received} bytes, before a complete PROXY header")
            }
            ProxyError::Timeout { after, received } => {
                write!(f, "no complete PROXY header within {} ({received} bytes received)", format_duration(*after))
            }
        }
    }
}

impl std::error::Error for ProxyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProxyError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for ProxyError {
    fn from(e: std::io::Error) -> Self {
        ProxyError::Io(e)
    }
}

/// Header bytes to send to a server before any client byte.
///
/// IPv4-mapped IPv6 addresses (what a dual-stack listener reports for IPv4 clients) are
/// sent as IPv4, so servers log and match the client the way it really connected. When
/// the families still differ, the IPv4 one is mapped to `::ffff:a.b.c.d` because a header
/// has one family for both addresses.
pub fn encode(version: ProxyVersion, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (src, dst) = match (unmap(source.ip()), unmap(destination.ip())) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (IpAddr::V4(s), IpAddr::V4(d)),
        (s, d) => (IpAddr::V6(to_v6(s)), IpAddr::V6(to_v6(d))),
    };
    let (sport, dport) = (source.port(), destination.port());
    match version {
        ProxyVersion::V1 => {
            let proto = if src.is_ipv4() { "TCP4" } else { "TCP6" };
            let mut line = String::with_capacity(V1_MAX_LEN);
            // Writing to a String cannot fail.
            let _ = write!(line, "PROXY {proto} {src} {dst} {sport} {dport}\r\n");
            line.into_bytes()
        }
        ProxyVersion::V2 => {
            let mut out = Vec::with_capacity(V2_FIXED_LEN + V2_ADDR_LEN_V6);
            out.extend_from_slice(&V2_SIGNATURE);
            out.push(0x20 | V2_CMD_PROXY);
            match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    out.push(V2_TCP4);
                    out.extend_from_slice(&(V2_ADDR_LEN_V4 as u16).to_be_bytes());
                    out.extend_from_slice(&s.octets());
                    out.extend_from_slice(&d.octets());
                }
                (s, d) => {
                    out.push(V2_TCP6);
                    out.extend_from_slice(&(V2_ADDR_LEN_V6 as u16).to_be_bytes());
                    out.extend_from_slice(&to_v6(s).octets());
                    out.extend_from_slice(&to_v6(d).octets());
                }
            }
            out.extend_from_slice(&sport.to_be_bytes());
            out.extend_from_slice(&dport.to_be_bytes());
            out
        }
    }
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Parse a header at the start of `buf`.
///
/// `Ok(None)`: `buf` is a valid prefix of a header, more bytes are needed.
/// `Ok(Some((addresses, consumed)))`: the first `consumed` bytes are the whole header
/// (v2 TLVs included, and skipped unread: nothing here uses them).
/// `Err`: no header can start with these bytes.
///
/// Never reads past [`V1_MAX_LEN`] bytes for v1 or [`MAX_HEADER_LEN`] for v2, and allocates
/// only for error messages, which quote a bounded amount.
pub fn parse(buf: &[u8]) -> Result<Option<(Addresses, usize)>, ProxyError> {
    match buf.first() {
        None => Ok(None),
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf),
        Some(_) => Err(not_proxy(buf)),
    }
}

fn not_proxy(buf: &[u8]) -> ProxyError {
    ProxyError::NotProxy { seen: quote(buf) }
}

/// Escaped and shortened, so binary or hostile input is safe to log.
fn quote(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(QUOTE_MAX)];
    let mut s = shown.escape_ascii().to_string();
    if bytes.len() > QUOTE_MAX {
        s.push_str("...");
    }
    s
}

fn starts_like(buf: &[u8], prefix: &[u8]) -> bool {
    let n = buf.len().min(prefix.len());
    buf[..n] == prefix[..n]
}

// ---- version 1 ----------------------------------------------------------------------

fn parse_v1(buf: &[u8]) -> Result<Option<(Addresses, usize)>, ProxyError> {
    if !starts_like(buf, V1_PREFIX) {
        return Err(not_proxy(buf));
    }
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    if let Some(end) = window.windows(2).position(|w| w == b"\r\n") {
        return Ok(Some((parse_v1_line(&window[..end])?, end + 2)));
    }
    if buf.len() >= V1_MAX_LEN {
        return Err(ProxyError::V1TooLong);
    }
    check_v1_prefix(buf)?;
    Ok(None)
}

#[derive(Clone, Copy, PartialEq)]
enum V1Proto {
    Tcp4,
    Tcp6,
    Unknown,
}

fn v1_proto(field: &[u8]) -> Result<V1Proto, ProxyError> {
    match field {
        b"TCP4" => Ok(V1Proto::Tcp4),
        b"TCP6" => Ok(V1Proto::Tcp6),
        b"UNKNOWN" => Ok(V1Proto::Unknown),
        _ => Err(ProxyError::MalformedV1(format!(
            "unknown protocol \"{}\" (expected TCP4, TCP6 or UNKNOWN)",
            quote(field)
        ))),
    }
}

const V1_FIELDS: [&str; 4] = ["source address", "destination address", "source port", "destination port"];

/// A complete line, CRLF excluded, "PROXY " included.
fn parse_v1_line(line: &[u8]) -> Result<Addresses, ProxyError> {
    let rest = line.get(V1_PREFIX.len()..).unwrap_or_default();
    let mut fields = rest.split(|&b| b == b' ');
    let proto = v1_proto(fields.next().unwrap_or_default())?;
    if proto == V1Proto::Unknown {
        // The spec has receivers ignore whatever follows UNKNOWN.
        return Ok(Addresses::Local);
    }
    let mut take = |i: usize| fields.next().ok_or_else(|| ProxyError::MalformedV1(format!("{} missing", V1_FIELDS[i])));
    let (src, dst, sport, dport) = (take(0)?, take(1)?, take(2)?, take(3)?);
    let source = SocketAddr::new(v1_addr(proto, src, V1_FIELDS[0])?, v1_port(sport, V1_FIELDS[2])?);
    let destination = SocketAddr::new(v1_addr(proto, dst, V1_FIELDS[1])?, v1_port(dport, V1_FIELDS[3])?);
    if fields.next().is_some() {
        return Err(ProxyError::MalformedV1("unexpected text after the destination port".into()));
    }
    Ok(Addresses::Tcp { source, destination })
}

/// Rejects a line that has gone wrong before its CRLF arrived, so a bad sender fails now
/// rather than at the timeout. Must accept every prefix of a valid line.
fn check_v1_prefix(buf: &[u8]) -> Result<(), ProxyError> {
    if buf.len() <= V1_PREFIX.len() {
        return Ok(());
    }
    if let Some(line) = buf.strip_suffix(b"\r") {
        // Only an LF may come next, so what precedes the CR must already be a whole line.
        return parse_v1_line(line).map(|_| ());
    }
    let rest = &buf[V1_PREFIX.len()..];
    let count = rest.split(|&b| b == b' ').count();
    let mut proto = V1Proto::Unknown;
    for (i, field) in rest.split(|&b| b == b' ').enumerate() {
        let last = i + 1 == count;
        match i {
            0 if last => {
                let could_be = [&b"TCP4"[..], b"TCP6", b"UNKNOWN"].iter().any(|p| p.starts_with(field));
                if !could_be {
                    v1_proto(field)?;
                }
            }
            0 => {
                proto = v1_proto(field)?;
                if proto == V1Proto::Unknown {
                    return Ok(());
                }
            }
            1 | 2 if last => {
                let (max, ok): (usize, fn(&u8) -> bool) = match proto {
                    V1Proto::Tcp4 => (15, |b| b.is_ascii_digit() || *b == b'.'),
                    // Room for the mixed form ffff:...:ffff:255.255.255.255.
                    _ => (45, |b| b.is_ascii_hexdigit() || *b == b':' || *b == b'.'),
                };
                if field.len() > max || !field.iter().all(ok) {
                    let what = V1_FIELDS[i - 1];
                    return Err(ProxyError::MalformedV1(format!("bad {what} \"{}\"", quote(field))));
                }
            }
            1 | 2 => {
                v1_addr(proto, field, V1_FIELDS[i - 1])?;
            }
            3 | 4 if last => {
                let plausible = field.len() < 5 || v1_port(field, "").is_ok();
                if !field.iter().all(u8::is_ascii_digit) || !plausible {
                    let what = V1_FIELDS[i - 1];
                    return Err(ProxyError::MalformedV1(format!("bad {what} \"{}\"", quote(field))));
                }
            }
            3 => {
                v1_port(field, V1_FIELDS[2])?;
            }
            _ => return Err(ProxyError::MalformedV1("unexpected text after the destination port".into())),
        }
    }
    Ok(())
}

fn v1_addr(proto: V1Proto, field: &[u8], what: &str) -> Result<IpAddr, ProxyError> {
    let text = std::str::from_utf8(field).unwrap_or_default();
    match (proto, text.parse::<IpAddr>()) {
        (V1Proto::Tcp4, Ok(ip @ IpAddr::V4(_))) | (V1Proto::Tcp6, Ok(ip @ IpAddr::V6(_))) => Ok(ip),
        (V1Proto::Tcp4, Ok(IpAddr::V6(_))) => {
            Err(ProxyError::MalformedV1(format!("TCP4 line with IPv6 {what} \"{}\"", quote(field))))
        }
        (V1Proto::Tcp6, Ok(IpAddr::V4(_))) => {
            Err(ProxyError::MalformedV1(format!("TCP6 line with IPv4 {what} \"{}\"", quote(field))))
        }
        _ => Err(ProxyError::MalformedV1(format!("bad {what} \"{}\"", quote(field)))),
    }
}

/// Decimal digits only: `u16::from_str` would also take a leading `+`.
fn v1_port(field: &[u8], what: &str) -> Result<u16, ProxyError> {
    let bad = || ProxyError::MalformedV1(format!("bad {what} \"{}\" (expected 0..65535)", quote(field)));
    if field.is_empty() || field.len() > 5 || !field.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let value = field.iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
    u16::try_from(value).map_err(|_| bad())
}

// ---- version 2 ----------------------------------------------------------------------

fn parse_v2(buf: &[u8]) -> Result<Option<(Addresses, usize)>, ProxyError> {
    if !starts_like(buf, &V2_SIGNATURE) {
        return Err(not_proxy(buf));
    }
    let Some(&ver_cmd) = buf.get(12) else { return Ok(None) };
    let (version, command) = (ver_cmd >> 4, ver_cmd & 0x0f);
    if version != 2 {
        return Err(ProxyError::UnsupportedVersion(version));
    }
    if command != V2_CMD_LOCAL && command != V2_CMD_PROXY {
        return Err(ProxyError::UnsupportedCommand(command));
    }
    let Some(&family) = buf.get(13) else { return Ok(None) };
    // A LOCAL header (a health check from the proxy itself) carries no meaningful
    // addresses: the spec has receivers ignore its family and address block.
    let address_len = if command == V2_CMD_LOCAL {
        0
    } else {
        match family {
            V2_TCP4 => V2_ADDR_LEN_V4,
            V2_TCP6 => V2_ADDR_LEN_V6,
            V2_UNSPEC => 0,
            V2_UNIX_STREAM | V2_UNIX_DGRAM => V2_ADDR_LEN_UNIX,
            V2_UDP4 | V2_UDP6 => return Err(ProxyError::UnsupportedTransport(family)),
            _ => return Err(ProxyError::MalformedV2(format!("unknown address family/transport byte 0x{family:02x}"))),
        }
    };
    let (Some(&hi), Some(&lo)) = (buf.get(14), buf.get(15)) else { return Ok(None) };
    let declared = usize::from(u16::from_be_bytes([hi, lo]));
    if declared > MAX_V2_LEN {
        return Err(ProxyError::V2TooLong { declared });
    }
    if declared < address_len {
        return Err(ProxyError::MalformedV2(format!(
            "length {declared} is shorter than the {address_len}-byte address block of family 0x{family:02x}"
        )));
    }
    let total = V2_FIXED_LEN + declared;
    let Some(block) = buf.get(V2_FIXED_LEN..V2_FIXED_LEN + address_len) else { return Ok(None) };
    if buf.len() < total {
        return Ok(None);
    }
    let addresses = match (command, family) {
        (V2_CMD_PROXY, V2_TCP4) => v2_tcp4(block),
        (V2_CMD_PROXY, V2_TCP6) => v2_tcp6(block),
        _ => None,
    }
    .unwrap_or(Addresses::Local);
    Ok(Some((addresses, total)))
}

fn v2_tcp4(block: &[u8]) -> Option<Addresses> {
    let b: [u8; V2_ADDR_LEN_V4] = block.try_into().ok()?;
    let ip = |at: usize| Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]);
    let port = |at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    Some(Addresses::Tcp {
        source: SocketAddr::new(IpAddr::V4(ip(0)), port(8)),
        destination: SocketAddr::new(IpAddr::V4(ip(4)), port(10)),
    })
}

fn v2_tcp6(block: &[u8]) -> Option<Addresses> {
    let b: [u8; V2_ADDR_LEN_V6] = block.try_into().ok()?;
    let ip = |at: usize| {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&b[at..at + 16]);
        Ipv6Addr::from(octets)
    };
    let port = |at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    Some(Addresses::Tcp {
        source: SocketAddr::new(IpAddr::V6(ip(0)), port(32)),
        destination: SocketAddr::new(IpAddr::V6(ip(16)), port(34)),
    })
}

// ---- reading from a connection ------------------------------------------------------

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
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::time::Instant;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn tcp(src: &str, dst: &str) -> Addresses {
        Addresses::Tcp { source: sa(src), destination: sa(dst) }
    }

    fn complete(buf: &[u8]) -> Addresses {
        match parse(buf) {
            Ok(Some((a, n))) => {
                assert_eq!(n, buf.len(), "consumed for {:?}", buf.escape_ascii().to_string());
                a
            }
            other => panic!("{:?}: {other:?}", buf.escape_ascii().to_string()),
        }
    }

    fn assert_every_prefix_pending(header: &[u8]) {
        for i in 0..header.len() {
            match parse(&header[..i]) {
                Ok(None) => {}
                other => panic!("prefix {i} of {:?}: {other:?}", header.escape_ascii().to_string()),
            }
        }
    }

    fn v2_header(ver_cmd: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(ver_cmd);
        h.push(family);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    #[test]
    fn round_trips() {
        let cases = [
            ("192.0.2.7:51234", "10.0.0.1:443", "192.0.2.7:51234", "10.0.0.1:443"),
            ("[2001:db8::7]:51234", "[2001:db8::1]:5000", "[2001:db8::7]:51234", "[2001:db8::1]:5000"),
            ("192.0.2.7:1", "[2001:db8::1]:65535", "[::ffff:192.0.2.7]:1", "[2001:db8::1]:65535"),
            ("[2001:db8::7]:0", "10.0.0.1:80", "[2001:db8::7]:0", "[::ffff:10.0.0.1]:80"),
            // A dual-stack listener's view of an IPv4 client goes out as plain IPv4.
            ("[::ffff:192.0.2.7]:9", "[::ffff:10.0.0.1]:3306", "192.0.2.7:9", "10.0.0.1:3306"),
        ];
        for version in [ProxyVersion::V1, ProxyVersion::V2] {
            for (src, dst, want_src, want_dst) in cases {
                let header = encode(version, sa(src), sa(dst));
                assert_eq!(complete(&header), tcp(want_src, want_dst), "{version:?} {src} {dst}");
                assert_every_prefix_pending(&header);
                let mut with_payload = header.clone();
                with_payload.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
                assert_eq!(parse(&with_payload).unwrap(), Some((tcp(want_src, want_dst), header.len())));
            }
        }
    }

    #[test]
    fn encodes_the_expected_bytes() {
        let v1 = encode(ProxyVersion::V1, sa("192.168.0.1:56324"), sa("192.168.0.11:443"));
        assert_eq!(v1, b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
        let v1 = encode(ProxyVersion::V1, sa("10.0.0.1:1"), sa("[2001:db8::1]:2"));
        assert_eq!(v1, b"PROXY TCP6 ::ffff:10.0.0.1 2001:db8::1 1 2\r\n");
        let v2 = encode(ProxyVersion::V2, sa("1.2.3.4:258"), sa("5.6.7.8:772"));
        assert_eq!(v2, b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\x01\x02\x03\x04\x05\x06\x07\x08\x01\x02\x03\x04");
        let v2 = encode(ProxyVersion::V2, sa("[::1]:1"), sa("[::2]:2"));
        assert_eq!(&v2[12..16], &[0x21, 0x21, 0, 36]);
        assert_eq!(v2.len(), 16 + 36);
    }

    #[test]
    fn v1_spec_examples() {
        assert_eq!(
            complete(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"),
            tcp("192.168.0.1:56324", "192.168.0.11:443")
        );
        assert_eq!(
            complete(b"PROXY TCP6 2001:db8::1 2001:db8::2 0 65535\r\n"),
            tcp("[2001:db8::1]:0", "[2001:db8::2]:65535")
        );
        assert_eq!(complete(b"PROXY UNKNOWN\r\n"), Addresses::Local);
        assert_eq!(
            complete(b"PROXY UNKNOWN ffff:f::1 ffff:f::2 65535 65535\r\n"),
            Addresses::Local,
            "anything may follow UNKNOWN"
        );
        assert_eq!(complete(b"PROXY UNKNOWN \x01\r\xff\r\n"), Addresses::Local);
    }

    #[test]
    fn v1_length_limit() {
        let max6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"; // 39: the longest plain IPv6 form
        let line = format!("PROXY TCP6 {max6} ffff:ffff:ffff:ffff:ffff:ffff:25.255.255.2 65535 65535\r\n");
        assert_eq!(line.len(), 107);
        assert_every_prefix_pending(line.as_bytes());
        assert!(matches!(complete(line.as_bytes()), Addresses::Tcp { .. }));

        let line = format!("PROXY TCP6 {max6} ffff:ffff:ffff:ffff:ffff:ffff:25.255.255.25 65535 65535\r\n");
        assert_eq!(line.len(), 108);
        assert!(matches!(parse(line.as_bytes()), Err(ProxyError::V1TooLong)));
        // Fine as a prefix until the 107th byte shows no CRLF is coming in time.
        assert!(matches!(parse(&line.as_bytes()[..106]), Ok(None)));
        assert!(matches!(parse(&line.as_bytes()[..107]), Err(ProxyError::V1TooLong)));

        let unknown = format!("PROXY UNKNOWN {}\r\n", "x".repeat(107 - 16));
        assert_eq!(unknown.len(), 107);
        assert_eq!(complete(unknown.as_bytes()), Addresses::Local);
        let unknown = format!("PROXY UNKNOWN {}\r\n", "x".repeat(108 - 16));
        assert!(matches!(parse(unknown.as_bytes()), Err(ProxyError::V1TooLong)));
        assert!(matches!(parse(&[b'P'; 1000][..]), Err(ProxyError::NotProxy { .. })));
    }

    #[test]
    fn v1_rejects() {
        let bad: &[&[u8]] = &[
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443 \r\n",
            b"PROXY TCP4 192.168.0.1  192.168.0.11 56324 443\r\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324\r\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443 7\r\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 +5632 443\r\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 -1 443\r\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 65536 443\r\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 \r\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 056324 443\r\n",
            b"PROXY TCP4 192.168.0.256 192.168.0.11 56324 443\r\n",
            b"PROXY TCP4 2001:db8::1 192.168.0.11 56324 443\r\n",
            b"PROXY TCP6 2001:db8::1 192.168.0.11 56324 443\r\n",
            b"PROXY TCP6 [2001:db8::1] 2001:db8::2 56324 443\r\n",
            b"PROXY TCP5 1.2.3.4 1.2.3.4 1 1\r\n",
            b"PROXY tcp4 1.2.3.4 1.2.3.4 1 1\r\n",
            b"PROXY UNKNOWNX\r\n",
            b"PROXY \r\n",
            b"PROXY\r\n",
            b"PROXY  TCP4 1.2.3.4 1.2.3.4 1 1\r\n",
        ];
        for line in bad {
            let err = parse(line).expect_err(&line.escape_ascii().to_string());
            assert!(
                matches!(err, ProxyError::MalformedV1(_) | ProxyError::NotProxy { .. }),
                "{}: {err:?}",
                line.escape_ascii()
            );
        }
    }

    #[test]
    fn v1_rejects_early() {
        // Each of these is already impossible to complete, so must not wait for a CRLF.
        let bad: &[&[u8]] = &[
            b"PROXY X",
            b"PROXY TCP7",
            b"PROXY TCP4  ",
            b"PROXY TCP4 1.2.3.4x",
            b"PROXY TCP4 1.2.3.4  ",
            b"PROXY TCP4 ::1",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 99999",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2x",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r",
            b"PROXY TCP6 1.2.3.4 ",
            b"PROXY TCP6 g",
        ];
        for line in bad {
            assert!(parse(line).is_err(), "{} should fail early", line.escape_ascii());
        }
        let fine: &[&[u8]] = &[
            b"P",
            b"PROXY",
            b"PROXY ",
            b"PROXY T",
            b"PROXY TCP4 ",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r",
            b"PROXY UNK",
            b"PROXY UNKNOWN \x00\n",
            b"PROXY TCP6 ::ffff:1.2",
        ];
        for line in fine {
            assert!(matches!(parse(line), Ok(None)), "{} is a valid prefix", line.escape_ascii());
        }
    }

    #[test]
    fn garbage_fails_on_the_first_wrong_byte() {
        for input in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"G",
            b"\x16\x03\x01\x02\x00",
            b"POST /",
            b"PROXX",
            b"\r\n\r\n\0\r\nQUIT\r",
            b"\r\r",
            b"\0",
        ] {
            match parse(input) {
                Err(ProxyError::NotProxy { seen }) => assert!(seen.len() <= QUOTE_MAX * 4 + 3),
                other => panic!("{}: {other:?}", input.escape_ascii()),
            }
        }
        let err = parse(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n").unwrap_err();
        assert_eq!(err.to_string(), r#"expected a PROXY protocol header, got "GET /index.html ...""#);
        assert!(matches!(parse(b""), Ok(None)));
    }

    #[test]
    fn v2_with_tlvs_skipped() {
        let mut body = vec![192, 0, 2, 7, 10, 0, 0, 1, 0xc8, 0x22, 0x01, 0xbb];
        // PP2_TYPE_ALPN "h2", PP2_TYPE_AUTHORITY "example.com", a NOOP of 5 zeros.
        body.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']);
        body.extend_from_slice(&[0x02, 0x00, 0x0b]);
        body.extend_from_slice(b"example.com");
        body.extend_from_slice(&[0x04, 0x00, 0x05, 0, 0, 0, 0, 0]);
        let header = v2_header(0x21, 0x11, &body);
        assert_eq!(complete(&header), tcp("192.0.2.7:51234", "10.0.0.1:443"));
        assert_every_prefix_pending(&header);

        let mut body6 = [0u8; 36].to_vec();
        body6[15] = 1;
        body6[31] = 2;
        body6[32..36].copy_from_slice(&[0, 80, 1, 0]);
        body6.extend_from_slice(&[0xee, 0x00, 0x01, 0x42]);
        assert_eq!(complete(&v2_header(0x21, 0x21, &body6)), tcp("[::1]:80", "[::2]:256"));
    }

    #[test]
    fn v2_local_and_non_tcp_families() {
        // LOCAL ignores family and addresses entirely, even nonsense ones.
        assert_eq!(complete(&v2_header(0x20, 0x00, &[])), Addresses::Local);
        assert_eq!(complete(&v2_header(0x20, 0x11, &[])), Addresses::Local);
        assert_eq!(complete(&v2_header(0x20, 0x12, &[1, 2, 3])), Addresses::Local);
        assert_eq!(complete(&v2_header(0x20, 0x11, &[9; 12])), Addresses::Local);
        assert_every_prefix_pending(&v2_header(0x20, 0x00, &[]));
        assert_eq!(complete(&v2_header(0x21, 0x00, &[])), Addresses::Local);
        assert_eq!(complete(&v2_header(0x21, 0x00, &[1, 2, 3, 4])), Addresses::Local);
        assert_eq!(complete(&v2_header(0x21, 0x31, &[b'/'; 216])), Addresses::Local);
        assert_eq!(complete(&v2_header(0x21, 0x32, &[0; 220])), Addresses::Local);
        assert!(matches!(parse(&v2_header(0x21, 0x31, &[0; 215])), Err(ProxyError::MalformedV2(_))));
        assert!(matches!(parse(&v2_header(0x21, 0x12, &[0; 12])), Err(ProxyError::UnsupportedTransport(0x12))));
        assert!(matches!(parse(&v2_header(0x21, 0x22, &[0; 36])), Err(ProxyError::UnsupportedTransport(0x22))));
        for family in [0x01, 0x10, 0x13, 0x20, 0x30, 0x33, 0x41, 0xff] {
            assert!(matches!(parse(&v2_header(0x21, family, &[0; 36])), Err(ProxyError::MalformedV2(_))));
        }
    }

    #[test]
    fn v2_rejects() {
        assert!(matches!(parse(&v2_header(0x11, 0x11, &[0; 12])), Err(ProxyError::UnsupportedVersion(1))));
        assert!(matches!(parse(&v2_header(0x31, 0x11, &[0; 12])), Err(ProxyError::UnsupportedVersion(3))));
        assert!(matches!(parse(&v2_header(0x22, 0x11, &[0; 12])), Err(ProxyError::UnsupportedCommand(2))));
        assert!(matches!(parse(&v2_header(0x2f, 0x11, &[0; 12])), Err(ProxyError::UnsupportedCommand(15))));
        // Detected from the first 13 bytes, before the rest arrives.
        assert!(matches!(parse(&v2_header(0x11, 0x11, &[])[..13]), Err(ProxyError::UnsupportedVersion(1))));
        assert!(matches!(parse(&v2_header(0x21, 0x12, &[])[..14]), Err(ProxyError::UnsupportedTransport(_))));
        // Lengths shorter than the address block.
        assert!(matches!(parse(&v2_header(0x21, 0x11, &[0; 11])), Err(ProxyError::MalformedV2(_))));
        assert!(matches!(parse(&v2_header(0x21, 0x21, &[0; 12])), Err(ProxyError::MalformedV2(_))));
        assert!(matches!(parse(&v2_header(0x21, 0x21, &[0; 35])[..16]), Err(ProxyError::MalformedV2(_))));
    }

    #[test]
    fn v2_length_limits() {
        let at_limit = v2_header(0x21, 0x11, &vec![0; MAX_V2_LEN]);
        assert_eq!(at_limit.len(), 4096);
        assert_eq!(parse(&at_limit).unwrap().map(|(_, n)| n), Some(4096));
        assert!(matches!(parse(&at_limit[..4095]), Ok(None)));

        let mut over = v2_header(0x21, 0x11, &[0; 12]);
        over[14..16].copy_from_slice(&((MAX_V2_LEN + 1) as u16).to_be_bytes());
        // Refused from the length field alone, without waiting for the body.
        assert!(matches!(parse(&over), Err(ProxyError::V2TooLong { declared: 4081 })));
        over[14..16].copy_from_slice(&[0xff, 0xff]);
        let err = parse(&over).unwrap_err();
        assert!(matches!(err, ProxyError::V2TooLong { declared: 65535 }));
        assert!(err.to_string().contains("65535"), "{err}");

        // Truncated: a length promising more than has arrived is a wait, not a result.
        let mut truncated = v2_header(0x21, 0x11, &[0; 12]);
        truncated[15] = 20;
        assert!(matches!(parse(&truncated), Ok(None)));
        truncated.extend_from_slice(&[0; 8]);
        assert!(matches!(parse(&truncated), Ok(Some((Addresses::Tcp { .. }, 36)))));
    }

    #[test]
    fn messages_read_well() {
        let cases: Vec<(ProxyError, &str)> = vec![
            (
                parse(b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n").unwrap_err(),
                "malformed PROXY v1 header: TCP4 line with IPv6 destination address \"::1\"",
            ),
            (
                parse(b"PROXY TCP4 1.2.3.4 1.2.3.4 1 70000\r\n").unwrap_err(),
                "malformed PROXY v1 header: bad destination port \"70000\" (expected 0..65535)",
            ),
            (
                parse(&v2_header(0x21, 0x22, &[])).unwrap_err(),
                "PROXY v2 header announces a UDP connection (family byte 0x22); only TCP can be proxied",
            ),
            (parse(b"\x00\x01\xff").unwrap_err(), "expected a PROXY protocol header, got \"\\x00\\x01\\xff\""),
        ];
        for (err, want) in cases {
            assert_eq!(err.to_string(), want);
        }
    }

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
}
