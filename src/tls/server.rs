//! TLS termination settings for listeners: rustls with safe defaults (TLS 1.2 and 1.3),
//! ALPN, and a certificate picked by SNI among the configured ones.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, DnsName, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, ServerConfig};

use super::CertFiles;

/// Which of the two PEM files of a certificate a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Certificate,
    Key,
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Certificate => "certificate file",
            FileKind::Key => "key file",
        })
    }
}

/// Why the certificates of a listener cannot be used. Every variant names the file.
#[derive(Debug)]
pub enum TlsError {
    /// The listener has TLS but no certificate.
    NoCertificates,
    /// The file cannot be read (missing, permissions, a directory...).
    Unreadable { kind: FileKind, path: PathBuf, error: io::Error },
    /// A PEM section is broken (bad base64, no END line...).
    BadPem { kind: FileKind, path: PathBuf, error: String },
    /// No `BEGIN CERTIFICATE` section.
    NoCertificate { path: PathBuf },
    /// No unencrypted PKCS#8, PKCS#1 or SEC1 private key section.
    NoPrivateKey { path: PathBuf },
    /// The first (leaf) certificate is not valid X.509.
    CertificateNotParseable { path: PathBuf, error: String },
    /// A key ring cannot sign with (not RSA, ECDSA P-256/P-384 or Ed25519), or a malformed one.
    UnsupportedKey { path: PathBuf, error: String },
    /// The private key is not the one of the leaf certificate.
    KeyMismatch { cert: PathBuf, key: PathBuf },
    /// rustls refused the protocol settings; no file is at fault (ring supports both
    /// versions, so this is not expected, but it is reported rather than panicking).
    Setup(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::NoCertificates => write!(f, "TLS is enabled but no certificate is configured"),
            TlsError::Unreadable { kind, path, error } => write!(f, "{kind} {}: cannot read: {error}", path.display()),
            TlsError::BadPem { kind, path, error } => write!(f, "{kind} {}: malformed PEM: {error}", path.display()),
            TlsError::NoCertificate { path } => {
                write!(
                    f,
                    "certificate file {}: no certificate in it (expected a PEM CERTIFICATE section)",
                    path.display()
                )
            }
            TlsError::NoPrivateKey { path } => write!(
                f,
                "key file {}: no private key in it (expected a PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY \
                 section; encrypted keys are not supported)",
                path.display()
            ),
            TlsError::CertificateNotParseable { path, error } => {
                write!(f, "certificate file {}: the first certificate cannot be parsed: {error}", path.display())
            }
            TlsError::UnsupportedKey { path, error } => write!(
                f,
                "key file {}: unsupported or malformed private key (RSA, ECDSA P-256/P-384 and Ed25519 are \
                 supported): {error}",
                path.display()
            ),
            TlsError::KeyMismatch { cert, key } => {
                write!(f, "the private key in {} does not match the certificate in {}", key.display(), cert.display())
            }
            TlsError::Setup(error) => write!(f, "TLS setup: {error}"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Unreadable { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Server config for a listener: TLS 1.2 and 1.3 only (rustls safe defaults), ALPN
/// protocols in the given order (e.g. `[b"h2", b"http/1.1"]` or `[b"http/1.1"]`), certificate
/// chosen by SNI among `certs`; the first one is the default (no SNI, an IP literal, or no match).
pub fn server_config(certs: &[CertFiles], alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(ring::default_provider());
    let resolver = SniResolver::new(load_all(certs, &provider)?);
    let builder = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let mut config = builder.with_no_client_auth().with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Loads and checks every certificate as [`server_config`] does, for `vipgate check`.
pub fn check_files(certs: &[CertFiles]) -> Result<(), TlsError> {
    load_all(certs, &ring::default_provider()).map(|_| ())
}

fn load_all(certs: &[CertFiles], provider: &CryptoProvider) -> Result<Vec<Arc<CertifiedKey>>, TlsError> {
    if certs.is_empty() {
        return Err(TlsError::NoCertificates);
    }
    certs.iter().map(|files| load(files, provider).map(Arc::new)).collect()
}

fn load(files: &CertFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let cert_pem = read(FileKind::Certificate, &files.cert)?;
    // A combined PEM (HAProxy style) names the same file twice; read it once so both
    // halves come from the same version of the file.
    let key_pem = if files.key == files.cert { cert_pem.clone() } else { read(FileKind::Key, &files.key)? };

    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(e, FileKind::Certificate, &files.cert))?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate { path: files.cert.clone() });
    };
    ParsedCertificate::try_from(leaf)
        .map_err(|e| TlsError::CertificateNotParseable { path: files.cert.clone(), error: e.to_string() })?;

    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| pem_error(e, FileKind::Key, &files.key))?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::UnsupportedKey { path: files.key.clone(), error: e.to_string() })?;

    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // `Unknown`: the key cannot tell its public half, so there is nothing to compare;
        // rustls accepts such keys too.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch { cert: files.cert.clone(), key: files.key.clone() })
        }
        Err(e) => Err(TlsError::CertificateNotParseable { path: files.cert.clone(), error: e.to_string() }),
    }
}

fn read(kind: FileKind, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Unreadable { kind, path: path.to_path_buf(), error })
}

fn pem_error(e: pem::Error, kind: FileKind, path: &Path) -> TlsError {
    let path = path.to_path_buf();
    match (e, kind) {
        (pem::Error::NoItemsFound, FileKind::Certificate) => TlsError::NoCertificate { path },
        (pem::Error::NoItemsFound, FileKind::Key) => TlsError::NoPrivateKey { path },
        (pem::Error::Io(error), kind) => TlsError::Unreadable { kind, path, error },
        (e, kind) => TlsError::BadPem { kind, path, error: e.to_string() },
    }
}

/// Distinct SNI names remembered. Clients choose the names, so the cache must not grow
/// with them; when full it is simply emptied (a miss only costs one parse per certificate).
const SNI_CACHE_MAX: usize = 1024;

/// Picks the first certificate valid for the SNI name (webpki's rules: SAN DNS names,
/// case-insensitive, a wildcard covers exactly one label), else the first certificate.
#[derive(Debug)]
struct SniResolver {
    certs: Vec<Arc<CertifiedKey>>,
    /// Lowercased SNI name -> index into `certs`.
    cache: Mutex<HashMap<String, usize>>,
}

impl SniResolver {
    fn new(certs: Vec<Arc<CertifiedKey>>) -> SniResolver {
        SniResolver { certs, cache: Mutex::new(HashMap::new()) }
    }

    fn index_for(&self, sni: Option<&str>) -> usize {
        if self.certs.len() < 2 {
            return 0;
        }
        let Some(sni) = sni else { return 0 };
        let name = sni.to_ascii_lowercase();
        if let Some(&i) = self.cache.lock().unwrap_or_else(PoisonError::into_inner).get(&name) {
            return i;
        }
        let i = self.matching(&name).unwrap_or(0);
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= SNI_CACHE_MAX {
            cache.clear();
        }
        cache.insert(name, i);
        i
    }

    fn matching(&self, name: &str) -> Option<usize> {
        let name = ServerName::DnsName(DnsName::try_from(name).ok()?.to_owned());
        self.certs.iter().position(|ck| {
            // Parsed again rather than kept: ParsedCertificate borrows the DER, and this
            // runs once per name thanks to the cache.
            ck.end_entity_cert()
                .ok()
                .and_then(|der| ParsedCertificate::try_from(der).ok())
                .is_some_and(|cert| rustls::client::verify_server_name(&cert, &name).is_ok())
        })
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // rustls drops IP literals from SNI (RFC 6066 forbids them), so they get the default.
        self.certs.get(self.index_for(client_hello.server_name())).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::UnixTime;
    use rustls::{ClientConfig, DigitallySignedStruct, ProtocolVersion, RootCertStore, SignatureScheme};
    use tokio::net::{TcpListener, TcpStream};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("vipgate-tls-{}-{tag}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, contents).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    struct Ca {
        issuer: CertifiedIssuer<'static, KeyPair>,
    }

    struct Leaf {
        cert_pem: String,
        key_pem: String,
        der: CertificateDer<'static>,
        key: KeyPair,
    }

    impl Ca {
        fn new() -> Ca {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            Ca { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
        }

        /// A leaf for `names`; its PEM is the chain leaf + CA, as operators usually deploy it.
        fn leaf(&self, names: &[&str]) -> Leaf {
            let key = KeyPair::generate().unwrap();
            let params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            Leaf {
                cert_pem: format!("{}{}", cert.pem(), self.issuer.pem()),
                key_pem: key.serialize_pem(),
                der: cert.der().clone(),
                key,
            }
        }

        fn roots(&self) -> RootCertStore {
            let mut roots = RootCertStore::empty();
            roots.add(self.issuer.der().clone()).unwrap();
            roots
        }
    }

    fn write_leaf(dir: &TempDir, name: &str, leaf: &Leaf) -> CertFiles {
        CertFiles {
            cert: dir.write(&format!("{name}.crt"), &leaf.cert_pem),
            key: dir.write(&format!("{name}.key"), &leaf.key_pem),
        }
    }

    /// Verifies the chain against the CA but not the name, to see which certificate the
    /// server falls back to when the name matches none.
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

    struct Client {
        versions: &'static [&'static rustls::SupportedProtocolVersion],
        alpn: Vec<Vec<u8>>,
        /// Check the server's name too (a normal client); otherwise only the chain.
        verify_name: bool,
        sni: bool,
    }

    impl Default for Client {
        fn default() -> Client {
            Client { versions: rustls::DEFAULT_VERSIONS, alpn: vec![], verify_name: true, sni: true }
        }
    }

    impl Client {
        fn config(&self, ca: &Ca) -> Arc<ClientConfig> {
            let provider = Arc::new(ring::default_provider());
            let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
                .with_protocol_versions(self.versions)
                .unwrap();
            let mut config = if self.verify_name {
                builder.with_root_certificates(ca.roots()).with_no_client_auth()
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly(ca.roots(), provider)))
                    .with_no_client_auth()
            };
            config.alpn_protocols = self.alpn.clone();
            config.enable_sni = self.sni;
            Arc::new(config)
        }
    }

    struct Negotiated {
        cert: CertificateDer<'static>,
        alpn: Option<Vec<u8>>,
        version: Option<ProtocolVersion>,
        /// The name the server saw, as a check that the test sent (or withheld) SNI.
        server_sni: Option<String>,
    }

    /// One real handshake over loopback; what the client saw, plus the server's SNI.
    async fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>, name: ServerName<'static>) -> Negotiated {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let tls = tokio_rustls::TlsAcceptor::from(server).accept(tcp).await.unwrap();
            tls.get_ref().1.server_name().map(str::to_string)
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(client).connect(name, tcp).await.unwrap();
        let conn = tls.get_ref().1;
        let negotiated = Negotiated {
            cert: conn.peer_certificates().unwrap()[0].clone().into_owned(),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            version: conn.protocol_version(),
            server_sni: None,
        };
        Negotiated { server_sni: accept.await.unwrap(), ..negotiated }
    }

    fn dns(name: &str) -> ServerName<'static> {
        ServerName::try_from(name.to_string()).unwrap()
    }

    /// Default cert D (first), A for a.example.org, B for b.example.org and *.wild.example.org.
    struct Setup {
        _dir: TempDir,
        ca: Ca,
        d: Leaf,
        a: Leaf,
        b: Leaf,
        certs: Vec<CertFiles>,
    }

    fn setup() -> Setup {
        let dir = TempDir::new("sni");
        let ca = Ca::new();
        let d = ca.leaf(&["default.example.org"]);
        let a = ca.leaf(&["a.example.org"]);
        let b = ca.leaf(&["b.example.org", "*.wild.example.org"]);
        let certs = vec![write_leaf(&dir, "d", &d), write_leaf(&dir, "a", &a), write_leaf(&dir, "b", &b)];
        Setup { _dir: dir, ca, d, a, b, certs }
    }

    #[tokio::test]
    async fn sni_picks_the_matching_certificate() {
        let s = setup();
        let server = server_config(&s.certs, &[b"http/1.1"]).unwrap();
        let client = Client::default().config(&s.ca);
        for (name, want) in [
            ("a.example.org", &s.a),
            ("b.example.org", &s.b),
            ("x.wild.example.org", &s.b),
            ("default.example.org", &s.d),
        ] {
            let got = handshake(Arc::clone(&server), Arc::clone(&client), dns(name)).await;
            assert!(got.cert == want.der, "{name} got the wrong certificate");
            assert_eq!(got.server_sni.as_deref(), Some(name));
        }
    }

    #[tokio::test]
    async fn sni_is_case_insensitive() {
        let s = setup();
        let server = server_config(&s.certs, &[]).unwrap();
        let client = Client::default().config(&s.ca);
        let got = handshake(Arc::clone(&server), Arc::clone(&client), dns("A.Example.ORG")).await;
        assert!(got.cert == s.a.der);
        let got = handshake(server, client, dns("X.WILD.example.org")).await;
        assert!(got.cert == s.b.der);
    }

    #[tokio::test]
    async fn unknown_name_no_sni_and_ip_get_the_first_certificate() {
        let s = setup();
        let server = server_config(&s.certs, &[]).unwrap();
        let chain_only = Client { verify_name: false, ..Client::default() }.config(&s.ca);
        // A wildcard covers exactly one label, and not the bare parent.
        for name in ["unknown.example.org", "y.x.wild.example.org", "wild.example.org"] {
            let got = handshake(Arc::clone(&server), Arc::clone(&chain_only), dns(name)).await;
            assert!(got.cert == s.d.der, "{name} should get the default certificate");
        }

        let no_sni = Client { verify_name: false, sni: false, ..Client::default() }.config(&s.ca);
        let got = handshake(Arc::clone(&server), no_sni, dns("a.example.org")).await;
        assert_eq!(got.server_sni, None);
        assert!(got.cert == s.d.der);

        let ip = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
        let got = handshake(server, chain_only, ip).await;
        assert_eq!(got.server_sni, None);
        assert!(got.cert == s.d.der);
    }

    #[test]
    fn sni_cache_stays_bounded_and_correct() {
        let s = setup();
        let provider = ring::default_provider();
        let resolver = SniResolver::new(load_all(&s.certs, &provider).unwrap());
        for i in 0..SNI_CACHE_MAX * 2 + 3 {
            assert_eq!(resolver.index_for(Some(&format!("host{i}.example.org"))), 0);
            assert!(resolver.cache.lock().unwrap().len() <= SNI_CACHE_MAX);
        }
        assert_eq!(resolver.index_for(Some("a.example.org")), 1);
        assert_eq!(resolver.index_for(Some("a.example.org")), 1);
        assert_eq!(resolver.index_for(Some("z.wild.example.org")), 2);
        assert_eq!(resolver.index_for(None), 0);
        // Not a DNS name at all: default, no panic.
        assert_eq!(resolver.index_for(Some("not a name!")), 0);
    }

    #[tokio::test]
    async fn alpn_negotiates_h2_when_offered() {
        let s = setup();
        let h2 = server_config(&s.certs, &[b"h2", b"http/1.1"]).unwrap();
        let h1 = server_config(&s.certs, &[b"http/1.1"]).unwrap();
        let both = Client { alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()], ..Client::default() }.config(&s.ca);
        let h1_only = Client { alpn: vec![b"http/1.1".to_vec()], ..Client::default() }.config(&s.ca);
        let none = Client::default().config(&s.ca);

        let got = handshake(Arc::clone(&h2), Arc::clone(&both), dns("a.example.org")).await;
        assert_eq!(got.alpn.as_deref(), Some(&b"h2"[..]));
        let got = handshake(Arc::clone(&h2), h1_only, dns("a.example.org")).await;
        assert_eq!(got.alpn.as_deref(), Some(&b"http/1.1"[..]));
        let got = handshake(h2, none, dns("a.example.org")).await;
        assert_eq!(got.alpn, None);
        let got = handshake(h1, both, dns("a.example.org")).await;
        assert_eq!(got.alpn.as_deref(), Some(&b"http/1.1"[..]));
    }

    #[tokio::test]
    async fn tls12_and_tls13_clients_both_work() {
        let s = setup();
        let server = server_config(&s.certs, &[b"h2", b"http/1.1"]).unwrap();
        static TLS12_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
        static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
        for (versions, want) in [(TLS12_ONLY, ProtocolVersion::TLSv1_2), (TLS13_ONLY, ProtocolVersion::TLSv1_3)] {
            let client = Client { versions, alpn: vec![b"h2".to_vec()], ..Client::default() }.config(&s.ca);
            let got = handshake(Arc::clone(&server), client, dns("b.example.org")).await;
            assert_eq!(got.version, Some(want));
            assert!(got.cert == s.b.der);
            assert_eq!(got.alpn.as_deref(), Some(&b"h2"[..]));
        }
    }

    #[test]
    fn only_tls12_and_tls13_are_enabled() {
        // rustls cannot even build a TLS 1.1 client, so the enabled set is read from the
        // config itself (its fields are private; Debug is the only window).
        let s = setup();
        let config = server_config(&s.certs, &[]).unwrap();
        let debug = format!("{config:?}");
        let versions = debug.split("versions: ").nth(1).and_then(|rest| rest.split(']').next()).unwrap();
        assert_eq!(versions.matches("TLSv1_").count(), 2, "{versions}");
        assert!(versions.contains("TLSv1_2") && versions.contains("TLSv1_3"), "{versions}");
    }

    #[tokio::test]
    async fn combined_pem_works() {
        let dir = TempDir::new("combined");
        let ca = Ca::new();
        let leaf = ca.leaf(&["combo.example.org"]);
        // HAProxy style: key first, then the chain, in one file.
        let path = dir.write("combo.pem", format!("{}{}", leaf.key_pem, leaf.cert_pem));
        let certs = [CertFiles { cert: path.clone(), key: path }];
        check_files(&certs).unwrap();
        let server = server_config(&certs, &[b"http/1.1"]).unwrap();
        let got = handshake(server, Client::default().config(&ca), dns("combo.example.org")).await;
        assert!(got.cert == leaf.der);
    }

    #[tokio::test]
    async fn sec1_ec_key_works() {
        let dir = TempDir::new("sec1");
        let ca = Ca::new();
        let leaf = ca.leaf(&["ec.example.org"]);
        let sec1 = sec1_from_pkcs8(&leaf.key.serialize_der());
        let pem = pem_encode("EC PRIVATE KEY", &sec1);
        let certs = [CertFiles { cert: dir.write("ec.crt", &leaf.cert_pem), key: dir.write("ec.key", pem) }];
        let server = server_config(&certs, &[]).unwrap();
        let got = handshake(server, Client::default().config(&ca), dns("ec.example.org")).await;
        assert!(got.cert == leaf.der);
    }

    /// PKCS#8 is SEQUENCE { INTEGER, AlgorithmIdentifier, OCTET STRING { SEC1 key } }.
    fn sec1_from_pkcs8(der: &[u8]) -> Vec<u8> {
        fn tlv(b: &[u8]) -> (u8, &[u8], &[u8]) {
            let (len, hdr) = match b[1] {
                n if n < 0x80 => (n as usize, 2),
                0x81 => (b[2] as usize, 3),
                0x82 => ((b[2] as usize) << 8 | b[3] as usize, 4),
                n => panic!("unexpected DER length byte {n:#x}"),
            };
            (b[0], &b[hdr..hdr + len], &b[hdr + len..])
        }
        let (_, body, _) = tlv(der);
        let (_, _, rest) = tlv(body); // version
        let (_, _, rest) = tlv(rest); // algorithm
        let (tag, key, _) = tlv(rest);
        assert_eq!(tag, 0x04);
        key.to_vec()
    }

    fn pem_encode(label: &str, der: &[u8]) -> String {
        const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut b64 = String::new();
        for chunk in der.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    b64.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    b64.push('=');
                }
            }
        }
        let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|l| std::str::from_utf8(l).unwrap()).collect::<Vec<_>>();
        format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let dir = TempDir::new("errors");
        let ca = Ca::new();
        let a = ca.leaf(&["a.example.org"]);
        let b = ca.leaf(&["b.example.org"]);
        let a_files = write_leaf(&dir, "a", &a);
        let b_files = write_leaf(&dir, "b", &b);
        check_files(&[a_files.clone(), b_files.clone()]).unwrap();

        assert!(matches!(check_files(&[]), Err(TlsError::NoCertificates)));
        assert!(matches!(server_config(&[], &[]), Err(TlsError::NoCertificates)));

        let missing = dir.0.join("missing.crt");
        let err = check_files(&[CertFiles { cert: missing.clone(), key: a_files.key.clone() }]).unwrap_err();
        assert!(matches!(&err, TlsError::Unreadable { kind: FileKind::Certificate, path, .. } if *path == missing));
        assert!(err.to_string().contains("missing.crt") && err.to_string().contains("cannot read"), "{err}");
        let err = check_files(&[CertFiles { cert: a_files.cert.clone(), key: dir.0.join("missing.key") }]).unwrap_err();
        assert!(matches!(&err, TlsError::Unreadable { kind: FileKind::Key, .. }), "{err}");

        let empty = dir.write("empty.pem", "");
        let err = check_files(&[CertFiles { cert: empty.clone(), key: a_files.key.clone() }]).unwrap_err();
        assert!(matches!(&err, TlsError::NoCertificate { path } if *path == empty), "{err}");
        assert!(err.to_string().contains("empty.pem") && err.to_string().contains("no certificate"), "{err}");
        let err = check_files(&[CertFiles { cert: a_files.cert.clone(), key: empty.clone() }]).unwrap_err();
        assert!(matches!(&err, TlsError::NoPrivateKey { path } if *path == empty), "{err}");
        assert!(err.to_string().contains("no private key"), "{err}");
        // A certificate where the key should be.
        let err = check_files(&[CertFiles { cert: a_files.cert.clone(), key: a_files.cert.clone() }]).unwrap_err();
        assert!(matches!(&err, TlsError::NoPrivateKey { .. }), "{err}");

        let err = check_files(&[a_files.clone(), CertFiles { cert: b_files.cert.clone(), key: a_files.key.clone() }])
            .unwrap_err();
        assert!(matches!(&err, TlsError::KeyMismatch { cert, key } if *cert == b_files.cert && *key == a_files.key));
        let msg = err.to_string();
        assert!(msg.contains("does not match") && msg.contains("b.crt") && msg.contains("a.key"), "{msg}");

        let text = dir.write("text.pem", "this is not PEM at all\n");
        let err = check_files(&[CertFiles { cert: text, key: a_files.key.clone() }]).unwrap_err();
        assert!(matches!(&err, TlsError::NoCertificate { .. }), "{err}");

        let bad_b64 =
            dir.write("bad64.pem", "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n");
        let err = check_files(&[CertFiles { cert: bad_b64.clone(), key: a_files.key.clone() }]).unwrap_err();
        assert!(matches!(&err, TlsError::BadPem { kind: FileKind::Certificate, path, .. } if *path == bad_b64));
        assert!(err.to_string().contains("malformed PEM"), "{err}");

        let unterminated = dir.write("open.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n");
        let err = check_files(&[CertFiles { cert: unterminated, key: a_files.key.clone() }]).unwrap_err();
        assert!(matches!(&err, TlsError::BadPem { .. }), "{err}");

        let not_der = dir.write("notder.pem", pem_encode("CERTIFICATE", b"hello, I am not a certificate"));
        let err = check_files(&[CertFiles { cert: not_der.clone(), key: a_files.key.clone() }]).unwrap_err();
        assert!(matches!(&err, TlsError::CertificateNotParseable { path, .. } if *path == not_der), "{err}");

        let junk_key = dir.write("junk.key", pem_encode("PRIVATE KEY", b"0123456789abcdef0123456789abcdef"));
        let err = check_files(&[CertFiles { cert: a_files.cert.clone(), key: junk_key.clone() }]).unwrap_err();
        assert!(matches!(&err, TlsError::UnsupportedKey { path, .. } if *path == junk_key), "{err}");

        // server_config reports the same problems.
        let err = server_config(&[CertFiles { cert: empty, key: a_files.key }], &[]).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }));
    }

    #[test]
    fn temp_dirs_are_removed() {
        let path = {
            let dir = TempDir::new("cleanup");
            dir.write("x", "y");
            dir.0.clone()
        };
        assert!(!path.exists());
    }
}
