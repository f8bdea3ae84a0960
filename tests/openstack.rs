//! `config/openstack.toml`, as shipped, run by the real binary against stand-in servers on
//! loopback: every API service answers through its VIP port from one of its three
//! controllers, horizon's port 80 redirects, keystone hides /server-status, and Galera
//! sends every session to db1 (clustercheck on its side port decides who is up).
//!
//! Only addresses change: the VIP 192.0.2.10 becomes 127.0.0.1 on fresh ports, controller
//! N (192.0.2.1N) becomes 127.0.1.1N on a stand-in's port, the clustercheck port a free
//! one, the admin bind a free one. Everything else (checks, paths, timeouts, rules) is the
//! file as operators get it.

mod common;
#[path = "support/http_backend.rs"]
mod http_backend;
#[path = "support/http_client.rs"]
mod http_client;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use http_backend::HttpBackend;
use http_client::get;

/// Quoted `"192.0.2.10:5000"`-style values in `text` that start with `prefix`.
fn addresses(text: &str, prefix: &str) -> Vec<String> {
    text.split('"').skip(1).step_by(2).filter(|v| v.starts_with(prefix)).map(str::to_string).collect()
}

#[test]
fn openstack_example_serves_every_api_and_galera() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/openstack.toml");
    let original = std::fs::read_to_string(path).expect("config/openstack.toml");
    let mut text = original.clone();

    // The VIP: one fresh loopback port per service port.
    let mut vip: BTreeMap<u16, SocketAddr> = BTreeMap::new();
    for a in addresses(&original, "192.0.2.10:") {
        let port: u16 = a.rsplit(':').next().and_then(|p| p.parse().ok()).expect("VIP port");
        let new = *vip.entry(port).or_insert_with(free_addr);
        text = text.replace(&format!("\"{a}\""), &format!("\"{new}\""));
    }
    // Controllers: a stand-in HTTP server for every API address (a TCP greeter for 3306).
    let mut standins = Vec::new();
    let mut databases = Vec::new();
    for a in addresses(&original, "192.0.2.1") {
        if a.starts_with("192.0.2.10:") || a.starts_with("192.0.2.0/") {
            continue;
        }
        let (host, port) = a.rsplit_once(':').expect("host:port");
        let node = host.rsplit('.').next().expect("last octet"); // "11".."13"
        let ip = format!("127.0.1.{node}");
        let new = if port == "3306" {
            let name = format!("db{}", node.chars().last().unwrap_or('?'));
            let db = Backend::echo(&name, format!("{ip}:0").parse().unwrap());
            let addr = db.addr;
            databases.push(db);
            addr
        } else {
            let b = HttpBackend::start_on(&format!("{port}-ctl{node}"), format!("{ip}:0").parse().unwrap(), false);
            let addr = b.addr;
            standins.push(b);
            addr
        };
        text = text.replace(&format!("\"{a}\""), &format!("\"{new}\""));
    }
    // clustercheck on each database node's side port: the same port on every node. A
    // port free on 127.0.0.1 may still be taken on 127.0.1.1N (a connection lingering in
    // TIME_WAIT there): try another.
    let (check_port, clusterchecks) = (0..20)
        .find_map(|_| {
            let port = free_port();
            let started: std::io::Result<Vec<HttpBackend>> = ["11", "12", "13"]
                .iter()
                .map(|n| {
                    let addr = format!("127.0.1.{n}:{port}").parse().expect("address");
                    HttpBackend::try_start_on(&format!("clustercheck-{n}"), addr, false)
                })
                .collect();
            started.ok().map(|b| (port, b))
        })
        .expect("a side port free on all three database nodes");
    assert_eq!(clusterchecks.len(), 3);
    text = text.replace("port = 49000", &format!("port = {check_port}"));
    let admin = free_addr();
    text = text.replace("bind = \"127.0.0.1:9100\"", &format!("bind = \"{admin}\""));
    let left = addresses(&text, "192.0.2.1");
    assert!(left.is_empty(), "addresses left unmapped: {left:?}");

    let v = Vipgate::spawn(&text);
    // Ready: every service has a usable server.
    let readyz = || {
        std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(1)).ok()?;
        Some(get(admin, "/readyz", ""))
    };
    let ready = eventually(Duration::from_secs(30), || readyz().filter(|r| r.status == 200));
    assert!(ready.is_some(), "not ready within 30 s: {:?}\n{}", readyz().map(|r| r.text()), v.log());

    let api_ports = [5000u16, 9292, 8774, 8775, 8778, 6080, 9696, 8776, 8004, 8000, 8080, 15672, 443];
    for port in api_ports {
        let bind = vip[&port];
        let r = get(bind, "/", "");
        assert_eq!(r.status, 200, "GET / on the VIP port {port}: {}\n{}", r.text(), v.log());
        let server = r.field("server").unwrap_or_default();
        let backend_port = if port == 443 { "80".to_string() } else { port.to_string() };
        assert!(
            server.starts_with(&format!("{backend_port}-ctl")),
            "VIP port {port} answered from {server:?}, not one of its controllers"
        );
    }
    // Horizon: the persistence cookie; port 80 redirects to https.
    let r = get(vip[&443], "/", "");
    assert!(r.headers_named("set-cookie").iter().any(|c| c.starts_with("SERVERID=")), "{:?}", r.headers);
    assert_eq!(r.header("strict-transport-security"), Some("max-age=31536000"));
    let r = get(vip[&80], "/auth/login/", "");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("https://test.example/auth/login/"));
    // Keystone keeps Apache's status page off the VIP.
    assert_eq!(get(vip[&5000], "/server-status", "").status, 403);
    // Keystone's source affinity: one client address, one controller.
    let first = get(vip[&5000], "/v3", "").field("server");
    for _ in 0..5 {
        assert_eq!(get(vip[&5000], "/v3", "").field("server"), first, "source balancing moved a client");
    }

    // Galera: every session on db1, the others are backups.
    for _ in 0..3 {
        let mut s = connect(vip[&3306]);
        assert_eq!(read_line(&mut s).unwrap(), "db1");
    }
}
