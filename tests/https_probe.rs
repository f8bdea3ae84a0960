//! The https probe against a real TLS server on loopback: verification against a CA
//! file, a wrong CA, a wrong name, and `verify = false`.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use vipgate::config::{self, Check};
use vipgate::health::{build_probe, probe_once, Target};

struct Tls {
    cert_pem: String,
    key_pem: String,
}

fn self_signed(names: &[&str]) -> Tls {
    let ck = rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .expect("generate certificate");
    Tls { cert_pem: ck.cert.pem(), key_pem: ck.signing_key.serialize_pem() }
}

/// A TLS server that answers every request with `status`.
async fn tls_server(tls: &Tls, status: u16) -> SocketAddr {
    let certs = vec![CertificateDer::from_pem_slice(tls.cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else { return };
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                let body = "keystone is fine\n";
                let resp = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

fn https_check(extra: &str) -> Check {
    let text = format!(
        "[services.s]\nbind = \"127.0.0.1:1\"\n[services.s.check]\nkind = \"https\"\npath = \"/healthcheck\"\ntimeout = \"5s\"\n{extra}\n[[services.s.servers]]\nname = \"a\"\naddress = \"127.0.0.1:2\"\n"
    );
    match config::parse(&text, "inline") {
        Ok(c) => c.services[0].check.clone().expect("a check"),
        Err(e) => panic!("{e}"),
    }
}

fn write_temp(name: &str, text: &str) -> String {
    let p = std::env::temp_dir().join(format!("vipgate-https-{}-{name}", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[tokio::test]
async fn https_probe_verifies_certificates() {
    let good = self_signed(&["keystone.internal", "127.0.0.1"]);
    let other = self_signed(&["someone-else"]);
    let addr = tls_server(&good, 200).await;
    let target = Target { addr, source: None };
    let good_ca = write_temp("good.pem", &good.cert_pem);
    let other_ca = write_temp("other.pem", &other.cert_pem);

    // Verified against the right CA, by IP (no server_name) and by name.
    let check = https_check(&format!("ca_file = \"{good_ca}\""));
    let probe = build_probe(&check.kind, check.timeout).unwrap();
    assert_eq!(probe_once(probe.as_ref(), &check, &target).await, Ok("HTTP 200".to_string()));
    let check = https_check(&format!("ca_file = \"{good_ca}\"\nserver_name = \"keystone.internal\""));
    let probe = build_probe(&check.kind, check.timeout).unwrap();
    assert!(probe_once(probe.as_ref(), &check, &target).await.is_ok());

    // Wrong CA, or a name the certificate does not carry: down, and the reason says TLS.
    let check = https_check(&format!("ca_file = \"{other_ca}\""));
    let probe = build_probe(&check.kind, check.timeout).unwrap();
    let err = probe_once(probe.as_ref(), &check, &target).await.unwrap_err();
    assert!(err.contains("TLS handshake"), "{err}");
    let check = https_check(&format!("ca_file = \"{good_ca}\"\nserver_name = \"glance.internal\""));
    let probe = build_probe(&check.kind, check.timeout).unwrap();
    assert!(probe_once(probe.as_ref(), &check, &target).await.is_err());

    // verify = false accepts any certificate, as HAProxy's `ssl verify none`.
    let check = https_check("verify = false");
    let probe = build_probe(&check.kind, check.timeout).unwrap();
    assert!(probe_once(probe.as_ref(), &check, &target).await.is_ok());

    // The status still decides.
    let bad = tls_server(&good, 503).await;
    let err = probe_once(probe.as_ref(), &check, &Target { addr: bad, source: None }).await.unwrap_err();
    assert!(err.contains("503"), "{err}");
    let _ = std::fs::remove_file(good_ca);
    let _ = std::fs::remove_file(other_ca);
}

#[test]
fn unreadable_ca_file_is_a_config_error() {
    let text = "[services.s]\nbind = \"127.0.0.1:1\"\n[services.s.check]\nkind = \"https\"\nca_file = \"/nonexistent/ca.pem\"\n[[services.s.servers]]\nname = \"a\"\naddress = \"127.0.0.1:2\"\n";
    let err = config::parse(text, "t.toml").unwrap_err().to_string();
    assert!(err.starts_with("t.toml:4:8:") && err.contains("/nonexistent/ca.pem"), "{err}");
}
