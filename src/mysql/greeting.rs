//! The server's first packet: the initial handshake (protocol 10), or an ERR packet when
//! the server refuses the client before any handshake ("Host ... is blocked", "Too many
//! connections").
//!
//! Layout of protocol 10: version byte, server version (NUL-terminated), connection id
//! (4), first 8 bytes of the scramble, a filler byte, capability flags (low 2 bytes);
//! then, if the packet goes on: character set (1), status flags (2), capability flags
//! (high 2 bytes), length of the whole auth data (1), 10 reserved bytes (MariaDB keeps its
//! extended capabilities in the last 4), the rest of the scramble (with
//! CLIENT_SECURE_CONNECTION: max(13, length - 8) bytes, NUL included), and the auth plugin
//! name (with CLIENT_PLUGIN_AUTH; NUL-terminated, though some servers leave the NUL off).

use super::packet::{parse_err, text, Reader, ERR};
use super::{caps, Greeting, MysqlError};

/// MariaDB 10.x prefixes its version with "5.5.5-" so old replication code does not take
/// "10" for a version lower than 5; clients strip it, and so does [`parse_greeting`].
const MARIADB_PREFIX: &str = "5.5.5-";

/// Parse the server's first packet payload. Never panics, whatever the bytes.
pub fn parse_greeting(payload: &[u8]) -> Result<Greeting, MysqlError> {
    let mut r = Reader::new(payload);
    let protocol = match r.peek() {
        None => return Err(MysqlError::Protocol("empty greeting".into())),
        Some(ERR) => return Err(parse_err(payload)),
        Some(10) => 10u8,
        Some(v) => {
            return Err(MysqlError::Protocol(format!(
                "unsupported handshake protocol version {v} (expected 10; not a MySQL server?)"
            )))
        }
    };
    let _ = r.u8("protocol version")?;
    let raw_version = text(r.nul_terminated("server version")?);
    let server_version = match raw_version.strip_prefix(MARIADB_PREFIX) {
        Some(rest) if rest.contains("MariaDB") => rest.to_string(),
        _ => raw_version,
    };
    let connection_id = r.u32("connection id")?;
    let mut scramble = r.bytes(8, "scramble")?.to_vec();
    let _filler = r.u8("filler")?;
    let mut capabilities = u32::from(r.u16("capability flags")?);
    let mut auth_plugin = String::new();
    if !r.is_empty() {
        let _charset = r.u8("character set")?;
        let _status = r.u16("status flags")?;
        capabilities |= u32::from(r.u16("capability flags")?) << 16;
        let auth_data_len = usize::from(r.u8("auth data length")?);
        let _reserved = r.bytes(10, "reserved bytes")?;
        if capabilities & caps::SECURE_CONNECTION != 0 {
            // The rest of the scramble: normally 12 bytes and a NUL.
            let want = auth_data_len.saturating_sub(8).max(13);
            let part = r.bytes(want.min(r.remaining()), "scramble")?;
            let part = part.strip_suffix(&[0]).unwrap_or(part);
            scramble.extend_from_slice(part);
        }
        if capabilities & caps::PLUGIN_AUTH != 0 {
            auth_plugin = text(r.nul_or_end());
        }
    }
    Ok(Greeting { protocol, server_version, connection_id, capabilities, auth_plugin, scramble })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hex to bytes for fixtures.
    pub(crate) fn hex(s: &str) -> Vec<u8> {
        let s: Vec<u8> = s.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
        s.chunks(2).map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap()).collect()
    }

    /// A greeting captured from MariaDB 10.11.19 (Debian 12) on TCP, header removed.
    const MARIADB_10_11: &str =
        "0a352e352e352d31302e31312e31392d4d6172696144422d302b6465623132753100730d00006f3e27466a\
         622e5d00fef7080200ff81150000000000001d0000006b246a6e673b2e75275c7c7d006d7973716c5f6e61746976655f\
         70617373776f726400";

    #[test]
    fn mariadb_10_11_greeting() {
        let g = parse_greeting(&hex(MARIADB_10_11)).unwrap();
        assert_eq!(g.protocol, 10);
        assert_eq!(g.server_version, "10.11.19-MariaDB-0+deb12u1");
        assert_eq!(g.connection_id, 0x0d73);
        assert_eq!(g.auth_plugin, "mysql_native_password");
        assert_eq!(g.scramble, b"o>'Fjb.]k$jng;.u'\\|}");
        assert_eq!(g.scramble.len(), 20);
        assert_eq!(g.capabilities, 0x81FF_F7FE);
        for flag in [caps::PROTOCOL_41, caps::SECURE_CONNECTION, caps::PLUGIN_AUTH, caps::DEPRECATE_EOF] {
            assert_ne!(g.capabilities & flag, 0, "{flag:#x}");
        }
        // MariaDB announces itself by clearing CLIENT_MYSQL (bit 0).
        assert_eq!(g.capabilities & caps::LONG_PASSWORD, 0);
    }

    #[test]
    fn mysql_style_greeting_keeps_its_version_and_missing_final_nul() {
        let mut p = vec![10];
        p.extend_from_slice(b"8.0.36\0");
        p.extend_from_slice(&7u32.to_le_bytes());
        p.extend_from_slice(b"abcdefgh\0");
        let c = caps::PROTOCOL_41 | caps::SECURE_CONNECTION | caps::PLUGIN_AUTH;
        p.extend_from_slice(&(c as u16).to_le_bytes());
        p.push(45);
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&((c >> 16) as u16).to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0; 10]);
        p.extend_from_slice(b"ijklmnopqrst\0");
        p.extend_from_slice(b"caching_sha2_password"); // no NUL (MySQL bug #59453)
        let g = parse_greeting(&p).unwrap();
        assert_eq!(g.server_version, "8.0.36");
        assert_eq!(g.connection_id, 7);
        assert_eq!(g.scramble, b"abcdefghijklmnopqrst");
        assert_eq!(g.auth_plugin, "caching_sha2_password");
    }

    #[test]
    fn pre_4_1_greeting_is_parsed_and_has_no_plugin() {
        let mut p = vec![10];
        p.extend_from_slice(b"5.5.5-not-maria\0");
        p.extend_from_slice(&1u32.to_le_bytes());
        p.extend_from_slice(b"12345678\0");
        p.extend_from_slice(&0x0200u16.to_le_bytes());
        let g = parse_greeting(&p).unwrap();
        // The prefix is only MariaDB's when MariaDB follows.
        assert_eq!(g.server_version, "5.5.5-not-maria");
        assert_eq!((g.capabilities, g.auth_plugin.as_str(), g.scramble.len()), (0x0200, "", 8));
    }

    #[test]
    fn err_packet_as_greeting() {
        // What MariaDB 10.11 sends in place of the greeting once the client host has too
        // many connection errors (captured; no SQLSTATE before the handshake).
        let mut p = vec![0xff, 0x69, 0x04];
        p.extend_from_slice(
            b"Host '127.0.0.3' is blocked because of many connection errors; unblock with 'mariadb-admin flush-hosts'",
        );
        match parse_greeting(&p) {
            Err(MysqlError::Server { code, message }) => {
                assert_eq!(code, 1129);
                assert!(message.starts_with("Host '127.0.0.3' is blocked"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_greeting(b"\xff\x10\x04#08004Too many connections"),
            Err(MysqlError::Server { code: 1040, .. })
        ));
    }

    #[test]
    fn not_a_greeting() {
        assert!(matches!(parse_greeting(b""), Err(MysqlError::Protocol(_))));
        assert!(matches!(parse_greeting(b"\x09old"), Err(MysqlError::Protocol(_))));
        assert!(matches!(parse_greeting(b"HTTP/1.1 200 OK"), Err(MysqlError::Protocol(_))));
        assert!(matches!(parse_greeting(b"\xff"), Err(MysqlError::Protocol(_))));
    }

    #[test]
    fn every_truncation_of_a_real_greeting_is_an_error_or_a_shorter_parse() {
        let full = hex(MARIADB_10_11);
        for n in 0..full.len() {
            // Must not panic; cut inside a field it must fail, never invent values.
            if let Ok(g) = parse_greeting(&full[..n]) {
                assert_eq!(g.server_version, "10.11.19-MariaDB-0+deb12u1", "cut at {n}");
            }
        }
        // Cut in the middle of the fixed part: errors.
        for n in [1, 10, 30, 40, 45, 50, 60] {
            assert!(parse_greeting(&full[..n]).is_err(), "cut at {n}");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A small deterministic fuzz: mutate the real greeting byte by byte, and feed
        // pseudo-random buffers of every small length.
        let full = hex(MARIADB_10_11);
        for i in 0..full.len() {
            for v in [0x00, 0x01, 0x7f, 0x80, 0xfb, 0xfc, 0xfe, 0xff] {
                let mut p = full.clone();
                p[i] = v;
                let _ = parse_greeting(&p);
            }
        }
        let mut x: u32 = 0x1234_5678;
        for len in 0..300 {
            let mut p = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                p.push(x as u8);
            }
            if let Some(b) = p.first_mut() {
                *b = 10;
            }
            let _ = parse_greeting(&p);
        }
    }
}
