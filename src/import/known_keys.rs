//! The importer writes only keys the config schema (`config::keys`) knows, each in its
//! own section: a key renamed in the schema but not here would make every imported file
//! fail `vipgate check`.

use toml::{Table, Value};

use super::import;
use crate::config::keys::{self, Section};

/// Every table the emitter writes, with the output of the seeds it is fuzzed from.
const EVERY_TABLE: &str = "
global
    nbthread 2
    stats socket /run/vipgate/admin.sock mode 660 level admin

defaults
    mode http
    retries 2
    timeout connect 5s
    timeout client 1m
    timeout server 1m
    timeout tunnel 1h
    timeout http-request 10s
    timeout queue 20s
    timeout check 3s
    maxconn 500
    option allbackups

listen stats
    bind 127.0.0.1:8404
    stats enable

frontend redirect
    bind 192.0.2.10:80
    redirect scheme https code 301 if !{ ssl_fc }

frontend public
    bind 192.0.2.10:443 ssl crt /etc/haproxy/api.pem alpn h2,http/1.1 accept-proxy
    http-request deny if { path -i -m beg /server-status }
    acl is_keystone hdr(host) -i keystone.example.com
    acl static path_beg /static
    use_backend keystone_back if is_keystone
    use_backend keystone_back if static
    default_backend horizon_back

backend horizon_back
    cookie SERVERID insert indirect nocache
    http-response set-header Strict-Transport-Security \"max-age=31536000\"
    option httpchk GET /auth/login/
    http-check send meth GET uri /health hdr Host horizon.example.com
    http-check expect status 200
    server ctl1 192.0.2.11:443 check port 8080 addr 192.0.2.21 inter 2s fastinter 1s downinter 5s rise 2 fall 3 weight 10 cookie c1 ssl verify none ca-file /etc/ssl/ca.pem send-proxy-v2 on-marked-down shutdown-sessions maxconn 100
    server ctl2 192.0.2.12:443 check port 8081 backup disabled ssl send-proxy-v2 on-marked-down shutdown-sessions

backend keystone_back
    option httpchk GET /v3
    server ks1 192.0.2.11:5000 check

listen galera
    mode tcp
    bind 192.0.2.10:3306
    option mysql-check user haproxy
    stick-table type ip size 1000
    stick on dst
    server db1 192.0.2.11:3306 check backup
    server db2 192.0.2.12:3306 check backup
";

const SEEDS: &[&str] = &[
    EVERY_TABLE,
    include_str!("../../fuzz/corpus/import_haproxy/seed0.cfg"),
    include_str!("../../fuzz/corpus/import_haproxy/seed1.cfg"),
    include_str!("../../fuzz/corpus/import_haproxy/seed2.cfg"),
    include_str!("../../fuzz/corpus/import_haproxy/seed3.cfg"),
];

/// Keys of `t` that none of `sections` takes, each as `PATH.KEY`.
fn unknown_in(t: &Table, path: &str, sections: &[Section], out: &mut Vec<String>) {
    for k in t.keys() {
        if !sections.iter().any(|s| s.takes(k)) {
            out.push(format!("{path}.{k}"));
        }
    }
}

fn tables(v: Option<&Value>) -> Vec<&Table> {
    match v {
        Some(Value::Table(t)) => vec![t],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_table).collect(),
        _ => Vec::new(),
    }
}

fn check(t: &Table, path: &str, out: &mut Vec<String>) {
    unknown_in(t, path, &[Section::Check, Section::CheckHttp, Section::CheckMysql], out);
}

fn unknown_keys(root: &Table) -> Vec<String> {
    let mut out = Vec::new();
    unknown_in(root, "", &[Section::Top], &mut out);
    for t in tables(root.get("global")) {
        unknown_in(t, "global", &[Section::Global], &mut out);
    }
    for t in tables(root.get(keys::ADMIN_SECTION)) {
        unknown_in(t, keys::ADMIN_SECTION, &[Section::Admin], &mut out);
    }
    let service_sections = [Section::Service, Section::ServiceHttp, Section::ServiceProxy];
    for (name, svc) in root.get("services").and_then(Value::as_table).into_iter().flatten() {
        let path = format!("services.{name}");
        let Some(svc) = svc.as_table() else { continue };
        unknown_in(svc, &path, &service_sections, &mut out);
        for c in tables(svc.get("check")) {
            check(c, &format!("{path}.check"), &mut out);
        }
        for (pool, body) in svc.get("pools").and_then(Value::as_table).into_iter().flatten() {
            let pool_path = format!("{path}.pools.{pool}");
            if let Some(b) = body.as_table() {
                unknown_in(b, &pool_path, &[Section::Pool], &mut out);
                for c in tables(b.get("check")) {
                    check(c, &format!("{pool_path}.check"), &mut out);
                }
            }
        }
        for (key, section) in [
            ("servers", Section::Server),
            ("routes", Section::Route),
            ("deny", Section::DenyRule),
            ("certificates", Section::Certificate),
            ("request", Section::HeaderRules),
            ("response", Section::HeaderRules),
        ] {
            for t in tables(svc.get(key)) {
                unknown_in(t, &format!("{path}.{key}"), &[section], &mut out);
            }
        }
    }
    out
}

#[test]
fn every_key_the_importer_writes_is_in_the_schema() {
    for seed in SEEDS {
        let imported = import(seed);
        let root: Table = match imported.toml.parse() {
            Ok(t) => t,
            Err(e) => panic!("the translation is not TOML: {e}\n{}", imported.toml),
        };
        let unknown = unknown_keys(&root);
        assert!(unknown.is_empty(), "keys not in config::keys: {unknown:?}\n{}", imported.toml);
    }
}

#[test]
fn the_every_table_seed_writes_every_table() {
    let toml = import(EVERY_TABLE).toml;
    let root: Table = match toml.parse() {
        Ok(t) => t,
        Err(e) => panic!("the translation is not TOML: {e}\n{toml}"),
    };
    for path in [
        "global",
        "admin",
        "services.horizon_back.check",
        "services.horizon_back.pools.keystone_back.check",
        "services.horizon_back.servers",
        "services.horizon_back.routes",
        "services.horizon_back.response",
        "services.horizon_back.certificates",
        "services.horizon_back.deny",
        "services.galera.check",
        "services.redirect",
    ] {
        let found = path.split('.').try_fold(&root, |t, k| {
            t.get(k).and_then(|v| match v {
                Value::Table(t) => Some(t),
                Value::Array(items) => items.first().and_then(Value::as_table),
                _ => None,
            })
        });
        assert!(found.is_some(), "{path} not written:\n{toml}");
    }
}
