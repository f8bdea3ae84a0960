//! One message's header lines, as the HTTP/1.1 engine keeps them: names and values in
//! one byte buffer, lines as ranges into it, both reused from request to request on a
//! connection, so once they have grown a keep-alive request costs no allocation. The
//! head's lines are copied in once (a memcpy of a few hundred bytes); a rule that adds
//! or rewrites a value writes it at the end of the same buffer; a removed line is only
//! marked. Lines keep the order and the name spelling they came with.

use std::ops::Range;

use crate::proxy::http_rules::headers::{join_values, valid_name, valid_value, Edit, Headers};

#[derive(Debug, Clone)]
struct Line {
    name: Range<u32>,
    value: Range<u32>,
    live: bool,
}

#[derive(Debug, Default, Clone)]
pub struct HeaderList {
    bytes: Vec<u8>,
    lines: Vec<Line>,
    /// Where an edit writes a new value before it joins `bytes` (an edit reads the old
    /// value from `bytes` meanwhile).
    scratch: Vec<u8>,
}

fn span(r: &Range<u32>) -> Range<usize> {
    r.start as usize..r.end as usize
}

impl HeaderList {
    pub fn new() -> Self {
        HeaderList::default()
    }

    /// Empty, keeping the room it has.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.lines.clear();
    }

    /// A line as it came (the caller has checked it; the engine's parser has).
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        let name = self.put(name);
        let value = self.put(value);
        self.lines.push(Line { name, value, live: true });
    }

    fn put(&mut self, b: &[u8]) -> Range<u32> {
        let start = self.bytes.len() as u32;
        self.bytes.extend_from_slice(b);
        start..self.bytes.len() as u32
    }

    /// The lines still there, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.lines.iter().filter(|l| l.live).map(|l| (&self.bytes[span(&l.name)], &self.bytes[span(&l.value)]))
    }

    pub fn len(&self) -> usize {
        self.lines.iter().filter(|l| l.live).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The lines as they go on the wire: `name: value` and CRLF each.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        for (name, value) in self.iter() {
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
    }

    fn is(&self, line: &Line, name: &str) -> bool {
        named(&self.bytes, line, name)
    }
}

/// `line` is live and its name is `name`, ignoring case. A free function, so a method can
/// match lines while it holds `lines` mutably.
fn named(bytes: &[u8], line: &Line, name: &str) -> bool {
    line.live && bytes[span(&line.name)].eq_ignore_ascii_case(name.as_bytes())
}

impl Headers for HeaderList {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.lines.iter().filter(move |l| self.is(l, name)).map(|l| &self.bytes[span(&l.value)])
    }

    fn names(&self) -> impl Iterator<Item = &[u8]> {
        self.iter().map(|(n, _)| n)
    }

    fn edit(&mut self, name: &str, mut f: impl FnMut(&[u8], &mut Vec<u8>) -> Edit) {
        for i in 0..self.lines.len() {
            if !self.is(&self.lines[i], name) {
                continue;
            }
            self.scratch.clear();
            let value = span(&self.lines[i].value);
            match f(&self.bytes[value], &mut self.scratch) {
                Edit::Keep => {}
                Edit::Remove => self.lines[i].live = false,
                Edit::Replace if valid_value(&self.scratch) => {
                    let start = self.bytes.len() as u32;
                    self.bytes.extend_from_slice(&self.scratch);
                    self.lines[i].value = start..self.bytes.len() as u32;
                }
                Edit::Replace => {}
            }
        }
    }

    fn append_with(&mut self, name: &str, f: impl FnOnce(&mut Vec<u8>)) {
        if !valid_name(name.as_bytes()) {
            return;
        }
        let mark = self.bytes.len();
        let name = self.put(name.as_bytes());
        let start = self.bytes.len();
        f(&mut self.bytes);
        if !valid_value(&self.bytes[start..]) {
            self.bytes.truncate(mark);
            return;
        }
        let value = start as u32..self.bytes.len() as u32;
        self.lines.push(Line { name, value, live: true });
    }

    fn append_to_list(&mut self, name: &str, f: impl FnOnce(&mut Vec<u8>)) {
        if !valid_name(name.as_bytes()) {
            return;
        }
        self.scratch.clear();
        let (bytes, lines) = (&self.bytes, &self.lines);
        join_values(lines.iter().filter(|l| named(bytes, l, name)).map(|l| &bytes[span(&l.value)]), &mut self.scratch);
        f(&mut self.scratch);
        if !valid_value(&self.scratch) {
            return;
        }
        let start = self.bytes.len() as u32;
        self.bytes.extend_from_slice(&self.scratch);
        let value = start..self.bytes.len() as u32;
        let mut first = None;
        for (i, line) in self.lines.iter_mut().enumerate() {
            if named(&self.bytes, line, name) {
                if first.is_none() {
                    first = Some(i);
                    line.value = value.clone();
                } else {
                    line.live = false;
                }
            }
        }
        if first.is_none() {
            let name = self.put(name.as_bytes());
            self.lines.push(Line { name, value, live: true });
        }
    }

    fn remove_where(&mut self, mut remove: impl FnMut(&[u8]) -> bool) {
        for line in &mut self.lines {
            if line.live && remove(&self.bytes[span(&line.name)]) {
                line.live = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(pairs: &[(&str, &str)]) -> HeaderList {
        let mut h = HeaderList::new();
        for (n, v) in pairs {
            h.push(n.as_bytes(), v.as_bytes());
        }
        h
    }

    fn wire(h: &HeaderList) -> String {
        let mut out = Vec::new();
        h.write_to(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn order_and_spelling_kept_edits_in_place() {
        let mut h = list(&[("Host", "vip"), ("Cookie", "a=1"), ("X-Auth-Token", "t"), ("cookie", "b=2")]);
        h.edit("cookie", |v, out| {
            if v == b"a=1" {
                out.extend_from_slice(b"a=9");
                Edit::Replace
            } else {
                Edit::Remove
            }
        });
        h.append("x-forwarded-for", b"192.0.2.1");
        assert_eq!(wire(&h), "Host: vip\r\nCookie: a=9\r\nX-Auth-Token: t\r\nx-forwarded-for: 192.0.2.1\r\n");
        assert_eq!(h.values("COOKIE").collect::<Vec<_>>(), [b"a=9"]);
        assert_eq!(h.len(), 4);
    }

    #[test]
    fn invalid_values_and_names_never_reach_the_wire() {
        let mut h = list(&[("a", "1")]);
        h.append("x-bad", b"line\r\nInjected: yes");
        h.append("bad name", b"v");
        h.edit("a", |_, out| {
            out.extend_from_slice(b"\0");
            Edit::Replace
        });
        assert_eq!(wire(&h), "a: 1\r\n");
        h.set("a", b"2");
        assert_eq!(wire(&h), "a: 2\r\n");
    }

    #[test]
    fn reuse_keeps_its_room() {
        let mut h = HeaderList::new();
        for round in 0..3 {
            h.clear();
            for i in 0..20 {
                h.push(format!("x-h{i}").as_bytes(), b"value");
            }
            h.remove_where(|n| n.ends_with(b"7"));
            assert_eq!(h.len(), 18, "round {round}");
        }
        let (bytes, lines) = (h.bytes.capacity(), h.lines.capacity());
        h.clear();
        for i in 0..20 {
            h.push(format!("x-h{i}").as_bytes(), b"value");
        }
        assert_eq!((h.bytes.capacity(), h.lines.capacity()), (bytes, lines));
    }
}
