//! haproxy.cfg as sections of tokenized lines. HAProxy's quoting: double quotes group
//! words, single quotes too (without escapes inside), a backslash escapes the next
//! character (`\ ` is a space inside a word), and `#` outside quotes starts a comment.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionKind {
    Global,
    Defaults,
    Listen,
    Frontend,
    Backend,
    /// userlist, peers, resolvers, mailers, ...: reported, not translated.
    Other(String),
}

#[derive(Debug, Clone)]
pub struct Line {
    /// 1-based line number in the file.
    pub number: usize,
    pub words: Vec<String>,
}

impl Line {
    pub fn text(&self) -> String {
        self.words.join(" ")
    }
}

#[derive(Debug, Clone)]
pub struct Section {
    pub kind: SectionKind,
    pub name: String,
    /// The section's own line (`listen NAME ...`), with any words after the name.
    pub header: Line,
    pub lines: Vec<Line>,
}

/// Split the file into sections. Lines before the first section keyword are dropped into
/// an `Other("")` section so that they are reported too.
pub fn parse(text: &str) -> Vec<Section> {
    let mut sections: Vec<Section> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let words = tokenize(raw);
        let Some(first) = words.first() else { continue };
        let line = Line { number: i + 1, words: words.clone() };
        let kind = match first.as_str() {
            "global" => Some(SectionKind::Global),
            "defaults" => Some(SectionKind::Defaults),
            "listen" => Some(SectionKind::Listen),
            "frontend" => Some(SectionKind::Frontend),
            "backend" => Some(SectionKind::Backend),
            "userlist" | "peers" | "resolvers" | "mailers" | "program" | "http-errors" | "ring" | "cache" => {
                Some(SectionKind::Other(first.clone()))
            }
            _ => None,
        };
        match kind {
            Some(kind) => {
                let name = words.get(1).cloned().unwrap_or_default();
                sections.push(Section { kind, name, header: line, lines: Vec::new() });
            }
            None => match sections.last_mut() {
                Some(s) => s.lines.push(line),
                None => sections.push(Section {
                    kind: SectionKind::Other(String::new()),
                    name: String::new(),
                    header: Line { number: line.number, words: Vec::new() },
                    lines: vec![line],
                }),
            },
        }
    }
    sections
}

fn tokenize(raw: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '#' => break,
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    in_word = true;
                }
            }
            '"' => {
                in_word = true;
                while let Some(n) = chars.next() {
                    match n {
                        '"' => break,
                        '\\' => {
                            if let Some(e) = chars.next() {
                                cur.push(e);
                            }
                        }
                        _ => cur.push(n),
                    }
                }
            }
            '\'' => {
                in_word = true;
                for n in chars.by_ref() {
                    if n == '\'' {
                        break;
                    }
                    cur.push(n);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_and_comments() {
        assert_eq!(
            tokenize("  server db1 10.0.0.1:3306 check # the writer"),
            ["server", "db1", "10.0.0.1:3306", "check"]
        );
        assert_eq!(
            tokenize(r#"http-check send hdr User-Agent "osa-haproxy-healthcheck" meth HEAD"#),
            ["http-check", "send", "hdr", "User-Agent", "osa-haproxy-healthcheck", "meth", "HEAD"]
        );
        assert_eq!(tokenize(r"stats realm Haproxy\ Stats"), ["stats", "realm", "Haproxy Stats"]);
        assert_eq!(tokenize("tcp-check send 'PING\\r\\n'"), ["tcp-check", "send", "PING\\r\\n"]);
        assert_eq!(tokenize(r#"x "a#b" c"#), ["x", "a#b", "c"]);
        assert!(tokenize("   # only a comment").is_empty());
    }

    #[test]
    fn sections_and_line_numbers() {
        let s = parse("global\n  maxconn 4000\n\nlisten galera\n  bind 10.0.0.10:3306\nbackend b\n");
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].kind, SectionKind::Global);
        assert_eq!(s[1].kind, SectionKind::Listen);
        assert_eq!(s[1].name, "galera");
        assert_eq!(s[1].lines[0].number, 5);
        assert_eq!(s[2].kind, SectionKind::Backend);
    }
}
