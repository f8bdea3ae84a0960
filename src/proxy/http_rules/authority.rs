//! The host and port of an authority (Host, a Location's, a route's host).

/// `host`, `host:port`, `[v6]`, `[v6]:port` → (host without brackets, port), split by
/// [`net::host_port`](crate::net::host_port). `None` when the port is not a number or
/// the brackets are unbalanced; an empty port (`host:`) is no port.
pub(super) fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let hp = crate::net::host_port::split(s)?;
    let port = match hp.port {
        None | Some("") => None,
        Some(_) => Some(hp.numeric_port()?),
    };
    Some((hp.host, port))
}

/// `host` as an authority writes it: an IPv6 address in brackets.
pub(super) fn push_host(out: &mut Vec<u8>, host: &str) {
    if host.contains(':') {
        out.push(b'[');
        out.extend_from_slice(host.as_bytes());
        out.push(b']');
    } else {
        out.extend_from_slice(host.as_bytes());
    }
}
