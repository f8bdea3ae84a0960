//! A short run of each fuzz target named by the reliability issue, from its committed seed
//! corpus, so a crash that a seed or a few seconds of mutation finds fails CI. The long
//! runs (10 minutes each, with AddressSanitizer) are done by hand; `fuzz/README.md` has
//! the figures.
//!
//! Needs cargo-fuzz (CI installs it and sets VIPGATE_REQUIRE_CARGO_FUZZ=1, making its
//! absence a failure). New inputs go to a temporary directory, never into `fuzz/corpus`.

#[path = "support/cargo_tool.rs"]
mod cargo_tool;

use std::process::Command;

const TARGETS: &[&str] =
    &["config_parse", "import_haproxy", "proxy_protocol", "http_request", "probe_response", "mysql_greeting"];
const SECONDS_EACH: u32 = 10;

#[test]
fn each_fuzz_target_survives_a_short_run() {
    if !cargo_tool::installed("fuzz", "VIPGATE_REQUIRE_CARGO_FUZZ") {
        return;
    }
    let fuzz_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz");
    let work = std::env::temp_dir().join(format!("vipgate-fuzz-smoke-{}", std::process::id()));
    for target in TARGETS {
        let fresh = work.join(target);
        std::fs::create_dir_all(&fresh).expect("temp corpus dir");
        let seeds = format!("{fuzz_dir}/corpus/{target}");
        let mut cmd = Command::new("cargo");
        cmd.current_dir(fuzz_dir)
            .env("RUSTC_BOOTSTRAP", "1")
            // No sanitizer, debug build: a panic is what a few seconds can find, and this
            // builds in a third of the time (the long runs use ASan and -O).
            .args(["fuzz", "run", "--sanitizer", "none", "--dev", target])
            .arg(&fresh)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={SECONDS_EACH}"))
            .arg(format!("-artifact_prefix={}/", work.display()));
        if *target == "http_request" {
            // It keeps vipgate running across inputs (connection pools): not a leak.
            cmd.arg("-detect_leaks=0");
        }
        let out = cmd.output().expect("run cargo fuzz");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let done = stderr.lines().rev().find(|l| l.starts_with("Done ")).unwrap_or("no Done line").to_string();
        assert!(out.status.success(), "fuzz target {target} failed:\n{}", tail(&stderr, 60));
        println!("{target}: {done}");
    }
    let _ = std::fs::remove_dir_all(&work);
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
