//! `vipgate clustercheck`: the Galera probe responder that replaces xinetd + the
//! clustercheck shell script on every database node.
//!
//! Per request it asks the local MariaDB for `wsrep_local_state` and `read_only` over a
//! real client connection and answers the way the script does (same status lines, same
//! texts, same Content-Length arithmetic), so HAProxy and vipgate alike can probe it. The
//! verdict is cached for a moment and computed by one request at a time, so a burst of
//! probes never becomes a burst of database logins; a database that does not answer
//! gives 503 within the timeout, never a hang. At most `max_connections` clients are
//! served at once (each holds a slot for up to 2 s while its request head comes); more are
//! closed at accept, so a flood of idle connections costs a bounded number of tasks and
//! descriptors and the responder answers again as soon as they go.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, Semaphore};
use tokio::time::{timeout, Instant};
use tracing::{debug, info, warn};

use crate::mysql::{self, Credentials, GaleraStatus};

pub const SYNCED: &str = "Galera cluster node is synced.";
pub const NOT_SYNCED: &str = "Galera cluster node is not synced.";
pub const DISABLED: &str = "Galera cluster node is manually disabled.";

/// Where the local database is.
#[derive(Debug, Clone)]
pub enum Database {
    Tcp(SocketAddr),
    Socket(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub database: Database,
    pub credentials: Credentials,
    /// A donor/desynced node (state 2) counts as synced (AVAILABLE_WHEN_DONOR=1).
    pub available_when_donor: bool,
    /// `read_only = ON` still counts as synced (AVAILABLE_WHEN_READONLY=1, the default).
    pub available_when_readonly: bool,
    /// How long one verdict answers every probe.
    pub cache: Duration,
    /// Bound on one database check (connect, login, queries).
    pub timeout: Duration,
    /// While this file exists the node answers 503 "manually disabled".
    pub disabled_file: Option<PathBuf>,
    /// Connections served at once; more are closed at accept.
    pub max_connections: usize,
}

/// The default of `--max-connections`: a Galera node is probed by a few balancers every
/// second or two; 64 leaves room for many of them and for retries.
pub const DEFAULT_MAX_CONNECTIONS: u16 = 64;
/// While connections are refused, say so at most this often.
const REFUSALS_LOGGED_EVERY: Duration = Duration::from_secs(10);

/// The HTTP answer for a verdict, byte for byte as the clustercheck script writes it.
pub fn response(ok: bool, text: &str) -> Vec<u8> {
    let status = if ok { "HTTP/1.1 200 OK" } else { "HTTP/1.1 503 Service Unavailable" };
    let body = format!("{text}\r\n");
    format!("{status}\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len())
        .into_bytes()
}

struct Cached {
    at: Instant,
    ok: bool,
    text: String,
}

pub struct Responder {
    settings: Settings,
    cache: Mutex<Option<Cached>>,
}

impl Responder {
    pub fn new(settings: Settings) -> Arc<Self> {
        Arc::new(Responder { settings, cache: Mutex::new(None) })
    }

    /// The current verdict: (usable, text).
    pub async fn verdict(&self) -> (bool, String) {
        if let Some(path) = &self.settings.disabled_file {
            if path.exists() {
                return (false, DISABLED.to_string());
            }
        }
        // One check at a time; everyone else waits for its result.
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref() {
            if c.at.elapsed() < self.settings.cache {
                return (c.ok, c.text.clone());
            }
        }
        let (ok, text) = match timeout(self.settings.timeout, self.query()).await {
            Ok(Ok(status)) => {
                match mysql::galera_verdict(
                    &status,
                    self.settings.available_when_donor,
                    self.settings.available_when_readonly,
                ) {
                    Ok(()) => (true, SYNCED.to_string()),
                    Err(text) => (false, text),
                }
            }
            Ok(Err(e)) => {
                warn!(error = %e, "database check failed");
                (false, NOT_SYNCED.to_string())
            }
            Err(_) => {
                warn!(timeout_ms = self.settings.timeout.as_millis() as u64, "database check timed out");
                (false, NOT_SYNCED.to_string())
            }
        };
        *cache = Some(Cached { at: Instant::now(), ok, text: text.clone() });
        (ok, text)
    }

    async fn query(&self) -> Result<GaleraStatus, String> {
        let creds = Some(&self.settings.credentials);
        let t = self.settings.timeout;
        let result = match &self.settings.database {
            Database::Tcp(addr) => {
                let s = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
                mysql::check(s, creds, t).await
            }
            Database::Socket(path) => {
                let s = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| format!("connect {}: {e}", path.display()))?;
                mysql::check(s, creds, t).await
            }
        };
        match result {
            Ok((_, Some(status))) => Ok(status),
            Ok((_, None)) => Err("no Galera status returned".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn answer(self: Arc<Self>, mut conn: TcpStream, peer: SocketAddr) {
        // Read the request head if one comes, but answer regardless, as the script does.
        let mut buf = [0u8; 4096];
        let mut seen = 0usize;
        let deadline = Instant::now() + Duration::from_secs(2);
        while seen < buf.len() {
            match tokio::time::timeout_at(deadline, conn.read(&mut buf[seen..])).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(n)) => {
                    seen += n;
                    if buf[..seen].windows(4).any(|w| w == b"\r\n\r\n") || buf[..seen].windows(2).any(|w| w == b"\n\n")
                    {
                        break;
                    }
                }
            }
        }
        let (ok, text) = self.verdict().await;
        debug!(client = %peer, ok, text = %text, "clustercheck answered");
        let _ = conn.write_all(&response(ok, &text)).await;
        let _ = conn.shutdown().await;
    }
}

/// Serve until the process is stopped.
pub async fn serve(settings: Settings) -> std::io::Result<()> {
    let listener = crate::net::bind_listener(settings.listen, 1024, None)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    info!(listen = %settings.listen, database = ?settings.database, cache_ms = settings.cache.as_millis() as u64, "clustercheck responder listening");
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let mut refusals = Refusals::default();
    let max = settings.max_connections;
    let responder = Responder::new(settings);
    loop {
        match listener.accept().await {
            Ok((conn, peer)) => match Arc::clone(&slots).try_acquire_owned() {
                Ok(permit) => {
                    let responder = Arc::clone(&responder);
                    tokio::spawn(async move {
                        responder.answer(conn, peer).await;
                        drop(permit);
                    });
                }
                // Closed, not queued: a waiting queue would grow with the flood.
                Err(_) => refusals.note(peer, max),
            },
            Err(e) => {
                warn!(error = %e, "accept failed; backing off");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Connections refused over the cap, logged once per [`REFUSALS_LOGGED_EVERY`] with a
/// count, so a flood does not become a flood of log lines.
#[derive(Default)]
struct Refusals {
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl Refusals {
    fn note(&mut self, peer: SocketAddr, max: usize) {
        self.unlogged += 1;
        if self.last_logged.is_some_and(|t| t.elapsed() < REFUSALS_LOGGED_EVERY) {
            return;
        }
        warn!(client = %peer, refused = self.unlogged, max_connections = max,
            "clustercheck connection closed at accept: --max-connections are open");
        self.last_logged = Some(Instant::now());
        self.unlogged = 0;
    }
}

/// Credentials from a my.cnf-style file: the `user=` and `password=` lines of its
/// `[client]` section, the one clustercheck's DEFAULTS_EXTRA_FILE holds them in. Every
/// other section (`[mysqld]`, `[client_server]`, `[mysql]`, ...) is for another program
/// and is not read, nor are lines before the first section or `!include` directives.
pub fn read_credentials_file(path: &std::path::Path) -> Result<Credentials, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (mut user, mut password) = (None, None);
    let mut in_client = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.starts_with('!') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[') {
            in_client = section.split(']').next().is_some_and(|name| name.trim() == "client");
            continue;
        }
        if !in_client {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().trim_matches('"').trim_matches('\'').to_string();
            match k.trim() {
                "user" => user = Some(v),
                "password" => password = Some(v),
                _ => {}
            }
        }
    }
    let user = user.ok_or_else(|| {
        format!("{}: no user= line in its [client] section (no other section is read)", path.display())
    })?;
    Ok(Credentials { user, password: password.unwrap_or_default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_matches_the_script() {
        let r = String::from_utf8(response(true, SYNCED)).unwrap();
        assert_eq!(
            r,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 32\r\n\r\nGalera cluster node is synced.\r\n"
        );
        let r = String::from_utf8(response(false, NOT_SYNCED)).unwrap();
        assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(r.contains("Content-Length: 36\r\n"));
        // And vipgate's own probe reads it as the script's answer.
        let parsed = crate::health::http::parse_response(r.as_bytes(), false).unwrap();
        assert_eq!((parsed.status, parsed.complete), (503, true));
    }

    #[test]
    fn credentials_file_forms() {
        let p = std::env::temp_dir().join(format!("vipgate-cc-{}.cnf", std::process::id()));
        std::fs::write(&p, "[client]\nuser = clustercheck\npassword=\"s3cret\"\n").unwrap();
        let c = read_credentials_file(&p).unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("clustercheck", "s3cret"));
        std::fs::write(&p, "password=x\n").unwrap();
        assert!(read_credentials_file(&p).unwrap_err().contains("no user"));
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn credentials_only_from_the_client_section() {
        let p = std::env::temp_dir().join(format!("vipgate-cc-sections-{}.cnf", std::process::id()));
        std::fs::write(
            &p,
            "user = before-any-section\n[mysqld]\nuser=mysql\npassword=server\n[ client ]\nuser=cc\npassword=right\n\
             [client_server]\nuser=root\npassword=wrong\n[clientx]\npassword=wrong\n[mysql]\npassword=wrong\n",
        )
        .unwrap();
        let c = read_credentials_file(&p).unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("cc", "right"));
        // A later [client] section adds to the first, as in MySQL's own option files.
        std::fs::write(&p, "[client]\nuser=cc\n[mysqld]\npassword=wrong\n[client]\npassword=late\n").unwrap();
        let c = read_credentials_file(&p).unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("cc", "late"));
        for text in ["[mysqld]\nuser=mysql\n", "user=x\npassword=y\n", "[client_server]\nuser=root\n"] {
            std::fs::write(&p, text).unwrap();
            let e = read_credentials_file(&p).unwrap_err();
            assert!(e.contains("no user= line in its [client] section"), "{text:?}: {e}");
        }
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn settings_never_print_the_password() {
        let settings = Settings {
            listen: "127.0.0.1:49000".parse().unwrap(),
            database: Database::Tcp("127.0.0.1:3306".parse().unwrap()),
            credentials: Credentials { user: "clustercheck".into(), password: "s3cret-pw".into() },
            available_when_donor: false,
            available_when_readonly: true,
            cache: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            disabled_file: None,
            max_connections: usize::from(DEFAULT_MAX_CONNECTIONS),
        };
        for shown in [format!("{settings:?}"), format!("{settings:#?}")] {
            assert!(shown.contains("clustercheck") && !shown.contains("s3cret"), "{shown}");
        }
    }
}
