//! Version 1: one text line, `PROXY TCP4 src dst sport dport\r\n`.

use std::net::{IpAddr, SocketAddr};

use super::{not_proxy, quote, starts_like, Addresses, ProxyError, V1_MAX_LEN};

const V1_PREFIX: &[u8] = b"PROXY ";

pub(super) fn parse_v1(buf: &[u8]) -> Result<Option<(Addresses, usize)>, ProxyError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::proxy_protocol::parse;
    use crate::proxy::proxy_protocol::testing::{assert_every_prefix_pending, complete, tcp};

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
}
