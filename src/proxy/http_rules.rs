//! Header and request rules of `mode = "http"`, as pure functions over `http` types: no
//! I/O, no shared state, and no panics on anything a client or a server can send, so the
//! proxy can call them per request without error paths.
//!
//! A proxy applies them in this order on the request, once `proxy::http::policy` has
//! settled its one authority: [`denied`],
//! [`route`] and [`cookie_value`] (pick the server), [`strip_hop_by_hop`] (before
//! anything adds headers, so a client's `Connection: x-forwarded-for` cannot remove what
//! vipgate adds), [`apply_forwarding`], [`strip_cookie`], [`apply_rules`]; and on the
//! response: [`strip_hop_by_hop`], [`rewrite_location`] (TLS clients only),
//! [`insert_persistence_cookie`], [`apply_rules`].

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::{DenyRule, HeaderRules, Http, Route};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

// ---------------------------------------------------------------------------------------
// Hop-by-hop headers

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

/// The non-empty, whitespace-trimmed elements of a comma-separated header value.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows).filter(|t| !t.is_empty())
}

fn trim_ows(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

// ---------------------------------------------------------------------------------------
// Forwarding headers

/// What vipgate knows about the client of one request.
#[derive(Debug, Clone, Copy)]
pub struct ClientFacts<'a> {
    /// The client: the PROXY protocol source, else the peer.
    pub client: IpAddr,
    /// The TCP peer, which sent the PROXY header if there was one: `trusted_forwarders`
    /// is matched against it, never against an address a PROXY header claims.
    pub peer: IpAddr,
    /// The client spoke TLS to vipgate.
    pub tls: bool,
    /// The request's one authority (`proxy::http::policy::authority`).
    pub host: Option<&'a str>,
    /// The address the client connected to.
    pub local: SocketAddr,
}

/// Add X-Forwarded-For / -Proto / -Host / -Port and RFC 7239 `Forwarded` as `cfg` asks.
///
/// Only a peer inside `cfg.trusted_forwarders` (a front balancer) may bring its own: from
/// anyone else every incoming forwarding header ([`is_forwarding_header`]) is removed
/// first, whatever `cfg` enables, so that no client can claim another address, claim TLS
/// it did not use, or move the URLs a WSGI application builds.
///
/// - `forwarded_for`: the client address is appended to X-Forwarded-For; a trusted chain
///   and the new address become one `a, b, client` line (servers that read only the first
///   line would otherwise miss hops). IPv4-mapped IPv6 clients are written as IPv4.
/// - `forwarded_proto`: X-Forwarded-Proto is `https` or `http`; a trusted incoming value
///   is kept, because the front balancer saw the scheme the user really used.
/// - `forwarded_host`: X-Forwarded-Host is the Host, and X-Forwarded-Port the local port
///   (HAProxy's `dst_port` convention); both are left as they came when a trusted client
///   sent X-Forwarded-Host, because our local port says nothing about the front hop.
/// - `forwarded`: an element `for=...;proto=...[;host=...]` is appended, comma-joined
///   with a trusted incoming value.
pub fn apply_forwarding(headers: &mut HeaderMap, cfg: &Http, facts: &ClientFacts) {
    let client = facts.client.to_canonical();
    let trusted = cfg.trusted_forwarders.iter().any(|n| n.contains(facts.peer));
    if !trusted {
        let spoofed: Vec<HeaderName> = headers.keys().filter(|n| is_forwarding_header(n.as_str())).cloned().collect();
        for name in spoofed {
            headers.remove(name);
        }
    }
    let proto = if facts.tls { "https" } else { "http" };

    if cfg.forwarded_for {
        append_list(headers, X_FORWARDED_FOR, client.to_string().as_bytes());
    }
    if cfg.forwarded_proto && !headers.contains_key(X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if cfg.forwarded_host && !headers.contains_key(X_FORWARDED_HOST) {
        if let Some(host) = facts.host.and_then(|h| HeaderValue::from_str(h).ok()) {
            headers.insert(X_FORWARDED_HOST, host);
        }
        headers.insert(X_FORWARDED_PORT, HeaderValue::from(facts.local.port()));
    }
    if cfg.forwarded {
        let node = match client {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("\"[{v6}]\""),
        };
        let mut element = format!("for={node};proto={proto}");
        if let Some(host) = facts.host {
            element.push_str(";host=");
            push_token_or_quoted(&mut element, host);
        }
        // A Host that cannot sit in a header value is dropped rather than the element.
        if HeaderValue::from_str(&element).is_err() {
            element = format!("for={node};proto={proto}");
        }
        append_list(headers, header::FORWARDED, element.as_bytes());
    }
}

/// A header a WSGI server could read as forwarding information: `Forwarded`,
/// `X-Real-IP`, and the whole `X-Forwarded-*` family (`-For`, `-Proto`, `-Host`, `-Port`,
/// `-Prefix`, which oslo.middleware turns into SCRIPT_NAME, `-Ssl`, ...), in any case and
/// with `_` for `-`: WSGI servers fold `X_Forwarded_For` and `X-Forwarded-For` into the
/// same `HTTP_X_FORWARDED_FOR`, and every OpenStack API is WSGI.
pub fn is_forwarding_header(name: &str) -> bool {
    // `name` equals `want` (lower case, with dashes) ignoring case and `_` for `-`.
    fn folded_eq(name: &[u8], want: &[u8]) -> bool {
        name.len() == want.len()
            && name.iter().zip(want).all(|(&a, &b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
    }
    const FAMILY: &[u8] = b"x-forwarded-";
    let n = name.as_bytes();
    folded_eq(n, b"forwarded")
        || folded_eq(n, b"x-real-ip")
        || (n.len() > FAMILY.len() && folded_eq(&n[..FAMILY.len()], FAMILY))
}

/// Replace every `name` line with one line: the existing non-empty values and `item`,
/// joined by `, `.
fn append_list(headers: &mut HeaderMap, name: HeaderName, item: &[u8]) {
    let mut joined = Vec::new();
    for value in headers.get_all(&name) {
        let value = trim_ows(value.as_bytes());
        if !value.is_empty() {
            joined.extend_from_slice(value);
            joined.extend_from_slice(b", ");
        }
    }
    joined.extend_from_slice(item);
    let value = HeaderValue::from_bytes(&joined).or_else(|_| HeaderValue::from_bytes(item));
    if let Ok(value) = value {
        headers.insert(name, value);
    }
}

/// RFC 7239 values are a token or a quoted-string; a host with a port (its colon) or
/// anything else outside tchar must be quoted.
fn push_token_or_quoted(out: &mut String, s: &str) {
    if !s.is_empty() && s.bytes().all(is_tchar) {
        out.push_str(s);
        return;
    }
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

// ---------------------------------------------------------------------------------------
// set_headers / del_headers

/// Delete every `del` header, then set each `set` header (replacing all its values).
/// Names and values are checked at load; one that is invalid anyway is skipped.
pub fn apply_rules(headers: &mut HeaderMap, rules: &HeaderRules) {
    for name in &rules.del {
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            headers.remove(name);
        }
    }
    for (name, value) in &rules.set {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            headers.insert(name, value);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Deny rules

/// The status of the first rule that matches `path`, if any.
///
/// A rule matches when every condition it sets matches (a rule with none matches every
/// path). So that an encoding trick cannot slip past a condition, each condition is tried
/// against three forms of the path and holds if any form matches:
///
/// - the path as sent;
/// - the path percent-decoded once (`%2e` → `.`; invalid `%` sequences stay as they are;
///   decoded bytes that are not UTF-8 become U+FFFD). Once, because servers decode once:
///   `%252e` reaches them as the literal text `%2e`, not as a dot;
/// - the decoded path with `//` merged and `.`/`..` segments resolved, the path a server
///   actually serves (`//server-status`, `/x/../server-status`).
///
/// `path_prefix` and `path_contains` compare ASCII case-insensitively, as HAProxy's
/// `path -i -m beg` / `-m sub`: servers on case-insensitive file systems serve
/// `/SERVER-STATUS` too. `path_regex` is matched as written (use `(?i)` to ignore case).
pub fn denied(path: &str, rules: &[DenyRule]) -> Option<u16> {
    if rules.is_empty() {
        return None;
    }
    let decoded = percent_decode(path);
    let normalized = normalize_path(&decoded);
    let forms: [&str; 3] = [path, &decoded, &normalized];
    let lower = forms.map(str::to_ascii_lowercase);
    rules.iter().find(|rule| deny_matches(rule, &forms, &lower)).map(|rule| rule.status)
}

fn deny_matches(rule: &DenyRule, forms: &[&str; 3], lower: &[String; 3]) -> bool {
    if let Some(prefix) = &rule.path_prefix {
        let prefix = prefix.as_bytes();
        let hit = lower
            .iter()
            .any(|p| p.as_bytes().get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix)));
        if !hit {
            return false;
        }
    }
    if let Some(needle) = &rule.path_contains {
        let needle = needle.to_ascii_lowercase();
        if !lower.iter().any(|p| p.contains(&needle)) {
            return false;
        }
    }
    if let Some(re) = &rule.path_regex {
        if !forms.iter().any(|p| re.is_match(p)) {
            return false;
        }
    }
    true
}

fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let (Some(hi), Some(lo)) = (b.get(i + 1).and_then(hex), b.get(i + 2).and_then(hex)) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex(b: &u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Merge empty segments and resolve dot segments (RFC 3986 §5.2.4, `..` stopping at the
/// root); a trailing slash is kept.
fn normalize_path(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing = false;
    for seg in path.split('/') {
        trailing = matches!(seg, "" | "." | "..");
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    for seg in &segments {
        out.push('/');
        out.push_str(seg);
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    out
}

// ---------------------------------------------------------------------------------------
// Location rewriting

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

/// `host`, `host:port`, `[v6]`, `[v6]:port` → (host without brackets, port). A bare IPv6
/// address (several colons, no brackets) is all host. `None` when the port is not a
/// number or the brackets are unbalanced; an empty port (`host:`) is no port.
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
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

fn push_host(out: &mut String, host: &str) {
    if host.contains(':') {
        out.push('[');
        out.push_str(host);
        out.push(']');
    } else {
        out.push_str(host);
    }
}

// ---------------------------------------------------------------------------------------
// Cookie persistence

/// The value of cookie `name` (exact, case-sensitive name) from the first Cookie header
/// that has it; HTTP/2 clients may split cookies over several lines. Pairs are separated
/// by `;` with optional spaces; one pair of surrounding double quotes is removed.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|line| {
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
pub fn strip_cookie(headers: &mut HeaderMap, name: &str) {
    let is_ours = |pair: &[u8]| {
        let n = pair.split(|&b| b == b'=').next().unwrap_or_default();
        pair.contains(&b'=') && trim_ows(n) == name.as_bytes()
    };
    let has_ours = |v: &HeaderValue| v.as_bytes().split(|&b| b == b';').any(is_ours);
    if !headers.get_all(header::COOKIE).iter().any(has_ours) {
        return;
    }
    let mut kept = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        if !has_ours(value) {
            kept.push(value.clone());
            continue;
        }
        let mut line = Vec::with_capacity(value.len());
        for pair in value.as_bytes().split(|&b| b == b';').filter(|p| !is_ours(p)) {
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
        let line = trim_ows(&line);
        if line.is_empty() {
            continue;
        }
        // The bytes all came from a valid value, so this cannot fail; keep the original if it does.
        kept.push(HeaderValue::from_bytes(line).unwrap_or_else(|_| value.clone()));
    }
    headers.remove(header::COOKIE);
    for v in kept {
        headers.append(header::COOKIE, v);
    }
}

/// `NAME=value; path=/; HttpOnly`, plus `; Secure` for a TLS client (a cookie naming a
/// server should not leak over plain text). `None` unless `name` is a token and `value`
/// is bare cookie-octets ([`valid_cookie_name`], [`valid_cookie_value`]).
pub fn set_cookie(name: &str, value: &str, secure: bool) -> Option<HeaderValue> {
    if !valid_cookie_name(name) || !valid_cookie_value(value) {
        return None;
    }
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{name}={value}; path=/; HttpOnly{secure}")).ok()
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
pub fn insert_persistence_cookie(headers: &mut HeaderMap, name: &str, value: &str, secure: bool) -> bool {
    let Some(cookie) = set_cookie(name, value, secure) else { return false };
    let others: Vec<HeaderValue> =
        headers.get_all(header::SET_COOKIE).iter().filter(|v| set_cookie_name(v) != Some(name)).cloned().collect();
    headers.remove(header::SET_COOKIE);
    for v in others {
        headers.append(header::SET_COOKIE, v);
    }
    headers.append(header::SET_COOKIE, cookie);
    if cacheable(headers) {
        headers.append(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    }
    true
}

fn set_cookie_name(value: &HeaderValue) -> Option<&str> {
    let s = value.to_str().ok()?;
    let pair = s.split(';').next()?;
    Some(pair.split_once('=')?.0.trim_matches([' ', '\t']))
}

fn cacheable(headers: &HeaderMap) -> bool {
    let pragma_no_cache = headers
        .get_all(header::PRAGMA)
        .iter()
        .any(|v| tokens(v.as_bytes()).any(|t| t.eq_ignore_ascii_case(b"no-cache")));
    if pragma_no_cache {
        return false;
    }
    let mut cacheable = true;
    for value in headers.get_all(header::CACHE_CONTROL) {
        for directive in tokens(value.as_bytes()) {
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

// ---------------------------------------------------------------------------------------
// Routing

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
    use crate::config::IpNet;
    use std::time::{SystemTime, UNIX_EPOCH};

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn all<'a>(h: &'a HeaderMap, name: &str) -> Vec<&'a str> {
        h.get_all(name).iter().map(|v| v.to_str().unwrap()).collect()
    }

    // ----- hop-by-hop

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

    // ----- forwarding

    fn cfg(trusted: &[&str]) -> Http {
        Http {
            forwarded_host: true,
            forwarded: true,
            trusted_forwarders: trusted.iter().map(|s| IpNet::parse(s).unwrap()).collect(),
            ..Http::default()
        }
    }

    fn facts(client: &str, tls: bool, host: Option<&'static str>) -> ClientFacts<'static> {
        let client = client.parse().unwrap();
        ClientFacts { client, peer: client, tls, host, local: "192.0.2.10:8004".parse().unwrap() }
    }

    #[test]
    fn untrusted_spoofing_removed() {
        let mut h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "5.6.7.8"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil"),
            ("x-forwarded-port", "443"),
            ("forwarded", "for=1.2.3.4"),
        ]);
        apply_forwarding(&mut h, &cfg(&["10.0.0.0/8"]), &facts("203.0.113.9", false, Some("vip:8004")));
        assert_eq!(all(&h, "x-forwarded-for"), ["203.0.113.9"]);
        assert_eq!(all(&h, "x-forwarded-proto"), ["http"]);
        assert_eq!(all(&h, "x-forwarded-host"), ["vip:8004"]);
        assert_eq!(all(&h, "x-forwarded-port"), ["8004"]);
        assert_eq!(all(&h, "forwarded"), ["for=203.0.113.9;proto=http;host=\"vip:8004\""]);
    }

    #[test]
    fn underscore_and_family_spellings_removed_from_the_untrusted() {
        let spoofed = [
            ("x_forwarded_for", "6.6.6.6"),
            ("x-forwarded_proto", "https"),
            ("X_FORWARDED_HOST", "evil"),
            ("x-forwarded-prefix", "/evil"),
            ("x_forwarded_prefix", "/evil"),
            ("x-forwarded-ssl", "on"),
            ("x-real-ip", "6.6.6.6"),
            ("x_real_ip", "6.6.6.6"),
        ];
        let mut h = map(&spoofed);
        h.insert("x-forwardedfor", HeaderValue::from_static("kept: not a forwarding header"));
        let c = Http { forwarded_for: false, forwarded_proto: false, ..Http::default() };
        apply_forwarding(&mut h, &c, &facts("203.0.113.9", false, None));
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-forwardedfor"]);
        // A trusted front balancer's headers pass as they are.
        let mut h = map(&spoofed);
        apply_forwarding(
            &mut h,
            &Http { forwarded_for: false, forwarded_proto: false, ..cfg(&["10.0.0.0/8"]) },
            &facts("10.0.0.2", false, None),
        );
        for (name, value) in spoofed {
            assert_eq!(all(&h, &name.to_ascii_lowercase()), [value], "{name} from a trusted peer");
        }
    }

    #[test]
    fn trust_follows_the_tcp_peer_not_the_proxy_header() {
        let claimed = |peer: &str| ClientFacts { peer: peer.parse().unwrap(), ..facts("10.9.9.9", false, None) };
        // A PROXY header from an untrusted peer claims a trusted source: its XFF is not kept.
        let mut h = map(&[("x-forwarded-for", "6.6.6.6")]);
        apply_forwarding(&mut h, &cfg(&["10.0.0.0/8"]), &claimed("203.0.113.9"));
        assert_eq!(all(&h, "x-forwarded-for"), ["10.9.9.9"]);
        // A trusted front balancer relays a client from outside: the chain is kept.
        let mut h = map(&[("x-forwarded-for", "6.6.6.6")]);
        apply_forwarding(&mut h, &cfg(&["192.0.2.0/24"]), &claimed("192.0.2.5"));
        assert_eq!(all(&h, "x-forwarded-for"), ["6.6.6.6, 10.9.9.9"]);
    }

    #[test]
    fn untrusted_removed_even_when_not_adding() {
        let mut h = map(&[("x-forwarded-for", "1.2.3.4"), ("x-forwarded-proto", "https"), ("forwarded", "for=x")]);
        let c = Http { forwarded_for: false, forwarded_proto: false, ..Http::default() };
        apply_forwarding(&mut h, &c, &facts("203.0.113.9", false, None));
        assert!(h.is_empty());
    }

    #[test]
    fn trusted_chain_appended_in_one_line() {
        let mut h = map(&[
            ("x-forwarded-for", "198.51.100.1, 198.51.100.2"),
            ("x-forwarded-for", "198.51.100.3"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "cloud.example.org"),
            ("forwarded", "for=198.51.100.1;proto=https"),
            ("forwarded", "for=198.51.100.3"),
        ]);
        apply_forwarding(&mut h, &cfg(&["10.0.0.0/8"]), &facts("10.1.2.3", false, Some("vip")));
        assert_eq!(all(&h, "x-forwarded-for"), ["198.51.100.1, 198.51.100.2, 198.51.100.3, 10.1.2.3"]);
        assert_eq!(all(&h, "x-forwarded-proto"), ["https"]);
        assert_eq!(all(&h, "x-forwarded-host"), ["cloud.example.org"]);
        // Our local port says nothing about the front hop.
        assert!(h.get("x-forwarded-port").is_none());
        assert_eq!(
            all(&h, "forwarded"),
            ["for=198.51.100.1;proto=https, for=198.51.100.3, for=10.1.2.3;proto=http;host=vip"]
        );
    }

    #[test]
    fn trusted_without_headers_gets_ours() {
        let mut h = HeaderMap::new();
        apply_forwarding(&mut h, &cfg(&["10.0.0.0/8"]), &facts("10.1.2.3", true, Some("vip")));
        assert_eq!(all(&h, "x-forwarded-for"), ["10.1.2.3"]);
        assert_eq!(all(&h, "x-forwarded-proto"), ["https"]);
        assert_eq!(all(&h, "x-forwarded-host"), ["vip"]);
        assert_eq!(all(&h, "x-forwarded-port"), ["8004"]);
    }

    #[test]
    fn ipv6_client() {
        let mut h = HeaderMap::new();
        apply_forwarding(&mut h, &cfg(&[]), &facts("2001:db8::1", true, Some("[2001:db8::10]:5000")));
        assert_eq!(all(&h, "x-forwarded-for"), ["2001:db8::1"]);
        assert_eq!(all(&h, "forwarded"), ["for=\"[2001:db8::1]\";proto=https;host=\"[2001:db8::10]:5000\""]);
    }

    #[test]
    fn mapped_client_against_v4_range() {
        let mut h = map(&[("x-forwarded-for", "198.51.100.1")]);
        apply_forwarding(&mut h, &cfg(&["10.0.0.0/8"]), &facts("::ffff:10.1.2.3", false, None));
        assert_eq!(all(&h, "x-forwarded-for"), ["198.51.100.1, 10.1.2.3"]);
        assert_eq!(all(&h, "forwarded"), ["for=10.1.2.3;proto=http"]);

        let mut h = map(&[("x-forwarded-for", "198.51.100.1")]);
        apply_forwarding(&mut h, &cfg(&["10.0.0.0/8"]), &facts("::ffff:11.1.2.3", false, None));
        assert_eq!(all(&h, "x-forwarded-for"), ["11.1.2.3"]);
    }

    #[test]
    fn forwarded_host_escaped() {
        let mut h = HeaderMap::new();
        apply_forwarding(&mut h, &cfg(&[]), &facts("192.0.2.1", false, Some("a\"b\\c")));
        assert_eq!(all(&h, "forwarded"), ["for=192.0.2.1;proto=http;host=\"a\\\"b\\\\c\""]);
    }

    #[test]
    fn forwarding_flags_off() {
        let mut h = HeaderMap::new();
        let c = Http { forwarded_for: false, forwarded_proto: false, ..Http::default() };
        apply_forwarding(&mut h, &c, &facts("192.0.2.1", false, Some("vip")));
        assert!(h.is_empty());
    }

    // ----- set / del

    #[test]
    fn rules_delete_then_set() {
        let mut h = map(&[("server", "Apache"), ("x-a", "1"), ("x-a", "2"), ("x-keep", "k")]);
        let rules = HeaderRules {
            set: vec![
                ("x-a".into(), "new".into()),
                ("strict-transport-security".into(), "max-age=63072000".into()),
                ("bad name".into(), "v".into()),
                ("x-bad-value".into(), "a\nb".into()),
            ],
            del: vec!["Server".into(), "x-a".into(), "bad name".into()],
        };
        apply_rules(&mut h, &rules);
        assert!(h.get("server").is_none() && h.get("x-bad-value").is_none());
        assert_eq!(all(&h, "x-a"), ["new"]);
        assert_eq!(all(&h, "strict-transport-security"), ["max-age=63072000"]);
        assert_eq!(all(&h, "x-keep"), ["k"]);
    }

    // ----- deny

    fn rule(prefix: Option<&str>, contains: Option<&str>, re: Option<&str>, status: u16) -> DenyRule {
        DenyRule {
            path_prefix: prefix.map(Into::into),
            path_contains: contains.map(Into::into),
            path_regex: re.map(|r| regex::Regex::new(r).unwrap()),
            status,
        }
    }

    #[test]
    fn deny_prefix_case_insensitive_and_normalized() {
        let rules = [rule(Some("/server-status"), None, None, 403)];
        for p in [
            "/server-status",
            "/SERVER-STATUS",
            "/server-status?auto",
            "/server-status/",
            "/%73erver-status",
            "//server-status",
            "/./server-status",
            "/x/../server-status",
            "/x/%2e%2e/server-status",
        ] {
            assert_eq!(denied(p, &rules), Some(403), "{p}");
        }
        for p in ["/", "/v3/server-status", "/server", "/%2573erver-status"] {
            assert_eq!(denied(p, &rules), None, "{p}");
        }
    }

    #[test]
    fn deny_contains_raw_or_decoded() {
        let rules = [rule(None, Some("/."), None, 404)];
        for p in ["/a/%2e%2e/etc/passwd", "/a/../etc/passwd", "/.git/config", "/a/%2E%2e/", "/%2F.x", "/a%2/."] {
            assert_eq!(denied(p, &rules), Some(404), "{p}");
        }
        for p in ["/v3/auth/tokens", "/a.b/c", "/a%2e"] {
            assert_eq!(denied(p, &rules), None, "{p}");
        }
    }

    #[test]
    fn deny_all_conditions_and_first_rule_wins() {
        let rules = [
            rule(Some("/v3/"), Some("admin"), None, 403),
            rule(None, None, Some(r"^/v2\.0/.*\.php$"), 410),
            rule(Some("/v3/"), None, None, 451),
        ];
        assert_eq!(denied("/v3/ADMIN/x", &rules), Some(403));
        assert_eq!(denied("/v3/users", &rules), Some(451));
        assert_eq!(denied("/v2.0/x/shell.php", &rules), Some(410));
        assert_eq!(denied("/v2.0/x/shell%2Ephp", &rules), Some(410));
        // The regex is case-sensitive as written.
        assert_eq!(denied("/v2.0/x/shell.PHP", &rules), None);
        assert_eq!(denied("/v2.0/x/shell.php.txt", &rules), None);
        assert_eq!(denied("/", &[rule(None, None, None, 403)]), Some(403));
        assert_eq!(denied("/", &[]), None);
    }

    #[test]
    fn percent_decoding_edges() {
        assert_eq!(percent_decode("/a%2e%2E%41"), "/a..A");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz%4g%"), "%zz%4g%");
        assert_eq!(percent_decode("%252e"), "%2e");
        assert_eq!(percent_decode("%ff"), "\u{FFFD}");
        assert_eq!(percent_decode("%e2%82%ac"), "€");
        assert_eq!(normalize_path("/a/b/../../../c/./d//"), "/c/d/");
        assert_eq!(normalize_path(""), "/");
        assert_eq!(normalize_path("/.."), "/");
        assert_eq!(normalize_path("*"), "/*");
    }

    /// Random and adversarial paths never panic (the regex and the decoders see them all).
    #[test]
    fn deny_never_panics() {
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1;
        let mut x = seed;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let rules = [
            rule(Some("/é"), Some("%"), None, 403),
            rule(None, Some("/."), Some(r"(?i)\.\./|%"), 404),
            rule(Some("/"), Some("\u{FFFD}"), None, 400),
        ];
        let alphabet = b"%/.2eE5cCfF0aA\xc3\xa9\xff\x00?#;";
        for _ in 0..20_000 {
            let len = (next() % 24) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    let r = next();
                    if r % 3 == 0 {
                        (r >> 8) as u8
                    } else {
                        alphabet[(r >> 8) as usize % alphabet.len()]
                    }
                })
                .collect();
            let path = String::from_utf8_lossy(&bytes);
            let _ = denied(&path, &rules);
            let _ = route(&[], Some(&path), &path);
            let _ = split_host_port(&path);
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_bytes(&bytes) {
                h.insert(header::LOCATION, v.clone());
                h.insert(header::COOKIE, v.clone());
                h.insert(header::CONNECTION, v);
                rewrite_location(&mut h, Some(&path));
                let _ = cookie_value(&h, "SRV");
                strip_cookie(&mut h, "SRV");
                strip_hop_by_hop(&mut h, true);
            }
        }
    }

    // ----- Location

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

    // ----- cookies

    #[test]
    fn cookie_parsing() {
        let h = map(&[("cookie", "a=1;b=2; SRV = \"db2\" ;  c=3"), ("cookie", "SRV=later; sessionid=abc==; empty=")]);
        assert_eq!(cookie_value(&h, "SRV"), Some("db2"));
        assert_eq!(cookie_value(&h, "a"), Some("1"));
        assert_eq!(cookie_value(&h, "c"), Some("3"));
        assert_eq!(cookie_value(&h, "sessionid"), Some("abc=="));
        assert_eq!(cookie_value(&h, "empty"), Some(""));
        assert_eq!(cookie_value(&h, "srv"), None);
        assert_eq!(cookie_value(&h, "SR"), None);
        assert_eq!(cookie_value(&map(&[("cookie", "SRV")]), "SRV"), None);
        assert_eq!(cookie_value(&map(&[("cookie", "x=\"")]), "x"), Some("\""));
        let many: Vec<String> = (0..200).map(|i| format!("k{i}=v{i}")).collect();
        let h = map(&[("cookie", &many.join("; "))]);
        assert_eq!(cookie_value(&h, "k199"), Some("v199"));
        assert_eq!(cookie_value(&HeaderMap::new(), "SRV"), None);
    }

    #[test]
    fn cookie_stripped_others_untouched() {
        let strip = |pairs: &[(&str, &str)]| {
            let mut h = map(pairs);
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
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_bytes(b"a=\xff; SRV=db1").unwrap());
        strip_cookie(&mut h, "SRV");
        assert_eq!(h.get(header::COOKIE).unwrap().as_bytes(), b"a=\xff");
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

    #[test]
    fn persistence_cookie_and_nocache() {
        let mut h = map(&[("set-cookie", "SRV=fromserver; path=/"), ("set-cookie", "sessionid=abc; HttpOnly")]);
        assert!(insert_persistence_cookie(&mut h, "SRV", "ctl1", true));
        assert_eq!(all(&h, "set-cookie"), ["sessionid=abc; HttpOnly", "SRV=ctl1; path=/; HttpOnly; Secure"]);
        assert_eq!(all(&h, "cache-control"), ["private"]);

        let mut h = map(&[("cache-control", "max-age=60, public")]);
        insert_persistence_cookie(&mut h, "SRV", "ctl1", false);
        assert_eq!(all(&h, "cache-control"), ["max-age=60, public", "private"]);

        for already in [
            ("cache-control", "no-store"),
            ("cache-control", "public, No-Cache"),
            ("cache-control", "Private"),
            ("cache-control", "s-maxage=0"),
            ("pragma", "no-cache"),
        ] {
            let mut h = map(&[already]);
            insert_persistence_cookie(&mut h, "SRV", "ctl1", false);
            assert!(h.get_all("cache-control").iter().all(|v| v != "private"), "{already:?}");
        }
        let mut h = map(&[("cache-control", "no-cache=\"set-cookie\"")]);
        insert_persistence_cookie(&mut h, "SRV", "ctl1", false);
        assert_eq!(all(&h, "cache-control"), ["no-cache=\"set-cookie\"", "private"]);

        let mut h = HeaderMap::new();
        assert!(!insert_persistence_cookie(&mut h, "SRV", "bad value", false));
        assert!(h.is_empty());
    }

    // ----- routes

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
