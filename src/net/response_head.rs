//! The head of an HTTP/1 response read by vipgate's own clients (health probes, the
//! admin CLI): status line, then the framing headers. One reader, so the probe and the
//! CLI agree on what an answer is. Lenient where servers in the wild are (bare LF line
//! ends, a missing reason); the proxy's own parser is elsewhere and strict.

use std::fmt;

/// What the bytes so far say. `body_start` is `None` while the blank line after the
/// headers has not arrived: the status is known, the framing not yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead<'a> {
    pub status: u16,
    pub reason: &'a str,
    pub body_start: Option<usize>,
    pub content_length: Option<usize>,
    pub chunked: bool,
}

/// Why the bytes are not (yet) a response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// No full status line yet.
    NoStatusLine,
    NotText,
    /// The first line is something else (an SSH banner, a MySQL greeting).
    NotHttp(String),
    BadStatus(String),
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::NoStatusLine => f.write_str("no status line"),
            HeadError::NotText => f.write_str("status line is not text"),
            HeadError::NotHttp(line) => write!(f, "not an HTTP response: \"{line}\""),
            HeadError::BadStatus(line) => write!(f, "bad status line \"{line}\""),
        }
    }
}

impl std::error::Error for HeadError {}

/// Parse the response head at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<ResponseHead<'_>, HeadError> {
    let line_end = find(buf, b"\n").ok_or(HeadError::NoStatusLine)?;
    let line = std::str::from_utf8(&buf[..line_end]).map_err(|_| HeadError::NotText)?;
    let line = line.trim_end_matches('\r');
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(HeadError::NotHttp(truncate(line, 60).to_string()));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..1000).contains(s))
        .ok_or_else(|| HeadError::BadStatus(truncate(line, 60).to_string()))?;
    let reason = parts.next().unwrap_or("");
    let mut head = ResponseHead { status, reason, body_start: None, content_length: None, chunked: false };
    let (head_end, body_start) = match find(buf, b"\r\n\r\n") {
        Some(i) => (i, i + 4),
        None => match find(buf, b"\n\n") {
            Some(i) => (i, i + 2),
            None => return Ok(head),
        },
    };
    head.body_start = Some(body_start);
    for field in buf[..head_end].split(|&b| b == b'\n').skip(1) {
        let Some((name, value)) = std::str::from_utf8(field).ok().and_then(|l| l.split_once(':')) else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") {
            // The first one counts; the answers we read come from our own or known servers.
            if head.content_length.is_none() {
                head.content_length = value.trim().parse::<usize>().ok();
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") && value.to_ascii_lowercase().contains("chunked") {
            head.chunked = true;
        }
    }
    Ok(head)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// At most `max` characters of `s`, cut on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        let h = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
        assert_eq!(
            (h.status, h.reason, h.body_start, h.content_length, h.chunked),
            (200, "OK", Some(38), Some(2), false)
        );
        let h = parse(b"HTTP/1.0 503 Service Unavailable\n\nx").unwrap();
        assert_eq!((h.status, h.body_start), (503, Some(34)));
        let h = parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n").unwrap();
        assert_eq!((h.body_start, h.chunked), (None, false), "framing is read only once the head is complete");
        assert!(parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n").unwrap().chunked);
        assert_eq!(parse(b"HTTP/1.1 200"), Err(HeadError::NoStatusLine));
        assert_eq!(parse(b"SSH-2.0-OpenSSH\r\n"), Err(HeadError::NotHttp("SSH-2.0-OpenSSH".into())));
        assert_eq!(parse(b"HTTP/1.1 99999 X\r\n"), Err(HeadError::BadStatus("HTTP/1.1 99999 X".into())));
        assert_eq!(parse(&[0xff, 0xfe, b'\n']), Err(HeadError::NotText));
    }
}
