//! The status page (`GET /`) in a real browser: headless Chromium loads it from a running
//! vipgate, its script polls the API, and the DOM it leaves must show every server in the
//! state the API reports, with hostile names shown as text, never as markup. Also rendered
//! with JavaScript off (the plain table), and a screenshot is saved for people to look at.
//!
//! Needs the `chromium` binary (Debian package `chromium`); without it the tests print why
//! they skip, unless VIPGATE_REQUIRE_CHROMIUM=1 (CI) makes that a failure.

mod common;
#[path = "support/http_client.rs"]
mod http_client;

use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use common::*;
use tokio::time::Instant;
use vipgate::admin::api::ServicesView;

/// A server name that is markup, to see it shown as text.
const HOSTILE: &str = "<img src=x onerror=alert(1)>";
/// Bound on one Chromium run (it normally takes 2–5 s).
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(90);

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// The browser, or None after printing why the test skips (a failure when required).
fn require_chromium(test: &str) -> Option<PathBuf> {
    let found = chromium();
    if found.is_none() {
        if std::env::var("VIPGATE_REQUIRE_CHROMIUM").as_deref() == Ok("1") {
            panic!("{test}: chromium not found in PATH and VIPGATE_REQUIRE_CHROMIUM=1");
        }
        eprintln!("SKIP {test}: chromium not found in PATH (apt-get install chromium)");
    }
    found
}

/// Run headless Chromium with `args` then `url`; returns its stdout. Bounded: past
/// [`CHROMIUM_TIMEOUT`] its process group (it and the helpers it forked, nothing else) is
/// killed by the id we started it with.
fn run_chromium(bin: &Path, args: &[&str], url: &str) -> String {
    let profile = temp_path("chromium-profile", "d");
    let out_path = temp_path("chromium-out", "html");
    let err_path = temp_path("chromium-err", "log");
    let mut child = Command::new(bin)
        .args(["--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-extensions"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .process_group(0)
        .spawn()
        .expect("spawn chromium");
    let pid = child.id() as i32;
    let deadline = Instant::now() + CHROMIUM_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for chromium") {
            break Some(st);
        }
        if Instant::now() > deadline {
            // SAFETY: kill(2) on the process group of the chromium we spawned (pgid = its pid).
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    // Helpers of a chromium that exited on its own end with it; make sure of it.
    // SAFETY: as above; ESRCH when the group is already gone is fine.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    let _ = std::fs::remove_dir_all(&profile);
    match status {
        Some(st) if st.success() => out,
        Some(st) => panic!("chromium exited with {st}; stderr:\n{err}"),
        None => panic!("chromium did not finish within {CHROMIUM_TIMEOUT:?}; stderr:\n{err}"),
    }
}

fn services(admin: SocketAddr) -> ServicesView {
    let r = http_client::get(admin, "/api/v1/services", "");
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).expect("services JSON")
}

fn post(admin: SocketAddr, path: &str, body: &str) {
    let mut s = http_client::connect(admin);
    let raw =
        format!("POST {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    let r = http_client::send(&mut s, &raw).expect("answer");
    assert_eq!(r.status, 200, "{}", r.text());
}

/// What a DOM serializer may write for `s` inside a double-quoted attribute (newer
/// Chromium also escapes < and >).
fn attr_forms(s: &str) -> Vec<String> {
    let base = s.replace('&', "&amp;").replace('"', "&quot;");
    vec![base.clone(), base.replace('<', "&lt;").replace('>', "&gt;")]
}

/// The `data-state` of the row for `server` in the service section `service`.
fn row_state(dom: &str, service: &str, server: &str) -> Option<String> {
    let section_start = attr_forms(service).iter().find_map(|f| dom.find(&format!("data-service=\"{f}\"")))?;
    let section = &dom[section_start..];
    let section = &section[..section.find("</section>").unwrap_or(section.len())];
    attr_forms(server).iter().find_map(|f| {
        let at = section.find(&format!("data-server=\"{f}\""))?;
        let rest = &section[at..];
        let rest = &rest[rest.find("data-state=\"")? + "data-state=\"".len()..];
        Some(rest[..rest.find('"')?].to_string())
    })
}

/// `web` with servers a, b (echo backends) and HOSTILE (a dead port), probed every 200 ms.
fn setup() -> (Vipgate, SocketAddr, SocketAddr, Backend, Backend) {
    let (a, b) = (Backend::echo_any("a"), Backend::echo_any("b"));
    let dead = free_addr();
    let (bind, admin) = (free_addr(), free_addr());
    let cfg = service_toml("", "web", bind, "", &[("a", a.addr, ""), ("b", b.addr, ""), (HOSTILE, dead, "")])
        + &check("web", "200ms", 1, 1)
        + &format!("\n[admin]\nbind = \"{admin}\"\n");
    let v = Vipgate::start(&cfg, bind);
    // The admin endpoint opens just after the listeners.
    let up = eventually(WAIT, || std::net::TcpStream::connect_timeout(&admin, Duration::from_millis(500)).ok());
    assert!(up.is_some(), "admin endpoint {admin} never opened:\n{}", v.log());
    (v, bind, admin, a, b)
}

fn wait_state(admin: SocketAddr, server: &str, state: &str) {
    let ok = eventually(WAIT, || {
        let view = services(admin);
        view.services[0].servers.iter().any(|s| s.name == server && s.state == state).then_some(())
    });
    assert!(ok.is_some(), "{server} never {state}: {:?}", services(admin));
}

#[test]
fn the_page_script_shows_the_states_the_api_reports() {
    let Some(bin) = require_chromium("the_page_script_shows_the_states_the_api_reports") else { return };
    let (v, bind, admin, _a, mut b) = setup();
    // Some traffic, so the counters and rates have something to show.
    for _ in 0..4 {
        let _ = which_server(bind);
    }
    // b goes down, a is drained by the operator, the hostile-named server never came up.
    b.stop();
    wait_state(admin, "b", "down");
    post(admin, "/api/v1/services/web/servers/a", r#"{"state": "drain"}"#);
    wait_state(admin, "a", "drain");

    let url = format!("http://{admin}/");
    let dom = run_chromium(&bin, &["--virtual-time-budget=5000", "--dump-dom"], &url);
    let polls: u32 = dom
        .split("data-polls=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no data-polls in the DOM:\n{dom}"));
    assert!(polls >= 1, "the page's script never polled the API:\n{dom}\n{}", v.log());
    assert!(!dom.contains("data-error=\""), "the script reported an error:\n{dom}");
    // Rates only the script computes (two polls), and its "updated" line (the script's
    // source, also in the dump, spells the dot as \u00b7).
    assert!(dom.contains("B/s"), "no rates drawn by the script:\n{dom}");
    assert!(dom.contains("config generation 0 \u{b7} updated "), "{dom}");

    let view = services(admin);
    for s in &view.services[0].servers {
        let shown = row_state(&dom, "web", &s.name).unwrap_or_else(|| panic!("no row for {:?}:\n{dom}", s.name));
        assert_eq!(shown, s.state, "state of {:?} on the page vs the API", s.name);
    }
    assert_eq!(row_state(&dom, "web", "a").as_deref(), Some("drain"));
    assert_eq!(row_state(&dom, "web", "b").as_deref(), Some("down"));
    assert_eq!(row_state(&dom, "web", HOSTILE).as_deref(), Some("down"));
    // The hostile name is text: no element came of it.
    assert!(!dom.contains("<img"), "a server name became markup:\n{dom}");
    assert!(dom.contains("&lt;img src=x onerror=alert(1)&gt;"), "{dom}");
    // The colour classes go with the states, and the text is there beside the colour.
    assert!(dom.contains("<span class=\"st st-drain\">drain</span>"), "{dom}");
    assert!(dom.contains("<span class=\"st st-down\">down</span>"), "{dom}");
    // The probe reason is on the page.
    assert!(dom.contains("refused"), "{dom}");

    // A screenshot, for a person to look at.
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status_page.png");
    let _ = std::fs::remove_file(&shot);
    run_chromium(
        &bin,
        &["--virtual-time-budget=5000", "--window-size=1200,800", &format!("--screenshot={}", shot.display())],
        &url,
    );
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", shot.display()));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000, "not a PNG");
    eprintln!("status page screenshot: {}", shot.display());
}

#[test]
fn without_javascript_the_page_is_a_plain_table() {
    let Some(bin) = require_chromium("without_javascript_the_page_is_a_plain_table") else { return };
    let (_v, _bind, admin, _a, _b) = setup();
    wait_state(admin, "a", "up");
    post(admin, "/api/v1/services/web/servers/b", r#"{"state": "maint"}"#);
    // Headless Chromium with scripts disabled dumps nothing, so the browser gets the page as
    // served minus its one script element: what a browser without JavaScript renders.
    let r = http_client::get(admin, "/", "");
    assert_eq!(r.status, 200);
    let html = r.text();
    let (start, end) = (html.find("<script").expect("script element"), html.find("</script>").expect("script end"));
    let plain = format!("{}{}", &html[..start], &html[end + "</script>".len()..]);
    assert!(!plain.contains("<script"));
    let file = temp_path("status-nojs", "html");
    std::fs::write(&file, plain).unwrap();
    let dom = run_chromium(&bin, &["--dump-dom"], &format!("file://{}", file.display()));
    let _ = std::fs::remove_file(&file);
    assert!(dom.contains("data-polls=\"0\""), "{dom}");
    assert_eq!(row_state(&dom, "web", "a").as_deref(), Some("up"), "{dom}");
    assert_eq!(row_state(&dom, "web", "b").as_deref(), Some("maint"), "{dom}");
    assert_eq!(row_state(&dom, "web", HOSTILE).as_deref(), Some("down"), "{dom}");
    assert!(!dom.contains("<img"), "a server name became markup:\n{dom}");
    assert!(dom.contains("<span class=\"st st-maint\">maint</span>"), "{dom}");
    assert!(dom.contains("1 of 3 usable"), "{dom}");
}
