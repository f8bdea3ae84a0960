//! Routes: which pool serves a request, by host and path prefix.

use super::authority::split_host_port;
use crate::config::Route;

/// The first route whose host and path prefix both match.
///
/// - Host: case-insensitive, the port ignored (`vip:5000`, `[2001:db8::1]:5000`), a
///   trailing dot ignored. `*.example.org` matches one or more labels in front
///   (`a.example.org`, `a.b.example.org`) but not `example.org` itself, as a TLS
///   wildcard would not cover the latter and a separate route can. A route with a host
///   never matches a request without one.
/// - Path: a plain, case-sensitive prefix of the path as sent, as HAProxy's `path_beg`:
///   `/v2` also matches `/v2.1`; write `/v2/` to stop at a segment boundary.
pub fn route<'a>(routes: &'a [Route], host: Option<&str>, path: &str) -> Option<&'a Route> {
    let host = host.and_then(split_host_port).map(|(h, _)| h.strip_suffix('.').unwrap_or(h));
    routes.iter().find(|r| {
        let host_ok = match (&r.host, host) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(pattern), Some(host)) => host_matches(pattern, host),
        };
        host_ok && r.path_prefix.as_deref().is_none_or(|p| path.starts_with(p))
    })
}

fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern.starts_with("*.") {
        // ".example.org" must be preceded by at least one non-empty label.
        let (h, s) = (host.as_bytes(), &pattern.as_bytes()[1..]);
        return h.len() > s.len()
            && h[h.len() - s.len()..].eq_ignore_ascii_case(s)
            && !host.starts_with('.')
            && h[h.len() - s.len() - 1] != b'.';
    }
    let pattern = split_host_port(pattern).map_or(pattern, |(h, _)| h);
    pattern.strip_suffix('.').unwrap_or(pattern).eq_ignore_ascii_case(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(host: Option<&str>, prefix: Option<&str>, pool: &str) -> Route {
        Route { host: host.map(Into::into), path_prefix: prefix.map(Into::into), pool: pool.into() }
    }

    #[test]
    fn routes_in_order() {
        let routes = [
            r(Some("*.example.org"), Some("/v2/"), "wild-v2"),
            r(Some("Identity.Example.org"), None, "keystone"),
            r(Some("2001:db8::1"), None, "v6"),
            r(None, Some("/compute"), "nova"),
            r(None, None, "default"),
        ];
        let pool = |host: Option<&str>, path: &str| route(&routes, host, path).map(|r| r.pool.as_str());
        assert_eq!(pool(Some("a.example.org"), "/v2/images"), Some("wild-v2"));
        assert_eq!(pool(Some("a.b.EXAMPLE.org:9292"), "/v2/images"), Some("wild-v2"));
        assert_eq!(pool(Some("example.org"), "/v2/images"), Some("default"));
        assert_eq!(pool(Some(".example.org"), "/v2/images"), Some("default"));
        assert_eq!(pool(Some("badexample.org"), "/v2/images"), Some("default"));
        assert_eq!(pool(Some("a..example.org"), "/v2/images"), Some("default"));
        assert_eq!(pool(Some("identity.example.org"), "/v2/x"), Some("wild-v2"));
        assert_eq!(pool(Some("identity.example.org:5000"), "/v3"), Some("keystone"));
        assert_eq!(pool(Some("identity.example.org."), "/v3"), Some("keystone"));
        assert_eq!(pool(Some("[2001:DB8::1]:443"), "/"), Some("v6"));
        assert_eq!(pool(Some("[2001:db8::1]"), "/"), Some("v6"));
        assert_eq!(pool(None, "/compute/v2.1"), Some("nova"));
        assert_eq!(pool(None, "/computers"), Some("nova"));
        assert_eq!(pool(None, "/Compute"), Some("default"));
        assert_eq!(pool(Some("a.example.org"), "/v2"), Some("default"));
        assert_eq!(route(&routes[..2], None, "/v2/"), None);
        assert_eq!(route(&[], Some("x"), "/"), None);
    }
}
