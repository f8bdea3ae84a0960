//! Typed readers of one value: each reports its own problem and returns None.

use std::net::IpAddr;
use std::ops::Range;
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use super::{Key, Val, Validator};
use crate::config::duration::parse_duration;

impl Validator<'_> {
    pub(super) fn table<'a, 'i>(&mut self, key: &Key<'_>, value: &'a Val<'i>) -> Option<&'a DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.err(value.span(), format!("\"{}\" must be a table, not {}", key.get_ref(), other.type_str()));
                None
            }
        }
    }

    pub(super) fn string<'a>(&mut self, key: &Key<'_>, value: &'a Val<'_>) -> Option<&'a str> {
        match value.get_ref() {
            DeValue::String(s) => Some(s.as_ref()),
            other => {
                self.err(value.span(), format!("\"{}\" must be a string, not {}", key.get_ref(), other.type_str()));
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, key: &Key<'_>, value: &Val<'_>) -> Option<bool> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                self.err(
                    value.span(),
                    format!("\"{}\" must be true or false, not {}", key.get_ref(), other.type_str()),
                );
                None
            }
        }
    }

    pub(super) fn integer(&mut self, key: &Key<'_>, value: &Val<'_>, min: i64, max: i64) -> Option<i64> {
        let parsed = match value.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()).ok(),
            _ => None,
        };
        match parsed {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.err(value.span(), format!("\"{}\" must be a whole number from {min} to {max}", key.get_ref()));
                None
            }
        }
    }

    pub(super) fn duration(&mut self, key: &Key<'_>, value: &Val<'_>) -> Option<Duration> {
        let DeValue::String(s) = value.get_ref() else {
            self.err(
                value.span(),
                format!("\"{}\" must be a duration string such as \"5s\" or \"500ms\"", key.get_ref()),
            );
            return None;
        };
        match parse_duration(s) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(value.span(), format!("\"{}\": {e}", key.get_ref()));
                None
            }
        }
    }

    /// A timeout: `"0"` means none.
    pub(super) fn timeout(&mut self, key: &Key<'_>, value: &Val<'_>) -> Option<Option<Duration>> {
        self.duration(key, value).map(|d| (!d.is_zero()).then_some(d))
    }

    pub(super) fn positive_duration(&mut self, key: &Key<'_>, value: &Val<'_>) -> Option<Duration> {
        let d = self.duration(key, value)?;
        if d.is_zero() {
            self.err(value.span(), format!("\"{}\" must be a duration above zero", key.get_ref()));
            return None;
        }
        Some(d)
    }

    pub(super) fn ip(&mut self, span: &Range<usize>, s: &str) -> Option<IpAddr> {
        match s.trim_start_matches('[').trim_end_matches(']').parse() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.err(span.clone(), format!("bad address \"{s}\": expected an IP address such as 10.0.0.5"));
                None
            }
        }
    }
}
