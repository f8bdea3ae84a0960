//! What a request must be before vipgate routes and forwards it: one authority, a target
//! form that fits its method, and body framing that vipgate and the server cannot read
//! two ways. Pure functions over the request head, so each rule has a table test and the
//! proxy asks once, before routing.
//!
//! Why so strict: every OpenStack API sits behind this, and each of these shapes is a way
//! to make vipgate and the server disagree about the request. A Host that differs from
//! the authority used for routing lets a client reach a route's pool while the server
//! (and its `Location`s, its tenant logic) sees another name; a second Host or an
//! ambiguous `Transfer-Encoding` is the classic request-smuggling shape; CONNECT would
//! make vipgate an open tunnel.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode, Uri, Version};

/// A request vipgate refuses to forward, and why (for the answer and the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub why: &'static str,
}

const fn bad(why: &'static str) -> Refusal {
    Refusal { status: StatusCode::BAD_REQUEST, why }
}

/// The one authority (`host[:port]`) of a request: what routing, deny rules, cookies,
/// redirects, the forwarding headers, the log and the server's Host all use.
///
/// - CONNECT is refused with 405: vipgate fronts APIs, it is not a tunnel.
/// - `*` is only OPTIONS' target; an authority-form target (`GET example:80`) is only
///   CONNECT's; absolute-form must be `http://` or `https://` with a host and no userinfo.
/// - HTTP/1.1 must carry exactly one Host (RFC 9112 §3.2), valid as `host[:port]`; an
///   absolute-form target's authority replaces it (§3.2.2). HTTP/1.0 may omit Host.
/// - HTTP/2: `:authority` and a `host` header, when both are sent, must agree (RFC 9113
///   §8.3.1); one of them must be there.
///
/// `Ok(None)`: an HTTP/1.0 request with neither, which routes as "no host".
pub fn authority(method: &Method, version: Version, uri: &Uri, headers: &HeaderMap) -> Result<Option<String>, Refusal> {
    if method == Method::CONNECT {
        return Err(Refusal { status: StatusCode::METHOD_NOT_ALLOWED, why: "CONNECT is not served here" });
    }
    if uri.scheme().is_none() && uri.authority().is_some() {
        return Err(bad("an authority-form target is for CONNECT only"));
    }
    if uri.path() == "*" && uri.authority().is_none() && method != Method::OPTIONS {
        return Err(bad("the target * is for OPTIONS only"));
    }
    let target = match uri.authority() {
        None => None,
        Some(a) => {
            let scheme = uri.scheme_str().unwrap_or_default();
            if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
                return Err(bad("the target's scheme is not http or https"));
            }
            if a.as_str().contains('@') {
                return Err(bad("userinfo in the request target"));
            }
            if !valid_host_port(a.as_str()) {
                return Err(bad("the target's authority is not host[:port]"));
            }
            Some(a.as_str())
        }
    };
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(bad("more than one Host header"));
    }
    let host = match host {
        None => None,
        Some(v) => match host_str(v) {
            Some(h) => Some(h),
            None => return Err(bad("the Host header is not host[:port]")),
        },
    };
    let one = if version == Version::HTTP_2 {
        match (target, host) {
            (Some(t), Some(h)) if !t.eq_ignore_ascii_case(h) => {
                return Err(bad(":authority and the host header disagree"));
            }
            (Some(t), _) => t,
            (None, Some(h)) => h,
            (None, None) => return Err(bad("no :authority and no host header")),
        }
    } else {
        match (target, host) {
            (_, None) if version >= Version::HTTP_11 => return Err(bad("an HTTP/1.1 request without Host")),
            // The absolute-form target wins over Host, which is then replaced.
            (Some(t), _) => t,
            (None, Some(h)) => h,
            (None, None) => return Ok(None),
        }
    };
    Ok(Some(one.to_string()))
}

fn host_str(v: &HeaderValue) -> Option<&str> {
    let s = v.to_str().ok()?;
    valid_host_port(s).then_some(s)
}

/// `host[:port]` as RFC 3986 writes it: a reg-name (unreserved, sub-delims, `%XX`), an
/// IPv4 address, or a bracketed IPv6 address; a port of 1 to 5 digits up to 65535.
pub fn valid_host_port(s: &str) -> bool {
    let Some(hp) = crate::net::host_port::split(s) else { return false };
    let port_ok = hp.port.is_none_or(|p| p.len() <= 5 && hp.numeric_port().is_some());
    let host_ok = if hp.bracketed { hp.host.parse::<std::net::Ipv6Addr>().is_ok() } else { valid_reg_name(hp.host) };
    port_ok && host_ok
}

fn valid_reg_name(host: &str) -> bool {
    let b = host.as_bytes();
    if b.is_empty() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = |j: usize| b.get(j).is_some_and(u8::is_ascii_hexdigit);
                if !(hex(i + 1) && hex(i + 2)) {
                    return false;
                }
                i += 3;
                continue;
            }
            c if c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&c) => {}
            _ => return false,
        }
        i += 1;
    }
    true
}

/// The body framing of an HTTP/1.x request, checked before anything is forwarded: a
/// `Transfer-Encoding` other than exactly `chunked` (`gzip, chunked` would reach the
/// server decoded and mislabelled), one sent beside `Content-Length` (two lengths), or one
/// in HTTP/1.0 (which has no chunked coding) is refused.
pub fn framing(version: Version, headers: &HeaderMap) -> Result<(), Refusal> {
    if version >= Version::HTTP_2 {
        return Ok(());
    }
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(trim)
        .filter(|t| !t.is_empty());
    let Some(first) = codings.next() else {
        if headers.contains_key(header::TRANSFER_ENCODING) {
            return Err(bad("an empty Transfer-Encoding"));
        }
        return Ok(());
    };
    if !first.eq_ignore_ascii_case(b"chunked") || codings.next().is_some() {
        return Err(bad("a Transfer-Encoding other than chunked"));
    }
    if version < Version::HTTP_11 {
        return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
    }
    if headers.contains_key(header::CONTENT_LENGTH) {
        return Err(bad("both Transfer-Encoding and Content-Length"));
    }
    Ok(())
}

fn trim(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn auth(method: &str, version: Version, target: &str, hosts: &[&str]) -> Result<Option<String>, Refusal> {
        let uri: Uri = target.parse().unwrap();
        let pairs: Vec<(&str, &str)> = hosts.iter().map(|h| ("host", *h)).collect();
        authority(&method.parse().unwrap(), version, &uri, &map(&pairs))
    }

    const H11: Version = Version::HTTP_11;

    #[test]
    fn one_authority_for_http1() {
        assert_eq!(auth("GET", H11, "/v3", &["keystone:5000"]).unwrap().as_deref(), Some("keystone:5000"));
        // Absolute-form: the target's authority replaces Host.
        assert_eq!(auth("GET", H11, "http://other.test/", &["example.test"]).unwrap().as_deref(), Some("other.test"));
        assert_eq!(
            auth("GET", H11, "https://[2001:db8::1]:8443/x", &["a"]).unwrap().as_deref(),
            Some("[2001:db8::1]:8443")
        );
        // HTTP/1.0 may come without Host.
        assert_eq!(auth("GET", Version::HTTP_10, "/", &[]).unwrap(), None);
        assert_eq!(auth("GET", Version::HTTP_10, "/", &["vip"]).unwrap().as_deref(), Some("vip"));
        assert_eq!(auth("OPTIONS", H11, "*", &["vip"]).unwrap().as_deref(), Some("vip"));
    }

    #[test]
    fn refused_shapes() {
        let status = |r: Result<Option<String>, Refusal>| r.map_err(|e| e.status.as_u16()).err();
        assert_eq!(status(auth("GET", H11, "/", &[])), Some(400), "HTTP/1.1 without Host");
        assert_eq!(status(auth("GET", H11, "http://a.test/", &[])), Some(400), "absolute-form still needs Host");
        assert_eq!(status(auth("GET", H11, "/", &["a", "a"])), Some(400), "two Host headers, even equal");
        assert_eq!(status(auth("GET", H11, "/", &["a", "b"])), Some(400));
        for bad_host in ["", "a b", "a/b", "a:b", "a:", "a:99999", "[::1", "[zz]", "a@b", "a:1:2", "\"a\"", "a%zz"] {
            assert_eq!(status(auth("GET", H11, "/", &[bad_host])), Some(400), "Host {bad_host:?}");
        }
        assert_eq!(status(auth("GET", H11, "http://u:p@a.test/", &["a.test"])), Some(400), "userinfo");
        assert_eq!(status(auth("GET", H11, "ftp://a.test/", &["a.test"])), Some(400), "scheme");
        assert_eq!(status(auth("GET", H11, "rl", &["a.test"])), Some(400), "authority-form for GET");
        assert_eq!(status(auth("GET", H11, "a.test:80", &["a.test"])), Some(400));
        assert_eq!(status(auth("CONNECT", H11, "a.test:443", &["a.test"])), Some(405));
        assert_eq!(status(auth("GET", H11, "*", &["a.test"])), Some(400), "* for GET");
    }

    #[test]
    fn http2_authority_and_host_agree() {
        let h2 = Version::HTTP_2;
        assert_eq!(auth("GET", h2, "https://vip:5000/", &[]).unwrap().as_deref(), Some("vip:5000"));
        assert_eq!(auth("GET", h2, "https://vip:5000/", &["VIP:5000"]).unwrap().as_deref(), Some("vip:5000"));
        assert_eq!(auth("GET", h2, "/", &["vip"]).unwrap().as_deref(), Some("vip"));
        assert!(auth("GET", h2, "https://vip:5000/", &["other:5000"]).is_err());
        assert!(auth("GET", h2, "https://vip/", &["vip", "vip"]).is_err());
        assert!(auth("GET", h2, "/", &[]).is_err());
    }

    #[test]
    fn host_port_grammar() {
        for ok in
            ["a", "a.b-c_d~", "a:1", "a:65535", "10.0.0.1:5000", "[::1]", "[2001:db8::1]:80", "x%41y", "a!$&'()*+,;="]
        {
            assert!(valid_host_port(ok), "{ok:?}");
        }
        for no in ["", ":80", "a:65536", "a:123456", "[::1]x", "[v1.x]", "a b", "é"] {
            assert!(!valid_host_port(no), "{no:?}");
        }
    }

    #[test]
    fn transfer_encoding_must_be_exactly_chunked() {
        let f = |v: Version, pairs: &[(&str, &str)]| framing(v, &map(pairs)).map_err(|e| e.status.as_u16()).err();
        assert_eq!(f(H11, &[]), None);
        assert_eq!(f(H11, &[("content-length", "5")]), None);
        assert_eq!(f(H11, &[("transfer-encoding", "chunked")]), None);
        assert_eq!(f(H11, &[("transfer-encoding", " Chunked ")]), None);
        assert_eq!(f(H11, &[("transfer-encoding", "gzip, chunked")]), Some(400));
        assert_eq!(f(H11, &[("transfer-encoding", "gzip"), ("transfer-encoding", "chunked")]), Some(400));
        assert_eq!(f(H11, &[("transfer-encoding", "chunked, chunked")]), Some(400));
        assert_eq!(f(H11, &[("transfer-encoding", "identity")]), Some(400));
        assert_eq!(f(H11, &[("transfer-encoding", "")]), Some(400));
        assert_eq!(f(H11, &[("transfer-encoding", "chunked"), ("content-length", "5")]), Some(400));
        assert_eq!(f(Version::HTTP_10, &[("transfer-encoding", "chunked")]), Some(400));
    }
}
