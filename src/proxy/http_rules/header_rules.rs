//! `set_headers` / `del_headers`: the operator's own header edits.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::config::HeaderRules;

/// Delete every `del` header, then set each `set` header (replacing all its values).
/// Names and values are checked at load; one that is invalid anyway is skipped.
pub fn apply_rules(headers: &mut HeaderMap, rules: &HeaderRules) {
    for name in &rules.del {
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            headers.remove(name);
        }
    }
    for (name, value) in &rules.set {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            headers.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::http_rules::testing::{all, map};

    #[test]
    fn rules_delete_then_set() {
        let mut h = map(&[("server", "Apache"), ("x-a", "1"), ("x-a", "2"), ("x-keep", "k")]);
        let rules = HeaderRules {
            set: vec![
                ("x-a".into(), "new".into()),
                ("strict-transport-security".into(), "max-age=63072000".into()),
                ("bad name".into(), "v".into()),
                ("x-bad-value".into(), "a\nb".into()),
            ],
            del: vec!["Server".into(), "x-a".into(), "bad name".into()],
        };
        apply_rules(&mut h, &rules);
        assert!(h.get("server").is_none() && h.get("x-bad-value").is_none());
        assert_eq!(all(&h, "x-a"), ["new"]);
        assert_eq!(all(&h, "strict-transport-security"), ["max-age=63072000"]);
        assert_eq!(all(&h, "x-keep"), ["k"]);
    }
}
