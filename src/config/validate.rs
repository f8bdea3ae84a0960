//! TOML text → validated [`Config`], collecting every problem with its position.
//!
//! We walk toml's span-carrying tree by hand instead of deriving serde structs: serde
//! stops at the first error, and operators fixing a config want the whole list at once,
//! each with `FILE:LINE:COL`.

use super::load::Io;
use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::check::CheckFields;
use super::duration::parse_duration;
use super::keys::{self, Section};
use super::model::*;
use super::validate_http::HttpFields;

pub(super) type Key<'i> = Spanned<Cow<'i, str>>;
pub(super) type Val<'i> = Spanned<DeValue<'i>>;

/// One problem in a config file, at a byte offset of the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub offset: usize,
    pub message: String,
}

/// A valid config and what is worth a warning in it (sorted by position).
pub struct Validated {
    pub config: Config,
    pub warnings: Vec<Problem>,
}

/// Validate `src`, asking `io` for what the text alone cannot tell; on failure return
/// every problem found (sorted by position).
pub fn validate(src: &str, io: &dyn Io) -> Result<Validated, Vec<Problem>> {
    let (root, syntax) = DeTable::parse_recoverable(src);
    if !syntax.is_empty() {
        let problems = syntax
            .iter()
            .map(|e| Problem {
                offset: e.span().map(|s| s.start).unwrap_or(0),
                message: format!("TOML syntax error: {}", e.message().trim()),
            })
            .collect();
        return Err(sorted(problems));
    }
    let mut v = Validator { problems: Vec::new(), warnings: Vec::new(), io };
    let config = v.root(root.get_ref());
    if v.problems.is_empty() {
        if let Some(config) = config {
            return Ok(Validated { config, warnings: sorted(v.warnings) });
        }
        v.problems.push(Problem { offset: 0, message: "configuration is incomplete".into() });
    }
    Err(sorted(v.problems))
}

fn sorted(mut p: Vec<Problem>) -> Vec<Problem> {
    p.sort_by_key(|p| p.offset);
    p
}

pub(super) struct Validator<'io> {
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
    /// Names to resolve and files to read go through here (`load.rs`).
    pub(super) io: &'io dyn Io,
}

/// Where `[admin]` and its keys are, for problems found once the services are known.
struct AdminSpans {
    /// The `[admin]` table's name: where a problem of the default bind is reported.
    table: Range<usize>,
    bind_key: Option<Range<usize>>,
    bind_value: Option<Range<usize>>,
    token_file_given: bool,
}

/// Service keys as read from `[defaults]` or `[services.NAME]`, before merging.
#[derive(Default, Clone)]
struct ServiceFields {
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
    pub(super) fn err(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.problems.push(Problem { offset: span.start, message: message.into() });
    }

    fn warn(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.warnings.push(Problem { offset: span.start, message: message.into() });
    }

    pub(super) fn unknown(&mut self, key: &Key<'_>, section: &str, known: &[&str]) {
        self.err(
            key.span(),
            format!("unknown key \"{}\" in {section} (known keys: {})", key.get_ref(), known.join(", ")),
        );
    }

    fn root(&mut self, root: &DeTable<'_>) -> Option<Config> {
        let mut global = Global::default();
        let mut admin = None;
        let mut defaults = ServiceFields::default();
        let mut services = Vec::new();
        let mut saw_services = false;
        for (key, value) in root.iter() {
            match key.get_ref().as_ref() {
                "global" => {
                    if let Some(t) = self.table(key, value) {
                        global = self.global(t);
                    }
                }
                "admin" => {
                    if let Some(t) = self.table(key, value) {
                        admin = self.admin(t, key.span());
                    }
                }
                "defaults" => {
                    if let Some(t) = self.table(key, value) {
                        defaults = self.service_fields(t, "[defaults]", true);
                    }
                }
                "services" => {
                    saw_services = true;
                    if let Some(t) = self.table(key, value) {
                        if t.is_empty() {
                            self.err(key.span(), "[services] defines no service");
                        }
                        for (name, body) in t.iter() {
                            if let Some(svc) = self.service(name, body, &defaults) {
                                services.push(svc);
                            }
                        }
                    }
                }
                _ => self.unknown(key, "the top level", Section::Top.listed()),
            }
        }
        if !saw_services {
            self.err(0..0, "no [services.NAME] section: there is nothing to balance");
        }
        self.check_bind_conflicts(&services);
        let admin = admin.map(|(admin, spans)| {
            self.check_admin_bind(&admin, &spans, &services);
            admin
        });
        let services = services.into_iter().map(|(s, _)| s).collect();
        Some(Config { global, admin, services })
    }

    fn global(&mut self, t: &DeTable<'_>) -> Global {
        let mut g = Global::default();
        for (key, value) in t.iter() {
            match key.get_ref().as_ref() {
                "workers" => g.workers = self.integer(key, value, 1, 1024).map(|n| n as usize),
                "grace" => {
                    if let Some(d) = self.duration(key, value) {
                        g.grace = d;
                    }
                }
                "splice" => {
                    if let Some(b) = self.boolean(key, value) {
                        g.splice = b;
                    }
                }
                "resolve_interval" => {
                    if let Some(d) = self.duration(key, value) {
                        g.resolve_interval = (!d.is_zero()).then_some(d);
                    }
                }
                _ => self.unknown(key, "[global]", Section::Global.listed()),
            }
        }
        g
    }

    fn admin(&mut self, t: &DeTable<'_>, table: Range<usize>) -> Option<(Admin, AdminSpans)> {
        let mut spans = AdminSpans { table, bind_key: None, bind_value: None, token_file_given: false };
        let mut admin = Admin {
            bind: Admin::DEFAULT_BIND,
            token: None,
            token_file: None,
            socket: None,
            socket_mode: Admin::DEFAULT_SOCKET_MODE,
        };
        for (key, value) in t.iter() {
            match key.get_ref().as_ref() {
                "bind" => {
                    if let Some(bind) = self.string(key, value).and_then(|s| self.bind_addr(&value.span(), s)) {
                        admin.bind = bind;
                        spans.bind_key = Some(key.span());
                        spans.bind_value = Some(value.span());
                    }
                }
                "token_file" => {
                    spans.token_file_given = true;
                    let Some(path) = self.string(key, value) else { continue };
                    match self.io.read_secret(path) {
                        Ok(text) => {
                            // Editors end a one-line secret with a newline; it is not part of the token.
                            let token = text.trim();
                            if token.is_empty() {
                                self.err(value.span(), format!("token_file \"{path}\" is empty"));
                            } else if !token.bytes().all(|b| b.is_ascii_graphic()) {
                                self.err(
                                    value.span(),
                                    format!(
                                        "token_file \"{path}\": the token must be one line of printable ASCII \
                                         without spaces (it travels in an Authorization header)"
                                    ),
                                );
                            } else {
                                admin.token = Some(token.to_string());
                                admin.token_file = Some(path.into());
                            }
                        }
                        Err(e) => self.err(value.span(), format!("cannot read token_file \"{path}\": {e}")),
                    }
                }
                "socket" => {
                    let Some(path) = self.string(key, value) else { continue };
                    // sun_path holds 108 bytes including the terminating NUL.
                    if path.is_empty() || path.len() > 107 {
                        self.err(value.span(), "\"socket\" must be a path of 1 to 107 bytes (the unix socket limit)");
                    } else {
                        admin.socket = Some(path.into());
                    }
                }
                "socket_mode" => {
                    // An octal string ("0660") or a TOML octal integer (0o660).
                    let mode = match value.get_ref() {
                        DeValue::String(s) => u32::from_str_radix(s.trim_start_matches("0o"), 8).ok(),
                        DeValue::Integer(i) => u32::from_str_radix(&i.as_str().replace('_', ""), i.radix()).ok(),
                        _ => None,
                    };
                    match mode {
                        Some(m) if m <= 0o777 && m & 0o002 == 0 => admin.socket_mode = m,
                        Some(m) if m <= 0o777 => self.err(
                            value.span(),
                            format!(
                                "socket_mode {m:04o} lets every local user write to the admin socket (drain \
                                 servers, reload); use 0600 or 0660 with a group"
                            ),
                        ),
                        _ => self.err(value.span(), "\"socket_mode\" must be an octal file mode such as \"0660\""),
                    }
                }
                _ => self.unknown(key, "[admin]", Section::Admin.listed()),
            }
        }
        Some((admin, spans))
    }

    /// The admin bind off loopback without a token is a warning (it may be firewalled);
    /// sharing a service's address and port is an error: whichever binds second fails, and
    /// a failed admin bind is retried forever, so `/readyz` never answers and keepalived
    /// moves the VIP away while `check` had said OK.
    fn check_admin_bind(&mut self, admin: &Admin, spans: &AdminSpans, services: &[(Service, Vec<Range<usize>>)]) {
        let bind = admin.bind;
        if let Some(key) = &spans.bind_key {
            if !bind.ip().is_loopback() && !spans.token_file_given {
                self.warn(
                    key.clone(),
                    format!(
                        "admin endpoint on {bind}, off loopback, without token_file: anyone who can reach it can \
                         drain servers and reload (add token_file, or bind to 127.0.0.1)"
                    ),
                );
            }
        }
        let at = spans.bind_value.clone().unwrap_or_else(|| spans.table.clone());
        let what = if spans.bind_value.is_some() { "admin bind" } else { "the default admin bind" };
        for (svc, _) in services {
            if let Some(other) = svc.binds.iter().find(|b| admin_collides(bind, **b)) {
                self.err(
                    at.clone(),
                    format!(
                        "{what} {bind} collides with bind {other} of service \"{}\": the admin endpoint could not \
                         listen and /readyz would never answer (give [admin] bind another port or address)",
                        svc.name
                    ),
                );
            }
        }
    }

    fn service_fields(&mut self, t: &DeTable<'_>, section: &str, in_defaults: bool) -> ServiceFields {
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

    fn service(
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

    /// `pools = { POOL = { check = { ... } } }`, written `[services.NAME.pools.POOL.check]`.
    fn pools(&mut self, key: &Key<'_>, value: &Val<'_>, section: &str) -> Vec<(String, Range<usize>, CheckFields)> {
        let Some(t) = self.table(key, value) else { return Vec::new() };
        let mut out = Vec::new();
        for (pool, body) in t.iter() {
            let name = pool.get_ref().as_ref().to_string();
            let Some(bt) = self.table(pool, body) else { continue };
            let mut fields = None;
            for (k, v) in bt.iter() {
                match k.get_ref().as_ref() {
                    "check" => {
                        if let Some(ct) = self.table(k, v) {
                            fields = Some(self.check_fields(ct, &format!("{section}.pools.{name}.check")));
                        }
                    }
                    _ => self.unknown(k, &format!("{section}.pools.{name}"), Section::Pool.listed()),
                }
            }
            if let Some(f) = fields {
                out.push((name, pool.span(), f));
            }
        }
        out
    }

    fn servers(&mut self, key: &Key<'_>, value: &Val<'_>) -> Vec<(Server, Range<usize>)> {
        let DeValue::Array(items) = value.get_ref() else {
            self.err(value.span(), "\"servers\" must be an array of tables ([[services.NAME.servers]])");
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items.iter() {
            let span = if item.span().is_empty() { key.span() } else { item.span() };
            let DeValue::Table(t) = item.get_ref() else {
                self.err(span, "each server must be a table with name and address");
                continue;
            };
            if let Some(s) = self.server(t, span.clone()) {
                out.push((s, span));
            }
        }
        out
    }

    fn server(&mut self, t: &DeTable<'_>, span: Range<usize>) -> Option<Server> {
        let (mut name, mut address, mut weight, mut source) = (None, None, 1, None);
        let mut disabled = false;
        let mut maxconn = 0;
        let (mut cookie, mut pool) = (None, None);
        let (mut backup, mut tier, mut check_port, mut check_address) = (None, None, None, None);
        let mut ok = true;
        for (key, value) in t.iter() {
            match key.get_ref().as_ref() {
                "name" => {
                    name = self.string(key, value).map(str::to_string);
                    if name.as_deref() == Some("") {
                        self.err(value.span(), "server name must not be empty");
                    }
                }
                "address" => {
                    address = self.string(key, value).and_then(|s| {
                        let a = self.server_addr(&value.span(), s)?;
                        Some((a, address_host(s)))
                    })
                }
                "weight" => match self.integer(key, value, 0, MAX_WEIGHT as i64) {
                    Some(w) => weight = w as u32,
                    None => ok = false,
                },
                "backup" => backup = self.boolean(key, value).map(|b| (b, value.span())),
                "tier" => tier = self.integer(key, value, 0, 100).map(|n| (n as u32, value.span())),
                "source" => source = self.string(key, value).and_then(|s| self.ip(&value.span(), s)),
                "check_port" => check_port = self.integer(key, value, 1, 65535).map(|n| n as u16),
                "check_address" => check_address = self.string(key, value).and_then(|s| self.ip(&value.span(), s)),
                "cookie" => {
                    cookie = self.header_value(key, value);
                    if cookie.as_deref().is_some_and(|c| c.is_empty() || c.contains([';', ',', ' ', '"', '='])) {
                        self.err(
                            value.span(),
                            "a server's cookie value must be non-empty, without ; , = space or quote",
                        );
                        cookie = None;
                    }
                }
                "pool" => pool = self.string(key, value).map(str::to_string),
                "disabled" => disabled = self.boolean(key, value).unwrap_or(false),
                "maxconn" => maxconn = self.integer(key, value, 0, 10_000_000).map_or(0, |n| n as u32),
                _ => self.unknown(key, "a server", Section::Server.listed()),
            }
        }
        let tier = match (backup, tier) {
            (Some((true, _)), Some((0, span))) => {
                self.err(span, "tier = 0 contradicts backup = true (backup means tier 1)");
                1
            }
            (_, Some((t, _))) => t,
            (Some((true, _)), None) => 1,
            _ => 0,
        };
        let Some(name) = name else {
            self.err(span, "server has no name");
            return None;
        };
        let Some((address, host)) = address else {
            if !t.iter().any(|(k, _)| k.get_ref() == "address") {
                self.err(span, format!("server \"{name}\" has no address"));
            }
            return None;
        };
        ok.then_some(Server {
            name,
            address,
            host,
            weight,
            tier,
            source,
            check_port,
            check_address,
            cookie,
            pool,
            disabled,
            maxconn,
        })
    }

    fn binds(&mut self, key: &Key<'_>, value: &Val<'_>) -> (Vec<SocketAddr>, Vec<Range<usize>>) {
        let mut addrs = Vec::new();
        let mut spans = Vec::new();
        match value.get_ref() {
            DeValue::String(s) => {
                if let Some(a) = self.bind_addr(&value.span(), s) {
                    addrs.push(a);
                    spans.push(value.span());
                }
            }
            DeValue::Array(items) => {
                if items.is_empty() {
                    self.err(value.span(), "bind list is empty");
                }
                for item in items.iter() {
                    match item.get_ref() {
                        DeValue::String(s) => {
                            if let Some(a) = self.bind_addr(&item.span(), s) {
                                if addrs.contains(&a) {
                                    self.err(item.span(), format!("bind {a} is listed twice"));
                                } else {
                                    addrs.push(a);
                                    spans.push(item.span());
                                }
                            }
                        }
                        _ => self.err(item.span(), "each bind must be a string \"IP:PORT\""),
                    }
                }
            }
            _ => self.err(value.span(), format!("\"{}\" must be a string or an array of strings", key.get_ref())),
        }
        (addrs, spans)
    }

    fn check_bind_conflicts(&mut self, services: &[(Service, Vec<Range<usize>>)]) {
        let mut seen: Vec<(SocketAddr, &str)> = Vec::new();
        for (svc, spans) in services {
            for (addr, span) in svc.binds.iter().zip(spans) {
                let clash = seen.iter().find(|(other, _)| binds_overlap(*other, *addr));
                if let Some((other, owner)) = clash {
                    let msg = if other == addr {
                        format!("bind {addr} is already bound by service \"{owner}\"")
                    } else {
                        format!("bind {addr} overlaps {other}, already bound by service \"{owner}\"")
                    };
                    self.err(span.clone(), msg);
                } else {
                    seen.push((*addr, &svc.name));
                }
            }
        }
    }

    // ---- typed value helpers: each reports its own problem and returns None ----

    pub(super) fn table<'a, 'i>(&mut self, key: &Key<'_>, value: &'a Val<'i>) -> Option<&'a DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.err(value.span(), format!("\"{}\" must be a table, not {}", key.get_ref(), other.type_str()));
                None
            }
        }
    }

    pub(super) fn string<'a>(&mut self, key: &Key<'_>, value: &'a Val<'_>) -> Option<&'a str> {
        match value.get_ref() {
            DeValue::String(s) => Some(s.as_ref()),
            other => {
                self.err(value.span(), format!("\"{}\" must be a string, not {}", key.get_ref(), other.type_str()));
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, key: &Key<'_>, value: &Val<'_>) -> Option<bool> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                self.err(
                    value.span(),
                    format!("\"{}\" must be true or false, not {}", key.get_ref(), other.type_str()),
                );
                None
            }
        }
    }

    pub(super) fn integer(&mut self, key: &Key<'_>, value: &Val<'_>, min: i64, max: i64) -> Option<i64> {
        let parsed = match value.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()).ok(),
            _ => None,
        };
        match parsed {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.err(value.span(), format!("\"{}\" must be a whole number from {min} to {max}", key.get_ref()));
                None
            }
        }
    }

    pub(super) fn duration(&mut self, key: &Key<'_>, value: &Val<'_>) -> Option<Duration> {
        let DeValue::String(s) = value.get_ref() else {
            self.err(
                value.span(),
                format!("\"{}\" must be a duration string such as \"5s\" or \"500ms\"", key.get_ref()),
            );
            return None;
        };
        match parse_duration(s) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(value.span(), format!("\"{}\": {e}", key.get_ref()));
                None
            }
        }
    }

    /// A timeout: `"0"` means none.
    pub(super) fn timeout(&mut self, key: &Key<'_>, value: &Val<'_>) -> Option<Option<Duration>> {
        self.duration(key, value).map(|d| (!d.is_zero()).then_some(d))
    }

    pub(super) fn positive_duration(&mut self, key: &Key<'_>, value: &Val<'_>) -> Option<Duration> {
        let d = self.duration(key, value)?;
        if d.is_zero() {
            self.err(value.span(), format!("\"{}\" must be a duration above zero", key.get_ref()));
            return None;
        }
        Some(d)
    }

    pub(super) fn ip(&mut self, span: &Range<usize>, s: &str) -> Option<IpAddr> {
        match s.trim_start_matches('[').trim_end_matches(']').parse() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.err(span.clone(), format!("bad address \"{s}\": expected an IP address such as 10.0.0.5"));
                None
            }
        }
    }

    fn bind_addr(&mut self, span: &Range<usize>, s: &str) -> Option<SocketAddr> {
        match parse_bind(s) {
            Ok(a) => Some(a),
            Err(why) => {
                self.err(span.clone(), format!("bad address \"{s}\": {why}"));
                None
            }
        }
    }

    fn server_addr(&mut self, span: &Range<usize>, s: &str) -> Option<SocketAddr> {
        match parse_server_addr(s, self.io) {
            Ok(a) => Some(a),
            Err(why) => {
                self.err(span.clone(), format!("bad address \"{s}\": {why}"));
                None
            }
        }
    }
}

/// Listener address: `IP:PORT`, `[V6]:PORT`, or `*:PORT` / `:PORT` for every IPv4 address.
pub fn parse_bind(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Some(port) = s.strip_prefix("*:").or_else(|| s.strip_prefix(':')) {
        let port = parse_port(port)?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    if let Some(port) = s.strip_prefix("[::]:") {
        return Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), parse_port(port)?));
    }
    let addr: SocketAddr = s.parse().map_err(|_| "expected IP:PORT, [IPv6]:PORT or *:PORT".to_string())?;
    if addr.port() == 0 {
        return Err("port 0 is not a port one can connect to".into());
    }
    Ok(addr)
}

/// The host name of a `HOST:PORT` server address (None for an IP address).
fn address_host(s: &str) -> Option<String> {
    let s = s.trim();
    if s.parse::<SocketAddr>().is_ok() {
        return None;
    }
    s.rsplit_once(':').map(|(h, _)| h.to_string())
}

/// Server address: `IP:PORT`, `[V6]:PORT`, or `HOST:PORT` resolved by `io` (first address wins).
pub fn parse_server_addr(s: &str, io: &dyn Io) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err("port 0 is not a port one can connect to".into());
        }
        return Ok(addr);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err("missing port (expected HOST:PORT)".into());
    };
    if host.is_empty() || host.contains(':') || host.contains('[') {
        return Err("expected IP:PORT, [IPv6]:PORT or HOST:PORT".into());
    }
    let port = parse_port(port)?;
    io.resolve(host, port)
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("bad port \"{p}\" (expected 1-65535)")),
        Ok(n) => Ok(n),
    }
}

/// Whether the admin endpoint's bind collides with a service's. Services' `[::]` listeners
/// are IPv6-only, but the admin endpoint binds with the system's defaults, and there `[::]`
/// is dual-stack (net.ipv6.bindv6only = 0, every distribution's default): it takes every
/// IPv4 address of its port as well.
fn admin_collides(admin: SocketAddr, service: SocketAddr) -> bool {
    let dual_stack = admin.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    binds_overlap(admin, service) || (dual_stack && service.is_ipv4() && admin.port() == service.port())
}

/// Two binds collide if they are equal, or share a port where one is the wildcard of the
/// same family (the second `bind()` would fail with EADDRINUSE at start).
fn binds_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    if a == b {
        return true;
    }
    a.port() == b.port() && a.is_ipv4() == b.is_ipv4() && (a.ip().is_unspecified() || b.ip().is_unspecified())
}
