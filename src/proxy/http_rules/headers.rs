//! The header operations the rules need, so one set of rules serves two stores: hyper's
//! `HeaderMap` (HTTP/2, and HTTP/2 ↔ HTTP/1.1) and the HTTP/1.1 engine's `HeaderList`,
//! which keeps a request's headers in one reused buffer and must not allocate per request.
//! Values are bytes; names are matched ASCII-case-insensitively. A value a rule builds is
//! written into a buffer the store lends (`&mut Vec<u8>`), so the engine's store can lend
//! its own and nothing is allocated; a built value that is not a valid field value is
//! dropped (an edit keeps the old one), as `HeaderValue::from_bytes` would refuse it.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::tokens::trim_ows;

/// What an edit does with one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit {
    Keep,
    Remove,
    /// Replace it with what the edit wrote into its buffer.
    Replace,
}

pub trait Headers {
    /// Every value of `name`, in order.
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a;

    /// Every header name, once per header line (for rules that match names by shape).
    fn names(&self) -> impl Iterator<Item = &[u8]>;

    /// Visit each value of `name` in order: keep it, remove it, or replace it with what
    /// `f` wrote into the (empty) buffer it is given.
    fn edit(&mut self, name: &str, f: impl FnMut(&[u8], &mut Vec<u8>) -> Edit);

    /// Add a value of `name` after the others, written by `f` into the (empty) buffer.
    fn append_with(&mut self, name: &str, f: impl FnOnce(&mut Vec<u8>));

    /// Remove every header whose name `remove` picks.
    fn remove_where(&mut self, remove: impl FnMut(&[u8]) -> bool);

    /// Make every `name` line one list line (RFC 9110 §5.3): their non-empty values,
    /// trimmed, joined by `, `, and then the element `f` writes (after a `, ` when there
    /// were values). The line takes the first one's place; with none, it goes last.
    fn append_to_list(&mut self, name: &str, f: impl FnOnce(&mut Vec<u8>));

    fn first<'a>(&'a self, name: &'a str) -> Option<&'a [u8]> {
        self.values(name).next()
    }

    fn contains(&self, name: &str) -> bool {
        self.values(name).next().is_some()
    }

    fn remove(&mut self, name: &str) {
        self.edit(name, |_, _| Edit::Remove);
    }

    /// `name` with this one value instead of any it had.
    fn set_with(&mut self, name: &str, f: impl FnOnce(&mut Vec<u8>)) {
        self.remove(name);
        self.append_with(name, f);
    }

    fn set(&mut self, name: &str, value: &[u8]) {
        self.set_with(name, |out| out.extend_from_slice(value));
    }

    fn append(&mut self, name: &str, value: &[u8]) {
        self.append_with(name, |out| out.extend_from_slice(value));
    }
}

/// A field value as `HeaderValue` takes it: no control characters but tab (so no CR, LF
/// or NUL: nothing that could end a header line).
pub fn valid_value(v: &[u8]) -> bool {
    v.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// A header name is an RFC 9110 token (config names are checked; this keeps a bad one a
/// rule could build from ever reaching the wire).
pub fn valid_name(n: &[u8]) -> bool {
    !n.is_empty() && n.iter().all(|&b| super::tokens::is_tchar(b))
}

/// A value as text when it is visible ASCII (what `HeaderValue::to_str` accepts).
pub fn visible_str(v: &[u8]) -> Option<&str> {
    if v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)) {
        std::str::from_utf8(v).ok()
    } else {
        None
    }
}

/// The non-empty `values`, trimmed, each followed by `, `, as a list line begins.
pub(crate) fn join_values<'a>(values: impl Iterator<Item = &'a [u8]>, out: &mut Vec<u8>) {
    for value in values.map(trim_ows).filter(|v| !v.is_empty()) {
        out.extend_from_slice(value);
        out.extend_from_slice(b", ");
    }
}

impl Headers for HeaderMap {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.get_all(name).into_iter().map(HeaderValue::as_bytes)
    }

    fn names(&self) -> impl Iterator<Item = &[u8]> {
        self.iter().map(|(n, _)| n.as_str().as_bytes())
    }

    fn edit(&mut self, name: &str, mut f: impl FnMut(&[u8], &mut Vec<u8>) -> Edit) {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else { return };
        if !self.contains_key(&name) {
            return;
        }
        let mut changed = false;
        let mut out = Vec::new();
        let mut kept = Vec::new();
        for v in self.get_all(&name) {
            out.clear();
            match f(v.as_bytes(), &mut out) {
                Edit::Keep => kept.push(v.clone()),
                Edit::Remove => changed = true,
                Edit::Replace => match HeaderValue::from_bytes(&out) {
                    Ok(new) => {
                        changed = true;
                        kept.push(new);
                    }
                    Err(_) => kept.push(v.clone()),
                },
            }
        }
        if changed {
            self.remove(&name);
            for v in kept {
                self.append(&name, v);
            }
        }
    }

    fn remove(&mut self, name: &str) {
        HeaderMap::remove(self, name);
    }

    fn append_with(&mut self, name: &str, f: impl FnOnce(&mut Vec<u8>)) {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else { return };
        let mut out = Vec::new();
        f(&mut out);
        if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(out)) {
            self.append(name, v);
        }
    }

    fn append_to_list(&mut self, name: &str, f: impl FnOnce(&mut Vec<u8>)) {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else { return };
        let mut joined = Vec::new();
        join_values(self.get_all(&name).iter().map(HeaderValue::as_bytes), &mut joined);
        f(&mut joined);
        if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(joined)) {
            self.insert(name, v);
        }
    }

    fn remove_where(&mut self, mut remove: impl FnMut(&[u8]) -> bool) {
        let doomed: Vec<HeaderName> = self.keys().filter(|n| remove(n.as_str().as_bytes())).cloned().collect();
        for name in doomed {
            HeaderMap::remove(self, name);
        }
    }
}
