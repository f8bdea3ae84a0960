//! `GET /`: the status page. The server renders every service and server as a plain table,
//! so it works without JavaScript (and refreshes itself with a meta refresh then); the
//! small inline script (`status.js`) then polls `/api/v1/services` every 2 s, redraws the
//! tables and adds throughput. Nothing is fetched from anywhere else.
//!
//! Server and probe texts come from config files and from the network (a Galera node's
//! answer), so everything is escaped here, and the script only ever sets `textContent`.
//! The Content-Security-Policy admits only this response's own script (by nonce).

use std::fmt::Write as _;
use std::io::Read as _;
use std::time::SystemTime;

use http::header::{self, HeaderValue};
use http::StatusCode;

use super::api::{self, ServerView, ServicesView};
use super::Resp;
use crate::runtime::Control;

const SCRIPT: &str = include_str!("status.js");

const STYLE: &str = "\
body{font:13px/1.4 system-ui,sans-serif;margin:1.2em;color:#222;background:#fafafa}\
h1{font-size:1.4em;margin:0}h2{font-size:1.1em;margin:1.2em 0 .3em}\
#meta{color:#555;margin:.2em 0 1em}#meta.error{color:#b00020}\
table{border-collapse:collapse;background:#fff}\
th,td{border:1px solid #ddd;padding:.2em .5em;text-align:left;white-space:nowrap}\
th{background:#eee;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}\
td.probe{white-space:normal;min-width:16em;max-width:40em;color:#444}\
.mode{font-weight:normal;color:#666;font-size:.85em}.summary{font-weight:normal;font-size:.85em;color:#444}\
.st{display:inline-block;min-width:5.5em;padding:0 .4em;border-radius:3px;color:#fff;font-weight:600}\
.st-up{background:#2e7d32}.st-down{background:#c62828}.st-going-up{background:#1565c0}\
.st-going-down{background:#ef6c00}.st-drain{background:#f9a825;color:#222}.st-maint{background:#616161}\
.unready{color:#c62828}footer{margin-top:2em;color:#666}";

/// The page, as an HTTP answer with its nonce-bound CSP.
pub fn response(control: &Control) -> Resp {
    let nonce = nonce();
    let html = render(&api::services(control), &nonce, SystemTime::now());
    let mut r = super::respond(StatusCode::OK, "text/html; charset=utf-8", html);
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; \
         img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
    }
    r
}

/// The whole HTML document for `view`; `now` dates the probe ages.
pub fn render(view: &ServicesView, nonce: &str, now: SystemTime) -> String {
    let now_secs = now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut h = String::with_capacity(4096 + view.services.len() * 2048);
    let n = escape(nonce);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>vipgate status</title>\
         <noscript><meta http-equiv=\"refresh\" content=\"10\"></noscript>\
         <style nonce=\"{n}\">{STYLE}</style></head>\n\
         <body data-polls=\"0\" data-generation=\"{}\">\n<header><h1>vipgate status</h1>\
         <p id=\"meta\">vipgate {} · config generation {} · <span id=\"updated\">as rendered by the server</span></p>\
         </header>\n<main id=\"services\">\n",
        view.process.generation,
        escape(&view.version),
        view.process.generation,
    );
    for svc in &view.services {
        let usable = svc.servers.iter().filter(|s| s.usable).count();
        let unready = !svc.servers.is_empty() && usable == 0;
        let _ = write!(
            h,
            "<section class=\"service\" data-service=\"{name}\"><h2>{name} <span class=\"mode\">{mode}</span> \
             <span class=\"summary{cls}\">{usable} of {total} usable</span></h2>\n<table><thead><tr>",
            name = escape(&svc.name),
            mode = escape(&svc.mode),
            cls = if unready { " unready" } else { "" },
            total = svc.servers.len(),
        );
        for col in COLUMNS {
            let _ = write!(h, "<th>{col}</th>");
        }
        h.push_str("</tr></thead><tbody>\n");
        for s in &svc.servers {
            row(&mut h, s, now_secs);
        }
        h.push_str("</tbody></table></section>\n");
    }
    let _ = write!(
        h,
        "</main>\n<footer>Refreshes every 2 s. Raw data: <a href=\"api/v1/services\">api/v1/services</a> · \
         <a href=\"metrics\">metrics</a></footer>\n<script nonce=\"{n}\">\n{SCRIPT}</script>\n</body></html>\n"
    );
    h
}

/// Column heads; `status.js` draws the same columns in the same order.
const COLUMNS: [&str; 13] = [
    "server",
    "address",
    "state",
    "health",
    "tier",
    "weight",
    "active",
    "connections",
    "bytes in",
    "bytes out",
    "in/s",
    "out/s",
    "last probe",
];

fn row(h: &mut String, s: &ServerView, now_secs: u64) {
    let state = escape(&s.state);
    let _ = writeln!(
        h,
        "<tr data-server=\"{name}\" data-state=\"{state}\" data-admin=\"{admin}\"><td>{name}</td><td>{addr}</td>\
         <td class=\"state\"><span class=\"st st-{cls}\">{state}</span></td><td>{health}</td>\
         <td class=\"num\">{tier}</td><td class=\"num\">{weight}</td><td class=\"num\">{active}</td>\
         <td class=\"num\">{total}</td><td class=\"num\">{bin}</td><td class=\"num\">{bout}</td>\
         <td class=\"num\">–</td><td class=\"num\">–</td><td class=\"probe\">{probe}</td></tr>",
        name = escape(&s.name),
        addr = escape(&s.address),
        admin = escape(&s.admin),
        cls = state_class(&s.state),
        health = escape(&s.health),
        tier = s.tier,
        weight = s.weight,
        active = s.active,
        total = s.connections_total,
        bin = bytes(s.bytes_in),
        bout = bytes(s.bytes_out),
        probe = escape(&probe_text(s, now_secs)),
    );
}

/// "going down" → "going-down", for the colour class; anything unexpected gets no colour.
fn state_class(state: &str) -> &'static str {
    match state {
        "up" => "up",
        "down" => "down",
        "going up" => "going-up",
        "going down" => "going-down",
        "drain" => "drain",
        "maint" => "maint",
        _ => "unknown",
    }
}

/// "ok, 3 ms, 4 s ago: HTTP 200" (the same wording as `status.js`).
fn probe_text(s: &ServerView, now_secs: u64) -> String {
    match &s.last_probe {
        None => "not probed".to_string(),
        Some(p) => format!(
            "{}, {} ms, {} s ago: {}",
            if p.ok { "ok" } else { "failed" },
            p.duration_ms,
            now_secs.saturating_sub(p.at),
            p.reason
        ),
    }
}

/// 1536 → "1.5 KiB" (the same units as `status.js`).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Text made safe for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A fresh CSP nonce (128 bits, hex) per page. /dev/urandom is always there on Linux; if it
/// is not, a per-process random hasher still gives an unguessable-enough value, and the
/// escaping above is the first line of defence anyway.
fn nonce() -> String {
    let mut buf = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf));
    if read.is_err() {
        use std::hash::{BuildHasher, Hasher};
        for chunk in buf.chunks_mut(8) {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u128(
                SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0),
            );
            chunk.copy_from_slice(&hasher.finish().to_le_bytes()[..chunk.len()]);
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::api::{ProbeView, ProcessView, ServiceView};

    fn server(name: &str, state: &str, reason: &str) -> ServerView {
        ServerView {
            name: name.into(),
            address: "127.0.0.1:1".into(),
            state: state.into(),
            health: "up".into(),
            admin: "ready".into(),
            usable: state == "up",
            tier: 0,
            weight: 1,
            active: 2,
            connections_total: 3,
            bytes_in: 1536,
            bytes_out: 10,
            connect_failures: 0,
            last_probe: Some(ProbeView { ok: false, reason: reason.into(), duration_ms: 4, at: 95 }),
        }
    }

    #[test]
    fn everything_is_escaped() {
        let view = ServicesView {
            version: "0.1.0".into(),
            process: ProcessView {
                pid: 1,
                generation: 2,
                config_hash: String::new(),
                reloads_total: 0,
                reloads_failed: 0,
                last_reload_error: None,
            },
            services: vec![ServiceView {
                name: "web".into(),
                mode: "tcp".into(),
                balance: "roundrobin".into(),
                binds: vec!["127.0.0.1:80".into()],
                servers: vec![
                    server("<img src=x onerror=alert(1)>", "going down", "HTTP 503: <b>\"busy\" & 'late'</b>"),
                    server("b", "up", "ok"),
                ],
            }],
        };
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(100);
        let html = render(&view, "abc", now);
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<b>"));
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(html.contains("data-server=\"&lt;img src=x onerror=alert(1)&gt;\" data-state=\"going down\""));
        assert!(
            html.contains("failed, 4 ms, 5 s ago: HTTP 503: &lt;b&gt;&quot;busy&quot; &amp; &#39;late&#39;&lt;/b&gt;")
        );
        assert!(html.contains("<span class=\"st st-going-down\">going down</span>"));
        assert!(html.contains("1 of 2 usable"));
        assert!(html.contains("<script nonce=\"abc\">"));
        assert_eq!(html.matches("<script").count(), 1);
    }

    #[test]
    fn the_script_cannot_end_its_element_early() {
        assert!(!SCRIPT.to_ascii_lowercase().contains("</script"));
    }

    #[test]
    fn byte_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }

    #[test]
    fn nonces_differ() {
        let (a, b) = (nonce(), nonce());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
