//! `cargo deny check licenses bans sources` against `deny.toml`: only permissive licences,
//! no wildcard versions, crates from crates.io only. Needs cargo-deny (CI installs it and
//! sets VIPGATE_REQUIRE_CARGO_DENY=1, making its absence a failure); the advisory check
//! needs the RustSec database from GitHub, which CI cannot reach, so it is not run here.

use std::process::Command;

#[test]
fn dependencies_pass_cargo_deny() {
    let root = env!("CARGO_MANIFEST_DIR");
    let probe = Command::new("cargo").args(["deny", "--version"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var("VIPGATE_REQUIRE_CARGO_DENY").as_deref() != Ok("1"),
            "cargo-deny is not installed (cargo install cargo-deny --locked)"
        );
        println!("skipped: cargo-deny is not installed");
        return;
    }
    let out = Command::new("cargo")
        .args(["deny", "--offline", "--manifest-path"])
        .arg(format!("{root}/Cargo.toml"))
        .args(["check", "licenses", "bans", "sources"])
        .output()
        .expect("run cargo deny");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cargo deny check failed:\n{stderr}");
}
