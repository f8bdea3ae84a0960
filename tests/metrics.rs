//! `GET /metrics` on the admin endpoint of the real binary: the page parses, counters rise
//! with traffic through a tcp and an http service, stay put across a reload, and a server
//! whose check fails shows `vipgate_server_up 0`.

mod common;
#[path = "support/http_backend.rs"]
mod http_backend;
#[path = "support/http_client.rs"]
mod http_client;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use http_backend::HttpBackend;
use prometheus_parse::{Sample, Scrape, Value};

/// One scrape, parsed.
struct Page {
    text: String,
    samples: Vec<Sample>,
}

impl Page {
    fn find(&self, metric: &str, labels: &[(&str, &str)]) -> Option<&Sample> {
        self.samples.iter().find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
    }

    /// The value of a counter, gauge (or histogram `_sum`/`_count`) series; panics with
    /// the page if it is missing.
    fn value(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        match self.find(metric, labels).map(|s| &s.value) {
            Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
            other => panic!("{metric} {labels:?}: {other:?} in\n{}", self.text),
        }
    }

    fn try_value(&self, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
        match self.find(metric, labels).map(|s| &s.value) {
            Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => Some(*v),
            _ => None,
        }
    }

    /// A histogram's (le, cumulative count) pairs.
    fn buckets(&self, metric: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
        match self.find(metric, labels).map(|s| &s.value) {
            Some(Value::Histogram(b)) => b.iter().map(|b| (b.less_than, b.count)).collect(),
            other => panic!("{metric} {labels:?}: {other:?} in\n{}", self.text),
        }
    }
}

/// GET `path` over a fresh raw connection: (status, content type, body).
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let body = if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Some((status, header("content-type").unwrap_or_default(), body))
}

fn dechunk(mut s: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n")?;
        let n = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if n == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..n)?);
        s = rest.get(n + 2..)?;
    }
}

/// Scrape `/metrics`; None while the endpoint does not serve a page yet.
fn try_scrape(admin: SocketAddr) -> Option<Page> {
    let (status, content_type, text) = http_get(admin, "/metrics")?;
    if status != 200 || !text.contains("vipgate_build_info") {
        return None;
    }
    assert!(content_type.starts_with("text/plain"), "content type {content_type:?}");
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        // prometheus-parse skips lines it cannot read; a page that parses has none.
        let (_, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("sample without value: {line}"));
        assert!(value == "+Inf" || value.parse::<f64>().is_ok(), "bad sample value: {line}");
    }
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("the page parses");
    Some(Page { text, samples: scrape.samples })
}

fn scrape(v: &Vipgate, admin: SocketAddr) -> Page {
    try_scrape(admin).unwrap_or_else(|| panic!("GET /metrics on {admin} failed; stderr:\n{}", v.log()))
}

/// Scrape until `pred` holds for the page (bounded by `WAIT`).
fn scrape_until(v: &Vipgate, admin: SocketAddr, what: &str, pred: impl Fn(&Page) -> bool) -> Page {
    let mut last = None;
    let got = poll(WAIT, Duration::from_millis(100), || {
        let page = try_scrape(admin)?;
        if pred(&page) {
            return Some(page);
        }
        last = Some(page.text);
        None
    });
    got.unwrap_or_else(|| panic!("{what}: never seen; last page:\n{}\nstderr:\n{}", last.unwrap_or_default(), v.log()))
}

/// One client connection through the tcp service: read the greeting, send `payload`,
/// read the echo, close.
fn tcp_round_trip(bind: SocketAddr, payload: &[u8]) {
    let mut s = connect(bind);
    assert_eq!(read_line(&mut s).unwrap(), "t1");
    s.write_all(payload).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut echo = Vec::new();
    s.read_to_end(&mut echo).unwrap();
    assert_eq!(echo, payload);
}

#[test]
fn metrics_follow_traffic_reloads_and_health() {
    let mut t1 = Backend::echo_any("t1");
    let h1 = HttpBackend::start("h1");
    let (admin, db, api) = (free_addr(), free_addr(), free_addr());
    let cfg = format!(
        "{}\n[admin]\nbind = \"{}\"\n\n[services.db]\nbind = \"{}\"\n{}{}\n[services.api]\nbind = \"{}\"\nmode = \"http\"\n{}",
        global(""),
        a(admin),
        a(db),
        check("db", "200ms", 1, 1),
        servers("db", &[("t1", t1.addr, "")]),
        a(api),
        servers("api", &[("h1", h1.addr, "")]),
    );
    let mut v = Vipgate::spawn(&cfg);
    v.wait_ready(db);
    let before = scrape_until(&v, admin, "first page", |_| true);

    let t1_labels = [("service", "db"), ("server", "t1")];
    let h1_labels = [("service", "api"), ("server", "h1")];
    assert_eq!(before.value("vipgate_server_up", &t1_labels), 1.0);
    assert_eq!(before.value("vipgate_server_up", &h1_labels), 1.0);
    assert_eq!(before.value("vipgate_server_state", &[("server", "t1"), ("state", "up")]), 1.0);
    assert_eq!(before.value("vipgate_server_state", &[("server", "h1"), ("state", "unchecked")]), 1.0);
    assert_eq!(before.value("vipgate_service_servers_up", &[("service", "db"), ("mode", "tcp")]), 1.0);
    assert_eq!(before.value("vipgate_service_servers_up", &[("service", "api"), ("mode", "http")]), 1.0);
    assert!(before.value("vipgate_server_probes_total", &t1_labels) >= 1.0);
    assert!(before.try_value("vipgate_server_probe_duration_seconds", &t1_labels).is_some(), "{}", before.text);
    assert_eq!(before.value("vipgate_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);
    let hash = before.find("vipgate_config_info", &[]).and_then(|s| s.labels.get("hash")).unwrap_or("").to_string();
    assert_eq!(hash.len(), 40, "config hash is a SHA-1 hex: {hash:?}");
    assert!(before.value("vipgate_open_fds", &[]) > 0.0);
    assert_eq!(before.value("vipgate_config_generation", &[]), 0.0);
    assert!(
        before.find("vipgate_http_responses_total", &[("service", "db")]).is_none(),
        "tcp services have no http metrics"
    );

    // Traffic: 5 tcp connections of 1000 bytes each way, 5 http requests.
    let payload = vec![b'x'; 1000];
    for _ in 0..5 {
        tcp_round_trip(db, &payload);
    }
    for i in 0..5 {
        let r = http_client::get(api, &format!("/m{i}"), "");
        assert_eq!(r.status, 200, "{}", v.log());
    }

    // Bytes are counted when a connection ends: wait for vipgate to see the closes.
    let c = |p: &Page, m: &str, l: &[(&str, &str)]| p.value(m, l) - before.value(m, l);
    let api_svc = [("service", "api"), ("mode", "http")];
    let after = scrape_until(&v, admin, "counters after traffic", |p| {
        c(p, "vipgate_server_bytes_in_total", &t1_labels) >= 5000.0
            && c(p, "vipgate_server_bytes_out_total", &t1_labels) >= 5000.0
            && c(p, "vipgate_http_responses_total", &[("service", "api"), ("class", "2xx")]) >= 5.0
            && c(p, "vipgate_server_bytes_out_total", &h1_labels) > 0.0
    });
    assert!(c(&after, "vipgate_server_connections_total", &t1_labels) >= 5.0, "{}", after.text);
    // The greeting line comes on top of the echo.
    assert!(c(&after, "vipgate_server_bytes_out_total", &t1_labels) >= 5000.0 + 5.0 * 3.0);
    assert!(c(&after, "vipgate_service_connections_total", &[("service", "db")]) >= 5.0);
    assert!(c(&after, "vipgate_service_connections_total", &[("service", "api")]) >= 5.0);
    assert_eq!(after.value("vipgate_server_connections_active", &t1_labels), 0.0);
    assert_eq!(c(&after, "vipgate_http_responses_total", &[("service", "api"), ("class", "5xx")]), 0.0);
    let hist = "vipgate_http_request_duration_seconds";
    assert!(c(&after, &format!("{hist}_count"), &api_svc) >= 5.0, "{}", after.text);
    assert!(c(&after, &format!("{hist}_sum"), &api_svc) > 0.0);
    let buckets = after.buckets(hist, &api_svc);
    assert_eq!(buckets.len(), 13, "12 bounds and +Inf: {buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1), "not cumulative: {buckets:?}");
    assert_eq!(
        buckets.last().map(|b| (b.0, b.1)),
        Some((f64::INFINITY, after.value(&format!("{hist}_count"), &api_svc)))
    );

    // A reload (SIGHUP, same file) keeps every counter.
    v.signal(libc::SIGHUP);
    let reloaded = scrape_until(&v, admin, "generation 1", |p| p.value("vipgate_config_generation", &[]) == 1.0);
    assert_eq!(reloaded.value("vipgate_reloads_total", &[]), 1.0);
    assert_eq!(reloaded.value("vipgate_reloads_failed_total", &[]), 0.0);
    for (m, l) in [
        ("vipgate_server_connections_total", &t1_labels[..]),
        ("vipgate_server_bytes_in_total", &t1_labels[..]),
        ("vipgate_server_bytes_out_total", &h1_labels[..]),
        ("vipgate_service_connections_total", &[("service", "db")][..]),
        ("vipgate_http_responses_total", &[("service", "api"), ("class", "2xx")][..]),
    ] {
        assert!(reloaded.value(m, l) >= after.value(m, l), "{m} {l:?} went down across the reload");
    }
    assert!(reloaded.value(&format!("{hist}_count"), &api_svc) >= after.value(&format!("{hist}_count"), &api_svc));

    // The tcp backend goes away: its check (fall = 1) marks it down.
    t1.stop();
    let down = scrape_until(&v, admin, "t1 down", |p| p.try_value("vipgate_server_up", &t1_labels) == Some(0.0));
    assert_eq!(down.value("vipgate_server_state", &[("server", "t1"), ("state", "down")]), 1.0);
    assert_eq!(down.value("vipgate_service_servers_up", &[("service", "db")]), 0.0);
    assert!(down.value("vipgate_server_probe_failures_total", &t1_labels) >= 1.0);
    assert!(
        down.value("vipgate_server_state_changes_total", &t1_labels)
            > after.value("vipgate_server_state_changes_total", &t1_labels)
    );
    assert_eq!(down.value("vipgate_server_up", &h1_labels), 1.0, "the http server is not affected");
    // Scraping does not disturb the counters it reads.
    let again = scrape(&v, admin);
    assert_eq!(
        again.value("vipgate_server_connections_total", &t1_labels),
        down.value("vipgate_server_connections_total", &t1_labels)
    );
}
