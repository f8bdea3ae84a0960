//! TLS in `mode = "http"` through the real binary: certificates picked by SNI, ALPN
//! (h2 or http/1.1, `http2 = false`), `X-Forwarded-Proto: https`, Location rewriting,
//! `redirect_https`, TLS and HTTP/2 to servers, and `vipgate check` on bad certificates.
//!
//! A test CA and its leaf certificates are made at test time with rcgen and written to
//! temp files; clients are hyper over tokio-rustls trusting that CA. Everything runs on
//! 127.0.0.1, and every wait is bounded.

mod common;
#[path = "support/http_backend.rs"]
mod http_backend;
#[path = "support/http_client.rs"]
mod http_client;

use std::future::Future;
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use common::*;
use http_backend::HttpBackend;
use http_client::Resp;

// ---------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------

/// Temp files removed on drop.
#[derive(Default)]
struct Files(Vec<PathBuf>);

impl Files {
    fn write(&mut self, tag: &str, ext: &str, text: &str) -> String {
        let p = temp_path(tag, ext);
        std::fs::write(&p, text).expect("write temp file");
        self.0.push(p.clone());
        p.display().to_string()
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A test CA that signs leaf certificates.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate: its PEM chain (leaf, then CA), key and DER.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

/// A leaf written to temp files.
struct LeafFiles {
    cert: String,
    key: String,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Ca { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    /// A leaf with these DNS names as SANs.
    fn leaf(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: format!("{}{}", cert.pem(), self.issuer.pem()),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        roots
    }
}

impl Leaf {
    fn write(&self, files: &mut Files, tag: &str) -> LeafFiles {
        LeafFiles { cert: files.write(tag, "crt", &self.cert_pem), key: files.write(tag, "key", &self.key_pem) }
    }
}

/// `certificates = [...]` for these files, in order.
fn certificates(list: &[&LeafFiles]) -> String {
    let items: Vec<String> = list.iter().map(|f| format!("{{ cert = \"{}\", key = \"{}\" }}", f.cert, f.key)).collect();
    format!("certificates = [{}]\n", items.join(", "))
}

// ---------------------------------------------------------------------------------------
// TLS clients
// ---------------------------------------------------------------------------------------

/// Verifies the chain against the CA but not the name: to see which certificate the
/// server picks when the name matches none of them, or when no SNI is sent.
#[derive(Debug)]
struct ChainOnly(RootCertStore, Arc<CryptoProvider>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.0,
            intermediates,
            now,
            self.1.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.1.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.1.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.1.signature_verification_algorithms.supported_schemes()
    }
}

/// How a test client does its handshake.
struct Client {
    alpn: &'static [&'static [u8]],
    /// Check the certificate's name too (a normal client); otherwise only the chain.
    verify_name: bool,
    sni: bool,
}

const H1: &[&[u8]] = &[b"http/1.1"];
const H2_H1: &[&[u8]] = &[b"h2", b"http/1.1"];
const H2_ONLY: &[&[u8]] = &[b"h2"];
const NO_ALPN: &[&[u8]] = &[];

impl Client {
    fn alpn(alpn: &'static [&'static [u8]]) -> Client {
        Client { alpn, verify_name: true, sni: true }
    }

    fn config(&self, ca: &Ca) -> Arc<ClientConfig> {
        let provider = Arc::new(ring::default_provider());
        let builder =
            ClientConfig::builder_with_provider(Arc::clone(&provider)).with_safe_default_protocol_versions().unwrap();
        let mut config = if self.verify_name {
            builder.with_root_certificates(ca.roots()).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(ca.roots(), provider)))
                .with_no_client_auth()
        };
        config.alpn_protocols = self.alpn.iter().map(|p| p.to_vec()).collect();
        config.enable_sni = self.sni;
        Arc::new(config)
    }
}

/// A finished client handshake with vipgate.
struct Tls {
    stream: TlsStream<TcpStream>,
    /// The client's port: the `client=` field of vipgate's log lines for this connection.
    port: u16,
}

impl Tls {
    fn cert(&self) -> CertificateDer<'static> {
        self.stream.get_ref().1.peer_certificates().expect("a peer certificate")[0].clone().into_owned()
    }

    fn alpn(&self) -> Option<String> {
        self.stream.get_ref().1.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned())
    }
}

/// Connect to `addr` and do a TLS handshake for `name`; bounded by `WAIT`.
async fn tls_connect(addr: SocketAddr, config: Arc<ClientConfig>, name: &str) -> std::io::Result<Tls> {
    let name = ServerName::try_from(name.to_string()).expect("a valid server name");
    within("TLS handshake with vipgate", async {
        let tcp = TcpStream::connect(addr).await?;
        let port = tcp.local_addr()?.port();
        let stream = TlsConnector::from(config).connect(name, tcp).await?;
        Ok(Tls { stream, port })
    })
    .await
}

/// Run `f` to completion on a fresh current-thread runtime.
fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// `f`, or a panic naming `what` once `WAIT` has passed.
async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: nothing within {WAIT:?}"),
    }
}

/// A response read whole, in the shape of the blocking client's.
async fn collect(resp: Response<Incoming>) -> Resp {
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = within("response body", resp.into_body().collect()).await.expect("response body").to_bytes().to_vec();
    Resp { status, headers, body }
}

/// An HTTP/1.1 connection over `tls` (the connection task is spawned on this runtime).
async fn h1_over(tls: Tls) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let (sender, conn) = within("HTTP/1.1 handshake", hyper::client::conn::http1::handshake(TokioIo::new(tls.stream)))
        .await
        .expect("HTTP/1.1 client handshake");
    tokio::spawn(conn);
    sender
}

/// `GET path` with `Host: host` on an HTTP/1.1 connection.
async fn h1_get(sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>, path: &str, host: &str) -> Resp {
    h1_get_with(sender, path, host, &[]).await
}

/// `h1_get` with extra request headers.
async fn h1_get_with(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    path: &str,
    host: &str,
    extra: &[(&str, &str)],
) -> Resp {
    within("HTTP/1.1 connection ready", sender.ready()).await.expect("connection ready");
    let mut req = Request::get(path).header("host", host);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let req = req.body(Empty::new()).unwrap();
    let resp = within("HTTP/1.1 response", sender.send_request(req)).await.expect("HTTP/1.1 response");
    collect(resp).await
}

/// Request bodies of the HTTP/2 client.
type H2Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// An HTTP/2 connection over `tls`.
async fn h2_over(tls: Tls) -> hyper::client::conn::http2::SendRequest<H2Body> {
    let (sender, conn) = within(
        "HTTP/2 handshake",
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls.stream)),
    )
    .await
    .expect("HTTP/2 client handshake");
    tokio::spawn(conn);
    sender
}

/// `GET url` (absolute: its authority is the `:authority`) on an HTTP/2 connection.
async fn h2_get(sender: hyper::client::conn::http2::SendRequest<H2Body>, url: String) -> Resp {
    h2_send(sender, Request::get(url).body(Empty::new().boxed()).unwrap()).await
}

/// Send `req` on an HTTP/2 connection.
async fn h2_send(mut sender: hyper::client::conn::http2::SendRequest<H2Body>, req: Request<H2Body>) -> Resp {
    let resp = within("HTTP/2 response", sender.send_request(req)).await.expect("HTTP/2 response");
    assert_eq!(resp.version(), Version::HTTP_2);
    collect(resp).await
}

/// A body sent in these frames, its length not announced (no `content-length`).
struct Chunks(std::collections::VecDeque<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// The test backend's body checksum.
fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0u64, |s, b| s.wrapping_mul(31).wrapping_add(u64::from(*b)))
}

// ---------------------------------------------------------------------------------------
// vipgate
// ---------------------------------------------------------------------------------------

/// Start vipgate and wait until every bind accepts (connect, then close at once).
fn start(cfg: &str, binds: &[SocketAddr]) -> Vipgate {
    let mut v = Vipgate::spawn(cfg);
    for bind in binds {
        let ok = eventually(WAIT, || {
            if let Some(st) = v.try_wait() {
                panic!("vipgate exited with {st}:\n{}", v.log());
            }
            StdTcpStream::connect_timeout(bind, Duration::from_millis(500)).ok()
        });
        assert!(ok.is_some(), "vipgate never listened on {bind}:\n{}", v.log());
    }
    v
}

/// One `mode = "http"` service block: `keys`, then its servers (name, address, extra).
fn service(name: &str, bind: SocketAddr, keys: &str, list: &[(&str, SocketAddr, &str)]) -> String {
    format!("\n[services.{name}]\nbind = \"{bind}\"\nmode = \"http\"\n{keys}\n{}", servers(name, list))
}

/// Every stderr line that is an access log line of the connection from client `port`.
fn request_lines(v: &Vipgate, port: u16) -> Vec<String> {
    let client = format!("127.0.0.1:{port}");
    v.log()
        .lines()
        .filter(|l| l.contains(" request ") && field(l, "client").as_deref() == Some(client.as_str()))
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------------------
// A TLS backend: hyper over tokio-rustls, HTTP/1.1 or h2 by ALPN
// ---------------------------------------------------------------------------------------

/// A TLS server on its own runtime thread. It answers 200 with a report of what it saw
/// (`server=`, `version=`, `sni=`, `alpn=`, `path=`, `h:NAME=` lines) and counts the TCP
/// connections it accepted and the handshakes that failed.
struct TlsBackend {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    failed_handshakes: Arc<AtomicUsize>,
    /// The TLS errors of the failed handshakes.
    errors: Arc<Mutex<Vec<String>>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TlsBackend {
    fn start(name: &str, leaf: &Leaf) -> TlsBackend {
        let certs = vec![leaf.der.clone()];
        let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
        let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind TLS backend");
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let failed_handshakes = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let (c, f, e, name) =
            (Arc::clone(&connections), Arc::clone(&failed_handshakes), Arc::clone(&errors), name.to_string());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).unwrap();
                loop {
                    let (tcp, _) = tokio::select! {
                        _ = &mut rx => break,
                        a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                    };
                    c.fetch_add(1, SeqCst);
                    let (acceptor, f, e, name) = (acceptor.clone(), Arc::clone(&f), Arc::clone(&e), name.clone());
                    tokio::spawn(async move {
                        let tls = match tokio::time::timeout(WAIT, acceptor.accept(tcp)).await {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(err)) => {
                                f.fetch_add(1, SeqCst);
                                e.lock().unwrap().push(err.to_string());
                                return;
                            }
                            Err(_) => {
                                f.fetch_add(1, SeqCst);
                                e.lock().unwrap().push("handshake timed out".into());
                                return;
                            }
                        };
                        let conn = tls.get_ref().1;
                        let sni = conn.server_name().unwrap_or("-").to_string();
                        let alpn = conn.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned());
                        let h2 = alpn.as_deref() == Some("h2");
                        let facts = format!("server={name}\nsni={sni}\nalpn={}\n", alpn.as_deref().unwrap_or("-"));
                        let svc = service_fn(move |req| report(facts.clone(), req));
                        let io = TokioIo::new(tls);
                        if h2 {
                            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                .serve_connection(io, svc)
                                .await;
                        } else {
                            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
                        }
                    });
                }
            });
            rt.shutdown_timeout(Duration::from_secs(1));
        });
        TlsBackend { addr, connections, failed_handshakes, errors, shutdown: Some(tx), thread: Some(thread) }
    }

    fn connections(&self) -> usize {
        self.connections.load(SeqCst)
    }

    fn failed_handshakes(&self) -> usize {
        self.failed_handshakes.load(SeqCst)
    }
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn report(facts: String, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let mut text = format!(
        "{facts}version={:?}\nscheme={}\npath={}\nauthority={}\n",
        req.version(),
        req.uri().scheme_str().unwrap_or("-"),
        req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        req.uri().authority().map(|a| a.as_str()).unwrap_or("-"),
    );
    for (k, v) in req.headers() {
        text.push_str(&format!("h:{}={}\n", k, String::from_utf8_lossy(v.as_bytes())));
    }
    let _ = req.into_body().collect().await;
    Ok(Response::new(Full::new(Bytes::from(text))))
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// Two certificates on one listener: SNI picks by SAN (case-insensitively); no SNI or an
/// unknown name gets the first one listed, whichever that is.
#[test]
fn sni_picks_the_certificate_and_the_first_is_the_default() {
    let ca = Ca::new();
    let mut files = Files::default();
    let a = ca.leaf(&["a.example.org"]);
    let b = ca.leaf(&["b.example.org"]);
    let (af, bf) = (a.write(&mut files, "a"), b.write(&mut files, "b"));
    let backend = HttpBackend::start("b1");
    let (ab, ba) = (free_addr(), free_addr());
    let list = [("b1", backend.addr, "")];
    let cfg = format!(
        "{}{}{}",
        global(""),
        service("ab", ab, &certificates(&[&af, &bf]), &list),
        service("ba", ba, &certificates(&[&bf, &af]), &list)
    );
    let mut v = start(&cfg, &[ab, ba]);

    block_on(async {
        let verified = Client::alpn(H1).config(&ca);
        let chain_only = Client { alpn: H1, verify_name: false, sni: true }.config(&ca);
        let no_sni = Client { alpn: H1, verify_name: false, sni: false }.config(&ca);
        let name = |d: &CertificateDer<'_>| {
            if *d == a.der {
                "A"
            } else if *d == b.der {
                "B"
            } else {
                "neither"
            }
        };

        // A verifying client: the handshake itself proves the name matched.
        let tls = tls_connect(ab, Arc::clone(&verified), "b.example.org").await.expect("SNI b.example.org");
        assert_eq!(name(&tls.cert()), "B", "SNI b.example.org");
        let mut h1 = h1_over(tls).await;
        let r = h1_get(&mut h1, "/sni", "b.example.org").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.seen_header("x-forwarded-proto"), vec!["https"]);

        let tls = tls_connect(ab, Arc::clone(&verified), "a.example.org").await.expect("SNI a.example.org");
        assert_eq!(name(&tls.cert()), "A", "SNI a.example.org");
        let tls = tls_connect(ab, Arc::clone(&verified), "B.Example.ORG").await.expect("SNI B.Example.ORG");
        assert_eq!(name(&tls.cert()), "B", "SNI compares case-insensitively");
        // The order of the list does not matter when the name matches.
        let tls = tls_connect(ba, Arc::clone(&verified), "a.example.org").await.expect("SNI a.example.org");
        assert_eq!(name(&tls.cert()), "A", "SNI a.example.org, listed second");

        // No match, or no SNI at all: the first certificate listed.
        for (addr, want) in [(ab, "A"), (ba, "B")] {
            let tls = tls_connect(addr, Arc::clone(&chain_only), "unknown.example.org").await.expect("unknown SNI");
            assert_eq!(name(&tls.cert()), want, "unknown SNI on the {want}-first listener");
            let tls = tls_connect(addr, Arc::clone(&no_sni), "b.example.org").await.expect("no SNI");
            assert_eq!(name(&tls.cert()), want, "no SNI on the {want}-first listener");
            let mut h1 = h1_over(tls).await;
            assert_eq!(h1_get(&mut h1, "/no-sni", "x").await.status, 200);
        }
    });
    assert!(v.try_wait().is_none(), "vipgate exited:\n{}", v.log());
}

/// HTTP/1.1 over TLS (no ALPN, or ALPN http/1.1) reaches the server with
/// `X-Forwarded-Proto: https`; an ALPN h2 client is served HTTP/2, three requests
/// multiplexed on one connection, with the `:authority` as the server's Host.
#[test]
fn http1_and_h2_over_tls_reach_the_server() {
    let ca = Ca::new();
    let mut files = Files::default();
    let leaf = ca.leaf(&["api.example"]).write(&mut files, "api");
    let backend = HttpBackend::start("b1");
    let (bind, noproto) = (free_addr(), free_addr());
    let list = [("b1", backend.addr, "")];
    let cfg = format!(
        "{}{}{}",
        global(""),
        service("api", bind, &certificates(&[&leaf]), &list),
        service("noproto", noproto, &format!("{}forwarded_proto = false\n", certificates(&[&leaf])), &list)
    );
    let v = start(&cfg, &[bind, noproto]);

    let (h1_port, h2_port, elapsed) = block_on(async {
        // No ALPN at all: HTTP/1.1, two requests on one kept-alive connection.
        let tls = tls_connect(bind, Client::alpn(NO_ALPN).config(&ca), "api.example").await.expect("TLS");
        assert_eq!(tls.alpn(), None);
        let mut h1 = h1_over(tls).await;
        for i in 0..2 {
            let r = h1_get(&mut h1, &format!("/v1/keep/{i}?x=1"), "api.example:8443").await;
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.field("path"), Some(format!("/v1/keep/{i}?x=1")));
        }

        // ALPN http/1.1.
        let tls = tls_connect(bind, Client::alpn(H1).config(&ca), "api.example").await.expect("TLS");
        assert_eq!(tls.alpn().as_deref(), Some("http/1.1"));
        let h1_port = tls.port;
        let mut h1 = h1_over(tls).await;
        let r = h1_get(&mut h1, "/v1/tls?y=2", "api.example:8443").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.field("server").as_deref(), Some("b1"));
        assert_eq!(r.field("path").as_deref(), Some("/v1/tls?y=2"));
        assert_eq!(r.field("version").as_deref(), Some("HTTP/1.1"));
        assert_eq!(r.seen_header("x-forwarded-proto"), vec!["https"], "{}", r.text());
        assert_eq!(r.seen_header("x-forwarded-for"), vec!["127.0.0.1"]);
        assert_eq!(r.seen_header("host"), vec!["api.example:8443"]);
        // A client's own X-Forwarded-Proto (untrusted) is replaced, not kept.
        let r = h1_get_with(&mut h1, "/spoof", "api.example", &[("x-forwarded-proto", "http")]).await;
        assert_eq!(r.seen_header("x-forwarded-proto"), vec!["https"], "{}", r.text());

        // forwarded_proto = false: none added, and a client's removed.
        let tls = tls_connect(noproto, Client::alpn(H1).config(&ca), "api.example").await.expect("TLS");
        let mut h1 = h1_over(tls).await;
        let r = h1_get_with(&mut h1, "/noproto", "api.example", &[("x-forwarded-proto", "https")]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.seen_header("x-forwarded-proto").is_empty(), "forwarded_proto = false:\n{}", r.text());
        assert_eq!(r.seen_header("x-forwarded-for"), vec!["127.0.0.1"]);

        // ALPN h2: three slow requests at once on one connection.
        let tls = tls_connect(bind, Client::alpn(H2_H1).config(&ca), "api.example").await.expect("TLS");
        assert_eq!(tls.alpn().as_deref(), Some("h2"), "a client offering h2 gets it (http2 defaults to true)");
        let h2_port = tls.port;
        let h2 = h2_over(tls).await;
        let t = Instant::now();
        let tasks: Vec<_> = (0..3)
            .map(|i| tokio::spawn(h2_get(h2.clone(), format!("https://api.example:8443/slow?ms=1000&i={i}"))))
            .collect();
        let mut got = Vec::new();
        for task in tasks {
            got.push(within("HTTP/2 request task", task).await.expect("HTTP/2 request task"));
        }
        let elapsed = t.elapsed();
        // A request body of unannounced length, from an HTTP/2 client to an HTTP/1.1 server.
        let chunks: Vec<Bytes> = (0..8u8).map(|i| Bytes::from(vec![b'a' + i; 10_000])).collect();
        let all: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let req = Request::post("https://api.example:8443/upload").body(Chunks(chunks.into()).boxed()).unwrap();
        let r = h2_send(h2.clone(), req).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.field("body_len"), Some(all.len().to_string()), "{}", r.text());
        assert_eq!(r.field("body_sum"), Some(checksum(&all).to_string()));
        for (i, r) in got.iter().enumerate() {
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.field("path"), Some(format!("/slow?ms=1000&i={i}")));
            assert_eq!(r.seen_header("host"), vec!["api.example:8443"], "the :authority becomes Host:\n{}", r.text());
            assert_eq!(r.seen_header("x-forwarded-proto"), vec!["https"]);
            assert_eq!(r.field("version").as_deref(), Some("HTTP/1.1"), "the server still speaks HTTP/1.1");
        }
        (h1_port, h2_port, elapsed)
    });
    // Three 1 s requests in well under 3 s: they ran side by side, not one after another.
    assert!(elapsed < Duration::from_millis(2500), "3 multiplexed 1 s requests took {elapsed:?}");

    // The access log: the h1 request, and all three h2 requests from one client connection.
    let line = v.wait_client_line(h1_port, |l| l.contains("path=/v1/tls"));
    assert!(line.contains("status=200") && line.contains("service=api"), "{line}");
    let lines = poll(WAIT, Duration::from_millis(50), || {
        let l: Vec<String> = request_lines(&v, h2_port).into_iter().filter(|l| l.contains("path=/slow")).collect();
        (l.len() >= 3).then_some(l)
    })
    .unwrap_or_else(|| panic!("3 access log lines for client port {h2_port}:\n{}", v.log()));
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(lines.iter().all(|l| l.contains("path=/slow") && l.contains("status=200")), "{lines:#?}");
    assert_eq!(backend.requests(), 9);
}

/// `http2 = false` leaves h2 out of ALPN: a client offering both gets http/1.1, one
/// offering only h2 is refused at the handshake; the default listener next to it offers h2.
#[test]
fn http2_false_negotiates_http1_only() {
    let ca = Ca::new();
    let mut files = Files::default();
    let leaf = ca.leaf(&["api.example"]).write(&mut files, "api");
    let backend = HttpBackend::start("b1");
    let (off, on) = (free_addr(), free_addr());
    let list = [("b1", backend.addr, "")];
    let cfg = format!(
        "{}{}{}",
        global(""),
        service("off", off, &format!("{}http2 = false\n", certificates(&[&leaf])), &list),
        service("on", on, &certificates(&[&leaf]), &list)
    );
    let mut v = start(&cfg, &[off, on]);

    block_on(async {
        let tls = tls_connect(off, Client::alpn(H2_H1).config(&ca), "api.example").await.expect("TLS");
        assert_eq!(tls.alpn().as_deref(), Some("http/1.1"), "http2 = false must not negotiate h2");
        let mut h1 = h1_over(tls).await;
        let r = h1_get(&mut h1, "/off", "api.example").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.seen_header("x-forwarded-proto"), vec!["https"]);

        // Only h2 offered: no protocol in common (RFC 7301: no_application_protocol).
        match tls_connect(off, Client::alpn(H2_ONLY).config(&ca), "api.example").await {
            Err(e) => assert!(e.to_string().contains("NoApplicationProtocol"), "{e}"),
            Ok(tls) => panic!("a client offering only h2 was accepted with ALPN {:?}", tls.alpn()),
        }

        // Control: the same certificate with the default settings negotiates h2.
        let tls = tls_connect(on, Client::alpn(H2_H1).config(&ca), "api.example").await.expect("TLS");
        assert_eq!(tls.alpn().as_deref(), Some("h2"));
        let r = h2_get(h2_over(tls).await, "https://api.example/on".into()).await;
        assert_eq!(r.status, 200, "{}", r.text());
    });
    assert!(v.try_wait().is_none(), "vipgate exited:\n{}", v.log());
}

/// The server's `Location: http://HOST/next` becomes `https://HOST/next` on a TLS listener
/// when HOST is the request's host (a non-default port kept); unchanged on a plain
/// listener and with `rewrite_location = false`.
#[test]
fn location_is_rewritten_to_https_on_tls_listeners_only() {
    let ca = Ca::new();
    let mut files = Files::default();
    let leaf = ca.leaf(&["vip.example"]).write(&mut files, "vip");
    let backend = HttpBackend::start("b1");
    let (tls_bind, plain_bind, off_bind) = (free_addr(), free_addr(), free_addr());
    let list = [("b1", backend.addr, "")];
    let certs = certificates(&[&leaf]);
    let cfg = format!(
        "{}{}{}{}",
        global(""),
        service("tls", tls_bind, &format!("{certs}cookie = \"SRV\"\n"), &list),
        service("plain", plain_bind, "cookie = \"SRV\"\n", &list),
        service("norewrite", off_bind, &format!("{certs}rewrite_location = false\n"), &list)
    );
    let v = start(&cfg, &[tls_bind, plain_bind, off_bind]);

    block_on(async {
        let client = Client::alpn(H1).config(&ca);
        let tls = tls_connect(tls_bind, Arc::clone(&client), "vip.example").await.expect("TLS");
        let mut h1 = h1_over(tls).await;
        for (host, want) in [
            ("vip.example:8004", "https://vip.example:8004/next"),
            ("vip.example", "https://vip.example/next"),
            ("VIP.example:8004", "https://VIP.example:8004/next"),
        ] {
            let r = h1_get(&mut h1, "/redirect", host).await;
            assert_eq!(r.status, 302, "{}", r.text());
            assert_eq!(r.headers_named("location"), vec![want], "Host {host}");
            // The persistence cookie is Secure for a TLS client.
            assert_eq!(r.headers_named("set-cookie"), vec!["SRV=b1; path=/; HttpOnly; Secure"]);
        }

        // HTTP/2: the :authority is the host.
        let tls = tls_connect(tls_bind, Client::alpn(H2_H1).config(&ca), "vip.example").await.expect("TLS");
        let r = h2_get(h2_over(tls).await, "https://vip.example:8004/redirect".into()).await;
        assert_eq!(r.status, 302, "{}", r.text());
        assert_eq!(r.header("location"), Some("https://vip.example:8004/next"));

        let tls = tls_connect(off_bind, Arc::clone(&client), "vip.example").await.expect("TLS");
        let mut h1 = h1_over(tls).await;
        let r = h1_get(&mut h1, "/redirect", "vip.example:8004").await;
        assert_eq!(r.status, 302);
        assert_eq!(r.headers_named("location"), vec!["http://vip.example:8004/next"], "rewrite_location = false");
    });

    let mut s = http_client::connect(plain_bind);
    let r = http_client::send(&mut s, "GET /redirect HTTP/1.1\r\nHost: vip.example:8004\r\nConnection: close\r\n\r\n")
        .expect("plain response");
    assert_eq!(r.status, 302, "{}", r.text());
    assert_eq!(r.headers_named("location"), vec!["http://vip.example:8004/next"], "plain listener");
    assert_eq!(r.headers_named("set-cookie"), vec!["SRV=b1; path=/; HttpOnly"], "no Secure in plain text");
    assert_eq!(backend.requests(), 6, "{}", v.log());
}

/// A `redirect_https` service needs no server: every request gets a 301 to the same path
/// and query on https, the plain port dropped, `https_port` added when set.
#[test]
fn redirect_https_without_servers() {
    let (default_port, custom_port) = (free_addr(), free_addr());
    let cfg = format!(
        "{}{}{}",
        global(""),
        service("to443", default_port, "redirect_https = true\n", &[]),
        service("to13000", custom_port, "redirect_https = true\nhttps_port = 13000\n", &[])
    );
    let v = start(&cfg, &[default_port, custom_port]);

    let get = |addr: SocketAddr, head: &str| {
        let mut s = http_client::connect(addr);
        http_client::send(&mut s, head).expect("redirect response")
    };
    for (addr, want) in [(default_port, "https://h.example/a?b=1"), (custom_port, "https://h.example:13000/a?b=1")] {
        let r = get(addr, "GET /a?b=1 HTTP/1.1\r\nHost: h.example:8080\r\nConnection: close\r\n\r\n");
        assert_eq!(r.status, 301, "{}\n{}", r.text(), v.log());
        assert_eq!(r.headers_named("location"), vec![want]);
        // Any method, a Host without a port.
        let r =
            get(addr, "POST /a?b=1 HTTP/1.1\r\nHost: h.example\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi");
        assert_eq!(r.status, 301, "{}", r.text());
        assert_eq!(r.headers_named("location"), vec![want]);
    }
    // No Host at all (HTTP/1.0): nothing to redirect to.
    let r = get(default_port, "GET /a HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.header("location").is_none());
    let line = v.wait_log_line(WAIT, |l| l.contains(" request ") && l.contains("status=301")).expect("access log");
    assert!(line.contains("service=to443") || line.contains("service=to13000"), "{line}");
}

/// Service keys for TLS to servers verified against `ca_file`, by `name` when given
/// (else by the server's IP), plus `extra` lines.
fn tls_to_servers(ca_file: &str, name: Option<&str>, extra: &str) -> String {
    let name = name.map(|n| format!("tls_server_name = \"{n}\"\n")).unwrap_or_default();
    format!("tls = true\ntls_ca_file = \"{ca_file}\"\n{name}{extra}")
}

/// TLS to servers: verified against `tls_ca_file` with `tls_server_name` (sent as SNI),
/// or by IP without it; a name the certificate lacks fails the handshake, which counts as
/// a connect failure (503, and the log says why); `tls_verify = false` needs no CA.
/// Connections are kept alive; with `server_http2`, ALPN picks h2.
#[test]
fn tls_to_servers_verifies_the_name() {
    let ca = Ca::new();
    let mut files = Files::default();
    let ca_file = files.write("ca", "pem", &ca.pem());
    let backend = TlsBackend::start("tls1", &ca.leaf(&["api.internal"]));
    let by_ip = TlsBackend::start("tls-ip", &ca.leaf(&["127.0.0.1"]));
    let [good, wrong, noverify, h2, ip, noname] = [(); 6].map(|_| free_addr());
    let list = [("tls1", backend.addr, "")];
    let cfg = [
        global(""),
        service("good", good, &tls_to_servers(&ca_file, Some("api.internal"), ""), &list),
        service("wrong", wrong, &tls_to_servers(&ca_file, Some("db.internal"), ""), &list),
        service("noverify", noverify, "tls = true\ntls_verify = false\n", &list),
        service("h2", h2, &tls_to_servers(&ca_file, Some("api.internal"), "server_http2 = true\n"), &list),
        service("byip", ip, &tls_to_servers(&ca_file, None, ""), &[("tls-ip", by_ip.addr, "")]),
        service("noname", noname, &tls_to_servers(&ca_file, None, ""), &list),
    ]
    .concat();
    let v = start(&cfg, &[good, wrong, noverify, h2, ip, noname]);
    let get = |addr: SocketAddr, path: &str| http_client::get(addr, path, "");

    let r = get(good, "/good");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), v.log());
    // Later requests reuse the kept-alive TLS connection.
    for i in 0..4 {
        let r = get(good, &format!("/good/{i}"));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(backend.connections(), 1, "5 sequential requests opened more than one TLS connection");
    assert_eq!(r.field("sni").as_deref(), Some("api.internal"), "tls_server_name is the SNI");
    assert_eq!(r.field("alpn").as_deref(), Some("http/1.1"));
    assert_eq!(r.field("version").as_deref(), Some("HTTP/1.1"));
    assert_eq!(r.field("path").as_deref(), Some("/good"));
    assert_eq!(r.seen_header("x-forwarded-proto"), vec!["http"], "the client came in plain text");
    assert_eq!(backend.failed_handshakes(), 0);

    let before = backend.connections();
    let t = Instant::now();
    let r = get(wrong, "/wrong");
    assert_eq!(r.status, 503, "a failed TLS handshake is a connect failure:\n{}\n{}", r.text(), v.log());
    assert!(t.elapsed() < Duration::from_secs(5), "503 after {:?}", t.elapsed());
    assert!(backend.connections() > before, "vipgate never reached the server");
    let line = v
        .wait_log_line(WAIT, |l| l.contains("connect failed") && l.contains("service=wrong"))
        .unwrap_or_else(|| panic!("no connect failure logged:\n{}", v.log()));
    assert!(line.contains("TLS handshake with the server"), "{line}");
    assert!(line.to_lowercase().contains("not valid for name"), "the reason names the certificate problem: {line}");
    let access = v.wait_log_line(WAIT, |l| l.contains(" request ") && l.contains("path=/wrong")).expect("access log");
    assert!(access.contains("status=503") && access.contains("service=wrong"), "{access}");
    // The server saw the handshake fail (vipgate's alert), not a request.
    assert!(
        poll(WAIT, Duration::from_millis(20), || (backend.failed_handshakes() > 0).then_some(())).is_some(),
        "the server saw no failed handshake"
    );
    let errors = backend.errors.lock().unwrap().clone();
    assert!(errors.iter().any(|e| e.contains("BadCertificate")), "vipgate should reject the certificate: {errors:?}");

    let r = get(noverify, "/noverify");
    assert_eq!(r.status, 200, "tls_verify = false:\n{}\n{}", r.text(), v.log());
    assert_eq!(r.field("path").as_deref(), Some("/noverify"));
    // No tls_server_name: the server's address is the name, and an IP is never sent as SNI.
    assert_eq!(r.field("sni").as_deref(), Some("-"));

    let before = backend.connections();
    for i in 0..4 {
        let r = get(h2, &format!("/h2/{i}"));
        assert_eq!(r.status, 200, "server_http2 over TLS:\n{}\n{}", r.text(), v.log());
        assert_eq!(r.field("version").as_deref(), Some("HTTP/2.0"));
    }
    assert_eq!(backend.connections() - before, 1, "sequential requests share one h2 connection over TLS");
    let r = get(h2, "/h2");
    assert_eq!(r.status, 200, "server_http2 over TLS:\n{}\n{}", r.text(), v.log());
    assert_eq!(r.field("alpn").as_deref(), Some("h2"));
    assert_eq!(r.field("version").as_deref(), Some("HTTP/2.0"));
    assert_eq!(r.field("authority").as_deref(), Some("test.example"), "the client's Host is the :authority");

    // No tls_server_name: the server's IP is verified (and not sent as SNI).
    let r = get(ip, "/byip");
    assert_eq!(r.status, 200, "a certificate for 127.0.0.1:\n{}\n{}", r.text(), v.log());
    assert_eq!(r.field("sni").as_deref(), Some("-"));
    let r = get(noname, "/noname");
    assert_eq!(r.status, 503, "api.internal's certificate does not cover 127.0.0.1:\n{}", r.text());
    let line = v
        .wait_log_line(WAIT, |l| l.contains("connect failed") && l.contains("service=noname"))
        .unwrap_or_else(|| panic!("no connect failure logged:\n{}", v.log()));
    assert!(line.contains("TLS handshake with the server") && line.contains("127.0.0.1"), "{line}");
}

/// `server_http2 = true` on plain TCP: h2 with prior knowledge; HTTP/1.1 clients' requests
/// arrive as HTTP/2, all on one shared server connection.
#[test]
fn server_http2_uses_one_h2c_connection() {
    let backend = HttpBackend::start_h2c("h2c");
    let bind = free_addr();
    let cfg = format!("{}{}", global(""), service("api", bind, "server_http2 = true\n", &[("h2c", backend.addr, "")]));
    let v = start(&cfg, &[bind]);

    // Ten requests, each on its own client connection, then ten on one kept-alive one.
    for i in 0..10 {
        let r = http_client::get(bind, &format!("/new/{i}"), "");
        assert_eq!(r.status, 200, "{}\n{}", r.text(), v.log());
        assert_eq!(r.field("version").as_deref(), Some("HTTP/2.0"));
        assert_eq!(r.field("path"), Some(format!("/new/{i}")));
    }
    let mut s = http_client::connect(bind);
    for i in 0..10 {
        let r = http_client::send(&mut s, &format!("GET /keep/{i} HTTP/1.1\r\nHost: api.example\r\n\r\n"))
            .expect("keep-alive response");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.field("version").as_deref(), Some("HTTP/2.0"));
    }
    // A request body goes over h2 too.
    let body: String = (0..100_000u32).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let sum = checksum(body.as_bytes());
    let r = http_client::send(
        &mut s,
        &format!("PUT /upload HTTP/1.1\r\nHost: api.example\r\nContent-Length: {}\r\n\r\n{body}", body.len()),
    )
    .expect("upload response");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.field("version").as_deref(), Some("HTTP/2.0"));
    assert_eq!(r.field("body_len"), Some(body.len().to_string()));
    assert_eq!(r.field("body_sum"), Some(sum.to_string()));
    assert_eq!(backend.requests(), 21);
    assert_eq!(backend.connections(), 1, "21 sequential requests must share one h2 connection to the server");
}

/// `vipgate check` reports a missing certificate or key file, and a key that is not the
/// certificate's, as `FILE:LINE:COL: message` naming the file, and exits 1.
#[test]
fn check_reports_bad_certificate_files_with_their_location() {
    let ca = Ca::new();
    let mut files = Files::default();
    let a = ca.leaf(&["a.example.org"]).write(&mut files, "a");
    let b = ca.leaf(&["b.example.org"]).write(&mut files, "b");
    let missing = temp_path("missing", "crt").display().to_string();
    let missing_key = temp_path("missing", "key").display().to_string();
    let mismatched = LeafFiles { cert: a.cert.clone(), key: b.key.clone() };
    let absent = LeafFiles { cert: missing.clone(), key: a.key.clone() };
    let keyless = LeafFiles { cert: a.cert.clone(), key: missing_key.clone() };

    for (what, certs, needles) in [
        ("missing certificate file", certificates(&[&absent]), vec![missing.as_str(), "cannot read"]),
        ("missing key file", certificates(&[&keyless]), vec![missing_key.as_str(), "cannot read"]),
        (
            "key of another certificate",
            certificates(&[&b, &mismatched]),
            vec![b.key.as_str(), a.cert.as_str(), "does not match"],
        ),
    ] {
        // `certificates` is on line 8 of this file.
        let text = format!(
            "[global]\nworkers = 2\n\n[services.web]\nbind = \"127.0.0.1:1\"\nmode = \"http\"\n# TLS\n{certs}\n[[services.web.servers]]\nname = \"s1\"\naddress = \"127.0.0.1:2\"\n"
        );
        let path = files.write("check", "toml", &text);
        let out = run_cli(&["check", "--config", &path]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{what}: check should exit 1; stderr:\n{stderr}");
        let line = stderr
            .lines()
            .find(|l| needles.iter().all(|n| l.contains(n)))
            .unwrap_or_else(|| panic!("{what}: no diagnostic mentioning {needles:?}; stderr:\n{stderr}"));
        let rest = line.strip_prefix(&format!("{path}:")).unwrap_or_else(|| panic!("{what}: not `FILE:...`: {line}"));
        let mut parts = rest.splitn(3, ':');
        let (l, c) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        assert_eq!(l, "8", "{what}: the diagnostic points at the certificates line: {line}");
        let col: usize = c.parse().unwrap_or_else(|_| panic!("{what}: no column in {line}"));
        assert!(col > "certificates = ".len(), "{what}: the column points into the list: {line}");
        assert!(parts.next().is_some_and(|m| m.starts_with(' ')), "{what}: `FILE:LINE:COL: message`: {line}");
    }
}

#[test]
fn check_warns_about_a_private_key_others_can_read_but_accepts_it() {
    use std::os::unix::fs::PermissionsExt;
    let ca = Ca::new();
    let mut files = Files::default();
    let a = ca.leaf(&["a.example.org"]).write(&mut files, "a");
    let text = format!(
        "[global]\nworkers = 2\n\n[services.web]\nbind = \"127.0.0.1:1\"\nmode = \"http\"\n{}\n[[services.web.servers]]\nname = \"s1\"\naddress = \"127.0.0.1:2\"\n",
        certificates(&[&a])
    );
    let path = files.write("check", "toml", &text);
    for (mode, warned) in [(0o644, true), (0o600, false), (0o640, false)] {
        std::fs::set_permissions(&a.key, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = run_cli(&["check", "--config", &path]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "mode {mode:o}: a loose key is a warning, not an error: {stderr}");
        let says = stderr.contains("warning: TLS private key")
            && stderr.contains(&a.key)
            && stderr.contains(&format!("{mode:04o}"));
        assert_eq!(says, warned, "mode {mode:o}: stderr:\n{stderr}");
    }
}

/// A WebSocket upgrade on a TLS listener: 101, then raw bytes both ways inside TLS (the
/// noVNC console behind an https VIP).
#[test]
fn websocket_upgrade_over_tls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = Ca::new();
    let mut files = Files::default();
    let leaf = ca.leaf(&["console.example"]).write(&mut files, "console");
    let backend = HttpBackend::start("b1");
    let bind = free_addr();
    let cfg = format!("{}{}", global(""), service("novnc", bind, &certificates(&[&leaf]), &[("b1", backend.addr, "")]));
    let v = start(&cfg, &[bind]);

    block_on(async {
        // A browser offers h2 too; a WebSocket over HTTP/1.1 needs the http/1.1 ALPN.
        let tls = tls_connect(bind, Client::alpn(H1).config(&ca), "console.example").await.expect("TLS");
        let mut s = tls.stream;
        let req = "GET /ws HTTP/1.1\r\nHost: console.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                   Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        within("write upgrade", s.write_all(req.as_bytes())).await.expect("write upgrade");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = within("101 head", s.read(&mut byte)).await.expect("read 101 head");
            assert_eq!(n, 1, "EOF in the 101 head after {:?}", String::from_utf8_lossy(&head));
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(head.to_lowercase().contains("upgrade: websocket"), "{head}");
        for msg in [&b"hello"[..], b"console output", &[0u8, 1, 2, 255]] {
            within("tunnel write", s.write_all(msg)).await.expect("write through the tunnel");
            let mut got = vec![0u8; msg.len()];
            within("tunnel echo", s.read_exact(&mut got)).await.expect("echo through the tunnel");
            assert_eq!(&got, msg);
        }
    });
    let line = v.wait_log_line(WAIT, |l| l.contains(" request ") && l.contains("path=/ws")).expect("access log");
    assert!(line.contains("status=101") && line.contains("service=novnc"), "{line}");
}

/// A TLS listener bounds the handshake by `header_timeout` (a silent client is closed),
/// and plain HTTP sent to it gets no HTTP answer and never reaches a server.
#[test]
fn tls_handshake_is_bounded_and_plain_text_is_refused() {
    use std::io::{Read, Write};
    let ca = Ca::new();
    let mut files = Files::default();
    let leaf = ca.leaf(&["api.example"]).write(&mut files, "api");
    let backend = HttpBackend::start("b1");
    let bind = free_addr();
    let keys = format!("{}header_timeout = \"2s\"\n", certificates(&[&leaf]));
    let cfg = format!("{}{}", global(""), service("api", bind, &keys, &[("b1", backend.addr, "")]));
    let v = start(&cfg, &[bind]);

    // Silent: closed after about two seconds.
    let mut s = http_client::connect(bind);
    let port = s.local_addr().unwrap().port();
    let t = Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(1800) && waited < Duration::from_secs(6), "closed after {waited:?}");
    assert!(buf.is_empty(), "a silent client got {buf:?}");
    let line = v.wait_client_line(port, |l| l.contains("TLS handshake"));
    assert!(line.contains("timed out"), "{line}");

    // Plain text: refused at once, with at most a TLS alert, never an HTTP response.
    let mut s = http_client::connect(bind);
    let port = s.local_addr().unwrap().port();
    let t = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: api.example\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(t.elapsed() < Duration::from_millis(1500), "plain text closed after {:?}", t.elapsed());
    assert!(!String::from_utf8_lossy(&buf).contains("HTTP/"), "plain text got an HTTP answer: {buf:?}");
    let line = v.wait_client_line(port, |l| l.contains("TLS handshake"));
    assert!(line.contains("TLS handshake failed"), "{line}");
    assert_eq!(backend.requests(), 0);
}

/// HTTP/2 over TLS to a server: the request is for an https origin, so its `:scheme` must
/// be `https` (RFC 9113 §8.3.1), as HAProxy and nginx send it.
#[test]
fn h2_over_tls_to_servers_sends_scheme_https() {
    let ca = Ca::new();
    let mut files = Files::default();
    let ca_file = files.write("ca", "pem", &ca.pem());
    let backend = TlsBackend::start("tls1", &ca.leaf(&["api.internal"]));
    let bind = free_addr();
    let keys = tls_to_servers(&ca_file, Some("api.internal"), "server_http2 = true\n");
    let cfg = format!("{}{}", global(""), service("api", bind, &keys, &[("tls1", backend.addr, "")]));
    let v = start(&cfg, &[bind]);
    let r = http_client::get(bind, "/scheme", "");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), v.log());
    assert_eq!(r.field("version").as_deref(), Some("HTTP/2.0"));
    assert_eq!(r.field("scheme").as_deref(), Some("https"), "{}", r.text());
}

/// `vipgate check` must catch what would stop `vipgate run`: an unreadable `tls_ca_file`
/// and a `tls_server_name` that is no TLS name, as it does for an https check's `ca_file`.
#[test]
fn check_rejects_unusable_tls_to_server_settings() {
    let mut files = Files::default();
    let missing = temp_path("missing-ca", "pem").display().to_string();
    let ca = Ca::new();
    let ca_file = files.write("ca", "pem", &ca.pem());
    // Line 7 is `tls = true`, 8 `tls_ca_file`, 9 `tls_server_name`.
    for (what, keys, needle, at) in [
        ("missing tls_ca_file", tls_to_servers(&missing, Some("api.internal"), ""), missing.as_str(), 8),
        ("bad tls_server_name", tls_to_servers(&ca_file, Some("not a name!"), ""), "not a name!", 9),
    ] {
        let text = format!(
            "[global]\nworkers = 2\n\n[services.web]\nbind = \"127.0.0.1:1\"\nmode = \"http\"\n{keys}\n[[services.web.servers]]\nname = \"s1\"\naddress = \"127.0.0.1:2\"\n"
        );
        let path = files.write("check", "toml", &text);
        // What run does with it: refuses to start.
        let bind = free_addr();
        let mut run = Vipgate::spawn(&text.replace("127.0.0.1:1", &bind.to_string()));
        let st = run.wait_exit(WAIT).unwrap_or_else(|| panic!("{what}: vipgate run kept running"));
        assert_eq!(st.code(), Some(1), "{what}: run:\n{}", run.log());

        let out = run_cli(&["check", "--config", &path]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(1), "{what}: check accepted what run refuses:\n{stdout}{stderr}");
        let line = stderr
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{what}: no diagnostic naming {needle:?}:\n{stderr}"));
        assert!(line.starts_with(&format!("{path}:{at}:")), "{what}: the diagnostic points at line {at}: {line}");
    }
}

/// Certificates are re-read on reload: replace the files, SIGHUP, and new handshakes get
/// the new certificate while the old config keeps serving until then.
#[test]
fn certificates_are_reread_on_reload() {
    let ca = Ca::new();
    let mut files = Files::default();
    let old = ca.leaf(&["api.example.org"]);
    let new = ca.leaf(&["api.example.org"]);
    let paths = old.write(&mut files, "reload");
    let backend = HttpBackend::start("b1");
    let bind = free_addr();
    let cfg = format!("{}{}", global(""), service("api", bind, &certificates(&[&paths]), &[("b1", backend.addr, "")]));
    let v = start(&cfg, &[bind]);
    let verified = Client::alpn(H1).config(&ca);
    let cert_now = || {
        block_on(async {
            let tls = tls_connect(bind, Arc::clone(&verified), "api.example.org").await.expect("handshake");
            tls.cert()
        })
    };
    assert!(cert_now() == old.der, "before the reload: the old certificate");

    std::fs::write(&paths.cert, &new.cert_pem).unwrap();
    std::fs::write(&paths.key, &new.key_pem).unwrap();
    // Not before a reload: the running config holds what it loaded.
    assert!(cert_now() == old.der, "the certificate changed without a reload");
    v.signal(libc::SIGHUP);
    v.wait_log_line(WAIT, |l| l.contains("config reloaded")).unwrap_or_else(|| panic!("no reload:\n{}", v.log()));
    assert!(cert_now() == new.der, "after the reload: the new certificate");
    block_on(async {
        let tls = tls_connect(bind, Arc::clone(&verified), "api.example.org").await.expect("handshake");
        let mut h1 = h1_over(tls).await;
        assert_eq!(h1_get(&mut h1, "/after", "api.example.org").await.status, 200);
    });

    // A broken replacement is refused by the reload; the running certificate stays.
    std::fs::write(&paths.key, "not a key").unwrap();
    v.signal(libc::SIGHUP);
    v.wait_log_line(WAIT, |l| l.contains("reload failed")).unwrap_or_else(|| panic!("no failed reload:\n{}", v.log()));
    assert!(cert_now() == new.der, "a failed reload changed the certificate");
}
