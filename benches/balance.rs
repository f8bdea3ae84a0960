//! Micro-benchmarks of the hot pure paths: one server pick per algorithm for pools of
//! 3, 30 and 1,000 servers, and config parse + validate.
//! Run: `cargo bench --bench balance`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use vipgate::balance::{Pool, Tried};
use vipgate::config::BalanceKind;
use vipgate::runtime::Server;

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

fn config_parse(c: &mut Criterion) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/openstack-tcp.toml");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    c.bench_function("config/parse+validate openstack-tcp.toml", |b| {
        b.iter(|| std::hint::black_box(vipgate::config::parse(&text, "bench").is_ok()))
    });
}

criterion_group!(benches, picks, config_parse);
criterion_main!(benches);
