//! `GET /metrics`: Prometheus text format, built at scrape time from the live snapshot.
//!
//! Nothing here keeps metric state of its own. Every scrape reads the atomics the data
//! path and the health checker already write (server, service and process stats) and
//! turns them into metric families, so nothing is counted twice and nothing needs
//! resetting. Counters stay monotonic across reloads because the stats themselves carry
//! over (`Snapshot::rebuild` keeps a server's and a service's counters).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Registry, TextEncoder};
use tracing::warn;

use crate::config::Mode;
use crate::runtime::stats::{Latency, LATENCY_BUCKETS};
use crate::runtime::{Control, ProcessStats, Snapshot};
use crate::upstream::{AdminState, Health, Server, State};

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

const COUNTER: MetricType = MetricType::COUNTER;
const GAUGE: MetricType = MetricType::GAUGE;
const HISTOGRAM: MetricType = MetricType::HISTOGRAM;

const SERVER: &[&str] = &["service", "server"];
const SERVICE: &[&str] = &["service", "mode"];

/// Every family this endpoint can expose: name, type, label names, help. The names are
/// an interface (dashboards and alerts use them): change them only with the README.
const FAMILIES: &[(&str, MetricType, &[&str], &str)] = &[
    (
        "vipgate_server_up",
        GAUGE,
        SERVER,
        "1 if the server takes new connections now (healthy, weight above 0, not drained or in maintenance), else 0.",
    ),
    (
        "vipgate_server_state",
        GAUGE,
        &["service", "server", "state"],
        "Always 1; the state label is the server's state: up, down, going_up, going_down, drain, maint or unchecked.",
    ),
    ("vipgate_server_weight", GAUGE, SERVER, "Current weight of the server (0-256; the admin API can change it)."),
    ("vipgate_server_tier", GAUGE, SERVER, "Priority tier of the server: 0 = active, 1 = backup, and so on."),
    (
        "vipgate_server_connections_total",
        COUNTER,
        SERVER,
        "tcp: client connections forwarded to the server; http: requests it answered.",
    ),
    ("vipgate_server_connections_active", GAUGE, SERVER, "Client connections assigned to the server right now."),
    (
        "vipgate_server_bytes_in_total",
        COUNTER,
        SERVER,
        "Bytes from clients forwarded to the server (counted when a connection or request ends).",
    ),
    (
        "vipgate_server_bytes_out_total",
        COUNTER,
        SERVER,
        "Bytes from the server forwarded to clients (counted when a connection or request ends).",
    ),
    ("vipgate_server_connect_failures_total", COUNTER, SERVER, "Connects to the server for clients that failed."),
    ("vipgate_server_state_changes_total", COUNTER, SERVER, "Health state changes of the server."),
    ("vipgate_server_probes_total", COUNTER, SERVER, "Health probes run against the server."),
    ("vipgate_server_probe_failures_total", COUNTER, SERVER, "Health probes of the server that failed."),
    ("vipgate_server_probe_duration_seconds", GAUGE, SERVER, "How long the server's last health probe took."),
    ("vipgate_service_connections_total", COUNTER, SERVICE, "Client connections accepted by the service."),
    (
        "vipgate_service_retries_total",
        COUNTER,
        SERVICE,
        "Connect attempts that moved on to another server after a failure.",
    ),
    ("vipgate_service_servers_up", GAUGE, SERVICE, "Servers of the service that take new connections now."),
    (
        "vipgate_service_queue_timeouts_total",
        COUNTER,
        SERVICE,
        "Connections (tcp) or requests (http) refused after queue_timeout with every server at its maxconn.",
    ),
    (
        "vipgate_service_maxconn_reached_total",
        COUNTER,
        SERVICE,
        "Times the service's listeners paused accepting because it reached its maxconn.",
    ),
    (
        "vipgate_service_accept_errors_total",
        COUNTER,
        SERVICE,
        "accept() failures other than a client gone (out of file descriptors or memory); each backs off.",
    ),
    (
        "vipgate_http_responses_total",
        COUNTER,
        &["service", "mode", "class"],
        "HTTP responses sent to clients, by status class (1xx..5xx).",
    ),
    (
        "vipgate_http_request_duration_seconds",
        HISTOGRAM,
        SERVICE,
        "Time from a request's head sent to a server until its response head came back.",
    ),
    ("vipgate_reloads_total", COUNTER, &[], "Configuration reloads attempted."),
    ("vipgate_reloads_failed_total", COUNTER, &[], "Configuration reloads that failed (the old config stayed)."),
    (
        "vipgate_config_generation",
        GAUGE,
        &[],
        "Successful reloads since start (0 = the configuration the process started with).",
    ),
    ("vipgate_config_info", GAUGE, &["hash"], "Always 1; the hash label is the SHA-1 of the config file in use."),
    ("vipgate_open_fds", GAUGE, &[], "File descriptors the process has open."),
    ("vipgate_build_info", GAUGE, &["version"], "Always 1; the version label is vipgate's version."),
];

/// The metrics page, rendered from the live snapshot at scrape time.
pub fn render(control: &Control) -> String {
    let collector = SnapshotCollector::new(control.snapshot.load_full(), Arc::clone(&control.process));
    // A registry per scrape: it checks the descriptors and sorts families by name and
    // series by label values, so the page is stable from one scrape to the next.
    let registry = Registry::new();
    let families = match registry.register(Box::new(collector)) {
        Ok(()) => registry.gather(),
        Err(e) => {
            // Only a bad entry in FAMILIES gets here (the unit tests register it): serve the
            // numbers anyway rather than an empty page.
            warn!(error = %e, "metrics: registry refused the collector; serving unsorted");
            let c = SnapshotCollector::new(control.snapshot.load_full(), Arc::clone(&control.process));
            c.collect().into_iter().filter(|f| !f.get_metric().is_empty()).collect()
        }
    };
    let mut out = String::with_capacity(16 * 1024);
    if let Err(e) = TextEncoder::new().encode_utf8(&families, &mut out) {
        // Families are never empty or nameless here; if the encoder still balks, what it
        // wrote before the bad family is well-formed and more use than nothing.
        warn!(error = %e, "metrics: encoding failed");
    }
    out
}

/// Reads one snapshot and the process counters into metric families.
pub struct SnapshotCollector {
    snapshot: Arc<Snapshot>,
    process: Arc<ProcessStats>,
    descs: Vec<Desc>,
}

impl SnapshotCollector {
    pub fn new(snapshot: Arc<Snapshot>, process: Arc<ProcessStats>) -> Self {
        let descs = FAMILIES
            .iter()
            .filter_map(|(name, _, labels, help)| {
                let labels = labels.iter().map(|l| l.to_string()).collect();
                Desc::new(name.to_string(), help.to_string(), labels, HashMap::new()).ok()
            })
            .collect();
        SnapshotCollector { snapshot, process, descs }
    }
}

impl Collector for SnapshotCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut out = Families::new();
        for svc in &self.snapshot.services {
            let mode = mode_name(svc.config.mode);
            let mut up = 0u32;
            for s in svc.pool.servers() {
                let l = [("service", svc.name.as_str()), ("server", s.name.as_str())];
                let usable = s.usable();
                up += u32::from(usable);
                out.add("vipgate_server_up", &l, f64::from(u8::from(usable)));
                out.add(
                    "vipgate_server_state",
                    &[("service", svc.name.as_str()), ("server", s.name.as_str()), ("state", state_name(s))],
                    1.0,
                );
                out.add("vipgate_server_weight", &l, f64::from(s.weight()));
                out.add("vipgate_server_tier", &l, f64::from(s.tier));
                let st = &s.stats;
                out.add("vipgate_server_connections_total", &l, load(&st.connections_total));
                out.add("vipgate_server_connections_active", &l, f64::from(s.active()));
                out.add("vipgate_server_bytes_in_total", &l, load(&st.bytes_in));
                out.add("vipgate_server_bytes_out_total", &l, load(&st.bytes_out));
                out.add("vipgate_server_connect_failures_total", &l, load(&st.connect_failures));
                out.add("vipgate_server_state_changes_total", &l, load(&st.state_changes));
                out.add("vipgate_server_probes_total", &l, load(&st.probes_total));
                out.add("vipgate_server_probe_failures_total", &l, load(&st.probe_failures));
                // No series until a first probe: 0 would read as "probe took no time".
                if let Some(p) = s.last_probe() {
                    out.add("vipgate_server_probe_duration_seconds", &l, p.duration.as_secs_f64());
                }
            }
            let l = [("service", svc.name.as_str()), ("mode", mode)];
            let st = &svc.stats;
            out.add("vipgate_service_connections_total", &l, load(&st.connections_total));
            out.add("vipgate_service_retries_total", &l, load(&st.retries));
            out.add("vipgate_service_servers_up", &l, f64::from(up));
            out.add("vipgate_service_queue_timeouts_total", &l, load(&st.queue_timeouts));
            out.add("vipgate_service_maxconn_reached_total", &l, load(&st.maxconn_reached));
            out.add("vipgate_service_accept_errors_total", &l, load(&st.accept_errors));
            if svc.config.mode == Mode::Http {
                // Every class, zeros included: rate() needs the series before the first 5xx.
                for (class, n) in ["1xx", "2xx", "3xx", "4xx", "5xx"].into_iter().zip(&st.responses) {
                    out.add(
                        "vipgate_http_responses_total",
                        &[("service", svc.name.as_str()), ("mode", mode), ("class", class)],
                        load(n),
                    );
                }
                out.histogram("vipgate_http_request_duration_seconds", &l, histogram(&st.latency));
            }
        }

        let p = &self.process;
        out.add("vipgate_reloads_total", &[], load(&p.reloads_total));
        out.add("vipgate_reloads_failed_total", &[], load(&p.reloads_failed));
        out.add("vipgate_config_generation", &[], load(&p.generation));
        // A poisoned lock still holds the last hash written; the string is whole either way.
        let hash = p.config_hash.lock().unwrap_or_else(|e| e.into_inner()).clone();
        out.add("vipgate_config_info", &[("hash", &hash)], 1.0);
        if let Some(n) = open_fds() {
            out.add("vipgate_open_fds", &[], n as f64);
        }
        out.add("vipgate_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
        out.families
    }
}

/// The families of FAMILIES, in order, filled as samples come.
struct Families {
    families: Vec<MetricFamily>,
}

impl Families {
    fn new() -> Self {
        let families = FAMILIES
            .iter()
            .map(|(name, kind, _, help)| {
                let mut f = MetricFamily::default();
                f.set_name(name.to_string());
                f.set_help(help.to_string());
                f.set_field_type(*kind);
                f
            })
            .collect();
        Families { families }
    }

    fn family(&mut self, name: &str) -> Option<&mut MetricFamily> {
        let found = self.families.iter_mut().find(|f| f.name() == name);
        debug_assert!(found.is_some(), "metric {name} is missing from FAMILIES");
        found
    }

    /// A counter or gauge sample, as the family's type says.
    fn add(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let Some(f) = self.family(name) else { return };
        let mut m = Metric::from_label(label_pairs(labels));
        if f.get_field_type() == MetricType::COUNTER {
            let mut c = proto::Counter::default();
            c.set_value(value);
            m.set_counter(c);
        } else {
            let mut g = proto::Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        }
        f.mut_metric().push(m);
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: proto::Histogram) {
        let Some(f) = self.family(name) else { return };
        let mut m = Metric::from_label(label_pairs(labels));
        m.set_histogram(h);
        f.mut_metric().push(m);
    }
}

fn label_pairs(labels: &[(&str, &str)]) -> Vec<LabelPair> {
    labels
        .iter()
        .map(|(k, v)| {
            let mut p = LabelPair::default();
            p.set_name(k.to_string());
            p.set_value(v.to_string());
            p
        })
        .collect()
}

fn load(c: &AtomicU64) -> f64 {
    c.load(Relaxed) as f64
}

/// The latency histogram with cumulative buckets. The count is the sum of the buckets
/// rather than the separate `count` atomic: requests finishing during the scrape could
/// otherwise leave `_count` (and so the `+Inf` bucket) below a finite bucket.
fn histogram(l: &Latency) -> proto::Histogram {
    let mut cumulative = 0u64;
    let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len());
    for (bound, n) in LATENCY_BUCKETS.iter().zip(&l.buckets) {
        cumulative = cumulative.saturating_add(n.load(Relaxed));
        let mut b = proto::Bucket::default();
        b.set_upper_bound(*bound);
        b.set_cumulative_count(cumulative);
        buckets.push(b);
    }
    // The slot past the finite bounds holds the slower ones; the encoder writes the
    // `+Inf` bucket from the sample count.
    let overflow = l.buckets.get(LATENCY_BUCKETS.len()).map_or(0, |n| n.load(Relaxed));
    let mut h = proto::Histogram::default();
    h.set_bucket(buckets);
    h.set_sample_count(cumulative.saturating_add(overflow));
    h.set_sample_sum(l.sum_micros.load(Relaxed) as f64 / 1e6);
    h
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Tcp => "tcp",
        Mode::Http => "http",
    }
}

/// The state label: `State` in snake case, plus `unchecked` for a server no probe has
/// judged yet (a service without checks, or before the first probe) — `State` folds
/// that into up or down, which would hide that nothing was checked.
fn state_name(s: &Server) -> &'static str {
    if s.health() == Health::Unchecked && s.admin() == AdminState::Ready {
        return "unchecked";
    }
    match s.state() {
        State::Up => "up",
        State::Down => "down",
        State::GoingUp => "going_up",
        State::GoingDown => "going_down",
        State::Drain => "drain",
        State::Maint => "maint",
    }
}

/// Entries of /proc/self/fd, less the one the listing itself holds open; None where
/// there is no /proc (the family is then left out rather than reported as 0).
fn open_fds() -> Option<usize> {
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    Some(dir.count().saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::{Duration, SystemTime};

    use arc_swap::ArcSwap;
    use prometheus_parse::{Sample, Scrape, Value};

    use crate::upstream::ProbeResult;

    const CONFIG: &str = r#"
[services.db]
bind = "127.0.0.1:13306"
balance = "first"
[services.db.check]
kind = "tcp"
interval = "2s"
[[services.db.servers]]
name = "db1"
address = "127.0.0.1:3306"
[[services.db.servers]]
name = "db2"
address = "127.0.0.1:3307"
weight = 5
backup = true

[services.api]
bind = "127.0.0.1:15000"
mode = "http"
[[services.api.servers]]
name = "web1"
address = "127.0.0.1:5000"
[[services.api.servers]]
name = "web2"
address = "127.0.0.1:5001"
"#;

    fn control_for(text: &str) -> Control {
        let cfg = crate::config::parse(text, "t.toml").unwrap();
        let snapshot = Snapshot::new(&cfg).unwrap();
        let (control, _reloads) = Control::new(Arc::new(ArcSwap::from_pointee(snapshot)), Arc::default());
        control
    }

    fn control() -> Control {
        control_for(CONFIG)
    }

    fn server(c: &Control, svc: &str, name: &str) -> Arc<Server> {
        let snap = c.snapshot.load_full();
        let s = snap.service(svc).unwrap().pool.servers().iter().find(|s| s.name == name).unwrap();
        Arc::clone(s)
    }

    /// Render, check every line is well-formed, and parse.
    fn scrape(c: &Control) -> (String, Vec<Sample>) {
        let text = render(c);
        check_syntax(&text);
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
        (text, scrape.samples)
    }

    /// prometheus-parse skips lines it cannot read; this does not. Every sample line must
    /// be `name{label="value",...} number` of a family whose TYPE came before.
    fn check_syntax(text: &str) {
        let mut typed: Vec<(String, String)> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                assert!(rest.split_once(' ').is_some_and(|(_, h)| !h.is_empty()), "bad HELP: {line}");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(["counter", "gauge", "histogram"].contains(&kind), "bad TYPE: {line}");
                typed.push((name.to_string(), kind.to_string()));
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
            let v: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
            };
            assert!(v >= 0.0, "negative: {line}");
            let name = series.split('{').next().unwrap();
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "bad name: {line}");
            if let Some(labels) = series.strip_prefix(name) {
                if !labels.is_empty() {
                    let inner = labels.strip_prefix('{').and_then(|l| l.strip_suffix('}')).unwrap();
                    check_labels(inner).unwrap_or_else(|e| panic!("{e}: {line}"));
                }
            }
            let (family, kind) = typed.last().unwrap_or_else(|| panic!("sample before any TYPE: {line}"));
            let ok = if kind == "histogram" {
                ["_bucket", "_sum", "_count"].iter().any(|s| name == format!("{family}{s}"))
            } else {
                name == family
            };
            assert!(ok, "sample {name} under TYPE {family}");
        }
    }

    /// `k="v",k="v"` with `\\`, `\"` and `\n` the only escapes in values.
    fn check_labels(s: &str) -> Result<(), &'static str> {
        let mut chars = s.chars();
        loop {
            let mut key = String::new();
            for c in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err("bad label name");
            }
            if chars.next() != Some('"') {
                return Err("label value not quoted");
            }
            loop {
                match chars.next() {
                    Some('\\') => match chars.next() {
                        Some('\\' | '"' | 'n') => {}
                        _ => return Err("bad escape"),
                    },
                    Some('"') => break,
                    Some('\n') | None => return Err("unterminated value"),
                    Some(_) => {}
                }
            }
            match chars.next() {
                None => return Ok(()),
                Some(',') => {}
                Some(_) => return Err("junk after label value"),
            }
        }
    }

    fn find<'a>(samples: &'a [Sample], metric: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
        samples.iter().find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
    }

    fn value(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> f64 {
        match find(samples, metric, labels).map(|s| &s.value) {
            Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
            other => panic!("{metric} {labels:?}: {other:?}"),
        }
    }

    fn label_names(s: &Sample) -> Vec<&str> {
        let mut v: Vec<&str> = s.labels.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn every_family_is_valid_and_registers() {
        let c = control();
        let collector = SnapshotCollector::new(c.snapshot.load_full(), Arc::clone(&c.process));
        assert_eq!(collector.descs.len(), FAMILIES.len(), "a name or label in FAMILIES is invalid");
        Registry::new().register(Box::new(collector)).unwrap();
        let mut names: Vec<&str> = FAMILIES.iter().map(|f| f.0).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len(), "a family is listed twice");
    }

    #[test]
    fn fresh_snapshot_reports_every_server_and_service() {
        let c = control();
        let (text, samples) = scrape(&c);
        for (svc, srv) in [("db", "db1"), ("db", "db2"), ("api", "web1"), ("api", "web2")] {
            let l = [("service", svc), ("server", srv)];
            for m in [
                "vipgate_server_up",
                "vipgate_server_weight",
                "vipgate_server_tier",
                "vipgate_server_connections_total",
                "vipgate_server_connections_active",
                "vipgate_server_bytes_in_total",
                "vipgate_server_bytes_out_total",
                "vipgate_server_connect_failures_total",
                "vipgate_server_state_changes_total",
                "vipgate_server_probes_total",
                "vipgate_server_probe_failures_total",
            ] {
                let s = find(&samples, m, &l).unwrap_or_else(|| panic!("{m} {l:?} missing:\n{text}"));
                assert_eq!(label_names(s), ["server", "service"], "{m}");
            }
            // Never probed: no duration yet.
            assert!(find(&samples, "vipgate_server_probe_duration_seconds", &l).is_none());
            let states: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.metric == "vipgate_server_state" && s.labels.get("server") == Some(srv))
                .collect();
            assert_eq!(states.len(), 1, "one state series per server");
            assert_eq!(label_names(states[0]), ["server", "service", "state"]);
            assert_eq!(states[0].labels.get("state"), Some("unchecked"));
        }
        // Checked servers wait for their first probe; unchecked ones take traffic at once.
        assert_eq!(value(&samples, "vipgate_server_up", &[("server", "db1")]), 0.0);
        assert_eq!(value(&samples, "vipgate_server_up", &[("server", "web1")]), 1.0);
        assert_eq!(value(&samples, "vipgate_server_weight", &[("server", "db2")]), 5.0);
        assert_eq!(value(&samples, "vipgate_server_tier", &[("server", "db2")]), 1.0);
        assert_eq!(value(&samples, "vipgate_server_tier", &[("server", "db1")]), 0.0);

        assert_eq!(value(&samples, "vipgate_service_servers_up", &[("service", "db"), ("mode", "tcp")]), 0.0);
        assert_eq!(value(&samples, "vipgate_service_servers_up", &[("service", "api"), ("mode", "http")]), 2.0);
        for m in ["vipgate_service_connections_total", "vipgate_service_retries_total", "vipgate_service_servers_up"] {
            for svc in ["db", "api"] {
                let s = find(&samples, m, &[("service", svc)]).unwrap();
                assert_eq!(label_names(s), ["mode", "service"], "{m}");
            }
        }
        // HTTP families for the http service only, every class present.
        for class in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
            let l = [("service", "api"), ("mode", "http"), ("class", class)];
            assert_eq!(value(&samples, "vipgate_http_responses_total", &l), 0.0);
        }
        assert!(find(&samples, "vipgate_http_responses_total", &[("service", "db")]).is_none());
        assert!(find(&samples, "vipgate_http_request_duration_seconds", &[("service", "db")]).is_none());

        assert_eq!(value(&samples, "vipgate_reloads_total", &[]), 0.0);
        assert_eq!(value(&samples, "vipgate_reloads_failed_total", &[]), 0.0);
        assert_eq!(value(&samples, "vipgate_config_generation", &[]), 0.0);
        assert_eq!(value(&samples, "vipgate_config_info", &[("hash", "")]), 1.0);
        let version = [("version", env!("CARGO_PKG_VERSION"))];
        assert_eq!(value(&samples, "vipgate_build_info", &version), 1.0);
        if std::path::Path::new("/proc/self/fd").exists() {
            assert!(value(&samples, "vipgate_open_fds", &[]) >= 3.0, "stdin, stdout, stderr at least");
        }
        assert!(text.contains("# TYPE vipgate_server_connections_total counter"), "{text}");
        assert!(text.contains("# TYPE vipgate_server_up gauge"));
        assert!(text.contains("# TYPE vipgate_http_request_duration_seconds histogram"));
    }

    #[test]
    fn values_follow_the_stats() {
        let c = control();
        let db1 = server(&c, "db", "db1");
        db1.set_up(true);
        db1.stats.connections_total.store(42, Relaxed);
        db1.stats.bytes_in.store(1000, Relaxed);
        db1.stats.bytes_out.store(2_000_000, Relaxed);
        db1.stats.connect_failures.store(3, Relaxed);
        db1.stats.probes_total.store(10, Relaxed);
        db1.stats.probe_failures.store(2, Relaxed);
        assert!(db1.try_acquire() && db1.try_acquire());
        db1.record_probe(ProbeResult {
            ok: true,
            reason: "connected".into(),
            duration: Duration::from_millis(250),
            at: SystemTime::now(),
        });
        let db2 = server(&c, "db", "db2");
        db2.set_up(true);
        db2.set_admin(AdminState::Drain);
        let web2 = server(&c, "api", "web2");
        web2.set_health(Health::GoingDown);
        web2.set_weight(0);
        let snap = c.snapshot.load_full();
        let db = snap.service("db").unwrap();
        db.stats.connections_total.store(50, Relaxed);
        db.stats.retries.store(4, Relaxed);
        c.process.reloads_total.store(3, Relaxed);
        c.process.reloads_failed.store(1, Relaxed);
        c.process.generation.store(2, Relaxed);
        *c.process.config_hash.lock().unwrap() = "0123abcd".into();

        let (_, samples) = scrape(&c);
        let l = [("service", "db"), ("server", "db1")];
        assert_eq!(value(&samples, "vipgate_server_up", &l), 1.0);
        assert_eq!(value(&samples, "vipgate_server_state", &[("server", "db1"), ("state", "up")]), 1.0);
        assert_eq!(value(&samples, "vipgate_server_connections_total", &l), 42.0);
        assert_eq!(value(&samples, "vipgate_server_connections_active", &l), 2.0);
        assert_eq!(value(&samples, "vipgate_server_bytes_in_total", &l), 1000.0);
        assert_eq!(value(&samples, "vipgate_server_bytes_out_total", &l), 2_000_000.0);
        assert_eq!(value(&samples, "vipgate_server_connect_failures_total", &l), 3.0);
        // set_up counted one state change; record_probe one more probe.
        assert_eq!(value(&samples, "vipgate_server_state_changes_total", &l), 1.0);
        assert_eq!(value(&samples, "vipgate_server_probes_total", &l), 11.0);
        assert_eq!(value(&samples, "vipgate_server_probe_failures_total", &l), 2.0);
        assert_eq!(value(&samples, "vipgate_server_probe_duration_seconds", &l), 0.25);

        // Drained: up by health, but takes no new connections.
        assert_eq!(value(&samples, "vipgate_server_up", &[("server", "db2")]), 0.0);
        assert_eq!(value(&samples, "vipgate_server_state", &[("server", "db2"), ("state", "drain")]), 1.0);
        // Going down with weight 0.
        assert_eq!(value(&samples, "vipgate_server_state", &[("server", "web2"), ("state", "going_down")]), 1.0);
        assert_eq!(value(&samples, "vipgate_server_up", &[("server", "web2")]), 0.0);
        assert_eq!(value(&samples, "vipgate_server_weight", &[("server", "web2")]), 0.0);

        assert_eq!(value(&samples, "vipgate_service_connections_total", &[("service", "db")]), 50.0);
        assert_eq!(value(&samples, "vipgate_service_retries_total", &[("service", "db")]), 4.0);
        assert_eq!(value(&samples, "vipgate_service_servers_up", &[("service", "db")]), 1.0);
        assert_eq!(value(&samples, "vipgate_service_servers_up", &[("service", "api")]), 1.0);

        assert_eq!(value(&samples, "vipgate_reloads_total", &[]), 3.0);
        assert_eq!(value(&samples, "vipgate_reloads_failed_total", &[]), 1.0);
        assert_eq!(value(&samples, "vipgate_config_generation", &[]), 2.0);
        assert_eq!(value(&samples, "vipgate_config_info", &[("hash", "0123abcd")]), 1.0);

        // Every other state name.
        db2.set_admin(AdminState::Maint);
        web2.set_health(Health::GoingUp);
        db1.set_health(Health::Down);
        let (_, samples) = scrape(&c);
        assert_eq!(value(&samples, "vipgate_server_state", &[("server", "db2"), ("state", "maint")]), 1.0);
        assert_eq!(value(&samples, "vipgate_server_state", &[("server", "web2"), ("state", "going_up")]), 1.0);
        assert_eq!(value(&samples, "vipgate_server_state", &[("server", "db1"), ("state", "down")]), 1.0);
        assert_eq!(samples.iter().filter(|s| s.metric == "vipgate_server_state").count(), 4);
    }

    #[test]
    fn http_responses_and_latency_histogram() {
        let c = control();
        let snap = c.snapshot.load_full();
        let api = &snap.service("api").unwrap().stats;
        for status in [200, 200, 204, 301, 404, 503, 101] {
            api.count_response(status);
        }
        // One per interesting bucket: on a bound, between bounds, past the last bound.
        for d in [
            Duration::from_micros(500),
            Duration::from_millis(1),
            Duration::from_millis(30),
            Duration::from_millis(30),
            Duration::from_secs(3),
            Duration::from_secs(60),
        ] {
            api.latency.observe(d);
        }
        let (text, samples) = scrape(&c);
        let class = |c: &str| value(&samples, "vipgate_http_responses_total", &[("service", "api"), ("class", c)]);
        assert_eq!([class("1xx"), class("2xx"), class("3xx"), class("4xx"), class("5xx")], [1.0, 3.0, 1.0, 1.0, 1.0]);

        let h = find(&samples, "vipgate_http_request_duration_seconds", &[("service", "api")]).unwrap();
        assert_eq!(label_names(h), ["mode", "service"]);
        let Value::Histogram(buckets) = &h.value else { panic!("{:?}", h.value) };
        let got: Vec<(f64, f64)> = buckets.iter().map(|b| (b.less_than, b.count)).collect();
        let want = [
            (0.001, 2.0),
            (0.005, 2.0),
            (0.01, 2.0),
            (0.025, 2.0),
            (0.05, 4.0),
            (0.1, 4.0),
            (0.25, 4.0),
            (0.5, 4.0),
            (1.0, 4.0),
            (2.5, 4.0),
            (5.0, 5.0),
            (10.0, 5.0),
            (f64::INFINITY, 6.0),
        ];
        assert_eq!(got, want, "{text}");
        let sum = value(&samples, "vipgate_http_request_duration_seconds_sum", &[("service", "api")]);
        assert!((sum - 63.0615).abs() < 1e-9, "sum {sum}");
        assert_eq!(value(&samples, "vipgate_http_request_duration_seconds_count", &[("service", "api")]), 6.0);
        assert!(
            text.contains("vipgate_http_request_duration_seconds_bucket{service=\"api\",mode=\"http\",le=\"+Inf\"} 6")
        );
    }

    #[test]
    fn counters_carry_over_a_reload() {
        let c = control();
        server(&c, "db", "db1").stats.connections_total.store(7, Relaxed);
        c.snapshot.load_full().service("api").unwrap().stats.count_response(200);
        // Reload: db2 removed, db1 kept (same name and address), a server added.
        let text = CONFIG
            .replace("name = \"db2\"\naddress = \"127.0.0.1:3307\"", "name = \"db3\"\naddress = \"127.0.0.1:3308\"");
        let cfg = crate::config::parse(&text, "t.toml").unwrap();
        let old = c.snapshot.load_full();
        c.snapshot.store(Arc::new(
            Snapshot::rebuild(&crate::runtime::Loaded::read(cfg.clone()).unwrap(), Some(&old)).unwrap(),
        ));
        let (_, samples) = scrape(&c);
        assert_eq!(value(&samples, "vipgate_server_connections_total", &[("server", "db1")]), 7.0);
        assert_eq!(value(&samples, "vipgate_server_connections_total", &[("server", "db3")]), 0.0);
        assert!(find(&samples, "vipgate_server_up", &[("server", "db2")]).is_none(), "removed servers go away");
        assert_eq!(value(&samples, "vipgate_http_responses_total", &[("service", "api"), ("class", "2xx")]), 1.0);
    }

    #[test]
    fn label_values_are_escaped() {
        let text = CONFIG.replace("name = \"web1\"", "name = \"we\\\"b\\\\1\"");
        let c = control_for(&text);
        let out = render(&c);
        check_syntax(&out);
        assert!(out.contains(r#"vipgate_server_up{service="api",server="we\"b\\1"} 1"#), "{out}");
    }

    #[test]
    fn state_names_cover_unchecked_servers_in_maintenance() {
        // Operator state wins over "never probed".
        let c = control();
        let db1 = server(&c, "db", "db1");
        db1.set_admin(AdminState::Maint);
        assert_eq!(state_name(&db1), "maint");
        db1.set_admin(AdminState::Ready);
        assert_eq!(state_name(&db1), "unchecked");
    }
}
