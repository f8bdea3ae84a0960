//! One build-time switch: whether the RustSec advisory database was fetched (`.ci/run`
//! sets VIPGATE_ADVISORY_DB=fetched when `cargo deny fetch db` succeeds). Without it,
//! `tests/supply_chain.rs` marks its advisory check ignored, so `cargo test` reports it as
//! skipped instead of as a pass it never earned.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(advisory_db)");
    println!("cargo::rerun-if-env-changed=VIPGATE_ADVISORY_DB");
    if std::env::var("VIPGATE_ADVISORY_DB").as_deref() == Ok("fetched") {
        println!("cargo::rustc-cfg=advisory_db");
    }
}
