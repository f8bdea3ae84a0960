//! The PROXY protocol (HAProxy's spec, versions 1 and 2): the header a proxy in front of us
//! sends so we learn the real client, and the header we send to servers so they do.
//!
//! Parsing is incremental and strict: a buffer is either a complete header, a valid prefix
//! of one (wait for more), or an error as soon as a byte rules a header out, so a client
//! that skips the header fails at once instead of waiting for the timeout.

mod accept;
mod encode;
#[cfg(test)]
mod testing;
mod v1;
mod v2;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::format_duration;

pub use accept::{accept, read_header, Endpoints};
pub use encode::encode;
use v1::parse_v1;
use v2::{parse_v2, V2_FIXED_LEN};

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

pub(super) fn not_proxy(buf: &[u8]) -> ProxyError {
    ProxyError::NotProxy { seen: quote(buf) }
}

/// Escaped and shortened, so binary or hostile input is safe to log.
pub(super) fn quote(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(QUOTE_MAX)];
    let mut s = shown.escape_ascii().to_string();
    if bytes.len() > QUOTE_MAX {
        s.push_str("...");
    }
    s
}

pub(super) fn starts_like(buf: &[u8], prefix: &[u8]) -> bool {
    let n = buf.len().min(prefix.len());
    buf[..n] == prefix[..n]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::proxy_protocol::testing::v2_header;

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
}
