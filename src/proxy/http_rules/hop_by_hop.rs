//! Hop-by-hop headers: what belongs to one connection and must not travel past vipgate.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::tokens::{tokens, trim_ows};

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Remove the hop-by-hop headers (RFC 9110 §7.6.1): Connection, Keep-Alive,
/// Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade, HTTP2-Settings (which only
/// an h2c upgrade uses, and vipgate never passes one on), and every header that
/// Connection names.
///
/// With `keep_upgrade`, a message whose Connection lists `upgrade` and that carries an
/// Upgrade header keeps Upgrade and leaves with exactly `Connection: upgrade`, so a
/// WebSocket handshake (novncproxy, the horizon console) reaches the server.
///
/// `Host` is never removed even when Connection names it: a request without it is invalid
/// HTTP/1.1, and nothing legitimate asks for that.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let upgrading = keep_upgrade && is_upgrade(headers).is_some();
    let mut named = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        for token in tokens(value.as_bytes()) {
            // Invalid names cannot be present in the map, so there is nothing to remove.
            if let Ok(name) = HeaderName::from_bytes(token) {
                named.push(name);
            }
        }
    }
    for name in named {
        if name == header::HOST || (upgrading && name == header::UPGRADE) {
            continue;
        }
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        HTTP2_SETTINGS,
    ] {
        headers.remove(name);
    }
    if upgrading {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// The Upgrade header's value when a Connection header lists the `upgrade` token
/// (case-insensitive, in any comma-separated list, across repeated Connection lines);
/// `None` when either is missing or Upgrade is blank.
///
/// An Upgrade that names cleartext HTTP/2 (`h2c`) is no upgrade either: after its 101 the
/// client would speak HTTP/2 straight to the server, past vipgate's rules, routes and
/// X-Forwarded-For. Such a request goes on as a plain one, without its Upgrade.
pub fn is_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let listed = headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| tokens(v.as_bytes()).any(|t| t.eq_ignore_ascii_case(b"upgrade")));
    if !listed {
        return None;
    }
    let value = headers.get(header::UPGRADE).filter(|v| !trim_ows(v.as_bytes()).is_empty())?;
    let h2c = tokens(value.as_bytes()).any(|t| {
        let protocol = t.split(|&b| b == b'/').next().unwrap_or_default();
        protocol.eq_ignore_ascii_case(b"h2c")
    });
    (!h2c).then(|| value.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::http_rules::testing::{all, map};

    #[test]
    fn hop_by_hop_removed_with_connection_tokens() {
        let mut h = map(&[
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
        ]);
        strip_hop_by_hop(&mut h, true);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        // upgrade is not in Connection, so even keep_upgrade drops it.
        assert_eq!(names, ["host", "x-auth-token"]);
    }

    #[test]
    fn connection_cannot_remove_host() {
        let mut h = map(&[("connection", "host, close"), ("host", "vip")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(all(&h, "host"), ["vip"]);
    }

    #[test]
    fn upgrade_kept_only_when_asked() {
        let req = map(&[("connection", "keep-alive, Upgrade"), ("upgrade", "websocket"), ("sec-websocket-key", "k")]);
        let mut h = req.clone();
        strip_hop_by_hop(&mut h, true);
        assert_eq!(all(&h, "connection"), ["upgrade"]);
        assert_eq!(all(&h, "upgrade"), ["websocket"]);
        assert_eq!(all(&h, "sec-websocket-key"), ["k"]);

        let mut h = req;
        strip_hop_by_hop(&mut h, false);
        assert!(h.get("connection").is_none() && h.get("upgrade").is_none());
        assert_eq!(all(&h, "sec-websocket-key"), ["k"]);

        // Connection: upgrade without an Upgrade header is not an upgrade.
        let mut h = map(&[("connection", "upgrade")]);
        strip_hop_by_hop(&mut h, true);
        assert!(h.is_empty());
    }

    #[test]
    fn is_upgrade_cases() {
        let up = |pairs: &[(&str, &str)]| is_upgrade(&map(pairs)).map(|v| v.to_str().unwrap().to_string());
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
