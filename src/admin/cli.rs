//! HAProxy's runtime API on the admin unix socket: the text commands existing OpenStack
//! tooling sends to HAProxy's `stats socket`. kolla's keepalived `check_alive` sends
//! `show info` (no answer: the VIP moves away), openstack-ansible drains servers and shuts
//! their sessions, operators run `hatop`. The socket also speaks HTTP (the JSON API, for
//! `vipgate status`); the first line of a connection tells which.
//!
//! As in HAProxy: a line holds one or more commands separated by `;`; each command's
//! answer ends with an empty line; the connection closes after the line unless `prompt`
//! made the session interactive (then `> ` follows each answer and `quit` ends it).
//! Backends and frontends are vipgate's services, servers are servers.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tracing::info;

use crate::config::MAX_WEIGHT;
use crate::runtime::{Control, Missing, Service};
use crate::upstream::{AdminState, Health, Server, State};

/// A command line longer than this is refused (HAProxy's own limit is its buffer size).
const MAX_LINE: usize = 16 * 1024;
/// An interactive session idle this long is closed.
const IDLE: Duration = Duration::from_secs(60);

/// True when `line` (the first line a client sent) is an HTTP request line.
pub fn is_http_request_line(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !method.is_empty()
        && method.iter().all(u8::is_ascii_uppercase)
        && !target.is_empty()
        && version.starts_with(b"HTTP/")
}

/// Serve one CLI connection from its first byte.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(io: S, control: &Control) {
    let mut io = BufReader::new(io);
    let mut line = Vec::new();
    let mut interactive = false;
    loop {
        line.clear();
        let read = tokio::time::timeout(IDLE, (&mut io).take(MAX_LINE as u64).read_until(b'\n', &mut line)).await;
        match read {
            // A last line without newline counts (`echo -n "show info" | socat ...`).
            Ok(Ok(n)) if n > 0 && n < MAX_LINE => {}
            Ok(Ok(n)) if n >= MAX_LINE => {
                let _ = io.get_mut().write_all(b"Command line too long.\n\n").await;
                break;
            }
            _ => break,
        }
        let text = String::from_utf8_lossy(&line);
        let mut out = String::new();
        let mut quit = false;
        for cmd in text.trim_end_matches(['\r', '\n']).split(';') {
            let words: Vec<&str> = cmd.split_whitespace().collect();
            match words.as_slice() {
                [] => {}
                ["prompt"] => interactive = !interactive,
                ["quit"] => quit = true,
                _ => {
                    out.push_str(&run(&words, control));
                    out.push('\n');
                }
            }
        }
        if interactive && !quit {
            out.push_str("> ");
        }
        if io.get_mut().write_all(out.as_bytes()).await.is_err() || quit || !interactive {
            break;
        }
    }
    let _ = io.get_mut().shutdown().await;
}

/// One command: its answer (without the terminating empty line).
fn run(words: &[&str], control: &Control) -> String {
    match words {
        ["help"] => HELP.to_string(),
        ["show", "info"] => show_info(control),
        ["show", "stat", ..] => show_stat(control),
        ["show", "servers", "state"] => show_servers_state(control, None),
        ["show", "servers", "state", backend] => show_servers_state(control, Some(backend)),
        ["enable", "server", target] => with_server(control, target, |s| set_state(s, AdminState::Ready, target)),
        ["disable", "server", target] => with_server(control, target, |s| set_state(s, AdminState::Maint, target)),
        ["set", "server", target, "state", state] => match parse_state(state) {
            Some(a) => with_server(control, target, |s| set_state(s, a, target)),
            None => "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n".to_string(),
        },
        ["set", "server", target, "weight", w] | ["set", "weight", target, w] => {
            with_server(control, target, |s| set_weight(s, w, target))
        }
        ["shutdown", "sessions", "server", target] => with_server(control, target, |s| {
            s.shutdown_sessions();
            info!(server = %target, "sessions shut down through the command socket");
            String::new()
        }),
        _ => format!("Unknown command: '{}'\n{HELP}", words.join(" ")),
    }
}

const HELP: &str = "\
The following commands are valid at this level:
  help                                    : this list
  prompt                                  : toggle interactive mode with prompt
  quit                                    : disconnect
  show info                               : report information about the running process
  show stat                               : report counters for each proxy and server (CSV)
  show servers state [<backend>]          : dump volatile server information
  enable server <bk>/<srv>                : set a server ready (leave maintenance)
  disable server <bk>/<srv>               : put a server in maintenance
  set server <bk>/<srv> state <state>     : ready, drain or maint
  set server <bk>/<srv> weight <w>[%]     : change a server's weight
  set weight <bk>/<srv> <w>[%]            : the same
  shutdown sessions server <bk>/<srv>     : kill sessions on a server
";

fn parse_state(s: &str) -> Option<AdminState> {
    match s {
        "ready" => Some(AdminState::Ready),
        "drain" => Some(AdminState::Drain),
        "maint" => Some(AdminState::Maint),
        _ => None,
    }
}

/// Find `backend/server` and apply `f`, or answer HAProxy's error text.
fn with_server(control: &Control, target: &str, f: impl FnOnce(&Server) -> String) -> String {
    let Some((backend, server)) = target.split_once('/') else {
        return "Require 'backend/server'.\n".to_string();
    };
    match control.snapshot.load().server(backend, server) {
        Ok(s) => f(s),
        Err(Missing::Service) => "No such backend.\n".to_string(),
        Err(Missing::Server) => "No such server.\n".to_string(),
    }
}

fn set_state(server: &Server, state: AdminState, target: &str) -> String {
    let was = server.admin();
    server.set_admin(state);
    info!(server = %target, admin = crate::admin::api::admin_name(state), was_admin = crate::admin::api::admin_name(was),
        "server changed through the command socket");
    String::new()
}

/// `N` (absolute) or `N%` (of the configured weight), as HAProxy takes them.
fn set_weight(server: &Server, w: &str, target: &str) -> String {
    let weight = match w.strip_suffix('%') {
        Some(pct) => pct.parse::<u64>().ok().map(|p| u64::from(server.config_weight()) * p / 100),
        None => w.parse::<u64>().ok(),
    };
    match weight {
        Some(n) if n <= u64::from(MAX_WEIGHT) => {
            let was = server.weight();
            server.set_weight(n as u32);
            info!(server = %target, weight = n, was_weight = was, "server weight changed through the command socket");
            String::new()
        }
        _ => format!("Weight must be a whole number from 0 to {MAX_WEIGHT}, or a percentage of the initial weight.\n"),
    }
}

fn show_info(control: &Control) -> String {
    let snapshot = control.snapshot.load();
    let servers = || snapshot.services.iter().flat_map(|s| s.pool.servers().iter());
    let curr: u64 = servers().map(|s| u64::from(s.active())).sum();
    let cum: u64 = snapshot.services.iter().map(|s| s.stats.connections_total.load(Relaxed)).sum();
    let started = control.process.started_unix.load(Relaxed);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let up = now.saturating_sub(started);
    let mut out = String::new();
    let _ = writeln!(out, "Name: vipgate");
    let _ = writeln!(out, "Version: {}", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(out, "Nbproc: 1");
    let _ = writeln!(out, "Process_num: 1");
    let _ = writeln!(out, "Pid: {}", std::process::id());
    let _ = writeln!(out, "Uptime: {}d {}h{:02}m{:02}s", up / 86400, up / 3600 % 24, up / 60 % 60, up % 60);
    let _ = writeln!(out, "Uptime_sec: {up}");
    let _ = writeln!(out, "CurrConns: {curr}");
    let _ = writeln!(out, "CumConns: {cum}");
    let _ = writeln!(out, "Stopping: 0");
    let _ = writeln!(out, "Services: {}", snapshot.services.len());
    let _ = writeln!(out, "Servers: {}", servers().count());
    let _ = writeln!(out, "Config_generation: {}", control.process.generation.load(Relaxed));
    out
}

/// HAProxy's first 45 `show stat` columns, in its order; the ones vipgate has no
/// counterpart for stay empty, as HAProxy leaves columns that do not apply.
const STAT_COLUMNS: &str = "pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,\
wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,\
rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,";

/// HAProxy's status words.
fn stat_status(s: &Server) -> &'static str {
    match s.state() {
        State::Maint => "MAINT",
        State::Drain => "DRAIN",
        State::Up if s.health() == Health::Unchecked => "no check",
        State::Up => "UP",
        State::GoingDown => "UP 1/2",
        State::GoingUp => "DOWN 1/2",
        State::Down => "DOWN",
    }
}

fn show_stat(control: &Control) -> String {
    let snapshot = control.snapshot.load();
    let mut out = format!("# {STAT_COLUMNS}\n");
    for (i, svc) in snapshot.services.iter().enumerate() {
        let iid = i + 1;
        stat_frontend(&mut out, svc, iid);
        for (j, s) in svc.pool.servers().iter().enumerate() {
            stat_server(&mut out, svc, s, iid, j + 1);
        }
        stat_backend(&mut out, svc, iid);
    }
    out
}

/// One CSV row from its 45 fields (empty where vipgate has no value).
fn row(out: &mut String, fields: &[(usize, String)]) {
    let mut cols = vec![String::new(); 45];
    for (i, v) in fields {
        if let Some(c) = cols.get_mut(*i) {
            // Names are free text: keep the CSV parseable.
            *c = v.replace([',', '\n', '\r'], "_");
        }
    }
    for c in cols {
        out.push_str(&c);
        out.push(',');
    }
    out.push('\n');
}

fn responses(svc: &Service) -> Vec<(usize, String)> {
    if svc.http.is_none() {
        return Vec::new();
    }
    (0..5).map(|k| (39 + k, svc.stats.responses[k].load(Relaxed).to_string())).chain([(44, "0".to_string())]).collect()
}

fn stat_frontend(out: &mut String, svc: &Arc<Service>, iid: usize) {
    let scur: u64 = svc.pool.servers().iter().map(|s| u64::from(s.active())).sum();
    let mut f = vec![
        (0, svc.name.clone()),
        (1, "FRONTEND".to_string()),
        (4, scur.to_string()),
        (7, svc.stats.connections_total.load(Relaxed).to_string()),
        (17, "OPEN".to_string()),
        (26, "1".to_string()),
        (27, iid.to_string()),
        (28, "0".to_string()),
        (32, "0".to_string()),
    ];
    f.extend(responses(svc));
    row(out, &f);
}

fn stat_server(out: &mut String, svc: &Arc<Service>, s: &Server, iid: usize, sid: usize) {
    let probe = s.last_probe();
    let mut f = vec![
        (0, svc.name.clone()),
        (1, s.name.clone()),
        (2, "0".to_string()),
        (3, "0".to_string()),
        (4, s.active().to_string()),
        (7, s.stats.connections_total.load(Relaxed).to_string()),
        (8, s.stats.bytes_in.load(Relaxed).to_string()),
        (9, s.stats.bytes_out.load(Relaxed).to_string()),
        (13, s.stats.connect_failures.load(Relaxed).to_string()),
        (17, stat_status(s).to_string()),
        (18, s.weight().to_string()),
        (19, if s.is_backup() { "0" } else { "1" }.to_string()),
        (20, if s.is_backup() { "1" } else { "0" }.to_string()),
        (21, s.stats.probe_failures.load(Relaxed).to_string()),
        (22, s.stats.state_changes.load(Relaxed).to_string()),
        (26, "1".to_string()),
        (27, iid.to_string()),
        (28, sid.to_string()),
        (30, s.stats.connections_total.load(Relaxed).to_string()),
        (32, "2".to_string()),
    ];
    if let Some(p) = probe {
        f.push((36, if p.ok { "L7OK" } else { "L7STS" }.to_string()));
        f.push((38, p.duration.as_millis().to_string()));
    }
    row(out, &f);
}

fn stat_backend(out: &mut String, svc: &Arc<Service>, iid: usize) {
    let servers = svc.pool.servers();
    let usable = |backup: bool| servers.iter().filter(move |s| s.is_backup() == backup && s.usable());
    let weight: u32 = usable(false).map(|s| s.weight()).sum();
    let up = servers.iter().any(|s| s.usable());
    let mut f = vec![
        (0, svc.name.clone()),
        (1, "BACKEND".to_string()),
        (4, servers.iter().map(|s| u64::from(s.active())).sum::<u64>().to_string()),
        (7, servers.iter().map(|s| s.stats.connections_total.load(Relaxed)).sum::<u64>().to_string()),
        (13, servers.iter().map(|s| s.stats.connect_failures.load(Relaxed)).sum::<u64>().to_string()),
        (15, svc.stats.retries.load(Relaxed).to_string()),
        (17, if up { "UP" } else { "DOWN" }.to_string()),
        (18, weight.to_string()),
        (19, usable(false).count().to_string()),
        (20, usable(true).count().to_string()),
        (26, "1".to_string()),
        (27, iid.to_string()),
        (28, "0".to_string()),
        (32, "1".to_string()),
    ];
    f.extend(responses(svc));
    row(out, &f);
}

/// `show servers state`, format version 1 (what HAProxy's `server-state-file` holds).
fn show_servers_state(control: &Control, only: Option<&str>) -> String {
    let snapshot = control.snapshot.load();
    if let Some(name) = only {
        if snapshot.service(name).is_none() {
            return format!("Can't find backend '{name}'.\n");
        }
    }
    let mut out = String::from(
        "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight \
srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state \
bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord\n",
    );
    for (i, svc) in snapshot.services.iter().enumerate() {
        if only.is_some_and(|n| n != svc.name) {
            continue;
        }
        for (j, s) in svc.pool.servers().iter().enumerate() {
            // op_state: 0 stopped, 1 starting, 2 running, 3 stopping.
            let op = match s.health() {
                Health::Down => 0,
                Health::GoingUp => 1,
                Health::Up => 2,
                Health::GoingDown => 3,
                Health::Unchecked if s.is_up() => 2,
                Health::Unchecked => 0,
            };
            // admin_state bits: 0x01 forced maintenance, 0x08 forced drain.
            let admin = match s.admin() {
                AdminState::Ready => 0,
                AdminState::Maint => 0x01,
                AdminState::Drain => 0x08,
            };
            let _ = writeln!(
                out,
                "{} {} {} {} {} {op} {admin} {} {} 0 0 0 0 0 0 0 0 - {} -",
                i + 1,
                svc.name.replace(' ', "_"),
                j + 1,
                s.name.replace(' ', "_"),
                s.address().ip(),
                s.weight(),
                s.config_weight(),
                s.address().port(),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_request_lines_are_told_apart_from_commands() {
        assert!(is_http_request_line(b"GET /api/v1/services HTTP/1.1\r\n"));
        assert!(is_http_request_line(b"POST /api/v1/reload HTTP/1.1\n"));
        assert!(!is_http_request_line(b"show info\n"));
        assert!(!is_http_request_line(b"show servers state\n"));
        assert!(!is_http_request_line(b"set server a/b state drain\n"));
        assert!(!is_http_request_line(b"GET\n"));
        assert!(!is_http_request_line(b""));
    }

    #[test]
    fn stat_header_has_haproxy_column_order() {
        let cols: Vec<&str> = STAT_COLUMNS.trim_end_matches(',').split(',').collect();
        assert_eq!(cols.len(), 45);
        assert_eq!(&cols[..4], &["pxname", "svname", "qcur", "qmax"]);
        assert_eq!(cols[17], "status");
        assert_eq!(cols[32], "type");
        assert_eq!(cols[36], "check_status");
        assert_eq!(cols[44], "hrsp_other");
    }
}
