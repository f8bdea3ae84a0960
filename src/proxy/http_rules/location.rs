//! Location rewriting for TLS clients of servers that believe they speak plain http.

use http::header::{self, HeaderMap, HeaderValue};

use super::authority::{push_host, split_host_port};

/// Rewrite `Location: http://HOST/...` to `https://HOST/...` when HOST is the authority
/// the client asked for (`request_host`); for TLS clients only (the caller's check), so a
/// server that does not know it sits behind TLS does not send browsers to plain text.
///
/// Hosts compare case-insensitively. Ports must agree, a Location without a port meaning
/// 80 and a Host without one meaning 80 too (the server saw the default port of http).
/// The new authority is the request's, minus a `:80`: heat's `http://vip:8004/...` with
/// Host `vip:8004` becomes `https://vip:8004/...`, and `http://vip/` with Host `vip`
/// becomes `https://vip/`. Relative Locations and other hosts are left alone.
pub fn rewrite_location(headers: &mut HeaderMap, request_host: Option<&str>) {
    let Some(request_host) = request_host else { return };
    let Some((host, port)) = split_host_port(request_host) else { return };
    let port = port.unwrap_or(80);
    let mut changed = false;
    let values: Vec<HeaderValue> = headers
        .get_all(header::LOCATION)
        .iter()
        .map(|v| match https_location(v, host, port) {
            Some(new) => {
                changed = true;
                new
            }
            None => v.clone(),
        })
        .collect();
    if changed {
        headers.remove(header::LOCATION);
        for v in values {
            headers.append(header::LOCATION, v);
        }
    }
}

fn https_location(value: &HeaderValue, host: &str, port: u16) -> Option<HeaderValue> {
    let loc = value.to_str().ok()?;
    let scheme = loc.get(..7)?;
    if !scheme.eq_ignore_ascii_case("http://") {
        return None;
    }
    let rest = &loc[7..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.contains('@') {
        return None;
    }
    let (loc_host, loc_port) = split_host_port(authority)?;
    if !loc_host.eq_ignore_ascii_case(host) || loc_port.unwrap_or(80) != port {
        return None;
    }
    let mut new = String::with_capacity(loc.len() + 1);
    new.push_str("https://");
    push_host(&mut new, host);
    if port != 80 {
        new.push(':');
        new.push_str(&port.to_string());
    }
    new.push_str(tail);
    HeaderValue::from_str(&new).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::http_rules::testing::{all, map};

    fn location(loc: &str, host: Option<&str>) -> String {
        let mut h = map(&[("location", loc)]);
        rewrite_location(&mut h, host);
        all(&h, "location").join(" | ")
    }

    #[test]
    fn location_rewrites() {
        // heat: explicit non-default port kept.
        assert_eq!(location("http://vip:8004/v1/stacks", Some("vip:8004")), "https://vip:8004/v1/stacks");
        assert_eq!(location("HTTP://VIP:8004/v1?x=1", Some("vip:8004")), "https://vip:8004/v1?x=1");
        assert_eq!(location("http://vip/dashboard/", Some("vip")), "https://vip/dashboard/");
        assert_eq!(location("http://vip:80/dashboard/", Some("vip")), "https://vip/dashboard/");
        assert_eq!(location("http://vip/x", Some("vip:80")), "https://vip/x");
        assert_eq!(location("http://vip", Some("Vip")), "https://Vip");
        assert_eq!(location("http://vip#frag", Some("vip")), "https://vip#frag");
        assert_eq!(
            location("http://[2001:db8::1]:9292/v2", Some("[2001:DB8::1]:9292")),
            "https://[2001:DB8::1]:9292/v2"
        );
    }

    #[test]
    fn location_left_alone() {
        for (loc, host) in [
            ("/dashboard/auth/login/", Some("vip")),
            ("//vip/x", Some("vip")),
            ("https://vip/x", Some("vip")),
            ("http://other/x", Some("vip")),
            ("http://vip.example.org/x", Some("vip")),
            ("http://vip/x", Some("vip:8004")),
            ("http://vip:8004/x", Some("vip")),
            ("http://vip:8004/x", Some("vip:9000")),
            ("http://user@vip/x", Some("vip")),
            ("http://vip:abc/x", Some("vip")),
            ("http://vip/x", None),
            ("http://vip/x", Some("vip:bad")),
            ("httpx://vip/x", Some("vip")),
            ("http:", Some("vip")),
        ] {
            assert_eq!(location(loc, host), loc, "{loc} {host:?}");
        }
    }

    #[test]
    fn location_several_lines() {
        let mut h = map(&[("location", "/rel"), ("location", "http://vip/a")]);
        rewrite_location(&mut h, Some("vip"));
        assert_eq!(all(&h, "location"), ["/rel", "https://vip/a"]);
    }
}
