//! What one request-log line costs the worker that logs it: the same event the http
//! proxy logs (`request` with its fourteen fields), formatted by the subscriber vipgate
//! installs, then (a) written at once to a file, as an unbuffered stderr does, one
//! write(2) per line, (b) handed to `log_batch` (the default since it exists: a memcpy,
//! the write happens on the log thread), (c) formatted only, into a sink.
//! Run: `cargo bench --bench request_log`.

use std::fs::File;
use std::net::SocketAddr;
use std::sync::Mutex;

use criterion::{criterion_group, criterion_main, Criterion};
use tracing_subscriber::fmt::MakeWriter;
use vipgate::log_batch::Batched;

fn one_line(client: SocketAddr, n: u64) {
    tracing::info!(target: "vipgate::proxy::http::request", client = %client, service = %"keystone_public",
        server = %"ctl1", method = %"GET", host = %"keystone.example.com:5000", path = %"/v3/auth/tokens",
        status = 200u16, bytes_in = 312u64, bytes_out = 1024 + n % 7, t_headers_ms = 0u64, t_connect_ms = 0u64,
        t_response_ms = 2u64, t_total_ms = 2u64, "request");
}

fn bench_with<W>(c: &mut Criterion, name: &str, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(writer)
        .with_ansi(false)
        .finish();
    let client: SocketAddr = ([192, 0, 2, 77], 51234).into();
    tracing::subscriber::with_default(subscriber, || {
        let mut n = 0u64;
        c.bench_function(name, |b| {
            b.iter(|| {
                n += 1;
                one_line(client, n)
            })
        });
    });
}

fn request_log(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("vipgate-bench-log-{}", std::process::id()));
    if std::fs::create_dir_all(&dir).is_err() {
        eprintln!("cannot create {}: skipped", dir.display());
        return;
    }
    let file = |name: &str| File::create(dir.join(name));
    match (file("each.log"), file("batched.log")) {
        (Ok(each), Ok(batched)) => {
            bench_with(c, "request_log/write_each_line", Mutex::new(each));
            let batched = Batched::to(Box::new(batched));
            bench_with(c, "request_log/batched", batched);
            batched.flush();
        }
        _ => eprintln!("cannot create the log files in {}: skipped", dir.display()),
    }
    bench_with(c, "request_log/format_only", std::io::sink);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, request_log);
criterion_main!(benches);
