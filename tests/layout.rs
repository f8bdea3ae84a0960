//! The rule of the house, checked: each module uses only the modules below it, so the
//! data flows one way (config → load → runtime snapshot → listener → upstream pick → proxy
//! forward; health writes server state through upstream beside it; admin reads the
//! runtime; the supervisor sits on top). [`ALLOWED`] is that table; a use not in it is a
//! cycle in the making and fails here. README "Layout" draws the same.

use std::path::Path;

/// Module → the vipgate modules it may use. Leaves first.
const ALLOWED: &[(&str, &[&str])] = &[
    ("upstream", &[]),
    ("tls", &[]),
    ("net", &[]),
    ("mysql", &[]),
    ("log_batch", &[]),
    ("config", &["upstream", "tls", "net"]),
    ("import", &["config", "net"]),
    ("health", &["config", "upstream", "net", "tls", "mysql"]),
    ("clustercheck", &["health", "mysql", "net"]),
    ("proxy", &["config", "upstream", "net", "tls"]),
    ("runtime", &["config", "upstream", "net", "tls", "health", "proxy"]),
    ("admin", &["config", "upstream", "net", "tls", "health", "proxy", "runtime", "import"]),
    ("demo", &["config", "upstream", "net", "tls", "health", "proxy", "runtime"]),
    (
        "supervisor",
        &["config", "upstream", "net", "tls", "health", "proxy", "runtime", "admin", "import", "clustercheck"],
    ),
    (
        "verbs",
        &[
            "config",
            "upstream",
            "net",
            "tls",
            "health",
            "proxy",
            "runtime",
            "admin",
            "import",
            "clustercheck",
            "mysql",
            "demo",
            "supervisor",
            "log_batch",
        ],
    ),
];

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
                found.extend(uses_file(&path));
            }
        }
    }
    found
}

/// Every `crate::MODULE` path named in one Rust file (`crate::{a, b::C}` names two).
fn uses_file(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).expect("read source");
    let ident = |s: &str| -> String { s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect() };
    let mut found = Vec::new();
    for (at, _) in text.match_indices("crate::").filter(|(at, _)| !text[..*at].ends_with('$')) {
        let rest = &text[at + 7..];
        let Some(group) = rest.strip_prefix('{') else {
            found.push((path.display().to_string(), ident(rest)));
            continue;
        };
        // The top-level names of the group: each one after `{` or a `,` at depth 0.
        let mut depth = 0;
        let mut start = true;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => start = true,
                c if start && !c.is_whitespace() => {
                    found.push((path.display().to_string(), ident(&group[i..])));
                    start = false;
                }
                _ => {}
            }
        }
    }
    found
}

#[test]
fn every_module_uses_only_the_modules_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut bad = Vec::new();
    for entry in std::fs::read_dir(&src).expect("read src") {
        let path = entry.expect("dir entry").path();
        let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_string) else { continue };
        if name == "lib" || name == "main" {
            continue;
        }
        let Some((_, allowed)) = ALLOWED.iter().find(|(m, _)| *m == name) else {
            panic!("src/{name} is not in tests/layout.rs ALLOWED: say which modules it may use");
        };
        let found = if path.is_dir() { uses(&path) } else { uses_file(&path) };
        for (file, module) in found {
            if module != name && !allowed.contains(&module.as_str()) {
                bad.push(format!("{file} uses crate::{module}"));
            }
        }
    }
    assert!(bad.is_empty(), "uses against the rule of the house (tests/layout.rs ALLOWED):\n{}", bad.join("\n"));
}

/// The table is a strict order: no two modules may use each other, directly or not.
#[test]
fn the_table_has_no_cycle() {
    fn reaches(from: &str, to: &str, depth: usize) -> bool {
        depth < ALLOWED.len()
            && ALLOWED
                .iter()
                .find(|(m, _)| *m == from)
                .is_some_and(|(_, next)| next.iter().any(|n| *n == to || reaches(n, to, depth + 1)))
    }
    for (m, _) in ALLOWED {
        assert!(!reaches(m, m, 0), "{m} reaches itself through ALLOWED");
    }
}
