//! `set_headers` / `del_headers`: the operator's own header edits.

use super::headers::{valid_name, valid_value, Headers};
use crate::config::HeaderRules;

/// Delete every `del` header, then set each `set` header (replacing all its values).
/// Names and values are checked at load; one that is invalid anyway is skipped.
pub fn apply_rules(headers: &mut impl Headers, rules: &HeaderRules) {
    for name in &rules.del {
        headers.remove(name);
    }
    for (name, value) in &rules.set {
        if valid_name(name.as_bytes()) && valid_value(value.as_bytes()) {
            headers.set(name, value.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::http_rules::testing::{all, both, names, Store};

    both!(rules_delete_then_set);

    fn rules_delete_then_set<H: Store>() {
        let mut h = H::of(&[("server", "Apache"), ("x-a", "1"), ("x-a", "2"), ("x-keep", "k")]);
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
        assert_eq!(names(&h), ["strict-transport-security", "x-a", "x-keep"]);
        assert_eq!(all(&h, "x-a"), ["new"]);
        assert_eq!(all(&h, "strict-transport-security"), ["max-age=63072000"]);
        assert_eq!(all(&h, "x-keep"), ["k"]);
    }
}
