//! Micro-benchmarks of the hot pure paths: one server pick per algorithm for pools of
//! 3, 30 and 1,000 servers, consistent-hash lookup (uniform weights) and pool rebuild,
//! config parse + validate, and the http request/response header rewrite.
//! Run: `cargo bench --bench balance`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use vipgate::config::BalanceKind;
use vipgate::upstream::Server;
use vipgate::upstream::{Pool, Tried};

fn pool(kind: BalanceKind, n: usize) -> Pool {
    let servers = (0..n)
        .map(|i| {
            let addr = SocketAddr::from(([127, 0, (i / 250) as u8, (i % 250) as u8 + 1], 3306));
            Arc::new(Server::named(&format!("srv{i}"), addr, 1 + (i % 3) as u32, false))
        })
        .collect();
    Pool::new(kind, servers)
}

fn picks(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for kind in
        [BalanceKind::RoundRobin, BalanceKind::LeastConn, BalanceKind::Source, BalanceKind::First, BalanceKind::Random]
    {
        for n in [3usize, 30, 1000] {
            let p = pool(kind, n);
            let tried = Tried::default();
            let mut client = 0u32;
            group.bench_with_input(BenchmarkId::new(kind.name(), n), &n, |b, _| {
                b.iter(|| {
                    client = client.wrapping_add(1);
                    let lease = p.pick(IpAddr::V4(Ipv4Addr::from(client)), &tried);
                    std::hint::black_box(lease.is_some())
                })
            });
        }
    }
    group.finish();
}

/// `source` with equal weights (the usual case: the raw-hash fast path), and building a
/// pool (what a reload does per service; rendezvous hashing keeps no table to rebuild).
fn consistent_hash(c: &mut Criterion) {
    let mut group = c.benchmark_group("source-hash");
    for n in [3usize, 30, 1000] {
        let servers: Vec<Arc<Server>> = (0..n)
            .map(|i| {
                let addr = SocketAddr::from(([127, 0, (i / 250) as u8, (i % 250) as u8 + 1], 5000));
                Arc::new(Server::named(&format!("ctl{i}"), addr, 1, false))
            })
            .collect();
        let p = Pool::new(BalanceKind::Source, servers.clone());
        let tried = Tried::default();
        let mut client = 0u32;
        group.bench_with_input(BenchmarkId::new("lookup-uniform", n), &n, |b, _| {
            b.iter(|| {
                client = client.wrapping_add(1);
                std::hint::black_box(p.pick(IpAddr::V4(Ipv4Addr::from(client)), &tried).is_some())
            })
        });
        group.bench_with_input(BenchmarkId::new("rebuild", n), &n, |b, _| {
            b.iter(|| std::hint::black_box(Pool::new(BalanceKind::Source, servers.clone()).servers().len()))
        });
    }
    group.finish();
}

fn config_parse(c: &mut Criterion) {
    for name in ["openstack.toml", "openstack-tcp.toml", "openstack-http.toml"] {
        let path = format!("{}/config/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        c.bench_function(&format!("config/parse+validate {name}"), |b| {
            b.iter(|| std::hint::black_box(vipgate::config::parse(&text, "bench").is_ok()))
        });
    }
}

/// What http mode does to every request head and response head: hop-by-hop removal,
/// forwarding headers, request rules, persistence cookie strip; response rules, Location
/// rewrite and cookie insertion.
fn header_rewrite(c: &mut Criterion) {
    use http::{HeaderMap, HeaderName, HeaderValue};
    use vipgate::config::{HeaderRules, Http};
    use vipgate::proxy::http_rules as rules;

    let mut request = HeaderMap::new();
    for (k, v) in [
        ("host", "keystone.example.org:5000"),
        ("user-agent", "python-keystoneclient"),
        ("accept", "application/json"),
        ("content-type", "application/json"),
        ("x-auth-token", "gAAAAABk0123456789abcdefghijklmnopqrstuvwxyz"),
        ("connection", "keep-alive"),
        ("x-forwarded-for", "203.0.113.7"),
        ("cookie", "sessionid=abc; SERVERID=ctl2; csrftoken=xyz"),
    ] {
        request.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    let mut response = HeaderMap::new();
    for (k, v) in [
        ("content-type", "application/json"),
        ("content-length", "5120"),
        ("location", "http://keystone.example.org:5000/v3/"),
        ("server", "Apache"),
        ("x-openstack-request-id", "req-0123456789"),
    ] {
        response.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    let cfg = Http {
        request: HeaderRules { set: vec![("x-tenant".into(), "vip".into())], del: vec!["x-debug".into()] },
        response: HeaderRules {
            set: vec![("strict-transport-security".into(), "max-age=31536000".into())],
            del: vec!["server".into()],
        },
        ..Http::default()
    };
    let facts = rules::ClientFacts {
        client: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)),
        peer: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)),
        tls: true,
        host: Some("keystone.example.org:5000"),
        local: SocketAddr::from(([192, 0, 2, 10], 5000)),
    };
    c.bench_function("http/request head rewrite", |b| {
        b.iter(|| {
            let mut h = request.clone();
            rules::strip_hop_by_hop(&mut h, false);
            rules::apply_forwarding(&mut h, &cfg, &facts);
            rules::apply_rules(&mut h, &cfg.request);
            rules::strip_cookie(&mut h, "SERVERID");
            std::hint::black_box(h.len())
        })
    });
    c.bench_function("http/response head rewrite", |b| {
        b.iter(|| {
            let mut h = response.clone();
            rules::strip_hop_by_hop(&mut h, false);
            rules::apply_rules(&mut h, &cfg.response);
            rules::rewrite_location(&mut h, facts.host);
            rules::insert_persistence_cookie(&mut h, "SERVERID", "ctl2", true);
            std::hint::black_box(h.len())
        })
    });
}

criterion_group!(benches, picks, consistent_hash, config_parse, header_rewrite);
criterion_main!(benches);
