//! The rule of the house, checked: `upstream` is a leaf (it uses no other vipgate
//! module), `upstream`, `config` and `health` never use `proxy`, `runtime` or `admin`, and
//! `tls` takes no config type (the config names its `CertFiles`). The data flows config → runtime → upstream → proxy; health writes server state
//! through upstream beside it; admin reads the runtime. A use the other way is a cycle.

use std::path::Path;

/// Every `crate::MODULE` path named in the Rust files under `dir`, with the file.
fn uses(dir: &Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read source dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read source");
                for (at, _) in text.match_indices("crate::") {
                    let module: String =
                        text[at + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    found.push((path.display().to_string(), module));
                }
            }
        }
    }
    found
}

#[test]
fn upstream_is_a_leaf_and_nothing_below_uses_what_is_above() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let upstream: Vec<_> = uses(&src.join("upstream")).into_iter().filter(|(_, m)| m != "upstream").collect();
    assert!(upstream.is_empty(), "upstream must use no other vipgate module: {upstream:?}");
    for below in ["upstream", "config", "health"] {
        let bad: Vec<_> = uses(&src.join(below))
            .into_iter()
            .filter(|(_, m)| matches!(m.as_str(), "proxy" | "runtime" | "admin"))
            .collect();
        assert!(bad.is_empty(), "{below} must not use proxy, runtime or admin: {bad:?}");
    }
    let tls: Vec<_> = uses(&src.join("tls")).into_iter().filter(|(_, m)| m == "config").collect();
    assert!(tls.is_empty(), "tls must not use config: {tls:?}");
}
