//! The JSON API: what `/api/v1/services` shows, the server changes `POST
//! /api/v1/services/{svc}/servers/{srv}` accepts, and `POST /api/v1/reload`.
//!
//! The view types derive `Deserialize` as well, so `vipgate status` reads exactly what the
//! server wrote.

use std::sync::atomic::Ordering::Relaxed;
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tracing::info;

use super::Resp;
use crate::config::{Mode, MAX_WEIGHT};
use crate::runtime::{Control, Missing, ReloadError, ReloadReport, ReloadSource};
use crate::upstream::{AdminState, Health, Server};

/// `GET /api/v1/services`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServicesView {
    pub version: String,
    pub process: ProcessView,
    pub services: Vec<ServiceView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessView {
    /// The process id (what `vipgate upgrade` signals).
    #[serde(default)]
    pub pid: u32,
    /// 0 = the config the process started with; +1 per successful reload.
    pub generation: u64,
    /// SHA-1 of the config file in use.
    pub config_hash: String,
    pub reloads_total: u64,
    pub reloads_failed: u64,
    pub last_reload_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceView {
    pub name: String,
    /// "tcp" or "http".
    pub mode: String,
    /// The balancing algorithm.
    #[serde(default)]
    pub balance: String,
    /// Configured binds.
    #[serde(default)]
    pub binds: Vec<String>,
    pub servers: Vec<ServerView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerView {
    pub name: String,
    pub address: String,
    /// What an operator sees: up, down, going up, going down, drain, maint.
    pub state: String,
    /// What health checking says: unchecked, up, down, going up, going down.
    pub health: String,
    /// What the operator said: ready, drain, maint.
    pub admin: String,
    /// Takes new connections now (up, weight above 0, ready).
    pub usable: bool,
    pub tier: u32,
    pub weight: u32,
    /// Connections open (or connecting) now.
    pub active: u32,
    pub connections_total: u64,
    /// Client → server.
    pub bytes_in: u64,
    /// Server → client.
    pub bytes_out: u64,
    pub connect_failures: u64,
    pub last_probe: Option<ProbeView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeView {
    pub ok: bool,
    pub reason: String,
    pub duration_ms: u64,
    /// Unix time, seconds.
    pub at: u64,
}

/// `POST /api/v1/reload` on success.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadView {
    pub generation: u64,
    pub services: usize,
    pub binds_added: Vec<String>,
    pub binds_removed: Vec<String>,
    pub servers_added: usize,
    pub servers_removed: usize,
}

/// Every error answer of the API: `{"error": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorView {
    pub error: String,
}

impl From<&ReloadReport> for ReloadView {
    fn from(r: &ReloadReport) -> Self {
        ReloadView {
            generation: r.generation,
            services: r.services,
            binds_added: r.binds_added.iter().map(|a| a.to_string()).collect(),
            binds_removed: r.binds_removed.iter().map(|a| a.to_string()).collect(),
            servers_added: r.servers_added,
            servers_removed: r.servers_removed,
        }
    }
}

pub fn health_name(h: Health) -> &'static str {
    match h {
        Health::Unchecked => "unchecked",
        Health::Down => "down",
        Health::GoingUp => "going up",
        Health::Up => "up",
        Health::GoingDown => "going down",
    }
}

pub fn admin_name(a: AdminState) -> &'static str {
    match a {
        AdminState::Ready => "ready",
        AdminState::Drain => "drain",
        AdminState::Maint => "maint",
    }
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Tcp => "tcp",
        Mode::Http => "http",
    }
}

pub fn server_view(s: &Server) -> ServerView {
    ServerView {
        name: s.name.clone(),
        address: s.address().to_string(),
        state: s.state().to_string(),
        health: health_name(s.health()).to_string(),
        admin: admin_name(s.admin()).to_string(),
        usable: s.usable(),
        tier: s.tier,
        weight: s.weight(),
        active: s.active(),
        connections_total: s.stats.connections_total.load(Relaxed),
        bytes_in: s.stats.bytes_in.load(Relaxed),
        bytes_out: s.stats.bytes_out.load(Relaxed),
        connect_failures: s.stats.connect_failures.load(Relaxed),
        last_probe: s.last_probe().map(|p| ProbeView {
            ok: p.ok,
            reason: p.reason,
            duration_ms: p.duration.as_millis().try_into().unwrap_or(u64::MAX),
            at: p.at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        }),
    }
}

/// The live state of every service, from the snapshot new connections use.
pub fn services(control: &Control) -> ServicesView {
    let snapshot = control.snapshot.load();
    let p = &control.process;
    ServicesView {
        version: env!("CARGO_PKG_VERSION").to_string(),
        process: ProcessView {
            pid: std::process::id(),
            generation: p.generation.load(Relaxed),
            config_hash: p.config_hash.lock().map(|h| h.clone()).unwrap_or_default(),
            reloads_total: p.reloads_total.load(Relaxed),
            reloads_failed: p.reloads_failed.load(Relaxed),
            last_reload_error: p.last_reload_error.lock().ok().and_then(|e| e.clone()),
        },
        services: snapshot
            .services
            .iter()
            .map(|s| ServiceView {
                name: s.name.clone(),
                mode: mode_name(s.config.mode).to_string(),
                balance: s.config.balance.name().to_string(),
                binds: s.config.binds.iter().map(|b| b.to_string()).collect(),
                servers: s.pool.servers().iter().map(|v| server_view(v)).collect(),
            })
            .collect(),
    }
}

/// `/api/v1/services/{svc}/servers/{srv}` → the two names, percent-decoded (server names
/// may hold any character). None: not this endpoint; Err: it is, but undecodable.
pub fn server_path(path: &str) -> Option<Result<(String, String), &'static str>> {
    let rest = path.strip_prefix("/api/v1/services/")?;
    let (svc, rest) = rest.split_once('/')?;
    let srv = rest.strip_prefix("servers/")?;
    if svc.is_empty() || srv.is_empty() || srv.contains('/') {
        return None;
    }
    Some(match (percent_decode(svc), percent_decode(srv)) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err("bad percent-encoding in the path (names are UTF-8, %XX-encoded)"),
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The live server, or why not (a 404 message).
fn find(control: &Control, svc: &str, srv: &str) -> Result<std::sync::Arc<Server>, String> {
    match control.snapshot.load().server(svc, srv) {
        Ok(s) => Ok(std::sync::Arc::clone(s)),
        Err(Missing::Service) => Err(format!("no service named \"{svc}\"")),
        Err(Missing::Server) => Err(format!("service \"{svc}\" has no server named \"{srv}\"")),
    }
}

/// `GET /api/v1/services/{svc}/servers/{srv}`.
pub fn get_server(control: &Control, svc: &str, srv: &str) -> Resp {
    match find(control, svc, srv) {
        Ok(server) => json(StatusCode::OK, &server_view(&server)),
        Err(why) => error(StatusCode::NOT_FOUND, why),
    }
}

/// What a POST asks to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub state: Option<AdminState>,
    pub weight: Option<u32>,
}

/// Parse `{"state": "ready"|"drain"|"maint", "weight": 0..=256}` (either or both), with a
/// message that says what was wrong.
pub fn parse_change(body: &[u8]) -> Result<Change, String> {
    const EXAMPLE: &str = r#"expected a JSON object such as {"state": "drain"} or {"weight": 10}"#;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(format!("empty body: {EXAMPLE}"));
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("bad JSON: {e}"))?;
    let serde_json::Value::Object(map) = value else {
        return Err(format!("not a JSON object: {EXAMPLE}"));
    };
    let mut change = Change { state: None, weight: None };
    for (key, v) in &map {
        match key.as_str() {
            "state" => {
                change.state = Some(match v.as_str() {
                    Some("ready") => AdminState::Ready,
                    Some("drain") => AdminState::Drain,
                    Some("maint") => AdminState::Maint,
                    _ => return Err(format!("unknown state {v} (expected \"ready\", \"drain\" or \"maint\")")),
                })
            }
            "weight" => {
                change.weight = match v.as_u64() {
                    Some(w) if w <= u64::from(MAX_WEIGHT) => Some(w as u32),
                    _ => return Err(format!("bad weight {v}: expected a whole number from 0 to {MAX_WEIGHT}")),
                }
            }
            other => return Err(format!("unknown field \"{other}\" (expected \"state\" and/or \"weight\")")),
        }
    }
    if change.state.is_none() && change.weight.is_none() {
        return Err(format!("nothing to change: {EXAMPLE}"));
    }
    Ok(change)
}

/// `POST /api/v1/services/{svc}/servers/{srv}`: apply, log, answer with the server.
pub fn change_server(control: &Control, svc: &str, srv: &str, body: &[u8], peer: &str) -> Resp {
    let server = match find(control, svc, srv) {
        Ok(s) => s,
        Err(why) => return error(StatusCode::NOT_FOUND, why),
    };
    let change = match parse_change(body) {
        Ok(c) => c,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let (old_admin, old_weight) = (server.admin(), server.weight());
    if let Some(w) = change.weight {
        server.set_weight(w);
    }
    if let Some(a) = change.state {
        server.set_admin(a);
    }
    info!(
        service = %svc,
        server = %srv,
        admin = admin_name(server.admin()),
        was_admin = admin_name(old_admin),
        weight = server.weight(),
        was_weight = old_weight,
        peer = %peer,
        "server changed through the admin API"
    );
    json(StatusCode::OK, &server_view(&server))
}

/// `POST /api/v1/reload`: 200 with the report; 422 when the file is invalid or unreadable
/// (the error lists `FILE:LINE:COL: problem` lines); 500 when a valid file could not be
/// applied (a bind, certificates); 503 while shutting down. Nothing changed on any error.
pub async fn reload(control: &Control, peer: &str) -> Resp {
    info!(%peer, "reload requested through the admin API");
    match control.reload(ReloadSource::Api).await {
        Ok(report) => json(StatusCode::OK, &ReloadView::from(&report)),
        Err(e) => error(reload_error_status(&e), e.to_string()),
    }
}

/// Which status a reload error gets: the client's file (422), vipgate's side (500), or
/// a process that is going away (503).
pub fn reload_error_status(e: &ReloadError) -> StatusCode {
    match e {
        ReloadError::Config(_) => StatusCode::UNPROCESSABLE_ENTITY,
        ReloadError::Apply(_) | ReloadError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        ReloadError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
    }
}

pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Resp {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            super::respond(status, "application/json", Bytes::from(body))
        }
        Err(e) => super::text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode JSON: {e}\n")),
    }
}

pub fn error(status: StatusCode, message: impl Into<String>) -> Resp {
    json(status, &ErrorView { error: message.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_parse_with_clear_errors() {
        assert_eq!(parse_change(br#"{"state": "drain"}"#), Ok(Change { state: Some(AdminState::Drain), weight: None }));
        assert_eq!(
            parse_change(br#"{"state": "maint", "weight": 256}"#),
            Ok(Change { state: Some(AdminState::Maint), weight: Some(256) })
        );
        assert_eq!(parse_change(br#"{"weight": 0}"#), Ok(Change { state: None, weight: Some(0) }));
        for (body, needle) in [
            (&b""[..], "empty body"),
            (b"{", "bad JSON"),
            (b"[1]", "not a JSON object"),
            (b"{}", "nothing to change"),
            (br#"{"state": "down"}"#, "unknown state \"down\""),
            (br#"{"state": 1}"#, "unknown state 1"),
            (br#"{"weight": 257}"#, "bad weight 257"),
            (br#"{"weight": -1}"#, "bad weight -1"),
            (br#"{"weight": 1.5}"#, "bad weight 1.5"),
            (br#"{"weight": "3"}"#, "bad weight \"3\""),
            (br#"{"state": "drain", "wieght": 3}"#, "unknown field \"wieght\""),
        ] {
            let e = parse_change(body).expect_err(&String::from_utf8_lossy(body));
            assert!(e.contains(needle), "{e:?} lacks {needle:?}");
        }
    }

    #[test]
    fn server_paths_decode() {
        assert_eq!(server_path("/api/v1/services/web/servers/a1"), Some(Ok(("web".into(), "a1".into()))));
        assert_eq!(server_path("/api/v1/services/web/servers/a%20b%2Fc"), Some(Ok(("web".into(), "a b/c".into()))));
        assert!(matches!(server_path("/api/v1/services/web/servers/%zz"), Some(Err(_))));
        assert!(matches!(server_path("/api/v1/services/web/servers/%ff"), Some(Err(_))));
        assert_eq!(server_path("/api/v1/services/web"), None);
        assert_eq!(server_path("/api/v1/services/web/servers/"), None);
        assert_eq!(server_path("/api/v1/services/web/servers/a/b"), None);
        assert_eq!(server_path("/api/v1/services//servers/a"), None);
    }

    #[test]
    fn reload_errors_are_classified_by_kind() {
        let invalid = crate::config::parse("[global]\nwokers = 1\n", "x.toml").expect_err("invalid");
        let e = ReloadError::Config(invalid);
        assert!(e.to_string().lines().any(|l| l.starts_with("x.toml:2:1: unknown key")), "{e}");
        assert_eq!(reload_error_status(&e), StatusCode::UNPROCESSABLE_ENTITY);
        let unreadable =
            crate::config::load(std::path::Path::new("/nonexistent/vipgate.toml")).expect_err("unreadable");
        assert_eq!(reload_error_status(&ReloadError::Config(unreadable)), StatusCode::UNPROCESSABLE_ENTITY);
        let bind = crate::runtime::RunError::Bind {
            service: "web".into(),
            bind: "10.0.0.1:80".parse().expect("address"),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        assert_eq!(reload_error_status(&ReloadError::Apply(bind)), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(reload_error_status(&ReloadError::ShuttingDown), StatusCode::SERVICE_UNAVAILABLE);
    }
}
