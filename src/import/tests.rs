//! Real-world-shaped haproxy.cfg files, translated and then loaded by vipgate's own config
//! validation: the assertions are on the meaning (who is active, what is probed, how
//! often), not on the text.

use std::time::Duration;

use super::*;
use crate::config::{self, BalanceKind, CheckKind, Config, Failback, Mode, OnDown};

fn load(imported: &Imported) -> Config {
    match config::parse(&imported.toml, "imported.toml") {
        Ok(c) => c,
        Err(e) => panic!("the translation does not load: {e}\n{}", imported.toml),
    }
}

fn service<'a>(c: &'a Config, name: &str) -> &'a config::Service {
    c.services.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no service {name}"))
}

/// The HA guide's Galera listener, on 3307 with clustercheck on 49000.
const GALERA_HA_GUIDE: &str = "
global
  chroot  /var/lib/haproxy
  daemon
  group  haproxy
  maxconn  4000
  pidfile  /var/run/haproxy.pid
  user  haproxy

defaults
  log  global
  maxconn  4000
  option  redispatch
  retries  3
  timeout  http-request 10s
  timeout  queue 1m
  timeout  connect 10s
  timeout  client 1m
  timeout  server 1m
  timeout  check 10s

listen galera_cluster
  bind 10.0.0.10:3307
  balance  source
  option  httpchk
  server controller1 10.0.0.11:3306 check port 49000 inter 5000 rise 2 fall 3
  server controller2 10.0.0.12:3306 backup check port 49000 inter 5000 rise 2 fall 3
  server controller3 10.0.0.13:3306 backup check port 49000 inter 5000 rise 2 fall 3
";

#[test]
fn galera_behind_3307_with_clustercheck_on_49000() {
    let imported = import(GALERA_HA_GUIDE);
    let c = load(&imported);
    let g = service(&c, "galera_cluster");
    assert_eq!(g.binds, vec!["10.0.0.10:3307".parse().unwrap()]);
    assert_eq!(g.mode, Mode::Tcp);
    assert_eq!(g.retries, 3);
    assert_eq!(g.client_timeout, Some(Duration::from_secs(60)));
    assert_eq!(g.connect_timeout, Some(Duration::from_secs(10)));
    let check = g.check.as_ref().expect("a check");
    assert!(matches!(check.kind, CheckKind::Clustercheck(_)), "{:?}", check.kind);
    if let CheckKind::Clustercheck(h) = &check.kind {
        // Bare `option httpchk` sends OPTIONS / (verified on HAProxy 2.6).
        assert_eq!((h.method.as_str(), h.path.as_str()), ("OPTIONS", "/"));
    }
    assert_eq!(check.port, Some(49000));
    assert_eq!(check.interval, Duration::from_millis(5000));
    assert_eq!((check.rise, check.fall), (2, 3));
    assert_eq!(check.timeout, Duration::from_secs(10));
    let backups: Vec<bool> = g.servers.iter().map(|s| s.is_backup()).collect();
    assert_eq!(backups, [false, true, true], "controller1 writes, the others wait");
    // The process-wide maxconn is reported; the defaults' one and timeout queue apply.
    let lost: Vec<&Report> = imported.untranslated().collect();
    assert!(lost.iter().any(|r| r.line == 6 && r.directive.starts_with("maxconn")), "{lost:?}");
    assert_eq!(g.maxconn, Some(4000));
    assert_eq!(g.queue_timeout, Duration::from_secs(60));
    assert!(imported.reports.iter().any(|r| r.line == 3 && r.directive.starts_with("chroot") && r.handled));
}

/// kolla-ansible's layout: frontend *_front + backend *_back, stats socket for keepalived.
const KOLLA: &str = "
global
    log 192.0.2.11:5140 local1
    maxconn 40000
    nbthread 1
    stats socket /var/lib/kolla/haproxy/haproxy.sock group kolla mode 660 level admin

defaults
    log global
    option redispatch
    retries 3
    timeout http-request 10s
    timeout queue 1m
    timeout connect 10s
    timeout client 1m
    timeout server 1m
    timeout check 10s
    balance roundrobin
    maxconn 10000

frontend keystone_internal_front
    mode http
    http-request del-header X-Forwarded-Proto
    option httplog
    option forwardfor
    http-request set-header X-Forwarded-Proto https if { ssl_fc }
    bind 192.0.2.10:5000
    default_backend keystone_internal_back

backend keystone_internal_back
    mode http
    option httpchk GET /healthcheck
    http-check expect status 200
    server ctl1 192.0.2.11:5000 check inter 2000 rise 2 fall 5
    server ctl2 192.0.2.12:5000 check inter 2000 rise 2 fall 5

frontend nova_novncproxy_front
    mode http
    bind 192.0.2.10:6080
    http-request deny if { path -i -m beg /server-status }
    default_backend nova_novncproxy_back

backend nova_novncproxy_back
    mode http
    timeout tunnel 1h
    server ctl1 192.0.2.11:6080 check inter 2000 rise 2 fall 5

frontend mariadb_front
    mode tcp
    option clitcpka
    timeout client 3600s
    option tcplog
    bind 192.0.2.10:3306
    default_backend mariadb_back

backend mariadb_back
    mode tcp
    option srvtcpka
    timeout server 3600s
    option httpchk
    server ctl1 192.0.2.11:3306 check port 4569 inter 2000 rise 2 fall 5
    server ctl2 192.0.2.12:3306 check port 4569 inter 2000 rise 2 fall 5 backup
    server ctl3 192.0.2.13:3306 check port 4569 inter 2000 rise 2 fall 5 backup
";

#[test]
fn kolla_frontends_and_backends() {
    let imported = import(KOLLA);
    let c = load(&imported);
    let admin = c.admin.as_ref().expect("[admin] from the stats socket");
    assert_eq!(admin.socket.as_deref(), Some(std::path::Path::new("/var/lib/kolla/haproxy/haproxy.sock")));
    assert_eq!(admin.socket_mode, 0o660);
    assert_eq!(c.global.workers, Some(1));

    let ks = service(&c, "keystone_internal_back");
    assert_eq!(ks.binds, vec!["192.0.2.10:5000".parse().unwrap()]);
    assert_eq!(ks.mode, Mode::Http);
    let check = ks.check.as_ref().unwrap();
    match &check.kind {
        CheckKind::Http(h) => {
            assert_eq!((h.method.as_str(), h.path.as_str()), ("GET", "/healthcheck"));
            assert_eq!(h.expect, vec![200]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!((check.interval, check.rise, check.fall), (Duration::from_secs(2), 2, 5));
    let http = ks.http.as_ref().unwrap();
    assert_eq!(http.header_timeout, Duration::from_secs(10));
    assert!(http.forwarded_for);

    let vnc = service(&c, "nova_novncproxy_back");
    let vhttp = vnc.http.as_ref().unwrap();
    assert_eq!(vhttp.tunnel_timeout, Some(Duration::from_secs(3600)));
    assert_eq!(vhttp.deny.len(), 1);
    // Only the plain connect check: no httpchk here.
    assert!(matches!(vnc.check.as_ref().unwrap().kind, CheckKind::Tcp));

    let db = service(&c, "mariadb_back");
    assert_eq!(db.client_timeout, Some(Duration::from_secs(3600)), "client side from the frontend");
    assert_eq!(db.server_timeout, Some(Duration::from_secs(3600)));
    assert!(matches!(db.check.as_ref().unwrap().kind, CheckKind::Clustercheck(_)));
    assert_eq!(db.check.as_ref().unwrap().port, Some(4569));
    assert_eq!(db.servers.iter().filter(|s| s.is_backup()).count(), 2);
    // The frontend's client-side settings are not reported as lost.
    assert!(!imported.untranslated().any(|r| r.directive.contains("X-Forwarded-Proto")), "{:?}", imported.reports);
}

/// openstack-ansible: http-check rules without `option httpchk` (HAProxy runs a connect
/// check), leastconn, and PROXY v2 to MariaDB.
const OSA: &str = "
frontend galera-front-1
    bind 192.0.2.10:3306
    mode tcp
    timeout client 5000s
    default_backend galera-back

backend galera-back
    mode tcp
    balance leastconn
    timeout server 5000s
    http-check send hdr User-Agent \"osa-haproxy-healthcheck\" meth HEAD
    http-check expect status 200
    server db1 192.0.2.11:3306 check port 9200 inter 12000 rise 3 fall 3 send-proxy-v2
    server db2 192.0.2.12:3306 check port 9200 inter 12000 rise 3 fall 3 backup send-proxy-v2
";

#[test]
fn osa_http_check_without_httpchk_is_a_connect_check_and_proxy_v2_stays() {
    let imported = import(OSA);
    let c = load(&imported);
    let g = service(&c, "galera-back");
    assert_eq!(g.balance, BalanceKind::LeastConn);
    assert!(matches!(g.check.as_ref().unwrap().kind, CheckKind::Tcp), "HAProxy ignores the http-check rules");
    assert_eq!(g.check.as_ref().unwrap().port, Some(9200));
    assert_eq!(g.send_proxy, Some(crate::config::ProxyVersion::V2), "PROXY v2 to MariaDB must not be dropped");
    let warned: Vec<&Report> = imported.untranslated().filter(|r| r.why.contains("without `option httpchk`")).collect();
    assert_eq!(warned.iter().map(|r| r.line).collect::<Vec<_>>(), [12, 13], "{:?}", imported.reports);
}

/// TripleO's Galera: every server backup, `stick on dst`: no fail-back.
const TRIPLEO: &str = "
listen mysql
  bind 192.0.2.10:3306 transparent
  mode tcp
  option tcpka
  option httpchk
  stick on dst
  stick-table type ip size 1000
  timeout client 90m
  timeout server 90m
  server ctl1 192.0.2.11:3306 backup check inter 1s on-marked-down shutdown-sessions port 9200
  server ctl2 192.0.2.12:3306 backup check inter 1s on-marked-down shutdown-sessions port 9200
  server ctl3 192.0.2.13:3306 backup check inter 1s on-marked-down shutdown-sessions port 9200
";

#[test]
fn tripleo_stick_on_dst_becomes_first_without_failback() {
    let imported = import(TRIPLEO);
    let c = load(&imported);
    let m = service(&c, "mysql");
    assert_eq!(m.balance, BalanceKind::First);
    assert_eq!(m.failback, Failback::Never);
    assert_eq!(m.on_down, OnDown::ShutdownSessions);
    assert_eq!(m.client_timeout, Some(Duration::from_secs(90 * 60)));
    assert_eq!(m.servers.iter().map(|s| s.is_backup()).collect::<Vec<_>>(), [false, true, true]);
    assert_eq!(m.check.as_ref().unwrap().interval, Duration::from_secs(1));
    assert!(imported.untranslated().any(|r| r.why.contains("every server is backup")));
}

#[test]
fn horizon_redirect_cookie_and_response_headers() {
    let text = "
frontend horizon_redirect
    mode http
    bind 192.0.2.10:80
    redirect scheme https code 301 if !{ ssl_fc }

listen horizon
    mode http
    bind 192.0.2.10:8443
    cookie SERVERID insert indirect nocache
    http-response set-header Strict-Transport-Security \"max-age=31536000\"
    server ctl1 192.0.2.11:80 check cookie c1
    server ctl2 192.0.2.12:80 check cookie c2
";
    let imported = import(text);
    let c = load(&imported);
    let r = service(&c, "horizon_redirect");
    assert!(r.http.as_ref().unwrap().redirect_https);
    assert!(r.servers.is_empty());
    let h = service(&c, "horizon");
    let http = h.http.as_ref().unwrap();
    assert_eq!(http.cookie.as_ref().map(|c| c.name.as_str()), Some("SERVERID"));
    assert_eq!(h.servers[1].cookie.as_deref(), Some("c2"));
    assert!(http
        .response
        .set
        .iter()
        .any(|(k, v)| k.as_str() == "strict-transport-security" && v == "max-age=31536000"));
}

#[test]
fn untranslated_directives_are_reported_with_line_numbers() {
    let text = "global\n  lua-load /etc/x.lua\n\nlisten x\n  bind 127.0.0.1:8000\n  acl a src 10.0.0.0/8\n  use_backend y if a\n  server s 127.0.0.1:9000 slowstart 10s\n\nuserlist admins\n  user a insecure-password b\n";
    let imported = import(text);
    let lost: Vec<(usize, bool)> = imported.untranslated().map(|r| (r.line, r.handled)).collect();
    for line in [2, 6, 7, 8, 10, 11] {
        assert!(lost.iter().any(|(l, _)| *l == line), "line {line} not reported: {:?}", imported.reports);
    }
    // What was translated still loads.
    load(&imported);
}

#[test]
fn durations_follow_haproxy_units() {
    use super::translate::tests_support::duration;
    assert_eq!(duration("5000").as_deref(), Some("5000ms"));
    assert_eq!(duration("10s").as_deref(), Some("10s"));
    assert_eq!(duration("90m").as_deref(), Some("90m"));
    assert_eq!(duration("0").as_deref(), Some("0"));
    assert_eq!(duration("1500us").as_deref(), Some("2ms"));
    assert_eq!(duration("5x"), None);
}

#[test]
fn use_backend_on_host_and_path_acls_becomes_routes_with_pool_checks() {
    let text = "
defaults
    mode http
    timeout connect 5s
    timeout client 1m
    timeout server 1m

frontend public
    bind 192.0.2.10:80
    acl is_keystone hdr(host) -i keystone.example.com
    acl is_compute hdr_dom(host) -i compute.example.com
    acl acme path_beg /.well-known/acme-challenge/
    use_backend acme_back if acme
    use_backend keystone_back if is_keystone
    use_backend nova_back if is_compute { path_beg /v2.1 } or { hdr_end(host) -i .nova.example.com }
    default_backend horizon_back

backend horizon_back
    option httpchk GET /auth/login/
    server ctl1 192.0.2.11:80 check inter 2000 rise 2 fall 5
    server ctl2 192.0.2.12:80 check inter 2000 rise 2 fall 5

backend keystone_back
    option httpchk GET /v3
    server ctl1 192.0.2.11:5000 check inter 2000 rise 2 fall 5
    server ctl2 192.0.2.12:5000 check inter 2000 rise 2 fall 5 disabled

backend nova_back
    server nova1 192.0.2.11:8774 check port 8775

backend acme_back
    server acme 127.0.0.1:8888
";
    let imported = import(text);
    let c = load(&imported);
    assert_eq!(c.services.len(), 1, "one service for the frontend: {}", imported.toml);
    let s = service(&c, "horizon_back");
    let http = s.http.as_ref().unwrap();
    let routes: Vec<(Option<&str>, Option<&str>, &str)> =
        http.routes.iter().map(|r| (r.host.as_deref(), r.path_prefix.as_deref(), r.pool.as_str())).collect();
    assert_eq!(
        routes,
        vec![
            (None, Some("/.well-known/acme-challenge/"), "acme_back"),
            (Some("keystone.example.com"), None, "keystone_back"),
            (Some("compute.example.com"), Some("/v2.1"), "nova_back"),
            (Some("*.compute.example.com"), Some("/v2.1"), "nova_back"),
            (Some("*.nova.example.com"), None, "nova_back"),
        ]
    );
    let names: Vec<(&str, Option<&str>, bool)> =
        s.servers.iter().map(|v| (v.name.as_str(), v.pool.as_deref(), v.disabled)).collect();
    assert_eq!(
        names,
        vec![
            ("ctl1", None, false),
            ("ctl2", None, false),
            ("acme", Some("acme_back"), false),
            ("keystone_back-ctl1", Some("keystone_back"), false),
            ("keystone_back-ctl2", Some("keystone_back"), true),
            ("nova1", Some("nova_back"), false),
        ]
    );
    // Each backend keeps its own probe.
    let path = |srv: usize| match &s.check_for(&s.servers[srv]).expect("checked").kind {
        CheckKind::Http(h) => h.path.clone(),
        other => format!("{other:?}"),
    };
    assert_eq!(path(0), "/auth/login/");
    assert_eq!(path(3), "/v3");
    assert!(matches!(s.check_for(&s.servers[5]).unwrap().kind, CheckKind::Tcp));
    assert_eq!(s.check_for(&s.servers[5]).unwrap().port, Some(8775));
    // acme_back has no check in HAProxy: vipgate would probe it with horizon's, and says so.
    let why =
        |line: usize| imported.untranslated().filter(|r| r.line == line).map(|r| r.why.clone()).collect::<Vec<_>>();
    assert!(why(31).iter().any(|w| w.contains("no check")), "{:?}", imported.reports);
    assert!(why(25).iter().any(|w| w.contains("renamed keystone_back-ctl1")), "{:?}", imported.reports);
}

#[test]
fn use_backend_forms_a_route_cannot_say_are_reported() {
    let text = "
frontend f
    mode http
    bind 127.0.0.1:8080
    acl api path_reg ^/v[0-9]+
    acl ks hdr(host) -i keystone
    use_backend b if !ks
    use_backend b if api
    use_backend %[req.hdr(host),lower,map(/etc/haproxy/hosts.map)]
    use_backend b unless ks
    use_backend a if ks
    use_backend b if { path_beg -i /Static }
    use_backend b if ks
    default_backend a

backend a
    mode http
    server a1 127.0.0.1:9001

backend b
    mode http
    balance leastconn
    server b1 127.0.0.1:9002
";
    let imported = import(text);
    let lost: Vec<usize> = imported.untranslated().map(|r| r.line).collect();
    // 5: path_reg; 7: negation; 8: an acl that is not translated; 9: a map; 10: unless;
    // 11: to the default backend ahead of a later rule; 12: -i on a path; 20: leastconn
    // differs from backend a's roundrobin.
    for line in [5, 7, 8, 9, 10, 11, 12, 20] {
        assert!(lost.contains(&line), "line {line} not reported: {:#?}", imported.reports);
    }
    let c = load(&imported);
    let routes = &service(&c, "a").http.as_ref().unwrap().routes;
    assert_eq!(routes.len(), 1, "{}", imported.toml);
    assert_eq!((routes[0].host.as_deref(), routes[0].pool.as_str()), (Some("keystone"), "b"));
}

#[test]
fn maxconn_and_timeout_queue_keep_their_meaning() {
    let text = "
defaults
    maxconn 4000
    timeout queue 30s
    timeout connect 5s

listen galera
    bind 10.0.0.10:3306
    server db1 10.0.0.11:3306 check maxconn 150
    server db2 10.0.0.12:3306 check backup maxconn 150

frontend api
    bind 10.0.0.10:5000
    maxconn 200
    default_backend api_back

backend api_back
    server a 10.0.0.11:5000 check
";
    let imported = import(text);
    let c = load(&imported);
    let g = service(&c, "galera");
    assert_eq!(g.maxconn, Some(4000), "defaults' maxconn");
    assert_eq!(g.queue_timeout, Duration::from_secs(30));
    assert_eq!(g.servers.iter().map(|s| s.maxconn).collect::<Vec<_>>(), vec![150, 150]);
    let api = service(&c, "api_back");
    assert_eq!(api.maxconn, Some(200), "the frontend's maxconn is the service's");
    assert_eq!(api.servers[0].maxconn, 0);
    assert!(imported.untranslated().all(|r| !r.directive.contains("maxconn")), "{:?}", imported.reports);
}
