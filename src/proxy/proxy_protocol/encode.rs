//! What we send to servers: the header naming the client, in the version they expect.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use super::v2::{V2_ADDR_LEN_V4, V2_ADDR_LEN_V6, V2_CMD_PROXY, V2_FIXED_LEN, V2_SIGNATURE, V2_TCP4, V2_TCP6};
use super::V1_MAX_LEN;
use crate::config::ProxyVersion;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::proxy_protocol::parse;
    use crate::proxy::proxy_protocol::testing::{assert_every_prefix_pending, complete, sa, tcp};

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
}
