//! `vipgate check`, `--version`, `--help`: exit codes and `FILE:LINE:COL: message`
//! diagnostics for every problem in a file.

mod common;

use common::*;

/// The configuration from the issue, verbatim.
const ISSUE_CONFIG: &str = r#"[global]
workers = 2          # worker threads; env VIPGATE_WORKERS overrides
grace = "30s"        # drain time on SIGTERM
splice = true        # Linux zero-copy; false forces the buffered copy path

[admin]
bind = "127.0.0.1:9100"   # accepted, unused for now

[defaults]            # any service key may sit here
connect_timeout = "5s"
client_timeout = "1m"
server_timeout = "1m"

[services.galera]
bind = ["127.0.0.1:13306"]     # string or array of strings; "[::1]:port" for v6
mode = "tcp"
balance = "first"              # roundrobin | leastconn | source | first | random
client_timeout = "48h"         # idle timeout, "0" = none
server_timeout = "48h"
retries = 3                    # connect retries on other servers (default 3)
keepalive = true               # TCP keepalive both sides (default true)
[services.galera.check]
kind = "tcp"
interval = "2s"
rise = 2
fall = 3
timeout = "1s"                 # optional
[[services.galera.servers]]
name = "db1"
address = "127.0.0.1:3306"
weight = 1                     # default 1
[[services.galera.servers]]
name = "db2"
address = "127.0.0.1:3307"
backup = true
"#;

/// One parsed diagnostic line.
#[derive(Debug)]
struct Diag {
    line: usize,
    col: usize,
    msg: String,
}

/// Run `check` on `text`; return (exit code, stderr, diagnostics parsed from stderr).
/// Every non-empty stderr line must be `FILE:LINE:COL: message` with FILE as given.
fn check_text(text: &str) -> (i32, String, Vec<Diag>) {
    let path = write_config("check", text);
    let p = path.to_str().unwrap().to_string();
    let out = run_cli(&["check", "--config", &p]);
    let _ = std::fs::remove_file(&path);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out.status.code().unwrap_or(-1);
    let mut diags = Vec::new();
    if code != 0 {
        for l in stderr.lines().filter(|l| !l.trim().is_empty()) {
            diags.push(parse_diag(l, &p).unwrap_or_else(|| {
                panic!("stderr line is not `{p}:LINE:COL: message`: {l:?}\nfull stderr:\n{stderr}")
            }));
        }
    }
    (code, stderr, diags)
}

fn parse_diag(l: &str, file: &str) -> Option<Diag> {
    let rest = l.strip_prefix(file)?.strip_prefix(':')?;
    let mut it = rest.splitn(3, ':');
    let line: usize = it.next()?.parse().ok()?;
    let col: usize = it.next()?.parse().ok()?;
    let msg = it.next()?.strip_prefix(' ')?.to_string();
    if line == 0 || col == 0 {
        return None;
    }
    Some(Diag { line, col, msg })
}

/// `check` must accept `text` (exit 0); `what` names the config in the failure message.
fn check_accepts(text: &str, what: &str) {
    let (code, stderr, _) = check_text(text);
    assert_eq!(code, 0, "{what} rejected:\n{stderr}");
}

/// The diagnostics of a config that `check` rejected with exit code 1.
struct Rejected {
    stderr: String,
    diags: Vec<Diag>,
}

/// `check` must reject `text` with exit code 1 (`what` names the config in the failure
/// message); returns its stderr and diagnostics.
fn check_rejects(text: &str, what: &str) -> Rejected {
    let (code, stderr, diags) = check_text(text);
    assert_eq!(code, 1, "{what} should exit 1; stderr:\n{stderr}");
    Rejected { stderr, diags }
}

impl Rejected {
    /// The first diagnostic satisfying `pred`; panics (naming `what`) when there is none.
    fn find_where(&self, what: &str, pred: impl Fn(&Diag) -> bool) -> &Diag {
        let stderr = &self.stderr;
        self.diags.iter().find(|d| pred(d)).unwrap_or_else(|| panic!("no diagnostic {what}; stderr:\n{stderr}"))
    }

    /// The first diagnostic whose message contains every needle (case-insensitive).
    fn find(&self, needles: &[&str]) -> &Diag {
        self.find_where(&format!("mentioning {needles:?}"), |d| {
            let m = d.msg.to_lowercase();
            needles.iter().all(|n| m.contains(&n.to_lowercase()))
        })
    }

    /// The first diagnostic mentioning every needle must be on `line`.
    fn expect_at(&self, needles: &[&str], line: usize) {
        let d = self.find(needles);
        assert_eq!(d.line, line, "diagnostic {d:?} should be on line {line}; stderr:\n{}", self.stderr);
    }
}

#[test]
fn version_prints_name_and_version() {
    let out = run_cli(&["--version"]);
    assert!(out.status.success(), "--version failed: {out:?}");
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(s.trim(), "vipgate 0.1.0");
}

#[test]
fn help_lists_run_and_check() {
    let out = run_cli(&["--help"]);
    assert!(out.status.success(), "--help failed: {out:?}");
    let s = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = s.split_whitespace().collect();
    assert!(words.contains(&"run"), "--help does not list `run`:\n{s}");
    assert!(words.contains(&"check"), "--help does not list `check`:\n{s}");
    let demo = run_cli(&["demo", "--help"]);
    assert!(demo.status.success(), "`demo --help` failed: {demo:?}");
}

#[test]
fn check_accepts_issue_config() {
    check_accepts(ISSUE_CONFIG, "issue config");
}

#[test]
fn check_accepts_minimal_and_v6_configs() {
    let text = r#"
[services.web]
bind = "127.0.0.1:18080"
[[services.web.servers]]
name = "a"
address = "127.0.0.1:8080"

[services.v6]
bind = ["[::1]:18081", "127.0.0.1:18081"]
balance = "source"
client_timeout = "0"
server_timeout = "500ms"
[[services.v6.servers]]
name = "a"
address = "[::1]:8081"
weight = 3
[[services.v6.servers]]
name = "b"
address = "127.0.0.1:8081"
"#;
    check_accepts(text, "valid config");
}

#[test]
fn check_reports_all_problems_with_positions() {
    // Line numbers matter: keep the layout in sync with the expectations below.
    let text = r#"[global]
workers = 2
grace = "30 parsecs"
colour = "blue"

[services.web]
bind = "127.0.0.1:99999"
balance = "fastest"
[[services.web.servers]]
name = "a"
address = "127.0.0.1:8080"

[services.empty]
bind = "127.0.0.1:18090"

[services.dup]
bind = "127.0.0.1:18090"
[[services.dup.servers]]
name = "x"
address = "127.0.0.1:8081"
backup = true
[[services.dup.servers]]
name = "y"
address = "127.0.0.1:8082"
backup = true
"#;
    let r = check_rejects(text, "broken config");
    let stderr = &r.stderr;
    r.expect_at(&["duration"], 3);
    r.expect_at(&["unknown key", "colour"], 4);
    r.expect_at(&["127.0.0.1:99999"], 7);
    let bal = r.find_where("for balance \"fastest\"", |d| d.msg.contains("fastest"));
    assert_eq!(bal.line, 8, "balance diagnostic {bal:?}; stderr:\n{stderr}");

    let none = r.find(&["no servers"]);
    assert!((13..=14).contains(&none.line), "`no servers` should point into [services.empty] (13-14): {none:?}");

    let dup = r.find(&["already bound by service"]);
    let ok = (dup.line == 17 && dup.msg.contains("empty")) || (dup.line == 14 && dup.msg.contains("dup"));
    assert!(ok, "bind conflict should be at the second bind (line 17, naming `empty`): {dup:?}\n{stderr}");

    let backup = r.find_where("about every server being backup", |d| {
        d.msg.contains("backup") && !d.msg.contains("already bound") && !d.msg.contains("unknown key")
    });
    assert!((16..=25).contains(&backup.line), "backup diagnostic should point into [services.dup]: {backup:?}");
    assert!(r.diags.len() >= 7, "expected at least 7 diagnostics, got {}:\n{stderr}", r.diags.len());
}

#[test]
fn check_unknown_keys_in_nested_tables() {
    let text = r#"[services.web]
bind = "127.0.0.1:18100"
balance = "roundrobin"
retrys = 2
[services.web.check]
kind = "tcp"
intervall = "2s"
[[services.web.servers]]
name = "a"
adress = "127.0.0.1:8080"
address = "127.0.0.1:8080"
[[services.web.servers]]
name = "b"
address = "127.0.0.1:8081"
wieght = 2
"#;
    let r = check_rejects(text, "config with misspelt keys");
    r.expect_at(&["unknown key", "retrys"], 4);
    r.expect_at(&["unknown key", "intervall"], 7);
    r.expect_at(&["unknown key", "adress"], 10);
    r.expect_at(&["unknown key", "wieght"], 15);
    // Column of a key at the start of its line.
    let d = r.find(&["retrys"]);
    assert_eq!(d.col, 1, "key `retrys` starts in column 1: {d:?}");
}

#[test]
fn check_bad_durations_and_addresses() {
    let text = r#"[defaults]
connect_timeout = "5x"

[services.web]
bind = [
  "127.0.0.1:18110",
  "localhost:x",
]
client_timeout = "-1s"
server_timeout = "1m"
[services.web.check]
kind = "tcp"
interval = "2 seconds"
[[services.web.servers]]
name = "a"
address = "300.1.2.3:80"
"#;
    let r = check_rejects(text, "config with bad durations and addresses");
    let (stderr, diags) = (&r.stderr, &r.diags);
    let durations: Vec<usize> =
        diags.iter().filter(|d| d.msg.to_lowercase().contains("duration")).map(|d| d.line).collect();
    for line in [2, 9, 13] {
        assert!(durations.contains(&line), "no duration diagnostic on line {line} (got {durations:?}):\n{stderr}");
    }
    r.expect_at(&["localhost:x"], 7);
    r.expect_at(&["300.1.2.3:80"], 16);
    assert!(!diags.iter().any(|d| d.line == 10 || d.line == 6), "valid lines 6/10 were flagged:\n{stderr}");
}

#[test]
fn check_toml_syntax_error_has_position() {
    let text = "[global]\nworkers = 2\n\n[services.web]\nbind = = \"127.0.0.1:1\"\n";
    let r = check_rejects(text, "config with a TOML syntax error");
    let (stderr, diags) = (&r.stderr, &r.diags);
    assert!(!diags.is_empty(), "no diagnostics:\n{stderr}");
    assert_eq!(diags[0].line, 5, "syntax error should be reported on line 5:\n{stderr}");
}

#[test]
fn check_echoes_relative_path_as_given() {
    let dir = temp_path("reldir", "d");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("bad.toml"), "[services.web]\nbind = \"127.0.0.1:18120\"\nnope = 1\n[[services.web.servers]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n").unwrap();
    let out = run_cli_in(&["check", "--config", "bad.toml"], Some(&dir));
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    let line = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    assert!(line.starts_with("bad.toml:3:"), "expected `bad.toml:3:COL: ...`, got {line:?}");
    assert!(line.contains("unknown key") && line.contains("nope"), "{line:?}");
}

#[test]
fn check_missing_file_fails() {
    let p = temp_path("missing", "toml");
    let out = run_cli(&["check", "--config", p.to_str().unwrap()]);
    assert!(!out.status.success(), "check of a missing file succeeded");
    assert!(!out.stderr.is_empty(), "check of a missing file printed nothing on stderr");
}

#[test]
fn run_with_invalid_config_exits_nonzero() {
    let mut v = Vipgate::spawn("[services.web]\nbind = \"127.0.0.1:1\"\n");
    let st = v.wait_exit(WAIT).expect("`run` with an invalid config kept running");
    assert!(!st.success(), "`run` with an invalid config exited 0");
    assert!(v.log().contains("no servers"), "stderr should explain the problem:\n{}", v.log());
}

/// `[admin]` at line 1, its `bind` (when given) at line 2, then service `web` on `service_bind`.
fn admin_and_service(admin_lines: &str, service_bind: &str) -> String {
    format!(
        "[admin]\n{admin_lines}\n[services.web]\nbind = [\"127.0.0.1:1\", \"{service_bind}\"]\n\
         [[services.web.servers]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n"
    )
}

#[test]
fn check_warns_at_an_admin_bind_off_loopback_without_a_token() {
    let token = temp_path("check-token", "txt");
    let _token = Removed(token.clone());
    std::fs::write(&token, "s3cret\n").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let service = format!("127.0.0.1:{}", free_port());
    for (admin, token_line, warns) in [
        ("0.0.0.0:9100", "", true),
        ("*:9100", "", true),
        ("192.0.2.10:9100", "", true),
        ("[::]:9100", "", true),
        ("0.0.0.0:9100", &*format!("token_file = \"{}\"", token.display()), false),
        ("127.0.0.1:9100", "", false),
        ("127.0.0.53:9100", "", false),
        ("[::1]:9100", "", false),
    ] {
        let path = write_config(
            "check-admin-warn",
            &admin_and_service(&format!("bind = \"{admin}\"\n{token_line}"), &service),
        );
        let p = path.display().to_string();
        let out = run_cli(&["check", "--config", &p]);
        let _ = std::fs::remove_file(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{admin} is a warning, not an error: {stderr}");
        assert!(String::from_utf8_lossy(&out.stdout).contains(": OK"), "{admin}: {stderr}");
        let warning = stderr.lines().find(|l| l.contains("warning:") && l.contains("token_file"));
        if warns {
            let w =
                warning.unwrap_or_else(|| panic!("no warning for admin bind {admin} without token_file: {stderr:?}"));
            assert!(w.starts_with(&format!("{p}:2:1: warning: ")), "at the bind key: {w}");
            assert!(w.contains(admin.trim_start_matches("*:")) || admin.starts_with('*'), "names the address: {w}");
        } else {
            assert!(warning.is_none(), "admin bind {admin} {token_line}: unexpected warning: {stderr}");
        }
    }
}

#[test]
fn check_fails_when_the_admin_bind_collides_with_a_service_bind() {
    // A collision leaves the admin endpoint retrying its bind forever: /readyz never comes
    // up and keepalived moves the VIP away. It is an error at the admin bind.
    let port = free_port();
    let p = |host: &str| format!("{host}:{port}");
    let cases = [
        (p("127.0.0.1"), p("127.0.0.1"), true),
        (p("0.0.0.0"), p("127.0.0.1"), true),
        (p("*"), p("192.0.2.10"), true),
        (p("192.0.2.10"), p("*"), true),
        (p("127.0.0.1"), p("0.0.0.0"), true),
        // The admin endpoint's [::] takes IPv4 too (the system's default dual stack).
        (p("[::]"), p("127.0.0.1"), true),
        (p("[::]"), p("0.0.0.0"), true),
        (p("[::]"), p("[::1]"), true),
        (p("[::1]"), p("[::]"), true),
        (p("[::1]"), p("[::1]"), true),
        // Apart: another address, another port, or a service's [::] (IPv6 only) beside IPv4.
        (p("127.0.0.1"), p("127.0.0.2"), false),
        (p("127.0.0.1"), format!("127.0.0.1:{}", port + 1), false),
        (p("0.0.0.0"), p("[::]"), false),
        (p("127.0.0.1"), p("[::]"), false),
        (p("[::1]"), p("127.0.0.1"), false),
    ];
    let mut refused = 0;
    for (admin, service, collides) in &cases {
        let text = admin_and_service(&format!("bind = \"{admin}\"\n"), service);
        let (code, stderr, diags) = check_text(&text);
        if !collides {
            assert_eq!(code, 0, "admin {admin} beside service bind {service} is fine: {stderr}");
            continue;
        }
        assert_eq!(code, 1, "admin {admin} collides with service bind {service}: {stderr}");
        let d = diags
            .iter()
            .find(|d| d.msg.contains("admin"))
            .unwrap_or_else(|| panic!("no admin diagnostic for {admin} vs {service}: {stderr}"));
        assert_eq!(d.line, 2, "at the [admin] bind line: {d:?}");
        let shown = service.replace('*', "0.0.0.0");
        assert!(d.msg.contains("\"web\"") && d.msg.contains(&shown), "names the service bind: {d:?}");
        refused += 1;
    }
    // Without a bind key the default 127.0.0.1:9100 can collide too: the error is at [admin].
    let (code, stderr, diags) = check_text(&admin_and_service("", "127.0.0.1:9100"));
    assert_eq!(code, 1, "the default admin bind collides with 127.0.0.1:9100: {stderr}");
    assert!(diags.iter().any(|d| d.line == 1 && d.msg.contains("127.0.0.1:9100")), "{stderr}");
    println!("{} of {} admin/service bind pairs refused, plus the default bind", refused, cases.len());
}

#[test]
fn check_warns_about_a_password_file_others_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let secret = temp_path("check-mysql-password", "txt");
    let _secret = Removed(secret.clone());
    std::fs::write(&secret, "s3cret\n").unwrap();
    let text = format!(
        "[services.db]\nbind = \"127.0.0.1:{}\"\n[services.db.check]\nkind = \"mysql\"\nuser = \"monitor\"\n\
         password_file = \"{}\"\n[[services.db.servers]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n",
        free_port(),
        secret.display()
    );
    for (mode, warns) in [(0o644, true), (0o640, true), (0o600, false), (0o400, false)] {
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(mode)).unwrap();
        let (code, stderr, _) = check_text(&text);
        assert_eq!(code, 0, "mode {mode:04o} is a warning, not an error: {stderr}");
        let warning = stderr.lines().find(|l| l.contains("password_file") && l.contains("warning:"));
        if warns {
            let w = warning.unwrap_or_else(|| panic!("mode {mode:04o}: no warning: {stderr:?}"));
            assert!(w.contains(&secret.display().to_string()) && w.contains(&format!("{mode:04o}")), "{w}");
        } else {
            assert!(warning.is_none(), "mode {mode:04o}: {stderr}");
        }
    }
}
