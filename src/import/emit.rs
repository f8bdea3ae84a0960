//! From the directive model ([`Proxy`] and its [`ServerLine`]s) to vipgate TOML.
//!
//! The document is built as a `toml::Table` and serialized by toml, so quoting and
//! escaping are toml's. What cannot be said in vipgate's terms while emitting (per-server
//! options that vipgate applies per service, skipped proxies) is reported through `ctx`.

use toml::{Table, Value};

use super::routes::UseBackend;
use super::translate::{Admin, Ctx, Proxy, ServerLine};

const HEADER: &str = "# Translated from haproxy.cfg by `vipgate import-haproxy`.\n";

fn string(s: &str) -> Value {
    Value::String(s.to_string())
}

fn integer(n: impl Into<i64>) -> Value {
    Value::Integer(n.into())
}

/// `{ NAME = VALUE, ... }` of header names and values.
fn header_table<'a>(headers: impl IntoIterator<Item = &'a (String, String)>) -> Value {
    Value::Table(headers.into_iter().map(|(h, v)| (h.clone(), string(v))).collect())
}

pub(super) fn emit(proxies: &[Proxy], workers: Option<u32>, admin: &Admin, ctx: &mut Ctx) -> String {
    let mut root = Table::new();
    if let Some(n) = workers {
        let mut global = Table::new();
        global.insert("workers".into(), integer(n));
        root.insert("global".into(), Value::Table(global));
    }
    if admin.bind.is_some() || admin.socket.is_some() {
        let mut t = Table::new();
        for (k, v) in [("bind", &admin.bind), ("socket", &admin.socket), ("socket_mode", &admin.socket_mode)] {
            if let Some(v) = v {
                t.insert(k.into(), string(v));
            }
        }
        root.insert("admin".into(), Value::Table(t));
    }
    let mut services = Table::new();
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
        add_service(&mut services, p, &fronts, proxies, ctx);
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
                add_service(&mut services, f, &[], proxies, ctx);
            } else {
                ctx.lost_at(f.line, &format!("frontend {}", f.name), "no default_backend: skipped");
            }
        } else if !proxies.iter().any(|p| !p.is_frontend && Some(p.name.as_str()) == f.default_backend.as_deref()) {
            ctx.lost_at(f.line, &format!("frontend {}", f.name), "its default_backend does not exist: skipped");
        }
    }
    if !services.is_empty() {
        root.insert("services".into(), Value::Table(services));
    }
    format!("{HEADER}\n{root}")
}

/// A table holds one service per name, where the text written line by line would have
/// held two (and failed to load): the second is reported, not lost silently.
fn add_service(services: &mut Table, p: &Proxy, fronts: &[&Proxy], all: &[Proxy], ctx: &mut Ctx) {
    if services.contains_key(&p.name) {
        ctx.lost_at(p.line, &p.name, "another proxy of this name is already a service: skipped");
        return;
    }
    let t = service(p, fronts, all, ctx);
    services.insert(p.name.clone(), Value::Table(t));
}

fn service(p: &Proxy, fronts: &[&Proxy], all: &[Proxy], ctx: &mut Ctx) -> Table {
    // Client side from the frontend (the first, if several), server side from p.
    let client = fronts.first().copied().unwrap_or(p);
    // Both sections' rules, each once (a listen is both).
    let sides: Vec<&Proxy> = if std::ptr::eq(client, p) { vec![p] } else { vec![client, p] };
    let mode = p.settings.mode.clone().or_else(|| client.settings.mode.clone()).unwrap_or_else(|| "tcp".into());
    let http = mode == "http";
    let mut t = Table::new();
    let binds: Vec<Value> =
        p.binds.iter().chain(fronts.iter().flat_map(|f| f.binds.iter())).map(|b| string(b)).collect();
    t.insert("bind".into(), Value::Array(binds));
    t.insert("mode".into(), string(&mode));
    let s = &p.settings;
    let c = &client.settings;
    let mut balance = s.balance.clone().unwrap_or_else(|| "roundrobin".into());
    if p.stick_on_dst {
        // TripleO's Galera: every connection to the server that took the first one, no
        // fail-back. vipgate: one writer at a time ("first"), failback never.
        balance = "first".into();
    }
    if !p.servers.is_empty() {
        t.insert("balance".into(), string(&balance));
    }
    if p.stick_on_dst {
        t.insert("failback".into(), string("never"));
    }
    for (k, v) in [
        ("connect_timeout", s.connect.as_ref()),
        ("client_timeout", c.client.as_ref()),
        ("server_timeout", s.server.as_ref()),
    ] {
        if let Some(v) = v {
            t.insert(k.into(), string(v));
        }
    }
    if let Some(r) = s.retries {
        t.insert("retries".into(), integer(r));
    }
    if let Some(n) = c.maxconn.filter(|&n| n > 0) {
        t.insert("maxconn".into(), integer(n));
    }
    if let Some(q) = s.queue.as_ref().filter(|q| *q != "0") {
        t.insert("queue_timeout".into(), string(q));
    }
    if s.all_backups {
        t.insert("all_backups".into(), Value::Boolean(true));
    }
    if p.servers.iter().any(|s| s.shutdown_sessions) {
        t.insert("on_down".into(), string("shutdown-sessions"));
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
        t.insert("send_proxy".into(), string(v));
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
        t.insert("accept_proxy".into(), Value::Boolean(true));
    }
    if http {
        http_keys(&mut t, p, client, &sides);
    } else {
        if p.servers.iter().any(|s| s.ssl) {
            ctx.lost_at(p.line, &p.name, "TLS to servers in tcp mode is not supported by vipgate");
        }
        if client.redirect_https || p.cookie.is_some() || !client.certificates.is_empty() {
            ctx.lost_at(p.line, &p.name, "http options in a tcp-mode proxy are ignored, as HAProxy ignores them");
        }
    }
    if let Some(check) = check(p, http, ctx) {
        t.insert("check".into(), Value::Table(check));
    }
    let mut servers = Vec::new();
    let mut names: Vec<String> = Vec::new();
    add_servers(&mut servers, p, None, &mut names, ctx);
    let (pools, routes) = self::routes(p, &sides, all, http, &mut servers, &mut names, ctx);
    if !servers.is_empty() {
        t.insert("servers".into(), Value::Array(servers));
    }
    if !pools.is_empty() {
        t.insert("pools".into(), Value::Table(pools));
    }
    if !routes.is_empty() {
        t.insert("routes".into(), Value::Array(routes));
    }
    t
}

/// The keys of a `mode = "http"` service.
fn http_keys(t: &mut Table, p: &Proxy, client: &Proxy, sides: &[&Proxy]) {
    let (s, c) = (&p.settings, &client.settings);
    if let Some(v) = c.http_request.as_ref() {
        t.insert("header_timeout".into(), string(v));
    }
    if let Some(v) = s.tunnel.as_ref().or(c.tunnel.as_ref()) {
        t.insert("tunnel_timeout".into(), string(v));
    }
    if client.redirect_https {
        t.insert("redirect_https".into(), Value::Boolean(true));
    }
    if let Some(cookie) = &p.cookie {
        t.insert("cookie".into(), string(cookie));
    }
    let certs: Vec<&String> = sides.iter().flat_map(|x| x.certificates.iter()).collect();
    if !certs.is_empty() {
        // HAProxy's PEM holds certificate, chain and key together.
        let items = certs
            .iter()
            .map(|c| Value::Table(Table::from_iter([("cert".to_string(), string(c)), ("key".to_string(), string(c))])))
            .collect();
        t.insert("certificates".into(), Value::Array(items));
        if sides.iter().any(|x| x.http2) {
            t.insert("http2".into(), Value::Boolean(true));
        }
    }
    let denies: Vec<&String> = sides.iter().flat_map(|x| x.deny_prefixes.iter()).collect();
    if !denies.is_empty() {
        let items =
            denies.iter().map(|d| Value::Table(Table::from_iter([("path_prefix".to_string(), string(d))]))).collect();
        t.insert("deny".into(), Value::Array(items));
    }
    if p.servers.iter().any(|s| s.ssl) {
        t.insert("tls".into(), Value::Boolean(true));
        if p.servers.iter().any(|s| s.verify_none) {
            t.insert("tls_verify".into(), Value::Boolean(false));
        }
        if let Some(ca) = p.servers.iter().find_map(|s| s.ca_file.as_ref()) {
            t.insert("tls_ca_file".into(), string(ca));
        }
    }
    if c.forwardfor == Some(false) {
        t.insert("forwarded_for".into(), Value::Boolean(false));
    }
    let headers: Vec<&(String, String)> = sides.iter().flat_map(|x| x.response_headers.iter()).collect();
    if !headers.is_empty() {
        let response = Table::from_iter([("set_headers".to_string(), header_table(headers))]);
        t.insert("response".into(), Value::Table(response));
    }
}

/// The `use_backend` rules of the client side: each routed backend's servers join this
/// service (appended to `servers`) as a pool named after the backend, with its own check,
/// and the rules become routes in their order. Returns the pools and the routes.
fn routes(
    p: &Proxy,
    sides: &[&Proxy],
    all: &[Proxy],
    http: bool,
    servers: &mut Vec<Value>,
    names: &mut Vec<String>,
    ctx: &mut Ctx,
) -> (Table, Vec<Value>) {
    let (mut pool_tables, mut route_tables) = (Table::new(), Vec::new());
    let rules: Vec<&UseBackend> = sides.iter().flat_map(|x| x.use_backends.iter()).collect();
    if rules.is_empty() {
        return (pool_tables, route_tables);
    }
    if !http {
        for r in &rules {
            ctx.lost_at(r.line, &format!("use_backend {}", r.backend), "routes need mode http: not translated");
        }
        return (pool_tables, route_tables);
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
        if !b.servers.iter().any(|s| s.check) && p.servers.iter().any(|s| s.check) {
            ctx.lost_at(
                b.line,
                &format!("backend {}", b.name),
                format!("its servers have no check: vipgate probes them with backend {}'s", p.name),
            );
        }
        if let Some(check) = check(b, http, ctx) {
            let pool = Table::from_iter([("check".to_string(), Value::Table(check))]);
            pool_tables.insert(b.name.clone(), Value::Table(pool));
        }
        add_servers(servers, b, Some(&b.name), names, ctx);
    }
    for r in kept {
        for spec in &r.routes {
            let mut route = Table::new();
            if let Some(h) = &spec.host {
                route.insert("host".into(), string(h));
            }
            if let Some(pfx) = &spec.path_prefix {
                route.insert("path_prefix".into(), string(pfx));
            }
            route.insert("pool".into(), string(&r.backend));
            route_tables.push(Value::Table(route));
        }
    }
    (pool_tables, route_tables)
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

/// The check table of `p`'s servers; None if none of them is checked.
fn check(p: &Proxy, http: bool, ctx: &mut Ctx) -> Option<Table> {
    let checked: Vec<&ServerLine> = p.servers.iter().filter(|s| s.check).collect();
    let first = checked.first()?;
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
    let mut t = Table::new();
    let mut http_check_used = false;
    if let Some(user) = &s.mysql_check {
        t.insert("kind".into(), string("mysql"));
        if let Some(u) = user {
            t.insert("user".into(), string(u));
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
        t.insert("kind".into(), string(kind));
        t.insert("method".into(), string(&method.to_ascii_uppercase()));
        t.insert("path".into(), string(&uri));
        if !headers.is_empty() {
            t.insert("headers".into(), header_table(&headers));
        }
        if let Some(e) = &s.check_expect {
            t.insert("expect".into(), Value::Array(e.iter().map(|&c| integer(c)).collect()));
        }
    } else {
        t.insert("kind".into(), string("tcp"));
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
            t.insert(k.into(), string(v));
        }
    }
    if let Some(v) = &s.check_timeout {
        t.insert("timeout".into(), string(v));
    }
    if let Some(r) = first.rise {
        t.insert("rise".into(), integer(r));
    }
    if let Some(f) = first.fall {
        t.insert("fall".into(), integer(f));
    }
    let ports: Vec<Option<u16>> = checked.iter().map(|s| s.port).collect();
    if let Some(Some(port)) = ports.first() {
        if ports.iter().all(|x| x == &Some(*port)) {
            t.insert("port".into(), integer(*port));
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
    Some(t)
}

/// Append the servers of `p` to `out`, tagged `pool` when they join another backend's
/// service; a name already in `names` (the service's servers so far) is prefixed with the
/// backend's.
fn add_servers(out: &mut Vec<Value>, p: &Proxy, pool: Option<&str>, names: &mut Vec<String>, ctx: &mut Ctx) {
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
        let mut t = Table::new();
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
        t.insert("name".into(), string(&name));
        if s.address.starts_with(':') || s.address.rsplit_once(':').is_none() {
            ctx.lost_at(s.line, &format!("server {}", s.name), "an address without a port is not translated");
        }
        t.insert("address".into(), string(&s.address));
        if let Some(w) = s.weight {
            t.insert("weight".into(), integer(w));
        }
        if s.backup && !(all_backup && i == 0) {
            t.insert("backup".into(), Value::Boolean(true));
        }
        if s.check && !uniform_port {
            if let Some(port) = s.port {
                t.insert("check_port".into(), integer(port));
            }
        }
        if let Some(a) = &s.addr {
            t.insert("check_address".into(), string(a));
        }
        if let Some(c) = &s.cookie {
            t.insert("cookie".into(), string(c));
        }
        if let Some(pool) = pool {
            t.insert("pool".into(), string(pool));
        }
        if s.disabled {
            t.insert("disabled".into(), Value::Boolean(true));
        }
        if let Some(n) = s.maxconn.filter(|&n| n > 0) {
            t.insert("maxconn".into(), integer(n));
        }
        out.push(Value::Table(t));
    }
}
