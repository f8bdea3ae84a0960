//! A service: its keys as read from `[defaults]` or `[services.NAME]`, then merged and
//! checked as a whole.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

use toml::de::DeTable;

use super::check::CheckFields;
use super::http::HttpFields;
use super::{Key, Val, Validator};
use crate::config::keys;
use crate::config::model::*;

/// Service keys as read from `[defaults]` or `[services.NAME]`, before merging.
#[derive(Default, Clone)]
pub(super) struct ServiceFields {
    binds: Option<Vec<SocketAddr>>,
    bind_spans: Vec<Range<usize>>,
    mode: Option<Mode>,
    balance: Option<BalanceKind>,
    connect_timeout: Option<Option<Duration>>,
    client_timeout: Option<Option<Duration>>,
    server_timeout: Option<Option<Duration>>,
    retries: Option<u32>,
    maxconn: Option<u32>,
    queue_timeout: Option<Duration>,
    keepalive: Option<bool>,
    keepalive_idle: Option<Duration>,
    keepalive_interval: Option<Duration>,
    keepalive_count: Option<u32>,
    source: Option<IpAddr>,
    check: Option<CheckFields>,
    /// `[services.NAME.pools.POOL.check]`: (pool, where it is named, its check keys).
    pool_checks: Vec<(String, Range<usize>, CheckFields)>,
    observe_errors: Option<u32>,
    on_down: Option<OnDown>,
    failback: Option<Failback>,
    all_backups: Option<bool>,
    servers: Option<Vec<(Server, Range<usize>)>>,
    http: HttpFields,
}

impl Validator<'_> {
    pub(super) fn service_fields(&mut self, t: &DeTable<'_>, section: &str, in_defaults: bool) -> ServiceFields {
        let mut f = ServiceFields::default();
        for (key, value) in t.iter() {
            let k = key.get_ref().as_ref();
            if in_defaults && (k == "bind" || k == "servers") {
                self.err(key.span(), format!("\"{k}\" belongs in a [services.NAME] section, not in [defaults]"));
                continue;
            }
            match k {
                "bind" => {
                    let (binds, spans) = self.binds(key, value);
                    f.binds = Some(binds);
                    f.bind_spans = spans;
                }
                "mode" => {
                    f.mode = self.string(key, value).and_then(|s| match s {
                        "tcp" => Some(Mode::Tcp),
                        "http" => Some(Mode::Http),
                        other => {
                            self.err(value.span(), format!("unknown mode \"{other}\" (expected \"tcp\" or \"http\")"));
                            None
                        }
                    })
                }
                "balance" => {
                    f.balance = self.string(key, value).and_then(|s| {
                        let kind = BalanceKind::from_name(s);
                        if kind.is_none() {
                            self.err(
                                value.span(),
                                format!("unknown balance \"{s}\" (expected one of: {})", BalanceKind::NAMES.join(", ")),
                            );
                        }
                        kind
                    })
                }
                "connect_timeout" => f.connect_timeout = self.timeout(key, value),
                "client_timeout" => f.client_timeout = self.timeout(key, value),
                "server_timeout" => f.server_timeout = self.timeout(key, value),
                "retries" => f.retries = self.integer(key, value, 0, 100).map(|n| n as u32),
                "maxconn" => f.maxconn = self.integer(key, value, 0, 10_000_000).map(|n| n as u32),
                "queue_timeout" => f.queue_timeout = self.positive_duration(key, value),
                "keepalive" => f.keepalive = self.boolean(key, value),
                "keepalive_idle" => f.keepalive_idle = self.positive_duration(key, value),
                "keepalive_interval" => f.keepalive_interval = self.positive_duration(key, value),
                "keepalive_count" => f.keepalive_count = self.integer(key, value, 1, 127).map(|n| n as u32),
                "source" => f.source = self.string(key, value).and_then(|s| self.ip(&value.span(), s)),
                "check" => {
                    if let Some(ct) = self.table(key, value) {
                        f.check = Some(self.check_fields(ct, section));
                    }
                }
                "pools" if in_defaults => {
                    self.err(key.span(), "\"pools\" belongs in a [services.NAME] section, not in [defaults]")
                }
                "pools" => f.pool_checks = self.pools(key, value, section),
                "observe_errors" => f.observe_errors = self.integer(key, value, 0, 1000).map(|n| n as u32),
                "on_down" => {
                    f.on_down = self.string(key, value).and_then(|s| match s {
                        "shutdown-sessions" => Some(OnDown::ShutdownSessions),
                        "keep" | "none" => Some(OnDown::Keep),
                        other => {
                            self.err(
                                value.span(),
                                format!("unknown on_down \"{other}\" (expected \"shutdown-sessions\" or \"keep\")"),
                            );
                            None
                        }
                    })
                }
                "failback" => {
                    f.failback = self.string(key, value).and_then(|s| match s {
                        "immediate" => Some(Failback::Immediate),
                        "never" => Some(Failback::Never),
                        "drain" => Some(Failback::Drain),
                        other => {
                            self.err(
                                value.span(),
                                format!(
                                    "unknown failback \"{other}\" (expected \"immediate\", \"never\" or \"drain\")"
                                ),
                            );
                            None
                        }
                    })
                }
                "all_backups" => f.all_backups = self.boolean(key, value),
                "servers" => f.servers = Some(self.servers(key, value)),
                _ => {
                    if !self.http_field(&mut f.http, key, value) {
                        self.unknown(key, section, &keys::service_keys());
                    }
                }
            }
        }
        f
    }

    pub(super) fn service(
        &mut self,
        name: &Key<'_>,
        body: &Val<'_>,
        defaults: &ServiceFields,
    ) -> Option<(Service, Vec<Range<usize>>)> {
        let section = format!("[services.{}]", name.get_ref());
        let t = self.table(name, body)?;
        let f = self.service_fields(t, &section, false);
        let svc_name = name.get_ref().to_string();
        if svc_name.is_empty() || !svc_name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            self.err(
                name.span(),
                format!("service name \"{svc_name}\" may only use letters, digits, '-', '_' and '.'"),
            );
        }
        let binds = f.binds.clone().or_else(|| defaults.binds.clone()).unwrap_or_default();
        if binds.is_empty() && f.binds.is_none() {
            self.err(name.span(), format!("service \"{svc_name}\" has no bind (add bind = [\"IP:PORT\"])"));
        }
        let servers = f.servers.clone().unwrap_or_default();
        let http_fields = defaults.http.merged(&f.http);
        let mode = f.mode.or(defaults.mode).unwrap_or(Mode::Tcp);
        let redirects_only = mode == Mode::Http && http_fields.redirects_only();
        if servers.is_empty() && redirects_only {
            // A plain port that only redirects to https needs no server.
        } else if servers.is_empty() {
            self.err(
                name.span(),
                format!("service \"{svc_name}\" has no servers (add [[services.{svc_name}.servers]])"),
            );
        } else if servers.iter().all(|(s, _)| s.is_backup()) {
            self.err(
                name.span(),
                format!(
                    "every server of service \"{svc_name}\" is backup = true (or tier > 0): at least one must be in tier 0"
                ),
            );
        }
        for (i, (s, span)) in servers.iter().enumerate() {
            if servers[..i].iter().any(|(o, _)| o.name == s.name) {
                self.err(span.clone(), format!("server name \"{}\" is used twice in service \"{svc_name}\"", s.name));
            }
        }
        let ka = Keepalive::default();
        let keepalive = Keepalive {
            enabled: f.keepalive.or(defaults.keepalive).unwrap_or(ka.enabled),
            idle: f.keepalive_idle.or(defaults.keepalive_idle).unwrap_or(ka.idle),
            interval: f.keepalive_interval.or(defaults.keepalive_interval).unwrap_or(ka.interval),
            count: f.keepalive_count.or(defaults.keepalive_count).unwrap_or(ka.count),
        };
        let connect_timeout = f.connect_timeout.or(defaults.connect_timeout).unwrap_or(Some(DEFAULT_CONNECT_TIMEOUT));
        let check = match (&defaults.check, &f.check) {
            (None, None) => None,
            (d, own) => {
                let merged = d.clone().unwrap_or_default().merged(&own.clone().unwrap_or_default());
                self.finish_check(&merged, name.span())
            }
        };
        let mut pool_checks: Vec<(String, Check)> = Vec::new();
        for (pool, span, fields) in &f.pool_checks {
            if !servers.iter().any(|(s, _)| s.pool.as_deref() == Some(pool.as_str())) {
                self.err(
                    span.clone(),
                    format!("pool \"{pool}\": no server of service \"{svc_name}\" has pool = \"{pool}\""),
                );
                continue;
            }
            // A pool's check stands on its own beside the service's: only
            // [defaults.check] fills in the keys it leaves out.
            let merged = defaults.check.clone().unwrap_or_default().merged(fields);
            if let Some(c) = self.finish_check(&merged, span.clone()) {
                pool_checks.push((pool.clone(), c));
            }
        }
        let balance = f.balance.or(defaults.balance).unwrap_or(BalanceKind::RoundRobin);
        let observe_errors = f.observe_errors.or(defaults.observe_errors).filter(|&n| n > 0);
        if observe_errors.is_some()
            && check.is_none()
            && f.check.is_none()
            && defaults.check.is_none()
            && f.pool_checks.is_empty()
        {
            self.err(
                name.span(),
                format!(
                    "service \"{svc_name}\" sets observe_errors but has no check: nothing would bring a server back"
                ),
            );
        }
        // A single writer must not keep sessions on a node that was marked down.
        let default_on_down = if balance == BalanceKind::First { OnDown::ShutdownSessions } else { OnDown::Keep };
        if mode == Mode::Tcp {
            for (k, span) in &f.http.present {
                self.err(
                    span.clone(),
                    format!("\"{k}\" applies to mode = \"http\" only; service \"{svc_name}\" is tcp"),
                );
            }
        }
        if mode == Mode::Http {
            for (route, span) in http_fields.route_spans() {
                if !servers.iter().any(|(s, _)| s.pool.as_deref() == Some(route.pool.as_str())) {
                    self.err(
                        span,
                        format!(
                            "route pool \"{}\": no server of service \"{svc_name}\" has pool = \"{}\"",
                            route.pool, route.pool
                        ),
                    );
                }
            }
            for (i, (s, span)) in servers.iter().enumerate() {
                let id = s.cookie.as_deref().unwrap_or(&s.name);
                let cookie_char = |c: char| c.is_ascii_graphic() && !matches!(c, '"' | ',' | ';' | '\\');
                if http_fields.has_cookie() && s.cookie.is_none() && !id.chars().all(cookie_char) {
                    self.err(
                        span.clone(),
                        format!("server name \"{id}\" cannot be a cookie value: set cookie = \"...\" on this server"),
                    );
                }
                if servers[..i].iter().any(|(o, _)| o.cookie.as_deref().unwrap_or(&o.name) == id) {
                    self.err(
                        span.clone(),
                        format!("cookie value \"{id}\" of server \"{}\" is used by another server", s.name),
                    );
                }
            }
        }
        let http = (mode == Mode::Http).then(|| http_fields.finish());
        let svc = Service {
            name: svc_name,
            binds,
            mode,
            balance,
            connect_timeout,
            client_timeout: f.client_timeout.or(defaults.client_timeout).unwrap_or(Some(DEFAULT_IDLE_TIMEOUT)),
            server_timeout: f.server_timeout.or(defaults.server_timeout).unwrap_or(Some(DEFAULT_IDLE_TIMEOUT)),
            retries: f.retries.or(defaults.retries).unwrap_or(DEFAULT_RETRIES),
            maxconn: f.maxconn.or(defaults.maxconn).filter(|&n| n > 0),
            // As HAProxy without `timeout queue`: the connect timeout.
            queue_timeout: f
                .queue_timeout
                .or(defaults.queue_timeout)
                .unwrap_or(connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT)),
            keepalive,
            source: f.source.or(defaults.source),
            check,
            pool_checks,
            observe_errors,
            on_down: f.on_down.or(defaults.on_down).unwrap_or(default_on_down),
            failback: f.failback.or(defaults.failback).unwrap_or(Failback::Immediate),
            all_backups: f.all_backups.or(defaults.all_backups).unwrap_or(false),
            servers: servers.into_iter().map(|(s, _)| s).collect(),
            http,
            send_proxy: http_fields.send_proxy.flatten(),
            accept_proxy: http_fields.accept_proxy.flatten(),
        };
        let spans = if f.bind_spans.is_empty() { vec![name.span(); svc.binds.len()] } else { f.bind_spans };
        Some((svc, spans))
    }
}
