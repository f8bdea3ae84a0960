//! `cargo deny` against `deny.toml`: only permissive licences, no wildcard versions, crates
//! from crates.io only, and no known advisory. Needs cargo-deny (CI installs it and sets
//! VIPGATE_REQUIRE_CARGO_DENY=1, making its absence a failure). The advisory check needs
//! the RustSec database, fetched from GitHub: `.ci/run` fetches it where it can and then
//! sets VIPGATE_ADVISORY_DB=fetched, which `build.rs` turns into `cfg(advisory_db)`;
//! without it that one check is ignored, and `cargo test` lists it as such.

#[path = "support/cargo_tool.rs"]
mod cargo_tool;

use std::process::Command;

fn cargo_deny(checks: &[&str]) -> Option<std::process::Output> {
    if !cargo_tool::installed("deny", "VIPGATE_REQUIRE_CARGO_DENY") {
        return None;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("cargo")
        .args(["deny", "--offline", "--manifest-path"])
        .arg(format!("{root}/Cargo.toml"))
        .arg("check")
        .args(checks)
        .output()
        .expect("run cargo deny");
    Some(out)
}

#[test]
fn dependencies_pass_cargo_deny() {
    if let Some(out) = cargo_deny(&["licenses", "bans", "sources"]) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "cargo deny check failed:\n{stderr}");
    }
}

#[test]
#[cfg_attr(
    not(advisory_db),
    ignore = "no RustSec advisory database here: cargo deny fetch db, then build with VIPGATE_ADVISORY_DB=fetched"
)]
fn dependencies_have_no_known_advisories() {
    if let Some(out) = cargo_deny(&["advisories"]) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "cargo deny check advisories failed:\n{stderr}");
    }
}
