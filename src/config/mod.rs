//! Configuration: TOML schema, duration parsing, and validation into a [`Config`] model
//! with `FILE:LINE:COL` diagnostics. The validation itself does no I/O: what the text
//! alone cannot tell (a server name's address, a secret file, a certificate) it asks of
//! [`load::Io`], the system for [`load`] and [`parse`], nothing for [`validate_pure`].

mod duration;
pub mod http;
pub mod keys;
pub mod load;
pub mod model;
mod secrets;
mod validate;

use std::fmt;
use std::path::Path;

pub use duration::{format_duration, parse_duration, DurationError};
pub use http::*;
pub use model::*;
pub use secrets::{loose_secret_file, loose_secret_files, Readers};
pub use validate::{parse_bind, parse_server_addr, Problem};

/// Why a configuration could not be loaded.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Io { file: String, source: std::io::Error },
    /// The file was read but is not a valid configuration; one diagnostic per problem.
    Invalid { file: String, diagnostics: Vec<Diagnostic> },
}

/// One problem, positioned for humans (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Io { file, source } => write!(f, "{file}: cannot read: {source}"),
            ConfigError::Invalid { file, diagnostics } => {
                for (i, d) in diagnostics.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "{file}:{}:{}: {}", d.line, d.column, d.message)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Read and validate the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with_warnings(path).map(|(config, _)| config)
}

/// [`load`], and the warnings about a valid file as `FILE:LINE:COL: warning: message`
/// lines (what `vipgate check` prints).
pub fn load_with_warnings(path: &Path) -> Result<(Config, Vec<String>), ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { file: file.clone(), source })?;
    parse_with_warnings(&text, &file)
}

/// Validate configuration text; `file` only names it in diagnostics. Server names are
/// resolved and the files the config names are read (blocking I/O: keep it off the
/// workers).
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    parse_with_warnings(text, file).map(|(config, _)| config)
}

/// Validate configuration text with no I/O at all: every problem the text itself has,
/// positioned, but no name resolved and no file read ([`load::NoIo`]). For fuzzing and for
/// checking a text; the config it gives is not one to run.
pub fn validate_pure(text: &str, file: &str) -> Result<Config, ConfigError> {
    validate_with(text, file, &load::NoIo).map(|(config, _)| config)
}

/// [`parse`], and the warnings about valid text, positioned as [`load_with_warnings`] says.
pub fn parse_with_warnings(text: &str, file: &str) -> Result<(Config, Vec<String>), ConfigError> {
    validate_with(text, file, &load::SystemIo)
}

fn validate_with(text: &str, file: &str, io: &dyn load::Io) -> Result<(Config, Vec<String>), ConfigError> {
    let positioned = |p: Problem| {
        let (line, column) = line_col(text, p.offset);
        Diagnostic { line, column, message: p.message }
    };
    match validate::validate(text, io) {
        Ok(v) => {
            let warnings = v
                .warnings
                .into_iter()
                .map(positioned)
                .map(|d| format!("{file}:{}:{}: warning: {}", d.line, d.column, d.message))
                .collect();
            Ok((v.config, warnings))
        }
        Err(problems) => Err(ConfigError::Invalid {
            file: file.to_string(),
            diagnostics: problems.into_iter().map(positioned).collect(),
        }),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests;
