//! Builders the PROXY protocol unit tests share.

use std::net::SocketAddr;

use super::v2::V2_SIGNATURE;
use super::{parse, Addresses};

/// A socket address from its text form.
pub(super) fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The addresses a TCP header names.
pub(super) fn tcp(src: &str, dst: &str) -> Addresses {
    Addresses::Tcp { source: sa(src), destination: sa(dst) }
}

/// What `buf` says, which must be exactly one complete header.
pub(super) fn complete(buf: &[u8]) -> Addresses {
    match parse(buf) {
        Ok(Some((a, n))) => {
            assert_eq!(n, buf.len(), "consumed for {:?}", buf.escape_ascii().to_string());
            a
        }
        other => panic!("{:?}: {other:?}", buf.escape_ascii().to_string()),
    }
}

/// Every proper prefix of `header` is a wait, never an error.
pub(super) fn assert_every_prefix_pending(header: &[u8]) {
    for i in 0..header.len() {
        match parse(&header[..i]) {
            Ok(None) => {}
            other => panic!("prefix {i} of {:?}: {other:?}", header.escape_ascii().to_string()),
        }
    }
}

/// A v2 header with any version/command and family bytes, for malformed cases.
pub(super) fn v2_header(ver_cmd: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(ver_cmd);
    h.push(family);
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(body);
    h
}
