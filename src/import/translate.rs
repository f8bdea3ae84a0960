//! From parsed haproxy.cfg sections to the directive model: proxies, their settings and
//! server lines, and a remark for every directive not carried over. `emit.rs` writes the
//! model as TOML.
//!
//! A `listen` becomes a service; a `backend` becomes a service whose binds come from the
//! frontends whose `default_backend` names it (client-side settings from the frontend,
//! server-side ones from the backend, as HAProxy splits them); a frontend that only
//! redirects becomes a service without servers. Each `defaults` section replaces the one
//! before, as in HAProxy, and applies to the proxies after it.

use super::emit::emit;
use super::parse::{Line, Section, SectionKind};
use super::routes::{Acls, Remark, UseBackend};
use super::{Imported, Report};

/// `http-check send meth M uri U hdr N V...`: method, URI, headers.
pub(super) type CheckSend = (Option<String>, Option<String>, Vec<(String, String)>);

/// What a `defaults` section carries, and each proxy starts from.
#[derive(Debug, Clone, Default)]
pub(super) struct Settings {
    pub(super) mode: Option<String>,
    pub(super) balance: Option<String>,
    pub(super) retries: Option<u32>,
    pub(super) connect: Option<String>,
    pub(super) client: Option<String>,
    pub(super) server: Option<String>,
    pub(super) tunnel: Option<String>,
    pub(super) http_request: Option<String>,
    pub(super) check_timeout: Option<String>,
    /// `option httpchk [METHOD] [URI]`: (method, uri).
    pub(super) httpchk: Option<(String, String)>,
    /// `http-check send` / `expect` lines, kept to honour or report them.
    pub(super) check_send: Option<CheckSend>,
    pub(super) check_expect: Option<Vec<u16>>,
    pub(super) http_check_lines: Vec<usize>,
    /// `option mysql-check [user U]`.
    pub(super) mysql_check: Option<Option<String>>,
    pub(super) tcp_check: bool,
    pub(super) forwardfor: Option<bool>,
    pub(super) all_backups: bool,
    /// `maxconn` in defaults / frontend / listen: the service's.
    pub(super) maxconn: Option<u32>,
    pub(super) queue: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub(super) struct ServerLine {
    pub(super) line: usize,
    pub(super) name: String,
    pub(super) address: String,
    pub(super) check: bool,
    pub(super) port: Option<u16>,
    pub(super) addr: Option<String>,
    pub(super) inter: Option<String>,
    pub(super) fastinter: Option<String>,
    pub(super) downinter: Option<String>,
    pub(super) rise: Option<u32>,
    pub(super) fall: Option<u32>,
    pub(super) weight: Option<u32>,
    pub(super) backup: bool,
    pub(super) shutdown_sessions: bool,
    pub(super) send_proxy: Option<&'static str>,
    pub(super) cookie: Option<String>,
    pub(super) ssl: bool,
    pub(super) verify_none: bool,
    pub(super) ca_file: Option<String>,
    pub(super) disabled: bool,
    pub(super) maxconn: Option<u32>,
}

#[derive(Debug, Clone, Default)]
pub(super) struct Proxy {
    pub(super) name: String,
    pub(super) line: usize,
    pub(super) is_frontend: bool,
    pub(super) settings: Settings,
    pub(super) binds: Vec<String>,
    pub(super) certificates: Vec<String>,
    pub(super) http2: bool,
    pub(super) accept_proxy: bool,
    pub(super) servers: Vec<ServerLine>,
    pub(super) default_backend: Option<String>,
    /// `use_backend ... if ...` rules that became routes, in order.
    pub(super) use_backends: Vec<UseBackend>,
    pub(super) stick_on_dst: bool,
    pub(super) redirect_https: bool,
    pub(super) cookie: Option<String>,
    pub(super) response_headers: Vec<(String, String)>,
    pub(super) deny_prefixes: Vec<String>,
    pub(super) stats: bool,
}

pub(super) struct Ctx {
    reports: Vec<Report>,
}

impl Ctx {
    fn lost(&mut self, line: &Line, why: impl Into<String>) {
        self.reports.push(Report { line: line.number, directive: line.text(), why: why.into(), handled: false });
    }

    fn note(&mut self, line: &Line, why: impl Into<String>) {
        self.reports.push(Report { line: line.number, directive: line.text(), why: why.into(), handled: true });
    }

    pub(super) fn lost_at(&mut self, number: usize, directive: &str, why: impl Into<String>) {
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
pub(super) struct Admin {
    pub(super) bind: Option<String>,
    pub(super) socket: Option<String>,
    pub(super) socket_mode: Option<String>,
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

#[cfg(test)]
pub(super) mod tests_support {
    pub fn duration(v: &str) -> Option<String> {
        super::duration(v)
    }
}
