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

pub(super) fn push_host(out: &mut String, host: &str) {
    if host.contains(':') {
        out.push('[');
        out.push_str(host);
        out.push(']');
    } else {
        out.push_str(host);
    }
}
