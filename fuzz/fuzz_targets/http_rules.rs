//! Request-derived text through the http rules: deny matching (percent-decoding, path
//! normalisation), routing (Host parsing), Location rewriting and cookie parsing must
//! never panic, whatever the bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

use vipgate::config::{DenyRule, Route};
use vipgate::proxy::http_rules as rules;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut mid = text.len() / 2;
    while !text.is_char_boundary(mid) {
        mid += 1;
    }
    let (a, b) = text.split_at(mid);
    let deny = [
        DenyRule { path_prefix: Some("/server-status".into()), path_contains: None, path_regex: None, status: 403 },
        DenyRule { path_prefix: None, path_contains: Some("/.".into()), path_regex: None, status: 403 },
    ];
    let _ = rules::denied(a, &deny);
    let routes = [
        Route { host: Some("*.example.org".into()), path_prefix: None, pool: "p".into() },
        Route { host: None, path_prefix: Some("/identity".into()), pool: "q".into() },
    ];
    let _ = rules::route(&routes, Some(a), b);
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_str(a) {
        headers.insert(http::header::LOCATION, v.clone());
        headers.insert(http::header::COOKIE, v);
    }
    rules::rewrite_location(&mut headers, Some(b));
    let _ = rules::cookie_value(&headers, "SERVERID");
    rules::strip_cookie(&mut headers, "SERVERID");
});
