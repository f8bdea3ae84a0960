use super::*;
use std::time::Duration;

const ISSUE_EXAMPLE: &str = r#"[admin]
bind = "127.0.0.1:9100"

[defaults]
connect_timeout = "5s"
client_timeout = "1m"
server_timeout = "1m"

[services.galera]
bind = ["127.0.0.1:13306"]
mode = "tcp"
balance = "first"
client_timeout = "48h"
server_timeout = "48h"
[services.galera.check]
kind = "tcp"
interval = "2s"
rise = 2
fall = 3
[[services.galera.servers]]
name = "db1"
address = "127.0.0.1:3306"
[[services.galera.servers]]
name = "db2"
address = "127.0.0.1:3307"
backup = true
"#;

fn problems(text: &str) -> Vec<String> {
    match parse(text, "t.toml") {
        Ok(_) => Vec::new(),
        Err(e) => e.to_string().lines().map(str::to_string).collect(),
    }
}

#[test]
fn issue_example_loads_as_written() {
    let c = parse(ISSUE_EXAMPLE, "x").unwrap();
    assert_eq!(c.admin.unwrap().bind.to_string(), "127.0.0.1:9100");
    let g = &c.services[0];
    assert_eq!(g.name, "galera");
    assert_eq!(g.balance, BalanceKind::First);
    assert_eq!(g.client_timeout, Some(Duration::from_secs(48 * 3600)));
    assert_eq!(g.connect_timeout, Some(Duration::from_secs(5)));
    assert_eq!(g.retries, 3);
    let check = g.check.as_ref().unwrap();
    assert_eq!((check.interval, check.rise, check.fall), (Duration::from_secs(2), 2, 3));
    assert_eq!(g.servers.len(), 2);
    assert_eq!((g.servers[0].tier, g.servers[1].tier), (0, 1));
    assert_eq!(g.on_down, OnDown::ShutdownSessions, "first defaults to shutdown-sessions");
    assert_eq!(g.failback, Failback::Immediate);
    assert_eq!(g.servers[1].weight, 1);
}

#[test]
fn zero_means_no_timeout() {
    let c = parse(&ISSUE_EXAMPLE.replace("\"48h\"", "\"0\""), "x").unwrap();
    assert_eq!(c.services[0].client_timeout, None);
}

#[test]
fn every_problem_is_reported_with_its_line() {
    let text = r#"[global]
wokers = 2

[services.a]
bind = "127.0.0.1:notaport"
balance = "roundrobn"
client_timeout = "5 minutes"
[[services.a.servers]]
name = "x"
address = "127.0.0.1:1"
backup = true
"#;
    let p = problems(text);
    assert!(p.iter().any(|l| l.starts_with("t.toml:2:1: unknown key \"wokers\"")), "{p:?}");
    assert!(p.iter().any(|l| l.starts_with("t.toml:5:8: bad address")), "{p:?}");
    assert!(p.iter().any(|l| l.starts_with("t.toml:6:11: unknown balance")), "{p:?}");
    assert!(p.iter().any(|l| l.starts_with("t.toml:7:18:") && l.contains("duration")), "{p:?}");
    assert!(p.iter().any(|l| l.starts_with("t.toml:4:11:") && l.contains("backup")), "{p:?}");
}

#[test]
fn service_without_servers_and_shared_bind() {
    let text = r#"[services.a]
bind = "127.0.0.1:80"
[[services.a.servers]]
name = "x"
address = "127.0.0.1:1"

[services.b]
bind = ["127.0.0.1:80"]
"#;
    let p = problems(text);
    assert!(p.iter().any(|l| l.starts_with("t.toml:7:11:") && l.contains("no servers")), "{p:?}");
    assert!(p.iter().any(|l| l.starts_with("t.toml:8:9:") && l.contains("already bound by service \"a\"")), "{p:?}");
}

#[test]
fn wildcard_bind_overlaps_specific() {
    let text = r#"[services.a]
bind = "*:80"
[[services.a.servers]]
name = "x"
address = "127.0.0.1:1"
[services.b]
bind = "127.0.0.1:80"
[[services.b.servers]]
name = "x"
address = "127.0.0.1:1"
"#;
    let p = problems(text);
    assert!(p.iter().any(|l| l.contains("overlaps")), "{p:?}");
}

#[test]
fn syntax_errors_are_positioned() {
    let p = problems("[services.a]\nbind = \"x\n");
    assert!(p[0].starts_with("t.toml:2:"), "{p:?}");
    assert!(p[0].contains("syntax"), "{p:?}");
}

#[test]
fn defaults_apply_and_reject_service_only_keys() {
    let text = r#"[defaults]
balance = "leastconn"
retries = 1
bind = "127.0.0.1:1"
[services.a]
bind = "127.0.0.1:2"
[[services.a.servers]]
name = "x"
address = "localhost:1"
"#;
    let p = problems(text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("t.toml:4:1:"), "{p:?}");
    let c = parse(&text.replace("bind = \"127.0.0.1:1\"\n", ""), "t").unwrap();
    assert_eq!(c.services[0].balance, BalanceKind::LeastConn);
    assert_eq!(c.services[0].retries, 1);
    assert!(c.services[0].servers[0].address.ip().is_loopback());
}

#[test]
fn duplicate_server_names_and_bad_weight() {
    let text = r#"[services.a]
bind = "[::1]:80"
[[services.a.servers]]
name = "x"
address = "[::1]:1"
weight = 999
[[services.a.servers]]
name = "x"
address = "127.0.0.1:1"
source = "not-an-ip"
"#;
    let p = problems(text);
    assert!(p.iter().any(|l| l.starts_with("t.toml:6:10:") && l.contains("weight")), "{p:?}");
    let dup = problems("[services.a]\nbind = \"[::1]:80\"\n[[services.a.servers]]\nname = \"x\"\naddress = \"[::1]:1\"\n[[services.a.servers]]\nname = \"x\"\naddress = \"[::1]:2\"\n");
    assert!(dup.iter().any(|l| l.starts_with("t.toml:6:") && l.contains("used twice")), "{dup:?}");
    assert!(p.iter().any(|l| l.starts_with("t.toml:10:10:") && l.contains("bad address")), "{p:?}");
}

#[test]
fn line_col_counts_characters() {
    assert_eq!(super::line_col("ab\ncdé f", 8), (2, 5));
    assert_eq!(super::line_col("", 5), (1, 1));
}

const POOLS: &str = r#"
[defaults.check]
interval = "3s"

[services.api]
bind = "127.0.0.1:15000"
mode = "http"
[services.api.check]
kind = "http"
path = "/healthcheck"
rise = 4
[services.api.pools.static.check]
kind = "tcp"
[[services.api.routes]]
path_prefix = "/static"
pool = "static"
[[services.api.servers]]
name = "a"
address = "127.0.0.1:1"
[[services.api.servers]]
name = "s"
address = "127.0.0.1:2"
pool = "static"
disabled = true
"#;

#[test]
fn a_pool_check_stands_beside_the_service_check() {
    let c = parse(POOLS, "x").unwrap();
    let api = &c.services[0];
    let (a, s) = (&api.servers[0], &api.servers[1]);
    assert!(!a.disabled && s.disabled);
    let ca = api.check_for(a).unwrap();
    let cs = api.check_for(s).unwrap();
    assert!(matches!(ca.kind, CheckKind::Http(_)));
    assert!(matches!(cs.kind, CheckKind::Tcp));
    // The pool's check takes [defaults.check], not the service's keys.
    assert_eq!((cs.interval, cs.rise), (Duration::from_secs(3), DEFAULT_RISE));
    assert_eq!((ca.interval, ca.rise), (Duration::from_secs(3), 4));
    let groups = api.checks();
    assert_eq!(groups.iter().map(|(_, i)| i.clone()).collect::<Vec<_>>(), vec![vec![0], vec![1]]);
}

#[test]
fn pool_check_mistakes_are_named() {
    let p = problems(&POOLS.replace("pools.static.check", "pools.ghost.check"));
    assert!(p.iter().any(|l| l.contains("pool \"ghost\": no server of service \"api\"")), "{p:?}");
    let p = problems(&POOLS.replace("kind = \"tcp\"", "kind = \"tcp\"\npath = \"/x\""));
    assert!(p.iter().any(|l| l.contains("\"path\" does not apply to check kind \"tcp\"")), "{p:?}");
    let p = problems(&POOLS.replace(
        "[services.api.pools.static.check]",
        "[services.api.pools.static]\ncheck = 1\nrate = 2\n[services.api.pools.static.x]",
    ));
    assert!(p.iter().any(|l| l.contains("unknown key \"rate\"")), "{p:?}");
    let p = problems(&format!("[defaults.pools.x.check]\nkind = \"tcp\"\n{}", ISSUE_EXAMPLE));
    assert!(p.iter().any(|l| l.contains("\"pools\" belongs in a [services.NAME] section")), "{p:?}");
    let p = problems(&POOLS.replace("disabled = true", "disabled = \"yes\""));
    assert!(p.iter().any(|l| l.contains("disabled")), "{p:?}");
}

#[test]
fn body_rate_floor_defaults_merges_and_rejects_nonsense() {
    let http = |c: &Config| c.services[0].http.clone().unwrap();
    let c = parse(POOLS, "x").unwrap();
    assert_eq!((http(&c).min_body_rate, http(&c).body_rate_window), (500, Duration::from_secs(20)));

    let set = POOLS
        .replace("[defaults.check]", "[defaults]\nmin_body_rate = 0\n[defaults.check]")
        .replace("mode = \"http\"", "mode = \"http\"\nbody_rate_window = \"5s\"");
    let c = parse(&set, "x").unwrap();
    assert_eq!((http(&c).min_body_rate, http(&c).body_rate_window), (0, Duration::from_secs(5)));

    let bad = POOLS.replace("mode = \"http\"", "mode = \"http\"\nmin_body_rate = -5\nbody_rate_window = \"200ms\"");
    let p = problems(&bad);
    assert!(
        p.iter().any(|l| l.contains("t.toml:8:") && l.contains("\"min_body_rate\" must be a whole number")),
        "{p:?}"
    );
    assert!(
        p.iter().any(|l| l.contains("t.toml:9:") && l.contains("\"body_rate_window\" must be at least \"1s\"")),
        "{p:?}"
    );
}

#[test]
fn a_config_never_prints_a_check_password() {
    let secret_file = std::env::temp_dir().join(format!("vipgate-pw-debug-{}", std::process::id()));
    std::fs::write(&secret_file, "from-a-file\n").unwrap();
    let text = format!(
        "[defaults.check]\nkind = \"mysql\"\nuser = \"monitor\"\npassword_file = \"{}\"\n\n\
         [services.db]\nbind = \"127.0.0.1:13306\"\n[[services.db.servers]]\nname = \"a\"\naddress = \"127.0.0.1:3306\"\n\n\
         [services.db2]\nbind = \"127.0.0.1:13307\"\n[services.db2.check]\nkind = \"mysql\"\nuser = \"monitor\"\n\
         password = \"s3cret-pw\"\n[[services.db2.servers]]\nname = \"a\"\naddress = \"127.0.0.1:3306\"\n",
        secret_file.display()
    );
    let c = parse(&text, "t.toml").unwrap();
    let mysql = |i: usize| match &c.services[i].check.as_ref().unwrap().kind {
        CheckKind::Mysql(m) => m.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!((mysql(0).password.as_str(), mysql(0).password_file.as_ref()), ("from-a-file", Some(&secret_file)));
    // A service's own password is from no file, whatever the defaults said.
    assert_eq!((mysql(1).password.as_str(), mysql(1).password_file.as_ref()), ("s3cret-pw", None));
    for shown in [format!("{c:?}"), format!("{c:#?}")] {
        assert!(shown.contains("monitor"), "{shown}");
        assert!(!shown.contains("s3cret-pw") && !shown.contains("from-a-file"), "a password in {shown}");
    }
    let _ = std::fs::remove_file(&secret_file);
}

/// The validation asks for I/O only through `load::Io`: without it nothing is resolved or
/// read, and the same text with it reports what the machine says, at the key's position.
#[test]
fn pure_validation_does_no_io_and_the_system_io_reports_at_the_key() {
    let text = "[admin]\ntoken_file = \"/nonexistent/vipgate-token\"\n\n\
                [services.api]\nbind = \"127.0.0.1:18080\"\nmode = \"http\"\n\
                certificates = [{ cert = \"/nonexistent/cert.pem\" }]\n\
                [[services.api.servers]]\nname = \"a\"\naddress = \"no-such-host.invalid:5000\"\n";
    let pure = super::validate_pure(text, "t.toml").expect("the text itself is valid");
    let server = &pure.services[0].servers[0];
    assert_eq!(server.host.as_deref(), Some("no-such-host.invalid"));
    assert_eq!(server.address, "0.0.0.0:5000".parse().unwrap(), "nothing resolved");
    assert_eq!(pure.admin.as_ref().and_then(|a| a.token.as_deref()), Some(super::load::PLACEHOLDER_SECRET));

    let p = problems(text);
    for (at, what) in [
        ("t.toml:2:14:", "/nonexistent/vipgate-token"),
        ("t.toml:7:", "cert.pem"),
        ("t.toml:10:11:", "no-such-host.invalid"),
    ] {
        assert!(p.iter().any(|l| l.starts_with(at) && l.contains(what)), "{at} {what} not in {p:?}");
    }
}
