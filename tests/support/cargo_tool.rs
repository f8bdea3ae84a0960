//! Tests that drive a cargo subcommand (cargo-deny, cargo-fuzz) run where it is installed;
//! CI installs it and sets `VIPGATE_REQUIRE_<TOOL>=1`, making its absence a failure.

use std::process::Command;

/// True when `cargo SUB` answers `--version`. Otherwise panics if `require_env` is `1`,
/// else prints that the test is skipped and returns false.
pub fn installed(sub: &str, require_env: &str) -> bool {
    let probe = Command::new("cargo").args([sub, "--version"]).output();
    if probe.is_ok_and(|o| o.status.success()) {
        return true;
    }
    assert!(
        std::env::var(require_env).as_deref() != Ok("1"),
        "cargo-{sub} is not installed (cargo install cargo-{sub} --locked)"
    );
    println!("skipped: cargo-{sub} is not installed");
    false
}
