//! The host and port of an authority (Host, a Location's, a route's host).

/// `host`, `host:port`, `[v6]`, `[v6]:port` → (host without brackets, port). A bare IPv6
/// address (several colons, no brackets) is all host. `None` when the port is not a
/// number or the brackets are unbalanced; an empty port (`host:`) is no port.
pub(super) fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(inner) = s.strip_prefix('[') {
        let (host, after) = inner.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match s.split_once(':') {
            Some((host, port)) if !port.contains(':') => (host, Some(port)),
            _ => (s, None),
        }
    };
    let port = match port {
        None | Some("") => None,
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
        Some(_) => return None,
    };
    Some((host, port))
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
