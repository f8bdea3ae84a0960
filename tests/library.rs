//! The library API (`runtime::start`) driven in-process, for what only the process
//! itself can see: whether splice really carried the bytes, and whether an idle
//! connection gives its pipe back.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;
use vipgate::{config, proxy, runtime};

fn tcp_config(bind: std::net::SocketAddr, backend: std::net::SocketAddr, splice: bool) -> config::Config {
    let text = format!(
        "[global]\nsplice = {splice}\n[services.s]\nbind = \"{bind}\"\n[[services.s.servers]]\nname = \"b\"\naddress = \"{backend}\"\n"
    );
    config::parse(&text, "inline").expect("valid config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splice_carries_bytes_and_idle_connection_holds_no_pipe() {
    let backend = Backend::echo_any("b");
    let bind = free_addr();
    let running = runtime::start(&tcp_config(bind, backend.addr, true)).await.expect("start");

    let client = tokio::task::spawn_blocking(move || {
        let mut s = connect(bind);
        assert_eq!(read_line(&mut s).expect("name"), "b");
        let chunk = vec![0x5au8; 256 * 1024];
        let mut back = vec![0u8; chunk.len()];
        for _ in 0..16 {
            s.write_all(&chunk).expect("write");
            s.read_exact(&mut back).expect("read echo");
            assert!(back.iter().all(|&b| b == 0x5a));
        }
        s // keep the connection open, idle
    })
    .await
    .expect("client thread");

    // splice() made pipes, so the bytes went through the kernel path...
    assert!(proxy::splice::live_pipes() > 0, "no pipe was ever created: splice did not run");
    // ...and the idle connection handed its pipe back.
    let idle = eventually(Duration::from_secs(5), || (proxy::splice::lent_pipes() == 0).then_some(()));
    assert!(idle.is_some(), "an idle connection still holds {} pipe(s)", proxy::splice::lent_pipes());
    assert_eq!(running.open_connections(), 1);
    drop(client);
    running.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binds_a_vip_that_is_not_on_this_host() {
    // 192.0.2.0/24 is TEST-NET-1: never configured here, as a VIP before keepalived moves
    // it. Nothing is sent to it; only the bind must succeed (IP_FREEBIND).
    let port = free_port();
    let vip: std::net::SocketAddr = format!("192.0.2.77:{port}").parse().unwrap();
    let running = runtime::start(&tcp_config(vip, free_addr(), true)).await.expect("bind a non-local VIP");
    assert_eq!(running.local_addrs()[0].1, vip);
    running.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_in_use_is_a_clear_start_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = match runtime::start(&tcp_config(addr, free_addr(), false)).await {
        Ok(_) => panic!("started on a port already in use"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&addr.to_string()) && err.contains("service \"s\""), "{err}");
}
