//! Hop-by-hop headers: what belongs to one connection and must not travel past vipgate.

use super::headers::Headers;
use super::tokens::{tokens, trim_ows};

/// The hop-by-hop headers every message loses (RFC 9110 §7.6.1), Upgrade aside.
/// HTTP2-Settings only an h2c upgrade uses, and vipgate never passes one on.
const HOP_BY_HOP: [&[u8]; 7] =
    [b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"http2-settings"];

/// A Connection token that names nothing beyond what is removed anyway (or, as `close`,
/// no header at all): the usual case, which costs no allocation.
fn usual_token(t: &[u8]) -> bool {
    t.eq_ignore_ascii_case(b"close")
        || t.eq_ignore_ascii_case(b"upgrade")
        || HOP_BY_HOP.iter().any(|h| t.eq_ignore_ascii_case(h))
}

/// Remove the hop-by-hop headers (RFC 9110 §7.6.1): Connection, Keep-Alive,
/// Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade, HTTP2-Settings, and every
/// header that Connection names.
///
/// With `keep_upgrade`, a message whose Connection lists `upgrade` and that carries an
/// Upgrade header keeps Upgrade and leaves with exactly `Connection: upgrade`, so a
/// WebSocket handshake (novncproxy, the horizon console) reaches the server.
///
/// `Host` is never removed even when Connection names it: a request without it is invalid
/// HTTP/1.1, and nothing legitimate asks for that.
pub fn strip_hop_by_hop(headers: &mut impl Headers, keep_upgrade: bool) {
    let upgrading = keep_upgrade && is_upgrade(headers).is_some();
    // Names Connection adds to the list; a client that lists unusual ones pays for them.
    let mut named: Vec<Vec<u8>> = Vec::new();
    for value in headers.values("connection") {
        for token in tokens(value) {
            if !usual_token(token) && !token.eq_ignore_ascii_case(b"host") {
                named.push(token.to_vec());
            }
        }
    }
    headers.remove_where(|name| {
        HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
            || (!upgrading && name.eq_ignore_ascii_case(b"upgrade"))
            || named.iter().any(|t| name.eq_ignore_ascii_case(t))
    });
    if upgrading {
        headers.append("connection", b"upgrade");
    }
}

/// The Upgrade header's value when a Connection header lists the `upgrade` token
/// (case-insensitive, in any comma-separated list, across repeated Connection lines);
/// `None` when either is missing or Upgrade is blank.
///
/// An Upgrade that names cleartext HTTP/2 (`h2c`) is no upgrade either: after its 101 the
/// client would speak HTTP/2 straight to the server, past vipgate's rules, routes and
/// X-Forwarded-For. Such a request goes on as a plain one, without its Upgrade.
pub fn is_upgrade(headers: &impl Headers) -> Option<&[u8]> {
    let listed = headers.values("connection").any(|v| tokens(v).any(|t| t.eq_ignore_ascii_case(b"upgrade")));
    if !listed {
        return None;
    }
    let value = headers.first("upgrade").filter(|v| !trim_ows(v).is_empty())?;
    let h2c = tokens(value).any(|t| {
        let protocol = t.split(|&b| b == b'/').next().unwrap_or_default();
        protocol.eq_ignore_ascii_case(b"h2c")
    });
    (!h2c).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::http_rules::testing::{all, both, names, Store};

    both!(
        hop_by_hop_removed_with_connection_tokens,
        connection_cannot_remove_host,
        upgrade_kept_only_when_asked,
        is_upgrade_cases
    );

    fn hop_by_hop_removed_with_connection_tokens<H: Store>() {
        let mut h = H::of(&[
            ("connection", "close, Foo"),
            ("connection", "X-Bar"),
            ("foo", "1"),
            ("x-bar", "2"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("host", "vip"),
            ("x-auth-token", "t"),
            ("http2-settings", "AAA"),
        ]);
        strip_hop_by_hop(&mut h, true);
        // upgrade is not in Connection, so even keep_upgrade drops it.
        assert_eq!(names(&h), ["host", "x-auth-token"]);
    }

    fn connection_cannot_remove_host<H: Store>() {
        let mut h = H::of(&[("connection", "host, close"), ("host", "vip")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(all(&h, "host"), ["vip"]);
    }

    fn upgrade_kept_only_when_asked<H: Store>() {
        let req = H::of(&[("connection", "keep-alive, Upgrade"), ("upgrade", "websocket"), ("sec-websocket-key", "k")]);
        let mut h = req.clone();
        strip_hop_by_hop(&mut h, true);
        assert_eq!(all(&h, "connection"), ["upgrade"]);
        assert_eq!(all(&h, "upgrade"), ["websocket"]);
        assert_eq!(all(&h, "sec-websocket-key"), ["k"]);

        let mut h = req;
        strip_hop_by_hop(&mut h, false);
        assert_eq!(names(&h), ["sec-websocket-key"]);

        // Connection: upgrade without an Upgrade header is not an upgrade.
        let mut h = H::of(&[("connection", "upgrade")]);
        strip_hop_by_hop(&mut h, true);
        assert!(names(&h).is_empty());
    }

    fn is_upgrade_cases<H: Store>() {
        let up = |pairs: &[(&str, &str)]| is_upgrade(&H::of(pairs)).map(|v| String::from_utf8(v.to_vec()).unwrap());
        assert_eq!(up(&[("connection", "Upgrade"), ("upgrade", "websocket")]).as_deref(), Some("websocket"));
        assert_eq!(
            up(&[("connection", "keep-alive ,UPGRADE"), ("upgrade", "WebSocket")]).as_deref(),
            Some("WebSocket")
        );
        assert_eq!(
            up(&[("connection", "keep-alive"), ("connection", "upgrade"), ("upgrade", "foo/2")]).as_deref(),
            Some("foo/2")
        );
        // Cleartext HTTP/2 is never an upgrade vipgate passes on, alone or in a list.
        for h2c in ["h2c", "H2C", "websocket, h2c", "h2c/1"] {
            assert_eq!(up(&[("connection", "upgrade"), ("upgrade", h2c)]), None, "{h2c}");
        }
        assert_eq!(up(&[("connection", "upgraded"), ("upgrade", "websocket")]), None);
        assert_eq!(up(&[("upgrade", "websocket")]), None);
        assert_eq!(up(&[("connection", "upgrade")]), None);
        assert_eq!(up(&[("connection", "upgrade"), ("upgrade", " ")]), None);
    }
}
