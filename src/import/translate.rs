//! From parsed haproxy.cfg sections to vipgate TOML.
//!
//! A `listen` becomes a service; a `backend` becomes a service whose binds come from the
//! frontends whose `default_backend` names it (client-side settings from the frontend,
//! server-side ones from the backend, as HAProxy splits them); a frontend that only
//! redirects becomes a service without servers. Each `defaults` section replaces the one
//! before, as in HAProxy, and applies to the proxies after it.

use std::fmt::Write as _;

use super::parse::{Line, Section, SectionKind};
use super::routes::{Acls, Remark, UseBackend};
use super::{Imported, Report};

/// `http-check send meth M uri U hdr N V...`: method, URI, headers.
type CheckSend = (Option<String>, Option<String>, Vec<(String, String)>);

/// What a `defaults` section carries, and each proxy starts from.
#[derive(Debug, Clone, Default)]
struct Settings {
    mode: Option<String>,
    balance: Option<String>,
    retries: Option<u32>,
    connect: Option<String>,
    client: Option<String>,
    server: Option<String>,
    tunnel: Option<String>,
    http_request: Option<String>,
    check_timeout: Option<String>,
    /// `option httpchk [METHOD] [URI]`: (method, uri).
    httpchk: Option<(String, String)>,
    /// `http-check send` / `expect` lines, kept to honour or report them.
    check_send: Option<CheckSend>,
    check_expect: Option<Vec<u16>>,
    http_check_lines: Vec<usize>,
    /// `option mysql-check [user U]`.
    mysql_check: Option<Option<String>>,
    tcp_check: bool,
    forwardfor: Option<bool>,
    all_backups: bool,
    /// `maxconn` in defaults / frontend / listen: the service's.
    maxconn: Option<u32>,
    queue: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct ServerLine {
    line: usize,
    name: String,
    address: String,
    check: bool,
    port: Option<u16>,
    addr: Option<String>,
    inter: Option<String>,
    fastinter: Option<String>,
    downinter: Option<String>,
    rise: Option<u32>,
    fall: Option<u32>,
    weight: Option<u32>,
    backup: bool,
    shutdown_sessions: bool,
    send_proxy: Option<&'static str>,
    cookie: Option<String>,
    ssl: bool,
    verify_none: bool,
    ca_file: Option<String>,
    disabled: bool,
    maxconn: Option<u32>,
}

#[derive(Debug, Clone, Default)]
struct Proxy {
    name: String,
    line: usize,
    is_frontend: bool,
    settings: Settings,
    binds: Vec<String>,
    certificates: Vec<String>,
    http2: bool,
    accept_proxy: bool,
    servers: Vec<ServerLine>,
    default_backend: Option<String>,
    /// `use_backend ... if ...` rules that became routes, in order.
    use_backends: Vec<UseBackend>,
    stick_on_dst: bool,
    redirect_https: bool,
    cookie: Option<String>,
    response_headers: Vec<(String, String)>,
    deny_prefixes: Vec<String>,
    stats: bool,
}

struct Ctx {
    reports: Vec<Report>,
}

impl Ctx {
    fn lost(&mut self, line: &Line, why: impl Into<String>) {
        self.reports.push(Report { line: line.number, directive: line.text(), why: why.into(), handled: false });
    }

    fn note(&mut self, line: &Line, why: impl Into<String>) {
        self.reports.push(Report { line: line.number, directive: line.text(), why: why.into(), handled: true });
    }

    fn lost_at(&mut self, number: usize, directive: &str, why: impl Into<String>) {
        self.reports.push(Report { line: number, directive: directive.into(), why: why.into(), handled: false });
    }

    fn remarks(&mut self, line: &Line, remarks: Vec<Remark>) {
        for (handled, why) in remarks {
            if handled {
                self.note(line, why);
            } else {
                self.lost(line, why);
            }
        }
    }
}

#[derive(Default)]
struct Admin {
    bind: Option<String>,
    socket: Option<String>,
    socket_mode: Option<String>,
}

pub fn translate(sections: &[Section]) -> Imported {
    let mut ctx = Ctx { reports: Vec::new() };
    let mut defaults = Settings::default();
    let mut workers: Option<u32> = None;
    let mut admin = Admin::default();
    let mut proxies: Vec<Proxy> = Vec::new();
    for section in sections {
        match &section.kind {
            SectionKind::Global => global(section, &mut ctx, &mut workers, &mut admin),
            SectionKind::Defaults => {
                // Each defaults section replaces the previous one.
                defaults = Settings::default();
                for line in &section.lines {
                    if !settings_line(&mut defaults, line, &mut ctx) {
                        ctx.lost(line, "not known in defaults");
                    }
                }
            }
            SectionKind::Listen | SectionKind::Frontend | SectionKind::Backend => {
                let p = proxy(section, &defaults, &mut ctx);
                if p.stats {
                    if let Some(b) = p.binds.first() {
                        admin.bind.get_or_insert_with(|| b.clone());
                    }
                    ctx.note(&section.header, "a stats listener: its first bind becomes [admin] bind (the status page, /metrics and the JSON API)");
                    continue;
                }
                proxies.push(p);
            }
            SectionKind::Other(kind) => {
                let why = if kind.is_empty() {
                    "outside any section".to_string()
                } else {
                    format!("{kind} sections have no vipgate equivalent")
                };
                if !kind.is_empty() {
                    ctx.lost(&section.header, why.clone());
                }
                for line in &section.lines {
                    ctx.lost(line, why.clone());
                }
            }
        }
    }
    let toml = emit(&proxies, workers, &admin, &mut ctx);
    ctx.reports.sort_by_key(|r| r.line);
    Imported { toml, reports: ctx.reports }
}

fn global(section: &Section, ctx: &mut Ctx, workers: &mut Option<u32>, admin: &mut Admin) {
    for line in &section.lines {
        let w: Vec<&str> = line.words.iter().map(String::as_str).collect();
        match w.as_slice() {
            ["nbthread", n] => match n.parse::<u32>() {
                Ok(n) if (1..=1024).contains(&n) => *workers = Some(n),
                _ => ctx.lost(line, "not a thread count from 1 to 1024"),
            },
            ["stats", "socket", path, rest @ ..] => {
                admin.socket = Some(path.to_string());
                let mut i = 0;
                while i < rest.len() {
                    match rest[i] {
                        "mode" if i + 1 < rest.len() => {
                            admin.socket_mode = Some(format!("{:0>4}", rest[i + 1]));
                            i += 2;
                        }
                        "level" | "group" | "user" | "uid" | "gid" if i + 1 < rest.len() => {
                            if rest[i] != "level" {
                                ctx.note(line, format!("socket {} {}: set the socket's owner through the service's user/group (systemd)", rest[i], rest[i + 1]));
                            }
                            i += 2;
                        }
                        "expose-fd" if i + 1 < rest.len() => i += 2,
                        other => {
                            ctx.lost(line, format!("socket option \"{other}\" not translated"));
                            i += 1;
                        }
                    }
                }
                if line.words.iter().any(|w| w == "user") && line.words.iter().any(|w| w == "level") {
                    ctx.note(line, "level user: vipgate's socket has one level (admin); restrict it with socket_mode");
                }
            }
            ["daemon"] | ["master-worker"] => ctx.note(line, "vipgate runs in the foreground under systemd or a container runtime"),
            ["user", ..] | ["group", ..] | ["uid", ..] | ["gid", ..] | ["chroot", ..] => {
                ctx.note(line, "run vipgate as an unprivileged user with systemd (deploy/vipgate.service)")
            }
            ["pidfile", ..] => ctx.note(line, "systemd tracks the process; vipgate writes no pid file"),
            ["log", ..] | ["log-send-hostname", ..] | ["log-tag", ..] => {
                ctx.note(line, "vipgate logs to stderr (journald, or JSON lines with VIPGATE_LOG_FORMAT=json)")
            }
            [k, ..] if k.starts_with("ssl-default-") || *k == "tune.ssl.default-dh-param" => ctx.note(
                line,
                "vipgate's TLS (rustls) allows TLS 1.2 and 1.3 with modern AEAD suites only, no DHE; there is nothing to tune",
            ),
            ["ca-base", ..] | ["crt-base", ..] => {
                ctx.lost(line, "relative certificate paths are not resolved against it: write absolute paths")
            }
            ["stats", "timeout", ..] => ctx.note(line, "an interactive socket session closes after 60 s idle"),
            ["maxconn", ..] => ctx.lost(line, "vipgate has no process-wide connection cap; the descriptor limit (LimitNOFILE) bounds it"),
            _ => ctx.lost(line, "not translated"),
        }
    }
}

/// A line a `defaults` section and a proxy share. False: not such a line.
fn settings_line(s: &mut Settings, line: &Line, ctx: &mut Ctx) -> bool {
    let w: Vec<&str> = line.words.iter().map(String::as_str).collect();
    match w.as_slice() {
        ["mode", m @ ("tcp" | "http")] => s.mode = Some(m.to_string()),
        ["mode", other] => ctx.lost(line, format!("mode {other} has no vipgate equivalent")),
        ["balance", alg, rest @ ..] => match *alg {
            "roundrobin" | "leastconn" | "source" | "first" | "random" => {
                s.balance = Some(alg.to_string());
                if !rest.is_empty() {
                    ctx.lost(line, "balance arguments are not translated");
                }
            }
            "static-rr" => {
                s.balance = Some("roundrobin".into());
                ctx.note(line, "static-rr: roundrobin (vipgate's weights can change at run time)");
            }
            other => ctx.lost(line, format!("balance {other} has no vipgate equivalent")),
        },
        ["hash-type", "consistent", ..] => {
            ctx.note(line, "vipgate's source hashing is always consistent (rendezvous hashing)")
        }
        ["hash-type", ..] => {
            ctx.note(line, "vipgate's source hashing is consistent: a lost server moves only its own clients")
        }
        ["retries", n] => match n.parse::<u32>() {
            Ok(n) if n <= 100 => s.retries = Some(n),
            _ => ctx.lost(line, "retries must be 0 to 100"),
        },
        ["timeout", which, value] => {
            let Some(d) = duration(value) else {
                ctx.lost(line, format!("cannot read the duration \"{value}\""));
                return true;
            };
            match *which {
                "connect" => s.connect = Some(d),
                "client" | "clitimeout" => s.client = Some(d),
                "server" | "srvtimeout" => s.server = Some(d),
                "tunnel" => s.tunnel = Some(d),
                "http-request" => s.http_request = Some(d),
                "check" => s.check_timeout = Some(d),
                "queue" => s.queue = Some(d),
                "http-keep-alive" => {
                    ctx.note(line, "an idle keep-alive client waits up to header_timeout for its next request")
                }
                "client-fin" | "server-fin" => {
                    ctx.note(line, "half-closed connections follow client_timeout / server_timeout")
                }
                other => ctx.lost(line, format!("timeout {other} has no vipgate equivalent")),
            }
        }
        ["option", "httpchk"] => s.httpchk = Some(("OPTIONS".into(), "/".into())),
        ["option", "httpchk", uri] if uri.starts_with('/') => s.httpchk = Some(("OPTIONS".into(), uri.to_string())),
        ["option", "httpchk", method, uri, ..] => s.httpchk = Some((method.to_string(), uri.to_string())),
        ["option", "httpchk", method] => s.httpchk = Some((method.to_string(), "/".into())),
        ["http-check", "expect", "status", code] => match code.parse::<u16>() {
            Ok(c) if (100..=599).contains(&c) => {
                s.check_expect = Some(vec![c]);
                s.http_check_lines.push(line.number);
            }
            _ => ctx.lost(line, "not an HTTP status"),
        },
        ["http-check", "expect", "rstatus", re] => {
            // Only the plain alternations deployers write: 200|405, (200|405).
            let codes: Option<Vec<u16>> = re
                .trim_matches(|c| c == '(' || c == ')' || c == '^' || c == '$')
                .split('|')
                .map(|c| c.parse().ok())
                .collect();
            match codes {
                Some(c) if !c.is_empty() => {
                    s.check_expect = Some(c);
                    s.http_check_lines.push(line.number);
                }
                _ => ctx.lost(line, "only rstatus alternations of plain codes (200|405) are translated"),
            }
        }
        ["http-check", "send", rest @ ..] => {
            let (mut meth, mut uri, mut hdrs) = (None, None, Vec::new());
            let mut i = 0;
            while i < rest.len() {
                match (rest[i], rest.get(i + 1), rest.get(i + 2)) {
                    ("meth", Some(m), _) => {
                        meth = Some(m.to_string());
                        i += 2;
                    }
                    ("uri", Some(u), _) => {
                        uri = Some(u.to_string());
                        i += 2;
                    }
                    ("hdr", Some(n), Some(v)) => {
                        hdrs.push((n.to_string(), v.to_string()));
                        i += 3;
                    }
                    ("ver", Some(_), _) => i += 2,
                    (other, _, _) => {
                        ctx.lost(line, format!("http-check send {other} is not translated"));
                        i += 1;
                    }
                }
            }
            s.check_send = Some((meth, uri, hdrs));
            s.http_check_lines.push(line.number);
        }
        ["http-check", "disable-on-404"] => ctx.lost(line, "not translated"),
        ["option", "mysql-check"] => s.mysql_check = Some(None),
        ["option", "mysql-check", "user", u, ..] => s.mysql_check = Some(Some(u.to_string())),
        ["option", "tcp-check"] => s.tcp_check = true,
        ["option", "forwardfor", ..] => {
            s.forwardfor = Some(true);
            if w.len() > 2 {
                ctx.note(
                    line,
                    "X-Forwarded-For is set for every client; trusted_forwarders decides whose chain is kept",
                );
            }
        }
        ["option", "allbackups"] => s.all_backups = true,
        ["option", "redispatch", ..] => ctx.note(line, "vipgate retries a failed connect on another server (retries)"),
        ["option", "httplog" | "tcplog" | "dontlognull" | "log-health-checks" | "logasap", ..] | ["log", ..] => {
            ctx.note(line, "vipgate logs one line per connection (tcp) or request (http), to stderr")
        }
        ["option", "clitcpka" | "srvtcpka" | "tcpka"] => {
            ctx.note(line, "TCP keepalive is on for both sides by default (keepalive = true)")
        }
        ["option", "httpclose" | "http-server-close" | "http-keep-alive" | "forceclose"] => ctx.note(
            line,
            "vipgate keeps client and server connections alive independently (pool_max_idle); requests are unchanged",
        ),
        ["option", "splice-auto" | "splice-request" | "splice-response"] => {
            ctx.note(line, "vipgate splices tcp-mode bulk transfers on its own ([global] splice)")
        }
        ["maxconn", n] => match n.parse::<u32>() {
            Ok(n) => s.maxconn = Some(n),
            Err(_) => ctx.lost(line, "not a connection count"),
        },
        _ => return false,
    }
    true
}

fn proxy(section: &Section, defaults: &Settings, ctx: &mut Ctx) -> Proxy {
    let mut p = Proxy {
        name: section.name.clone(),
        line: section.header.number,
        is_frontend: section.kind == SectionKind::Frontend,
        settings: defaults.clone(),
        ..Proxy::default()
    };
    if section.header.words.len() > 2 {
        // `listen NAME ADDR:PORT` (old syntax) binds there.
        for b in section.header.words[2..].iter().flat_map(|w| w.split(',')) {
            p.binds.push(bind_addr(b));
        }
    }
    let mut stick_table = false;
    let mut acls = Acls::default();
    for line in &section.lines {
        if settings_line(&mut p.settings, line, ctx) {
            continue;
        }
        let w: Vec<&str> = line.words.iter().map(String::as_str).collect();
        match w.as_slice() {
            ["bind", addrs, opts @ ..] => {
                for a in addrs.split(',') {
                    p.binds.push(bind_addr(a));
                }
                bind_options(&mut p, line, opts, ctx);
            }
            ["server", name, address, opts @ ..] => {
                let s = server(line, name, address, opts, ctx);
                p.servers.push(s);
            }
            ["default-server", ..] => {
                ctx.lost(line, "default-server is not translated: put the options on each server")
            }
            ["default_backend", b] => p.default_backend = Some(b.to_string()),
            ["acl", ..] => {
                let mut remarks = Vec::new();
                acls.declare(line, &mut remarks);
                ctx.remarks(line, remarks);
            }
            ["use_backend", ..] => {
                let mut remarks = Vec::new();
                match acls.use_backend(line, &mut remarks) {
                    Ok(u) => p.use_backends.push(u),
                    Err(why) => ctx.lost(line, why),
                }
                ctx.remarks(line, remarks);
            }
            ["stick-table", ..] => stick_table = true,
            ["stick", "on", "dst", ..] => p.stick_on_dst = true,
            ["redirect", "scheme", "https", ..] => {
                p.redirect_https = true;
                if w.len() > 3 && !(w.len() == 6 && w[3] == "if" && w[4..] == ["!{", "ssl_fc"]) {
                    ctx.note(line, "redirect_https redirects every plain-HTTP request (conditions other than !{ ssl_fc } are dropped)");
                }
            }
            ["cookie", name, rest @ ..] => {
                p.cookie = Some(name.to_string());
                if !rest.contains(&"insert") {
                    ctx.lost(line, "only cookie insertion (insert) is translated; the cookie is inserted by vipgate");
                }
            }
            ["http-request", "set-header" | "add-header", h, ..] if h.eq_ignore_ascii_case("X-Forwarded-Proto") => {
                ctx.note(line, "vipgate sets X-Forwarded-Proto itself (forwarded_proto = true)")
            }
            ["http-request", "del-header", h] if h.eq_ignore_ascii_case("X-Forwarded-Proto") => {
                ctx.note(line, "client-supplied X-Forwarded-* are replaced unless the peer is in trusted_forwarders")
            }
            ["http-request", "set-header", h, ..] if h.eq_ignore_ascii_case("X-Forwarded-Port") => {
                ctx.lost(line, "X-Forwarded-Port is not set by vipgate")
            }
            ["http-request", "deny", "if", "{", "path", rest @ ..] => {
                // `{ path -i -m beg /server-status }` / `{ path_beg ... }`
                let prefix = rest.iter().rev().find(|x| x.starts_with('/'));
                match (rest.contains(&"beg"), prefix) {
                    (true, Some(pfx)) => p.deny_prefixes.push(pfx.to_string()),
                    _ => ctx.lost(line, "only path-prefix deny rules are translated"),
                }
            }
            ["http-response", "set-header", h, v] => p.response_headers.push((h.to_string(), v.to_string())),
            ["stats", ..] | ["http-request", "use-service", "prometheus-exporter", ..] => {
                p.stats = true;
            }
            ["monitor-uri", ..] => ctx.lost(line, "use the admin endpoint's GET /healthz"),
            _ => ctx.lost(line, "not translated"),
        }
    }
    if p.stick_on_dst && !stick_table {
        ctx.lost_at(p.line, &format!("{} {}", section.header.words[0], p.name), "stick on dst without a stick-table");
    }
    p
}

fn bind_options(p: &mut Proxy, line: &Line, opts: &[&str], ctx: &mut Ctx) {
    let mut i = 0;
    while i < opts.len() {
        match (opts[i], opts.get(i + 1)) {
            ("ssl", _) => i += 1,
            ("crt", Some(c)) => {
                p.certificates.push(c.to_string());
                i += 2;
            }
            ("alpn", Some(a)) => {
                p.http2 = a.split(',').any(|x| x == "h2");
                i += 2;
            }
            ("transparent" | "freebind", _) => {
                ctx.note(line, "vipgate binds with IP_FREEBIND: the VIP need not be on the host yet");
                i += 1;
            }
            ("accept-proxy", _) => {
                p.accept_proxy = true;
                i += 1;
            }
            ("backlog" | "maxconn" | "process" | "thread" | "name" | "id" | "nice" | "tcp-ut", Some(_)) => {
                ctx.note(line, format!("bind option {} is not needed by vipgate", opts[i]));
                i += 2;
            }
            (other, _) => {
                ctx.lost(line, format!("bind option \"{other}\" is not translated"));
                i += 1;
            }
        }
    }
}

fn server(line: &Line, name: &str, address: &str, opts: &[&str], ctx: &mut Ctx) -> ServerLine {
    let mut s = ServerLine { line: line.number, name: name.into(), address: address.into(), ..ServerLine::default() };
    let mut i = 0;
    let num = |v: Option<&&str>| v.and_then(|v| v.parse::<u32>().ok());
    while i < opts.len() {
        let next = opts.get(i + 1);
        let mut step = 2;
        match opts[i] {
            "check" => {
                s.check = true;
                step = 1;
            }
            "backup" => {
                s.backup = true;
                step = 1;
            }
            "port" => s.port = next.and_then(|p| p.parse().ok()),
            "addr" => s.addr = next.map(|a| a.to_string()),
            "inter" => s.inter = next.and_then(|v| duration(v)),
            "fastinter" => s.fastinter = next.and_then(|v| duration(v)),
            "downinter" => s.downinter = next.and_then(|v| duration(v)),
            "rise" => s.rise = num(next),
            "fall" => s.fall = num(next),
            "weight" => s.weight = num(next).map(|w| w.min(256)),
            "cookie" => s.cookie = next.map(|c| c.to_string()),
            "on-marked-down" if next == Some(&"shutdown-sessions") => s.shutdown_sessions = true,
            "send-proxy" => {
                s.send_proxy = Some("v1");
                step = 1;
            }
            "send-proxy-v2" => {
                s.send_proxy = Some("v2");
                step = 1;
            }
            "ssl" => {
                s.ssl = true;
                step = 1;
            }
            "verify" => s.verify_none = next == Some(&"none"),
            "ca-file" => s.ca_file = next.map(|c| c.to_string()),
            "check-ssl" => {
                ctx.lost(line, "check-ssl: write the check with kind = \"https\" by hand");
                step = 1;
            }
            "disabled" => {
                s.disabled = true;
                step = 1;
            }
            "enabled" => step = 1,
            "maxconn" => match next.and_then(|v| v.parse::<u32>().ok()) {
                Some(n) => s.maxconn = Some(n),
                None => ctx.lost(line, "server maxconn without a count"),
            },
            "minconn" | "maxqueue" | "slowstart" => {
                ctx.lost(line, format!("server option {} has no vipgate equivalent", opts[i]))
            }
            "id" | "init-addr" | "resolvers" | "agent-check" | "agent-port" | "agent-inter" | "observe"
            | "error-limit" | "on-error" | "verifyhost" | "sni" | "alpn" | "proto" | "check-sni" | "crl-file" => {
                ctx.lost(line, format!("server option {} is not translated", opts[i]))
            }
            other => {
                ctx.lost(line, format!("server option \"{other}\" is not translated"));
                step = 1;
            }
        }
        i += step;
    }
    s
}

/// HAProxy durations: a bare number is milliseconds; us/ms/s/m/h/d units.
fn duration(v: &str) -> Option<String> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (n, unit) = v.split_at(split);
    let n: u64 = n.parse().ok()?;
    match unit {
        "" if n == 0 => Some("0".into()),
        "" | "ms" => Some(format!("{n}ms")),
        "us" => Some(format!("{}ms", n.div_ceil(1000))),
        "s" | "m" | "h" | "d" => Some(if n == 0 { "0".into() } else { format!("{n}{unit}") }),
        _ => None,
    }
}

/// `*:80`, `:80`, `0.0.0.0:80`, `[::]:80`, `IP:PORT`: vipgate's bind syntax is the same,
/// except `ipv4@`/`ipv6@` prefixes.
fn bind_addr(a: &str) -> String {
    a.trim_start_matches("ipv4@").trim_start_matches("ipv6@").to_string()
}

fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn key(name: &str) -> String {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        name.to_string()
    } else {
        q(name)
    }
}

fn emit(proxies: &[Proxy], workers: Option<u32>, admin: &Admin, ctx: &mut Ctx) -> String {
    let mut out = String::from("# Translated from haproxy.cfg by `vipgate import-haproxy`.\n");
    if let Some(n) = workers {
        let _ = writeln!(out, "\n[global]\nworkers = {n}");
    }
    if admin.bind.is_some() || admin.socket.is_some() {
        out.push_str("\n[admin]\n");
        if let Some(b) = &admin.bind {
            let _ = writeln!(out, "bind = {}", q(b));
        }
        if let Some(s) = &admin.socket {
            let _ = writeln!(out, "socket = {}", q(s));
        }
        if let Some(m) = &admin.socket_mode {
            let _ = writeln!(out, "socket_mode = {}", q(m));
        }
    }
    let frontends: Vec<&Proxy> = proxies.iter().filter(|p| p.is_frontend).collect();
    let routed = |name: &str| proxies.iter().flat_map(|p| p.use_backends.iter()).any(|u| u.backend == name);
    for p in proxies.iter().filter(|p| !p.is_frontend) {
        // A listen carries its own binds; a backend takes its frontends'.
        let fronts: Vec<&Proxy> =
            frontends.iter().copied().filter(|f| f.default_backend.as_deref() == Some(p.name.as_str())).collect();
        if p.binds.is_empty() && fronts.is_empty() && routed(&p.name) {
            // Its servers join the services whose routes name it (a pool each).
            continue;
        }
        if p.binds.is_empty() && fronts.is_empty() {
            ctx.lost_at(
                p.line,
                &format!("backend {}", p.name),
                "no frontend sends traffic to it (default_backend): skipped",
            );
            continue;
        }
        service(&mut out, p, &fronts, proxies, ctx);
    }
    for f in &frontends {
        if f.default_backend.is_none() {
            if !f.use_backends.is_empty() {
                ctx.lost_at(
                    f.line,
                    &format!("frontend {}", f.name),
                    "use_backend without a default_backend is not translated: skipped",
                );
            } else if f.settings.mode.as_deref() == Some("http") && f.redirect_https {
                service(&mut out, f, &[], proxies, ctx);
            } else {
                ctx.lost_at(f.line, &format!("frontend {}", f.name), "no default_backend: skipped");
            }
        } else if !proxies.iter().any(|p| !p.is_frontend && Some(p.name.as_str()) == f.default_backend.as_deref()) {
            ctx.lost_at(f.line, &format!("frontend {}", f.name), "its default_backend does not exist: skipped");
        }
    }
    out
}

fn service(out: &mut String, p: &Proxy, fronts: &[&Proxy], all: &[Proxy], ctx: &mut Ctx) {
    // Client side from the frontend (the first, if several), server side from p.
    let client = fronts.first().copied().unwrap_or(p);
    // Both sections' rules, each once (a listen is both).
    let sides: Vec<&Proxy> = if std::ptr::eq(client, p) { vec![p] } else { vec![client, p] };
    let mode = p.settings.mode.clone().or_else(|| client.settings.mode.clone()).unwrap_or_else(|| "tcp".into());
    let http = mode == "http";
    let binds: Vec<String> = p.binds.iter().chain(fronts.iter().flat_map(|f| f.binds.iter())).cloned().collect();
    let _ = writeln!(out, "\n[services.{}]", key(&p.name));
    let list: Vec<String> = binds.iter().map(|b| q(b)).collect();
    let _ = writeln!(out, "bind = [{}]", list.join(", "));
    let _ = writeln!(out, "mode = {}", q(&mode));
    let s = &p.settings;
    let c = &client.settings;
    let mut balance = s.balance.clone().unwrap_or_else(|| "roundrobin".into());
    if p.stick_on_dst {
        // TripleO's Galera: every connection to the server that took the first one, no
        // fail-back. vipgate: one writer at a time ("first"), failback never.
        balance = "first".into();
    }
    if !p.servers.is_empty() {
        let _ = writeln!(out, "balance = {}", q(&balance));
    }
    if p.stick_on_dst {
        let _ = writeln!(out, "failback = \"never\"");
    }
    for (k, v) in [
        ("connect_timeout", s.connect.as_ref()),
        ("client_timeout", c.client.as_ref()),
        ("server_timeout", s.server.as_ref()),
    ] {
        if let Some(v) = v {
            let _ = writeln!(out, "{k} = {}", q(v));
        }
    }
    if let Some(r) = s.retries {
        let _ = writeln!(out, "retries = {r}");
    }
    if let Some(n) = c.maxconn.filter(|&n| n > 0) {
        let _ = writeln!(out, "maxconn = {n}");
    }
    if let Some(t) = s.queue.as_ref().filter(|t| *t != "0") {
        let _ = writeln!(out, "queue_timeout = {}", q(t));
    }
    if s.all_backups {
        let _ = writeln!(out, "all_backups = true");
    }
    if p.servers.iter().any(|s| s.shutdown_sessions) {
        let _ = writeln!(out, "on_down = \"shutdown-sessions\"");
        if !p.servers.iter().all(|s| s.shutdown_sessions) {
            ctx.lost_at(
                p.line,
                &p.name,
                "on-marked-down shutdown-sessions on some servers only: vipgate applies it to the whole service",
            );
        }
    }
    let proxies: Vec<Option<&str>> = p.servers.iter().map(|s| s.send_proxy).collect();
    if let Some(Some(v)) = proxies.first() {
        let _ = writeln!(out, "send_proxy = {}", q(v));
        if proxies.iter().any(|x| x != &Some(*v)) {
            ctx.lost_at(
                p.line,
                &p.name,
                "send-proxy on some servers only: vipgate sends it to every server of the service",
            );
        }
    } else if proxies.iter().any(Option::is_some) {
        ctx.lost_at(p.line, &p.name, "send-proxy on some servers only: not translated");
    }
    if sides.iter().any(|x| x.accept_proxy) {
        let _ = writeln!(out, "accept_proxy = true");
    }
    if http {
        if let Some(t) = c.http_request.as_ref() {
            let _ = writeln!(out, "header_timeout = {}", q(t));
        }
        if let Some(t) = s.tunnel.as_ref().or(c.tunnel.as_ref()) {
            let _ = writeln!(out, "tunnel_timeout = {}", q(t));
        }
        if client.redirect_https {
            let _ = writeln!(out, "redirect_https = true");
        }
        if let Some(cookie) = &p.cookie {
            let _ = writeln!(out, "cookie = {}", q(cookie));
        }
        let certs: Vec<&String> = sides.iter().flat_map(|x| x.certificates.iter()).collect();
        if !certs.is_empty() {
            // HAProxy's PEM holds certificate, chain and key together.
            let items: Vec<String> = certs.iter().map(|c| format!("{{ cert = {}, key = {} }}", q(c), q(c))).collect();
            let _ = writeln!(out, "certificates = [{}]", items.join(", "));
            if sides.iter().any(|x| x.http2) {
                let _ = writeln!(out, "http2 = true");
            }
        }
        let denies: Vec<&String> = sides.iter().flat_map(|x| x.deny_prefixes.iter()).collect();
        if !denies.is_empty() {
            let items: Vec<String> = denies.iter().map(|d| format!("{{ path_prefix = {} }}", q(d))).collect();
            let _ = writeln!(out, "deny = [{}]", items.join(", "));
        }
        if p.servers.iter().any(|s| s.ssl) {
            let _ = writeln!(out, "tls = true");
            if p.servers.iter().any(|s| s.verify_none) {
                let _ = writeln!(out, "tls_verify = false");
            }
            if let Some(ca) = p.servers.iter().find_map(|s| s.ca_file.clone()) {
                let _ = writeln!(out, "tls_ca_file = {}", q(&ca));
            }
        }
        if c.forwardfor == Some(false) {
            let _ = writeln!(out, "forwarded_for = false");
        }
        let headers: Vec<&(String, String)> = sides.iter().flat_map(|x| x.response_headers.iter()).collect();
        if !headers.is_empty() {
            let _ = writeln!(out, "[services.{}.response]", key(&p.name));
            let items: Vec<String> = headers.iter().map(|(h, v)| format!("{} = {}", key(h), q(v))).collect();
            let _ = writeln!(out, "set_headers = {{ {} }}", items.join(", "));
        }
    } else {
        if p.servers.iter().any(|s| s.ssl) {
            ctx.lost_at(p.line, &p.name, "TLS to servers in tcp mode is not supported by vipgate");
        }
        if client.redirect_https || p.cookie.is_some() || !client.certificates.is_empty() {
            ctx.lost_at(p.line, &p.name, "http options in a tcp-mode proxy are ignored, as HAProxy ignores them");
        }
    }
    let table = format!("services.{}", key(&p.name));
    check(out, &format!("{table}.check"), p, http, ctx);
    let mut names: Vec<String> = Vec::new();
    servers(out, &table, p, None, &mut names, ctx);
    routes(out, &table, p, &sides, all, http, &mut names, ctx);
}

/// The `use_backend` rules of the client side: each routed backend's servers join this
/// service as a pool named after the backend, with its own check, and the rules become
/// routes in their order.
#[allow(clippy::too_many_arguments)]
fn routes(
    out: &mut String,
    table: &str,
    p: &Proxy,
    sides: &[&Proxy],
    all: &[Proxy],
    http: bool,
    names: &mut Vec<String>,
    ctx: &mut Ctx,
) {
    let rules: Vec<&UseBackend> = sides.iter().flat_map(|x| x.use_backends.iter()).collect();
    if rules.is_empty() {
        return;
    }
    if !http {
        for r in &rules {
            ctx.lost_at(r.line, &format!("use_backend {}", r.backend), "routes need mode http: not translated");
        }
        return;
    }
    let mut pools: Vec<&Proxy> = Vec::new();
    let mut kept: Vec<&UseBackend> = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        if r.backend == p.name {
            // Routed to the default backend itself: what no route does anyway, unless a
            // later rule would then win for the same requests.
            if rules[i + 1..].iter().any(|later| later.backend != p.name) {
                ctx.lost_at(
                    r.line,
                    &format!("use_backend {}", r.backend),
                    "a route to the default backend ahead of other rules is not translated: vipgate routes only to pools",
                );
            }
            continue;
        }
        match all.iter().find(|b| !b.is_frontend && b.name == r.backend) {
            Some(b) if b.servers.is_empty() => ctx.lost_at(
                r.line,
                &format!("use_backend {}", r.backend),
                "that backend has no servers: not translated",
            ),
            Some(b) => {
                if !pools.iter().any(|x| std::ptr::eq(*x, b)) {
                    pools.push(b);
                }
                kept.push(r);
            }
            None => ctx.lost_at(r.line, &format!("use_backend {}", r.backend), "no such backend: not translated"),
        }
    }
    for b in &pools {
        differences(p, b, ctx);
        let pool_table = format!("{table}.pools.{}", key(&b.name));
        if !b.servers.iter().any(|s| s.check) && p.servers.iter().any(|s| s.check) {
            ctx.lost_at(
                b.line,
                &format!("backend {}", b.name),
                format!("its servers have no check: vipgate probes them with backend {}'s", p.name),
            );
        }
        check(out, &format!("{pool_table}.check"), b, http, ctx);
        servers(out, table, b, Some(&b.name), names, ctx);
    }
    for r in kept {
        for spec in &r.routes {
            let _ = writeln!(out, "[[{table}.routes]]");
            if let Some(h) = &spec.host {
                let _ = writeln!(out, "host = {}", q(h));
            }
            if let Some(pfx) = &spec.path_prefix {
                let _ = writeln!(out, "path_prefix = {}", q(pfx));
            }
            let _ = writeln!(out, "pool = {}", q(&r.backend));
        }
    }
}

/// Server-side settings of a routed backend that the service's (the default backend's)
/// replace, each reported.
fn differences(main: &Proxy, b: &Proxy, ctx: &mut Ctx) {
    let (m, o) = (&main.settings, &b.settings);
    let mut diff: Vec<&str> = Vec::new();
    if m.balance.as_deref().unwrap_or("roundrobin") != o.balance.as_deref().unwrap_or("roundrobin") {
        diff.push("balance");
    }
    if m.connect != o.connect {
        diff.push("timeout connect");
    }
    if m.server != o.server {
        diff.push("timeout server");
    }
    if m.retries != o.retries {
        diff.push("retries");
    }
    if main.cookie != b.cookie {
        diff.push("cookie");
    }
    if main.servers.iter().any(|s| s.ssl) != b.servers.iter().any(|s| s.ssl) {
        diff.push("ssl to servers");
    }
    if main.servers.first().map(|s| s.send_proxy) != b.servers.first().map(|s| s.send_proxy) {
        diff.push("send-proxy");
    }
    if !diff.is_empty() {
        ctx.lost_at(
            b.line,
            &format!("backend {}", b.name),
            format!(
                "routed from backend {}'s service: its {} differ, and vipgate applies {}'s to every pool",
                main.name,
                diff.join(", "),
                main.name
            ),
        );
    }
}

fn check(out: &mut String, header: &str, p: &Proxy, http: bool, ctx: &mut Ctx) {
    let checked: Vec<&ServerLine> = p.servers.iter().filter(|s| s.check).collect();
    let Some(first) = checked.first() else { return };
    let s = &p.settings;
    if checked.len() != p.servers.len() {
        for srv in p.servers.iter().filter(|s| !s.check) {
            ctx.lost_at(
                srv.line,
                &format!("server {}", srv.name),
                "no check on this server: vipgate checks every server of a service that has a check",
            );
        }
    }
    let _ = writeln!(out, "[{header}]");
    let mut http_check_used = false;
    if let Some(user) = &s.mysql_check {
        let _ = writeln!(out, "kind = \"mysql\"");
        if let Some(u) = user {
            let _ = writeln!(out, "user = {}", q(u));
        }
    } else if let Some((method, uri)) = &s.httpchk {
        http_check_used = true;
        let (mut method, mut uri, mut headers) = (method.clone(), uri.clone(), Vec::new());
        if let Some((m, u, h)) = &s.check_send {
            if let Some(m) = m {
                method = m.clone();
            }
            if let Some(u) = u {
                uri = u.clone();
            }
            headers = h.clone();
        }
        // An HTTP probe on a tcp-mode service is the Galera clustercheck pattern.
        let kind = if http { "http" } else { "clustercheck" };
        let _ = writeln!(out, "kind = {}", q(kind));
        let _ = writeln!(out, "method = {}", q(&method.to_ascii_uppercase()));
        let _ = writeln!(out, "path = {}", q(&uri));
        if !headers.is_empty() {
            let items: Vec<String> = headers.iter().map(|(h, v)| format!("{} = {}", key(h), q(v))).collect();
            let _ = writeln!(out, "headers = {{ {} }}", items.join(", "));
        }
        if let Some(e) = &s.check_expect {
            let list: Vec<String> = e.iter().map(u16::to_string).collect();
            let _ = writeln!(out, "expect = [{}]", list.join(", "));
        }
    } else {
        let _ = writeln!(out, "kind = \"tcp\"");
        if s.tcp_check {
            ctx.lost_at(p.line, &p.name, "tcp-check rules are not translated: a connect check is used");
        }
    }
    if !http_check_used {
        for n in &s.http_check_lines {
            ctx.lost_at(
                *n,
                "http-check",
                "HAProxy ignores http-check rules without `option httpchk` and runs a plain connect check; so does vipgate",
            );
        }
    }
    // Per-server timing in HAProxy, per service in vipgate: the first checked server's.
    for (k, v) in [("interval", &first.inter), ("fastinter", &first.fastinter), ("downinter", &first.downinter)] {
        if let Some(v) = v {
            let _ = writeln!(out, "{k} = {}", q(v));
        }
    }
    if let Some(t) = &s.check_timeout {
        let _ = writeln!(out, "timeout = {}", q(t));
    }
    if let Some(r) = first.rise {
        let _ = writeln!(out, "rise = {r}");
    }
    if let Some(f) = first.fall {
        let _ = writeln!(out, "fall = {f}");
    }
    let ports: Vec<Option<u16>> = checked.iter().map(|s| s.port).collect();
    if let Some(Some(port)) = ports.first() {
        if ports.iter().all(|x| x == &Some(*port)) {
            let _ = writeln!(out, "port = {port}");
        }
    }
    for srv in &checked[1..] {
        if srv.inter != first.inter || srv.rise != first.rise || srv.fall != first.fall {
            ctx.lost_at(
                srv.line,
                &format!("server {}", srv.name),
                format!("check timing differs from server {}'s: vipgate uses one per service", first.name),
            );
        }
    }
}

/// The servers of `p`, tagged `pool` when they join another backend's service; a name
/// already in `names` (the service's servers so far) is prefixed with the backend's.
fn servers(out: &mut String, table: &str, p: &Proxy, pool: Option<&str>, names: &mut Vec<String>, ctx: &mut Ctx) {
    let checked_ports: Vec<Option<u16>> = p.servers.iter().filter(|s| s.check).map(|s| s.port).collect();
    let uniform_port = checked_ports.first().is_some_and(|f| f.is_some() && checked_ports.iter().all(|x| x == f));
    // vipgate needs one active server; TripleO marks every Galera server backup and
    // relies on `stick on dst`: the first one becomes the active one.
    let all_backup = !p.servers.is_empty() && p.servers.iter().all(|s| s.backup);
    if all_backup {
        ctx.lost_at(
            p.line,
            &p.name,
            format!(
                "every server is backup: server {} becomes the active one (HAProxy would pick it first too)",
                p.servers[0].name
            ),
        );
    }
    for (i, s) in p.servers.iter().enumerate() {
        let _ = writeln!(out, "[[{table}.servers]]");
        let mut name = s.name.clone();
        if names.contains(&name) {
            name = format!("{}-{}", p.name, s.name);
            ctx.lost_at(
                s.line,
                &format!("server {}", s.name),
                format!("renamed {name}: another server of the service has its name (admin socket and API use the new name)"),
            );
        }
        names.push(name.clone());
        let _ = writeln!(out, "name = {}", q(&name));
        let addr = if s.address.starts_with(':') || s.address.rsplit_once(':').is_none() {
            ctx.lost_at(s.line, &format!("server {}", s.name), "an address without a port is not translated");
            s.address.clone()
        } else {
            s.address.clone()
        };
        let _ = writeln!(out, "address = {}", q(&addr));
        if let Some(w) = s.weight {
            let _ = writeln!(out, "weight = {w}");
        }
        if s.backup && !(all_backup && i == 0) {
            let _ = writeln!(out, "backup = true");
        }
        if s.check && !uniform_port {
            if let Some(port) = s.port {
                let _ = writeln!(out, "check_port = {port}");
            }
        }
        if let Some(a) = &s.addr {
            let _ = writeln!(out, "check_address = {}", q(a));
        }
        if let Some(c) = &s.cookie {
            let _ = writeln!(out, "cookie = {}", q(c));
        }
        if let Some(pool) = pool {
            let _ = writeln!(out, "pool = {}", q(pool));
        }
        if s.disabled {
            let _ = writeln!(out, "disabled = true");
        }
        if let Some(n) = s.maxconn.filter(|&n| n > 0) {
            let _ = writeln!(out, "maxconn = {n}");
        }
    }
}

#[cfg(test)]
pub(super) mod tests_support {
    pub fn duration(v: &str) -> Option<String> {
        super::duration(v)
    }
}
