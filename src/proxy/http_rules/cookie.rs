//! Cookie persistence: the cookie that names a client's server, read, hidden and set.

use http::header::HeaderValue;

use super::headers::{visible_str, Edit, Headers};
use super::tokens::{is_tchar, tokens, trim_ows};

/// The value of cookie `name` (exact, case-sensitive name) from the first Cookie header
/// that has it; HTTP/2 clients may split cookies over several lines. Pairs are separated
/// by `;` with optional spaces; one pair of surrounding double quotes is removed.
pub fn cookie_value<'a>(headers: &'a impl Headers, name: &str) -> Option<&'a str> {
    headers.values("cookie").filter_map(visible_str).find_map(|line| {
        line.split(';').find_map(|pair| {
            let (n, v) = pair.split_once('=')?;
            if n.trim_matches([' ', '\t']) != name {
                return None;
            }
            let v = v.trim_matches([' ', '\t']);
            Some(v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v))
        })
    })
}

/// Remove cookie `name` from every Cookie header (HAProxy's `indirect`: the server never
/// sees vipgate's cookie). Lines without it are untouched; in the others the remaining
/// pairs keep their bytes and separators; a line left empty is dropped.
pub fn strip_cookie(headers: &mut impl Headers, name: &str) {
    let is_ours = |pair: &[u8]| {
        let n = pair.split(|&b| b == b'=').next().unwrap_or_default();
        pair.contains(&b'=') && trim_ows(n) == name.as_bytes()
    };
    let has_ours = |v: &[u8]| v.split(|&b| b == b';').any(is_ours);
    if !headers.values("cookie").any(has_ours) {
        return;
    }
    headers.edit("cookie", |value, line| {
        if !has_ours(value) {
            return Edit::Keep;
        }
        for pair in value.split(|&b| b == b';').filter(|p| !is_ours(p)) {
            if line.is_empty() {
                // The first pair kept loses the space that separated it from a removed one.
                let pair = trim_ows(pair);
                if pair.is_empty() {
                    continue;
                }
                line.extend_from_slice(pair);
            } else {
                line.push(b';');
                line.extend_from_slice(pair);
            }
        }
        let kept = trim_ows(line).len();
        line.truncate(kept);
        if line.is_empty() {
            Edit::Remove
        } else {
            Edit::Replace
        }
    });
}

/// `NAME=value; path=/; HttpOnly`, plus `; Secure` for a TLS client (a cookie naming a
/// server should not leak over plain text). `None` unless `name` is a token and `value`
/// is bare cookie-octets ([`valid_cookie_name`], [`valid_cookie_value`]).
pub fn set_cookie(name: &str, value: &str, secure: bool) -> Option<HeaderValue> {
    if !valid_cookie_name(name) || !valid_cookie_value(value) {
        return None;
    }
    let mut out = Vec::new();
    write_set_cookie(&mut out, name, value, secure);
    HeaderValue::from_bytes(&out).ok()
}

/// A cookie name vipgate can set: an RFC 6265 token.
pub fn valid_cookie_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(is_tchar)
}

/// A cookie value vipgate can set unquoted: RFC 6265 cookie-octets (no space, `"`, `,`,
/// `;` or `\`). Server names used as cookie values must pass this.
pub fn valid_cookie_value(value: &str) -> bool {
    value.bytes().all(|b| matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E))
}

/// Add the persistence cookie to a response, the way HAProxy's `cookie NAME insert
/// indirect nocache` does. Returns false (response untouched) when [`set_cookie`] rejects
/// the name or value.
///
/// - A Set-Cookie of the same name from the server is removed first (HAProxy's insert
///   mode without `preserve`): the client must not hold two.
/// - `nocache`: unless the response is already uncacheable, `Cache-Control: private` is
///   added so that a shared cache never hands one client's server cookie to everyone.
///   HAProxy uses `private` rather than `no-cache="set-cookie"` because old caches ignore
///   the latter. "Already uncacheable" follows HAProxy's reading: `Pragma: no-cache`, or
///   Cache-Control directives where the last of `public` / `private`, `no-cache`,
///   `no-store`, `max-age=0`, `s-maxage=0` is not `public`. Unlike HAProxy the status is
///   not consulted: `private` on an uncacheable status is harmless.
pub fn insert_persistence_cookie(headers: &mut impl Headers, name: &str, value: &str, secure: bool) -> bool {
    if !valid_cookie_name(name) || !valid_cookie_value(value) {
        return false;
    }
    headers.edit("set-cookie", |v, _| if set_cookie_name(v) == Some(name) { Edit::Remove } else { Edit::Keep });
    headers.append_with("set-cookie", |out| write_set_cookie(out, name, value, secure));
    if cacheable(headers) {
        headers.append("cache-control", b"private");
    }
    true
}

/// The Set-Cookie value of [`set_cookie`], written where the store lends room.
fn write_set_cookie(out: &mut Vec<u8>, name: &str, value: &str, secure: bool) {
    out.extend_from_slice(name.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"; path=/; HttpOnly");
    if secure {
        out.extend_from_slice(b"; Secure");
    }
}

fn set_cookie_name(value: &[u8]) -> Option<&str> {
    let s = visible_str(value)?;
    let pair = s.split(';').next()?;
    Some(pair.split_once('=')?.0.trim_matches([' ', '\t']))
}

fn cacheable(headers: &impl Headers) -> bool {
    let pragma_no_cache = headers.values("pragma").any(|v| tokens(v).any(|t| t.eq_ignore_ascii_case(b"no-cache")));
    if pragma_no_cache {
        return false;
    }
    let mut cacheable = true;
    for value in headers.values("cache-control") {
        for directive in tokens(value) {
            if directive.eq_ignore_ascii_case(b"public") {
                cacheable = true;
            } else if [&b"private"[..], b"no-cache", b"no-store", b"max-age=0", b"s-maxage=0"]
                .iter()
                .any(|d| directive.eq_ignore_ascii_case(d))
            {
                cacheable = false;
            }
        }
    }
    cacheable
}

#[cfg(test)]
mod tests {
    use http::header::{self, HeaderMap};

    use super::*;
    use crate::proxy::http_rules::testing::{all, both, names, Store};

    both!(cookie_parsing, cookie_stripped_others_untouched, persistence_cookie_and_nocache);

    fn cookie_parsing<H: Store>() {
        let h = H::of(&[("cookie", "a=1;b=2; SRV = \"db2\" ;  c=3"), ("cookie", "SRV=later; sessionid=abc==; empty=")]);
        assert_eq!(cookie_value(&h, "SRV"), Some("db2"));
        assert_eq!(cookie_value(&h, "a"), Some("1"));
        assert_eq!(cookie_value(&h, "c"), Some("3"));
        assert_eq!(cookie_value(&h, "sessionid"), Some("abc=="));
        assert_eq!(cookie_value(&h, "empty"), Some(""));
        assert_eq!(cookie_value(&h, "srv"), None);
        assert_eq!(cookie_value(&h, "SR"), None);
        assert_eq!(cookie_value(&H::of(&[("cookie", "SRV")]), "SRV"), None);
        assert_eq!(cookie_value(&H::of(&[("cookie", "x=\"")]), "x"), Some("\""));
        let many: Vec<String> = (0..200).map(|i| format!("k{i}=v{i}")).collect();
        let h = H::of(&[("cookie", &many.join("; "))]);
        assert_eq!(cookie_value(&h, "k199"), Some("v199"));
        assert_eq!(cookie_value(&H::of(&[]), "SRV"), None);
    }

    fn cookie_stripped_others_untouched<H: Store>() {
        let strip = |pairs: &[(&str, &str)]| {
            let mut h = H::of(pairs);
            strip_cookie(&mut h, "SRV");
            all(&h, "cookie").into_iter().map(String::from).collect::<Vec<_>>()
        };
        assert_eq!(strip(&[("cookie", "a=1; SRV=db1; b=\"x y\"")]), ["a=1; b=\"x y\""]);
        assert_eq!(strip(&[("cookie", "SRV=db1; a=1;b=2")]), ["a=1;b=2"]);
        assert_eq!(strip(&[("cookie", "a=1;  SRV=db1")]), ["a=1"]);
        assert_eq!(strip(&[("cookie", "SRV=db1")]), Vec::<String>::new());
        assert_eq!(strip(&[("cookie", " SRV=db1 ; SRV=db2 ")]), Vec::<String>::new());
        assert_eq!(
            strip(&[("cookie", "x=1;;  y=2"), ("cookie", "SRV=db1"), ("cookie", "z=SRV=3")]),
            ["x=1;;  y=2", "z=SRV=3"]
        );
        assert_eq!(strip(&[("cookie", "SRVX=1; XSRV=2")]), ["SRVX=1; XSRV=2"]);
    }

    #[test]
    fn opaque_cookie_bytes_kept() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_bytes(b"a=\xff; SRV=db1").unwrap());
        strip_cookie(&mut h, "SRV");
        assert_eq!(h.get(header::COOKIE).unwrap().as_bytes(), b"a=\xff");
        let mut h = crate::proxy::http::h1::headers::HeaderList::new();
        h.push(b"Cookie", b"a=\xff; SRV=db1");
        strip_cookie(&mut h, "SRV");
        assert_eq!(h.first("cookie"), Some(&b"a=\xff"[..]));
    }

    #[test]
    fn set_cookie_format() {
        assert_eq!(set_cookie("SRV", "db1", false).unwrap(), "SRV=db1; path=/; HttpOnly");
        assert_eq!(set_cookie("SRV", "db1", true).unwrap(), "SRV=db1; path=/; HttpOnly; Secure");
        assert!(set_cookie("SRV", "db 1", false).is_none());
        assert!(set_cookie("SRV", "a;b", false).is_none());
        assert!(set_cookie("S R", "x", false).is_none());
        assert!(set_cookie("", "x", false).is_none());
        assert!(set_cookie("SRV", "", false).is_some());
    }

    fn persistence_cookie_and_nocache<H: Store>() {
        let mut h = H::of(&[("set-cookie", "SRV=fromserver; path=/"), ("set-cookie", "sessionid=abc; HttpOnly")]);
        assert!(insert_persistence_cookie(&mut h, "SRV", "ctl1", true));
        assert_eq!(all(&h, "set-cookie"), ["sessionid=abc; HttpOnly", "SRV=ctl1; path=/; HttpOnly; Secure"]);
        assert_eq!(all(&h, "cache-control"), ["private"]);

        let mut h = H::of(&[("cache-control", "max-age=60, public")]);
        insert_persistence_cookie(&mut h, "SRV", "ctl1", false);
        assert_eq!(all(&h, "cache-control"), ["max-age=60, public", "private"]);

        for already in [
            ("cache-control", "no-store"),
            ("cache-control", "public, No-Cache"),
            ("cache-control", "Private"),
            ("cache-control", "s-maxage=0"),
            ("pragma", "no-cache"),
        ] {
            let mut h = H::of(&[already]);
            insert_persistence_cookie(&mut h, "SRV", "ctl1", false);
            assert!(h.values("cache-control").all(|v| v != b"private"), "{already:?}");
        }
        let mut h = H::of(&[("cache-control", "no-cache=\"set-cookie\"")]);
        insert_persistence_cookie(&mut h, "SRV", "ctl1", false);
        assert_eq!(all(&h, "cache-control"), ["no-cache=\"set-cookie\"", "private"]);

        let mut h = H::of(&[]);
        assert!(!insert_persistence_cookie(&mut h, "SRV", "bad value", false));
        assert!(names(&h).is_empty());
    }
}
