//! Version 2: a binary header, a fixed 16 bytes then addresses and TLVs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{not_proxy, starts_like, Addresses, ProxyError, MAX_V2_LEN};

pub(super) const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
pub(super) const V2_FIXED_LEN: usize = 16;
const V2_CMD_LOCAL: u8 = 0x0;
pub(super) const V2_CMD_PROXY: u8 = 0x1;
pub(super) const V2_TCP4: u8 = 0x11;
const V2_UDP4: u8 = 0x12;
pub(super) const V2_TCP6: u8 = 0x21;
const V2_UDP6: u8 = 0x22;
const V2_UNSPEC: u8 = 0x00;
const V2_UNIX_STREAM: u8 = 0x31;
const V2_UNIX_DGRAM: u8 = 0x32;
pub(super) const V2_ADDR_LEN_V4: usize = 12;
pub(super) const V2_ADDR_LEN_V6: usize = 36;
const V2_ADDR_LEN_UNIX: usize = 216;

pub(super) fn parse_v2(buf: &[u8]) -> Result<Option<(Addresses, usize)>, ProxyError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::proxy_protocol::parse;
    use crate::proxy::proxy_protocol::testing::{assert_every_prefix_pending, complete, tcp, v2_header};

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
}
