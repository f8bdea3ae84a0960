//! Builders the rules' unit tests share. Every rule test runs over both header stores
//! (`both!`), so the HTTP/2 path and the HTTP/1.1 engine apply the same rules alike.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::headers::Headers;
use crate::config::DenyRule;
use crate::proxy::http::h1::headers::HeaderList;

/// A header store a test can build from name/value pairs (repeated names appended).
pub(super) trait Store: Headers + Clone + std::fmt::Debug {
    fn of(pairs: &[(&str, &str)]) -> Self;
}

impl Store for HeaderMap {
    fn of(pairs: &[(&str, &str)]) -> Self {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }
}

impl Store for HeaderList {
    fn of(pairs: &[(&str, &str)]) -> Self {
        let mut h = HeaderList::new();
        for (n, v) in pairs {
            h.push(n.as_bytes(), v.as_bytes());
        }
        h
    }
}

/// Every value of `name`, in order.
pub(super) fn all<'a>(h: &'a impl Headers, name: &'a str) -> Vec<&'a str> {
    h.values(name).map(|v| std::str::from_utf8(v).unwrap()).collect()
}

/// Every header name in lower case, sorted, once each.
pub(super) fn names(h: &impl Headers) -> Vec<String> {
    let mut n: Vec<String> = h.names().map(|n| String::from_utf8_lossy(n).to_ascii_lowercase()).collect();
    n.sort();
    n.dedup();
    n
}

/// `#[test]`s that run each named generic test over both stores.
macro_rules! both {
    ($($test:ident),* $(,)?) => {
        $(
            mod $test {
                #[test]
                fn header_map() {
                    super::$test::<http::HeaderMap>();
                }
                #[test]
                fn header_list() {
                    super::$test::<crate::proxy::http::h1::headers::HeaderList>();
                }
            }
        )*
    };
}
pub(super) use both;

/// A deny rule with the given conditions.
pub(super) fn rule(prefix: Option<&str>, contains: Option<&str>, re: Option<&str>, status: u16) -> DenyRule {
    DenyRule {
        path_prefix: prefix.map(Into::into),
        path_contains: contains.map(Into::into),
        path_regex: re.map(|r| regex::Regex::new(r).unwrap()),
        status,
    }
}
