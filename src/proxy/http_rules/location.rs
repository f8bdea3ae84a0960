//! Location rewriting for TLS clients of servers that believe they speak plain http.

use std::io::Write as _;

use super::authority::{push_host, split_host_port};
use super::headers::{visible_str, Edit, Headers};

/// Rewrite `Location: http://HOST/...` to `https://HOST/...` when HOST is the authority
/// the client asked for (`request_host`); for TLS clients only (the caller's check), so a
/// server that does not know it sits behind TLS does not send browsers to plain text.
///
/// Hosts compare case-insensitively. Ports must agree, a Location without a port meaning
/// 80 and a Host without one meaning 80 too (the server saw the default port of http).
/// The new authority is the request's, minus a `:80`: heat's `http://vip:8004/...` with
/// Host `vip:8004` becomes `https://vip:8004/...`, and `http://vip/` with Host `vip`
/// becomes `https://vip/`. Relative Locations and other hosts are left alone.
pub fn rewrite_location(headers: &mut impl Headers, request_host: Option<&str>) {
    let Some(request_host) = request_host else { return };
    let Some((host, port)) = split_host_port(request_host) else { return };
    let port = port.unwrap_or(80);
    headers.edit("location", |v, out| if https_location(v, host, port, out) { Edit::Replace } else { Edit::Keep });
}

/// Write the https form of Location `value` into `out`, if it points at `host:port`.
fn https_location(value: &[u8], host: &str, port: u16, out: &mut Vec<u8>) -> bool {
    let Some(loc) = visible_str(value) else { return false };
    let Some(scheme) = loc.get(..7) else { return false };
    if !scheme.eq_ignore_ascii_case("http://") {
        return false;
    }
    let rest = &loc[7..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.contains('@') {
        return false;
    }
    let Some((loc_host, loc_port)) = split_host_port(authority) else { return false };
    if !loc_host.eq_ignore_ascii_case(host) || loc_port.unwrap_or(80) != port {
        return false;
    }
    out.extend_from_slice(b"https://");
    push_host(out, host);
    if port != 80 {
        // Writing into a Vec cannot fail.
        let _ = write!(out, ":{port}");
    }
    out.extend_from_slice(tail.as_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::http_rules::testing::{all, both, Store};

    both!(location_rewrites, location_left_alone, location_several_lines);

    fn location<H: Store>(loc: &str, host: Option<&str>) -> String {
        let mut h = H::of(&[("location", loc)]);
        rewrite_location(&mut h, host);
        all(&h, "location").join(" | ")
    }

    fn location_rewrites<H: Store>() {
        // heat: explicit non-default port kept.
        assert_eq!(location::<H>("http://vip:8004/v1/stacks", Some("vip:8004")), "https://vip:8004/v1/stacks");
        assert_eq!(location::<H>("HTTP://VIP:8004/v1?x=1", Some("vip:8004")), "https://vip:8004/v1?x=1");
        assert_eq!(location::<H>("http://vip/dashboard/", Some("vip")), "https://vip/dashboard/");
        assert_eq!(location::<H>("http://vip:80/dashboard/", Some("vip")), "https://vip/dashboard/");
        assert_eq!(location::<H>("http://vip/x", Some("vip:80")), "https://vip/x");
        assert_eq!(location::<H>("http://vip", Some("Vip")), "https://Vip");
        assert_eq!(location::<H>("http://vip#frag", Some("vip")), "https://vip#frag");
        assert_eq!(
            location::<H>("http://[2001:db8::1]:9292/v2", Some("[2001:DB8::1]:9292")),
            "https://[2001:DB8::1]:9292/v2"
        );
    }

    fn location_left_alone<H: Store>() {
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
            assert_eq!(location::<H>(loc, host), loc, "{loc} {host:?}");
        }
    }

    fn location_several_lines<H: Store>() {
        let mut h = H::of(&[("location", "/rel"), ("location", "http://vip/a")]);
        rewrite_location(&mut h, Some("vip"));
        assert_eq!(all(&h, "location"), ["/rel", "https://vip/a"]);
    }
}
