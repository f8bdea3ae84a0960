//! `vipgate import-haproxy` through the real binary: the output passes `vipgate check`,
//! `--strict` refuses untranslated directives, and — side by side with a real HAProxy 2.6
//! running the very same haproxy.cfg — the translated config sends Galera sessions where
//! HAProxy sends them: to the writer, to a backup when the writer's clustercheck says 503,
//! back when it recovers, and (OSA's form, `http-check` without `option httpchk`) nowhere
//! else, because HAProxy then only checks that the port accepts. A public HTTPS frontend
//! (`bind ssl crt` with a real PEM) routing on Host and path ACLs with `use_backend` sends
//! each request to the same backend through both.

mod common;
#[path = "support/haproxy.rs"]
mod haproxy;
#[path = "support/http_backend.rs"]
mod http_backend;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use haproxy::{haproxy_bin, Haproxy};
use http_backend::HttpBackend;

fn import(cfg_text: &str, extra: &[&str]) -> std::process::Output {
    let path = temp_path("haproxy-in", "cfg");
    std::fs::write(&path, cfg_text).unwrap();
    let out = Command::new(BIN).arg("import-haproxy").args(extra).arg(&path).output().expect("run import-haproxy");
    let _ = std::fs::remove_file(&path);
    out
}

/// A clustercheck responder on `addr`: reads the request head, answers 200 while `synced`,
/// else 503, and closes.
fn clustercheck(addr: SocketAddr, synced: Arc<AtomicBool>) -> Backend {
    Backend::with_handler("clustercheck", addr, move |mut s: TcpStream| {
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut head = Vec::new();
        let mut buf = [0u8; 512];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let (status, body) = if synced.load(SeqCst) {
            ("200 OK", "Galera cluster node is synced.\r\n")
        } else {
            ("503 Service Unavailable", "Galera cluster node is not synced.\r\n")
        };
        let _ = write!(
            s,
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    })
}

/// Which database node a new session through `front` reaches (its greeting line).
fn who(front: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&front, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    read_line(&mut s).ok()
}

/// Three "database" nodes on 127.0.0.4x:db_port with clustercheck on 127.0.0.4x:cc_port.
struct Nodes {
    _dbs: Vec<Backend>,
    _checks: Vec<Backend>,
    synced: Vec<Arc<AtomicBool>>,
    db_port: u16,
    cc_port: u16,
}

fn nodes() -> Nodes {
    for _ in 0..20 {
        let (db_port, cc_port) = (free_port(), free_port());
        let addrs: Vec<(SocketAddr, SocketAddr)> = (1..=3)
            .map(|n| {
                (format!("127.0.0.4{n}:{db_port}").parse().unwrap(), format!("127.0.0.4{n}:{cc_port}").parse().unwrap())
            })
            .collect();
        if addrs.iter().all(|(d, c)| std::net::TcpListener::bind(d).is_ok() && std::net::TcpListener::bind(c).is_ok()) {
            let synced: Vec<Arc<AtomicBool>> = (0..3).map(|_| Arc::new(AtomicBool::new(true))).collect();
            let dbs = addrs.iter().enumerate().map(|(i, (d, _))| Backend::echo(&format!("db{}", i + 1), *d)).collect();
            let checks = addrs.iter().zip(&synced).map(|((_, c), s)| clustercheck(*c, Arc::clone(s))).collect();
            return Nodes { _dbs: dbs, _checks: checks, synced, db_port, cc_port };
        }
    }
    panic!("no free ports on 127.0.0.41-43");
}

/// kolla's Galera form (httpchk on the clustercheck port, db2/db3 backup), or OSA's
/// (`http-check` rules but no `option httpchk`).
fn galera_cfg(bind: SocketAddr, n: &Nodes, osa: bool) -> String {
    let check = if osa {
        "    http-check send hdr User-Agent \"osa-haproxy-healthcheck\" meth HEAD\n    http-check expect status 200\n"
    } else {
        "    option httpchk\n"
    };
    let mut t = format!(
        "global\n    maxconn 1000\ndefaults\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\n\
         listen galera\n    bind {bind}\n    mode tcp\n{check}"
    );
    for i in 1..=3 {
        let backup = if i > 1 { " backup" } else { "" };
        t.push_str(&format!(
            "    server db{i} 127.0.0.4{i}:{} check port {} inter 200 rise 1 fall 1{backup}\n",
            n.db_port, n.cc_port
        ));
    }
    t
}

/// Start HAProxy on the config and vipgate on its translation (same text, own bind).
fn side_by_side(n: &Nodes, osa: bool) -> Option<(Haproxy, Vipgate, SocketAddr, SocketAddr)> {
    let bin = haproxy_bin()?;
    let (hp, vp) = (free_addr(), free_addr());
    let h = Haproxy::start_cfg(&bin, &galera_cfg(hp, n, osa), &[hp]);
    let out = import(&galera_cfg(vp, n, osa), &[]);
    assert!(out.status.success(), "import: {}", String::from_utf8_lossy(&out.stderr));
    let v = Vipgate::start(&String::from_utf8_lossy(&out.stdout), vp);
    Some((h, v, hp, vp))
}

/// Wait until both proxies send new sessions to `want`.
fn both_reach(hp: SocketAddr, vp: SocketAddr, want: &str, what: &str, v: &Vipgate, h: &Haproxy) {
    let ok = eventually(Duration::from_secs(10), || {
        (who(hp).as_deref() == Some(want) && who(vp).as_deref() == Some(want)).then_some(())
    });
    assert!(
        ok.is_some(),
        "{what}: HAProxy -> {:?}, vipgate -> {:?} (wanted {want})\nvipgate:\n{}\nhaproxy:\n{}",
        who(hp),
        who(vp),
        v.log(),
        h.log()
    );
}

#[test]
fn galera_translation_behaves_like_haproxy() {
    let n = nodes();
    let Some((h, v, hp, vp)) = side_by_side(&n, false) else { return };
    both_reach(hp, vp, "db1", "all synced", &v, &h);
    n.synced[0].store(false, SeqCst);
    both_reach(hp, vp, "db2", "db1 answers 503", &v, &h);
    n.synced[0].store(true, SeqCst);
    // kolla's form has no stickiness: HAProxy returns new sessions to db1 at once.
    both_reach(hp, vp, "db1", "db1 synced again", &v, &h);
}

#[test]
fn osa_http_check_without_httpchk_stays_a_connect_check_like_haproxy() {
    let n = nodes();
    let Some((h, v, hp, vp)) = side_by_side(&n, true) else { return };
    both_reach(hp, vp, "db1", "all synced", &v, &h);
    n.synced[0].store(false, SeqCst);
    // HAProxy ignores the http-check rules: the port accepts, so db1 stays in service.
    std::thread::sleep(Duration::from_millis(1500));
    both_reach(hp, vp, "db1", "db1 answers 503 to a check nobody sends", &v, &h);
}

#[test]
fn output_passes_check_and_strict_refuses_what_is_lost() {
    let text = "global\n    daemon\n    log /dev/log local0\n\ndefaults\n    mode http\n    timeout connect 5s\n    timeout client 1m\n    timeout server 1m\n\n\
                frontend api\n    bind 127.0.0.1:18000\n    default_backend api_back\n\n\
                backend api_back\n    option httpchk GET /healthcheck\n    server a 127.0.0.1:18001 check\n    acl x src 10.0.0.0/8\n";
    let out = import(text, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(":18: not translated: \"acl x src 10.0.0.0/8\""), "{stderr}");
    assert!(stderr.contains(":2: note: \"daemon\""), "{stderr}");
    let toml = temp_path("imported", "toml");
    std::fs::write(&toml, &out.stdout).unwrap();
    let check = run_cli(&["check", "--config", toml.to_str().unwrap()]);
    let _ = std::fs::remove_file(&toml);
    assert!(
        check.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&check.stderr),
        String::from_utf8_lossy(&out.stdout)
    );

    let strict = import(text, &["--strict"]);
    assert_eq!(strict.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&strict.stderr).contains("1 directive(s) not translated"));
    // Notes alone do not fail --strict.
    let clean = import(&text.replace("    acl x src 10.0.0.0/8\n", ""), &["--strict"]);
    assert!(clean.status.success(), "{}", String::from_utf8_lossy(&clean.stderr));

    let missing = Command::new(BIN).args(["import-haproxy", "/nonexistent/haproxy.cfg"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read /nonexistent/haproxy.cfg"));
}

/// `curl` over TLS to `front` as `https://HOST:PORT{path}` (SNI and Host = host): the
/// backend that answered, or what went wrong.
fn curl_who(front: SocketAddr, host: &str, path: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-k", "--max-time", "5", "--resolve"])
        .arg(format!("{host}:{}:127.0.0.1", front.port()))
        .arg(format!("https://{host}:{}{path}", front.port()))
        .output()
        .expect("run curl (apt-get install curl)");
    let body = String::from_utf8_lossy(&out.stdout);
    match body.lines().find_map(|l| l.strip_prefix("server=")) {
        Some(name) => name.to_string(),
        None => format!("no backend ({}): {}{}", out.status, body.trim(), String::from_utf8_lossy(&out.stderr).trim()),
    }
}

#[test]
fn https_frontend_routes_on_host_and_path_like_haproxy() {
    let Some(bin) = haproxy_bin() else { return };
    // HAProxy's PEM: certificate and key in one file, as deployers write it.
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["*.example.com".into(), "example.com".into()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let pem = temp_path("public", "pem");
    std::fs::write(&pem, format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();

    let (web, ks, nova, acme) =
        (HttpBackend::start("web"), HttpBackend::start("ks"), HttpBackend::start("nova"), HttpBackend::start("acme"));
    let cfg = |bind: SocketAddr| {
        format!(
            "defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\n\
             frontend public\n    bind {bind} ssl crt {pem}\n\
             \x20   acl is_keystone hdr(host) -i keystone.example.com:{port}\n\
             \x20   acl is_compute hdr_dom(host) -i compute.example.com\n\
             \x20   acl acme path_beg /.well-known/acme-challenge/\n\
             \x20   use_backend acme_back if acme\n\
             \x20   use_backend keystone_back if is_keystone\n\
             \x20   use_backend nova_back if is_compute {{ path_beg /v2.1 }}\n\
             \x20   default_backend horizon_back\n\n\
             backend horizon_back\n    option httpchk GET /auth/login/\n    server web {} check inter 200\n\n\
             backend keystone_back\n    option httpchk GET /v3\n    server ks {} check inter 200\n\n\
             backend nova_back\n    server nova {} check inter 200\n\n\
             backend acme_back\n    server acme {} check inter 200\n",
            web.addr,
            ks.addr,
            nova.addr,
            acme.addr,
            pem = pem.display(),
            port = bind.port(),
        )
    };
    let (hp, vp) = (free_addr(), free_addr());
    let h = Haproxy::start_cfg(&bin, &cfg(hp), &[hp]);
    let out = import(&cfg(vp), &[]);
    assert!(out.status.success(), "import: {}", String::from_utf8_lossy(&out.stderr));
    let toml = String::from_utf8_lossy(&out.stdout).into_owned();
    let v = Vipgate::start(&toml, vp);

    let cases = [
        ("keystone.example.com", "/v3/auth/tokens", "ks"),
        ("compute.example.com", "/v2.1/servers", "nova"),
        ("api.compute.example.com", "/v2.1/flavors", "nova"),
        ("compute.example.com", "/", "web"),
        ("horizon.example.com", "/auth/login/", "web"),
        ("keystone.example.com", "/.well-known/acme-challenge/token", "acme"),
        ("example.com", "/.well-known/acme-challenge/x", "acme"),
        ("example.com", "/.well-known/other", "web"),
    ];
    for (host, path, want) in cases {
        let ok = eventually(Duration::from_secs(10), || {
            (curl_who(hp, host, path) == want && curl_who(vp, host, path) == want).then_some(())
        });
        assert!(
            ok.is_some(),
            "https://{host}{path}: HAProxy -> {}, vipgate -> {} (wanted {want})\n{toml}\nvipgate:\n{}\nhaproxy:\n{}",
            curl_who(hp, host, path),
            curl_who(vp, host, path),
            v.log(),
            h.log()
        );
    }
    let _ = std::fs::remove_file(&pem);
}
