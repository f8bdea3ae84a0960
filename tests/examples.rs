//! Every shipped example in config/ passes `vipgate check`.

mod common;

use common::*;

#[test]
fn every_example_config_passes_check() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no example configs in {}", dir.display());
    let mut failures = Vec::new();
    for f in &files {
        let out = run_cli(&["check", "--config", f.to_str().unwrap()]);
        if !out.status.success() {
            failures.push(format!(
                "{} -> {:?}\n{}",
                f.display(),
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "example configs rejected by `check`:\n{}", failures.join("\n"));
}
