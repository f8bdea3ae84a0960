//! Deny rules: requests refused by path before any server sees them.

use std::borrow::Cow;

use crate::config::DenyRule;

/// The status of the first rule that matches `path`, if any.
///
/// A rule matches when every condition it sets matches (a rule with none matches every
/// path). So that an encoding trick cannot slip past a condition, each condition is tried
/// against three forms of the path and holds if any form matches:
///
/// - the path as sent;
/// - the path percent-decoded once (`%2e` → `.`; invalid `%` sequences stay as they are;
///   decoded bytes that are not UTF-8 become U+FFFD). Once, because servers decode once:
///   `%252e` reaches them as the literal text `%2e`, not as a dot;
/// - the decoded path with `//` merged and `.`/`..` segments resolved, the path a server
///   actually serves (`//server-status`, `/x/../server-status`).
///
/// `path_prefix` and `path_contains` compare ASCII case-insensitively, as HAProxy's
/// `path -i -m beg` / `-m sub`: servers on case-insensitive file systems serve
/// `/SERVER-STATUS` too. `path_regex` is matched as written (use `(?i)` to ignore case).
pub fn denied(path: &str, rules: &[DenyRule]) -> Option<u16> {
    if rules.is_empty() {
        return None;
    }
    let decoded = percent_decode(path);
    let normalized = normalize_path(&decoded);
    let forms: [&str; 3] = [path, &decoded, &normalized];
    let lower = forms.map(str::to_ascii_lowercase);
    rules.iter().find(|rule| deny_matches(rule, &forms, &lower)).map(|rule| rule.status)
}

fn deny_matches(rule: &DenyRule, forms: &[&str; 3], lower: &[String; 3]) -> bool {
    if let Some(prefix) = &rule.path_prefix {
        let prefix = prefix.as_bytes();
        let hit = lower
            .iter()
            .any(|p| p.as_bytes().get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix)));
        if !hit {
            return false;
        }
    }
    if let Some(needle) = &rule.path_contains {
        let needle = needle.to_ascii_lowercase();
        if !lower.iter().any(|p| p.contains(&needle)) {
            return false;
        }
    }
    if let Some(re) = &rule.path_regex {
        if !forms.iter().any(|p| re.is_match(p)) {
            return false;
        }
    }
    true
}

fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let (Some(hi), Some(lo)) = (b.get(i + 1).and_then(hex), b.get(i + 2).and_then(hex)) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex(b: &u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Merge empty segments and resolve dot segments (RFC 3986 §5.2.4, `..` stopping at the
/// root); a trailing slash is kept.
fn normalize_path(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing = false;
    for seg in path.split('/') {
        trailing = matches!(seg, "" | "." | "..");
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    for seg in &segments {
        out.push('/');
        out.push_str(seg);
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::http_rules::testing::rule;

    #[test]
    fn deny_prefix_case_insensitive_and_normalized() {
        let rules = [rule(Some("/server-status"), None, None, 403)];
        for p in [
            "/server-status",
            "/SERVER-STATUS",
            "/server-status?auto",
            "/server-status/",
            "/%73erver-status",
            "//server-status",
            "/./server-status",
            "/x/../server-status",
            "/x/%2e%2e/server-status",
        ] {
            assert_eq!(denied(p, &rules), Some(403), "{p}");
        }
        for p in ["/", "/v3/server-status", "/server", "/%2573erver-status"] {
            assert_eq!(denied(p, &rules), None, "{p}");
        }
    }

    #[test]
    fn deny_contains_raw_or_decoded() {
        let rules = [rule(None, Some("/."), None, 404)];
        for p in ["/a/%2e%2e/etc/passwd", "/a/../etc/passwd", "/.git/config", "/a/%2E%2e/", "/%2F.x", "/a%2/."] {
            assert_eq!(denied(p, &rules), Some(404), "{p}");
        }
        for p in ["/v3/auth/tokens", "/a.b/c", "/a%2e"] {
            assert_eq!(denied(p, &rules), None, "{p}");
        }
    }

    #[test]
    fn deny_all_conditions_and_first_rule_wins() {
        let rules = [
            rule(Some("/v3/"), Some("admin"), None, 403),
            rule(None, None, Some(r"^/v2\.0/.*\.php$"), 410),
            rule(Some("/v3/"), None, None, 451),
        ];
        assert_eq!(denied("/v3/ADMIN/x", &rules), Some(403));
        assert_eq!(denied("/v3/users", &rules), Some(451));
        assert_eq!(denied("/v2.0/x/shell.php", &rules), Some(410));
        assert_eq!(denied("/v2.0/x/shell%2Ephp", &rules), Some(410));
        // The regex is case-sensitive as written.
        assert_eq!(denied("/v2.0/x/shell.PHP", &rules), None);
        assert_eq!(denied("/v2.0/x/shell.php.txt", &rules), None);
        assert_eq!(denied("/", &[rule(None, None, None, 403)]), Some(403));
        assert_eq!(denied("/", &[]), None);
    }

    #[test]
    fn percent_decoding_edges() {
        assert_eq!(percent_decode("/a%2e%2E%41"), "/a..A");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz%4g%"), "%zz%4g%");
        assert_eq!(percent_decode("%252e"), "%2e");
        assert_eq!(percent_decode("%ff"), "\u{FFFD}");
        assert_eq!(percent_decode("%e2%82%ac"), "€");
        assert_eq!(normalize_path("/a/b/../../../c/./d//"), "/c/d/");
        assert_eq!(normalize_path(""), "/");
        assert_eq!(normalize_path("/.."), "/");
        assert_eq!(normalize_path("*"), "/*");
    }
}
