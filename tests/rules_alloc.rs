//! The header rules over the HTTP/1.1 engine's store allocate nothing per request once
//! the store has grown (issue 16: "no allocation per request in steady state, rules,
//! forwarding headers, cookie and routes included"). A counting global allocator counts
//! this thread's allocations around one keep-alive request's worth of rule work.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use vipgate::config::{HeaderRules, Http, IpNet};
use vipgate::proxy::http::h1::headers::HeaderList;
use vipgate::proxy::http_rules::headers::Headers;
use vipgate::proxy::http_rules::{self as rules, ClientFacts};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call goes straight to the system allocator; the count is a thread-local
// Cell with a const initialiser, which itself never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

const REQUEST: &[(&str, &str)] = &[
    ("Host", "vip.example.org:5000"),
    ("User-Agent", "python-keystoneclient"),
    ("Accept", "application/json"),
    ("X-Auth-Token", "gAAAAABk-token"),
    ("Cookie", "sessionid=abc; SERVERID=ctl1; csrftoken=x"),
    ("Connection", "keep-alive"),
    ("X-Forwarded-For", "6.6.6.6"),
    ("Content-Length", "0"),
];

const RESPONSE: &[(&str, &str)] = &[
    ("Server", "Apache"),
    ("Content-Type", "application/json"),
    ("Location", "http://vip.example.org:5000/v3/auth/tokens"),
    ("Set-Cookie", "sessionid=def; HttpOnly"),
    ("Connection", "keep-alive"),
    ("Keep-Alive", "timeout=5"),
    ("Content-Length", "42"),
];

/// One request's and one response's rule work, as the proxy does it.
fn one_exchange(req: &mut HeaderList, resp: &mut HeaderList, cfg: &Http, facts: &ClientFacts) -> usize {
    req.clear();
    for (n, v) in REQUEST {
        req.push(n.as_bytes(), v.as_bytes());
    }
    let upgrade = rules::is_upgrade(req).is_some();
    let wanted = rules::cookie_value(req, "SERVERID").map(str::len).unwrap_or(0);
    rules::strip_hop_by_hop(req, upgrade);
    rules::apply_forwarding(req, cfg, facts);
    rules::apply_rules(req, &cfg.request);
    rules::strip_cookie(req, "SERVERID");

    resp.clear();
    for (n, v) in RESPONSE {
        resp.push(n.as_bytes(), v.as_bytes());
    }
    rules::strip_hop_by_hop(resp, false);
    rules::apply_rules(resp, &cfg.response);
    rules::rewrite_location(resp, facts.host);
    // A client that came with another server's cookie gets a new one: the rarer case
    // must not allocate either.
    rules::insert_persistence_cookie(resp, "SERVERID", "ctl2", true);
    wanted + req.len() + resp.len()
}

#[test]
fn rules_over_the_engine_store_allocate_nothing_per_request() {
    let cfg = Http {
        forwarded: true,
        forwarded_host: true,
        trusted_forwarders: vec![IpNet::parse("10.0.0.0/8").unwrap()],
        request: HeaderRules { set: vec![("x-openstack-vip".into(), "internal".into())], del: vec!["x-debug".into()] },
        response: HeaderRules {
            set: vec![("strict-transport-security".into(), "max-age=63072000".into())],
            del: vec!["server".into()],
        },
        ..Http::default()
    };
    let facts = ClientFacts {
        client: "203.0.113.9".parse().unwrap(),
        peer: "203.0.113.9".parse().unwrap(),
        tls: true,
        host: Some("vip.example.org:5000"),
        local: "192.0.2.10:5000".parse().unwrap(),
    };
    let (mut req, mut resp) = (HeaderList::new(), HeaderList::new());
    // Warm-up: the stores grow to their working size.
    for _ in 0..3 {
        one_exchange(&mut req, &mut resp, &cfg, &facts);
    }
    let before = allocations();
    let mut sink = 0;
    for _ in 0..1000 {
        sink += one_exchange(&mut req, &mut resp, &cfg, &facts);
    }
    let during = allocations() - before;
    assert!(sink > 0);
    assert_eq!(during, 0, "allocations in 1000 requests' rule work after warm-up");

    // And the rules did their work: what the server and the client see.
    let req_wire: Vec<(String, String)> = req.iter().map(|(n, v)| (lossy(n), lossy(v))).collect();
    assert!(req_wire.contains(&("x-forwarded-for".into(), "203.0.113.9".into())), "{req_wire:?}");
    assert!(req_wire.contains(&("Cookie".into(), "sessionid=abc; csrftoken=x".into())), "{req_wire:?}");
    assert!(!req_wire.iter().any(|(n, _)| n.eq_ignore_ascii_case("connection")), "{req_wire:?}");
    assert_eq!(resp.first("location"), Some(&b"https://vip.example.org:5000/v3/auth/tokens"[..]));
    assert!(!resp.contains("server") && !resp.contains("keep-alive"));
    assert_eq!(
        resp.values("set-cookie").collect::<Vec<_>>(),
        [&b"sessionid=def; HttpOnly"[..], b"SERVERID=ctl2; path=/; HttpOnly; Secure"]
    );
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
