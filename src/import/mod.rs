//! `vipgate import-haproxy`: read a haproxy.cfg as OpenStack deployers write it and print
//! the equivalent vipgate TOML. HAProxy's real semantics win over the apparent intent
//! (`http-check` rules without `option httpchk` are ignored by HAProxy, so they become a
//! plain connect check here too). Every directive that is not translated is reported with
//! its line number and why; none is dropped silently.

mod emit;
mod parse;
mod routes;
mod translate;

pub use parse::{parse, Line, Section, SectionKind};

/// A remark about one line of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub line: usize,
    /// The directive as written (its words joined by spaces).
    pub directive: String,
    pub why: String,
    /// True: vipgate does the job its own way (logging, privilege drop), nothing is lost;
    /// such notes do not fail `--strict`.
    pub handled: bool,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tag = if self.handled { "note" } else { "not translated" };
        write!(f, "{}: {tag}: \"{}\": {}", self.line, self.directive, self.why)
    }
}

/// The translation: TOML text and the remarks.
#[derive(Debug)]
pub struct Imported {
    pub toml: String,
    pub reports: Vec<Report>,
}

impl Imported {
    /// Reports that `--strict` refuses (directives whose effect is lost).
    pub fn untranslated(&self) -> impl Iterator<Item = &Report> {
        self.reports.iter().filter(|r| !r.handled)
    }
}

/// Translate haproxy.cfg text.
pub fn import(text: &str) -> Imported {
    let sections = parse(text);
    translate::translate(&sections)
}

#[cfg(test)]
mod known_keys;
#[cfg(test)]
mod tests;
