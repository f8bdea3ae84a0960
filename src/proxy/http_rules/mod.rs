//! Header and request rules of `mode = "http"`, as pure functions over a header store
//! ([`headers::Headers`]: hyper's `HeaderMap` for HTTP/2, the HTTP/1.1 engine's
//! `HeaderList`): no I/O, no shared state, no allocation in the usual case, and no panics
//! on anything a client or a server can send, so the proxy can call them per request
//! without error paths. Their unit tests run over both stores.
//!
//! A proxy applies them in this order on the request, once `proxy::http::policy` has
//! settled its one authority: [`denied`],
//! [`route`] and [`cookie_value`] (pick the server), [`strip_hop_by_hop`] (before
//! anything adds headers, so a client's `Connection: x-forwarded-for` cannot remove what
//! vipgate adds), [`apply_forwarding`], [`strip_cookie`], [`apply_rules`]; and on the
//! response: [`strip_hop_by_hop`], [`rewrite_location`] (TLS clients only),
//! [`insert_persistence_cookie`], [`apply_rules`].

mod authority;
mod cookie;
mod deny;
mod forwarding;
mod header_rules;
pub mod headers;
mod hop_by_hop;
mod location;
mod routing;
#[cfg(test)]
mod testing;
mod tokens;

pub use cookie::{
    cookie_value, insert_persistence_cookie, set_cookie, strip_cookie, valid_cookie_name, valid_cookie_value,
};
pub use deny::denied;
pub use forwarding::{apply_forwarding, is_forwarding_header, ClientFacts};
pub use header_rules::apply_rules;
pub use hop_by_hop::{is_upgrade, strip_hop_by_hop};
pub use location::rewrite_location;
pub use routing::route;

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use http::header::{self, HeaderMap, HeaderValue};

    use super::authority::split_host_port;
    use super::testing::rule;
    use super::*;

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
}
