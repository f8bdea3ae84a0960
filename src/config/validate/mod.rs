//! TOML text → validated [`Config`], collecting every problem with its position.
//!
//! We walk toml's span-carrying tree by hand instead of deriving serde structs: serde
//! stops at the first error, and operators fixing a config want the whole list at once,
//! each with `FILE:LINE:COL`.

mod binds;
mod check;
mod global;
mod http;
mod servers;
mod service;
mod values;

use std::borrow::Cow;
use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::keys::Section;
use super::load::Io;
use super::model::*;
use service::ServiceFields;

pub use binds::{parse_bind, parse_server_addr};

pub(super) type Key<'i> = Spanned<Cow<'i, str>>;
pub(super) type Val<'i> = Spanned<DeValue<'i>>;

/// One problem in a config file, at a byte offset of the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub offset: usize,
    pub message: String,
}

/// A valid config and what is worth a warning in it (sorted by position).
pub struct Validated {
    pub config: Config,
    pub warnings: Vec<Problem>,
}

/// Validate `src`, asking `io` for what the text alone cannot tell; on failure return
/// every problem found (sorted by position).
pub fn validate(src: &str, io: &dyn Io) -> Result<Validated, Vec<Problem>> {
    let (root, syntax) = DeTable::parse_recoverable(src);
    if !syntax.is_empty() {
        let problems = syntax
            .iter()
            .map(|e| Problem {
                offset: e.span().map(|s| s.start).unwrap_or(0),
                message: format!("TOML syntax error: {}", e.message().trim()),
            })
            .collect();
        return Err(sorted(problems));
    }
    let mut v = Validator { problems: Vec::new(), warnings: Vec::new(), io };
    let config = v.root(root.get_ref());
    if v.problems.is_empty() {
        if let Some(config) = config {
            return Ok(Validated { config, warnings: sorted(v.warnings) });
        }
        v.problems.push(Problem { offset: 0, message: "configuration is incomplete".into() });
    }
    Err(sorted(v.problems))
}

fn sorted(mut p: Vec<Problem>) -> Vec<Problem> {
    p.sort_by_key(|p| p.offset);
    p
}

pub(super) struct Validator<'io> {
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
    /// Names to resolve and files to read go through here (`load.rs`).
    pub(super) io: &'io dyn Io,
}

impl Validator<'_> {
    pub(super) fn err(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.problems.push(Problem { offset: span.start, message: message.into() });
    }

    pub(super) fn warn(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.warnings.push(Problem { offset: span.start, message: message.into() });
    }

    pub(super) fn unknown(&mut self, key: &Key<'_>, section: &str, known: &[&str]) {
        self.err(
            key.span(),
            format!("unknown key \"{}\" in {section} (known keys: {})", key.get_ref(), known.join(", ")),
        );
    }

    fn root(&mut self, root: &DeTable<'_>) -> Option<Config> {
        let mut global = Global::default();
        let mut admin = None;
        let mut defaults = ServiceFields::default();
        let mut services = Vec::new();
        let mut saw_services = false;
        for (key, value) in root.iter() {
            match key.get_ref().as_ref() {
                "global" => {
                    if let Some(t) = self.table(key, value) {
                        global = self.global(t);
                    }
                }
                "admin" => {
                    if let Some(t) = self.table(key, value) {
                        admin = self.admin(t, key.span());
                    }
                }
                "defaults" => {
                    if let Some(t) = self.table(key, value) {
                        defaults = self.service_fields(t, "[defaults]", true);
                    }
                }
                "services" => {
                    saw_services = true;
                    if let Some(t) = self.table(key, value) {
                        if t.is_empty() {
                            self.err(key.span(), "[services] defines no service");
                        }
                        for (name, body) in t.iter() {
                            if let Some(svc) = self.service(name, body, &defaults) {
                                services.push(svc);
                            }
                        }
                    }
                }
                _ => self.unknown(key, "the top level", Section::Top.listed()),
            }
        }
        if !saw_services {
            self.err(0..0, "no [services.NAME] section: there is nothing to balance");
        }
        self.check_bind_conflicts(&services);
        let admin = admin.map(|(admin, spans)| {
            self.check_admin_bind(&admin, &spans, &services);
            admin
        });
        let services = services.into_iter().map(|(s, _)| s).collect();
        Some(Config { global, admin, services })
    }
}
