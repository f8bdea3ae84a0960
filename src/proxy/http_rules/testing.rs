//! Builders the rules' unit tests share.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::config::DenyRule;

/// A header map from name/value pairs, repeated names appended.
pub(super) fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    h
}

/// Every value of `name`, in order.
pub(super) fn all<'a>(h: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    h.get_all(name).iter().map(|v| v.to_str().unwrap()).collect()
}

/// A deny rule with the given conditions.
pub(super) fn rule(prefix: Option<&str>, contains: Option<&str>, re: Option<&str>, status: u16) -> DenyRule {
    DenyRule {
        path_prefix: prefix.map(Into::into),
        path_contains: contains.map(Into::into),
        path_regex: re.map(|r| regex::Regex::new(r).unwrap()),
        status,
    }
}
