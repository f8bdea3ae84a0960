//! Request-derived text through the http rules: deny matching (percent-decoding, path
//! normalisation), routing (Host parsing), Location rewriting and cookie parsing must
//! never panic, whatever the bytes; and the header rules give the same headers over both
//! stores (hyper's `HeaderMap` for HTTP/2, the HTTP/1.1 engine's `HeaderList`).
#![no_main]
use libfuzzer_sys::fuzz_target;

use vipgate::config::{DenyRule, Http, IpNet, Route};
use vipgate::proxy::http::h1::headers::HeaderList;
use vipgate::proxy::http_rules::headers::Headers;
use vipgate::proxy::http_rules as rules;

/// The names the rules read or write, compared value by value across the two stores.
const NAMES: [&str; 12] = [
    "location",
    "cookie",
    "connection",
    "upgrade",
    "keep-alive",
    "x-forwarded-for",
    "x-forwarded-proto",
    "forwarded",
    "set-cookie",
    "cache-control",
    "x-a",
    "host",
];

/// The same rules, in the proxy's order, over one store.
fn apply(h: &mut impl Headers, host: &str, upgrade: bool) {
    let cfg = Http {
        forwarded: true,
        forwarded_host: true,
        trusted_forwarders: vec![IpNet::parse("10.0.0.0/8").unwrap()],
        ..Http::default()
    };
    let facts = rules::ClientFacts {
        client: "10.1.2.3".parse().unwrap(),
        peer: "10.0.0.1".parse().unwrap(),
        tls: true,
        host: Some(host),
        local: "127.0.0.1:5000".parse().unwrap(),
    };
    rules::strip_hop_by_hop(h, upgrade);
    rules::apply_forwarding(h, &cfg, &facts);
    rules::strip_cookie(h, "SERVERID");
    rules::rewrite_location(h, Some(host));
    rules::insert_persistence_cookie(h, "SERVERID", "ctl1", true);
}

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

    // Differential: the same lines into both stores, the same rules, the same values out.
    let parts: Vec<&[u8]> = data.splitn(4, |&b| b == b'|').collect();
    let mut map = http::HeaderMap::new();
    let mut list = HeaderList::new();
    for (i, value) in parts.iter().enumerate() {
        let name = NAMES[(i * 5 + data.len()) % NAMES.len()];
        if let Ok(v) = http::HeaderValue::from_bytes(value) {
            map.append(http::HeaderName::from_static(name), v);
            list.push(name.as_bytes(), value);
        }
    }
    let upgrade = data.first().is_some_and(|b| b & 1 == 1);
    apply(&mut map, b, upgrade);
    apply(&mut list, b, upgrade);
    for name in NAMES {
        let m: Vec<&[u8]> = Headers::values(&map, name).collect();
        let l: Vec<&[u8]> = list.values(name).collect();
        assert_eq!(m, l, "{name} differs between the stores");
    }
});
