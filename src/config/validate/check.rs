//! The `[services.NAME.check]` table (and `[defaults.check]`): read field by field so a
//! service's table can override the defaults' key by key, then validated per kind.

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use super::{Key, Val, Validator};
use crate::config::keys::{self, Section};
use crate::config::model::*;
use toml::de::{DeTable, DeValue};

/// Check keys as written, before merging with `[defaults.check]`.
#[derive(Default, Clone)]
pub(super) struct CheckFields {
    kind: Option<String>,
    kind_span: Option<Range<usize>>,
    port: Option<u16>,
    address: Option<std::net::IpAddr>,
    interval: Option<Duration>,
    fastinter: Option<Duration>,
    downinter: Option<Duration>,
    timeout: Option<Duration>,
    rise: Option<u32>,
    fall: Option<u32>,
    method: Option<String>,
    path: Option<String>,
    host: Option<String>,
    headers: Option<Vec<(String, String)>>,
    expect: Option<Vec<u16>>,
    expect_body: Option<String>,
    ca_file: Option<PathBuf>,
    verify: Option<bool>,
    server_name: Option<String>,
    user: Option<String>,
    password: Option<String>,
    /// The file `password` came from; set or cleared with it.
    password_file: Option<PathBuf>,
    available_when_donor: Option<bool>,
    available_when_readonly: Option<bool>,
    /// Keys present in this table, with their spans, to report keys foreign to the kind.
    present: Vec<(String, Range<usize>)>,
}

macro_rules! merge_fields {
    ($base:expr, $over:expr, $($f:ident),*) => {
        CheckFields { $($f: $over.$f.clone().or_else(|| $base.$f.clone()),)* present: $over.present.clone() }
    };
}

impl CheckFields {
    /// `over` (a service's table) wins key by key over `self` (the defaults').
    pub(super) fn merged(&self, over: &CheckFields) -> CheckFields {
        let mut merged = merge_fields!(
            self,
            over,
            kind,
            kind_span,
            port,
            address,
            interval,
            fastinter,
            downinter,
            timeout,
            rise,
            fall,
            method,
            path,
            host,
            headers,
            expect,
            expect_body,
            ca_file,
            verify,
            server_name,
            user,
            password,
            password_file,
            available_when_donor,
            available_when_readonly
        );
        // The password and the file it came from go together: a service's own
        // `password` is from no file, even if the defaults' came from one.
        merged.password_file =
            if over.password.is_some() { over.password_file.clone() } else { self.password_file.clone() };
        merged
    }
}

impl Validator<'_> {
    pub(super) fn check_fields(&mut self, t: &DeTable<'_>, section: &str) -> CheckFields {
        let mut c = CheckFields::default();
        let known = keys::check_keys();
        for (key, value) in t.iter() {
            let k = key.get_ref().as_ref();
            c.present.push((k.to_string(), key.span()));
            match k {
                "kind" => {
                    c.kind = self.string(key, value).map(str::to_string);
                    c.kind_span = Some(value.span());
                }
                "port" => c.port = self.integer(key, value, 1, 65535).map(|n| n as u16),
                "address" => c.address = self.string(key, value).and_then(|s| self.ip(&value.span(), s)),
                "interval" => c.interval = self.positive_duration(key, value),
                "fastinter" => c.fastinter = self.positive_duration(key, value),
                "downinter" => c.downinter = self.positive_duration(key, value),
                "timeout" => c.timeout = self.positive_duration(key, value),
                "rise" => c.rise = self.integer(key, value, 1, 1000).map(|n| n as u32),
                "fall" => c.fall = self.integer(key, value, 1, 1000).map(|n| n as u32),
                "method" => c.method = self.method(key, value),
                "path" => c.path = self.http_path(key, value),
                "host" => c.host = self.header_value(key, value),
                "headers" => c.headers = self.headers(key, value),
                "expect" => c.expect = self.statuses(key, value),
                "expect_body" => c.expect_body = self.string(key, value).map(str::to_string),
                "ca_file" => c.ca_file = self.string(key, value).map(PathBuf::from),
                "verify" => c.verify = self.boolean(key, value),
                "server_name" => c.server_name = self.header_value(key, value),
                "user" => c.user = self.string(key, value).map(str::to_string),
                "password_file" => {
                    c.password = self.string(key, value).and_then(|p| match self.io.read_secret(p) {
                        // One trailing newline is how editors save a one-line secret.
                        Ok(s) => {
                            c.password_file = Some(PathBuf::from(p));
                            Some(s.strip_suffix('\n').unwrap_or(&s).trim_end_matches('\r').to_string())
                        }
                        Err(e) => {
                            self.err(value.span(), format!("cannot read password_file \"{p}\": {e}"));
                            None
                        }
                    })
                }
                "password" => {
                    c.password = self.string(key, value).map(str::to_string);
                    c.password_file = None;
                }
                "available_when_donor" => c.available_when_donor = self.boolean(key, value),
                "available_when_readonly" => c.available_when_readonly = self.boolean(key, value),
                _ => self.unknown(key, &format!("{section} check"), &known),
            }
        }
        c
    }

    /// Turn merged fields into a [`Check`]; `at` locates problems with no key of their own.
    pub(super) fn finish_check(&mut self, f: &CheckFields, at: Range<usize>) -> Option<Check> {
        let kind_name = f.kind.as_deref().unwrap_or("tcp");
        let kind_span = f.kind_span.clone().unwrap_or(at.clone());
        let own = match kind_name {
            "tcp" => None,
            "http" | "https" | "clustercheck" => Some(Section::CheckHttp),
            "mysql" => Some(Section::CheckMysql),
            other => {
                self.err(
                    kind_span,
                    format!("unknown check kind \"{other}\" (expected one of: tcp, http, https, clustercheck, mysql)"),
                );
                return None;
            }
        };
        let mut ok = true;
        for (key, span) in &f.present {
            let key_of = |section: Section| section.takes(key);
            if !key_of(Section::Check)
                && !own.is_some_and(key_of)
                && (key_of(Section::CheckHttp) || key_of(Section::CheckMysql))
            {
                self.err(span.clone(), format!("\"{key}\" does not apply to check kind \"{kind_name}\""));
                ok = false;
            }
        }
        let http = |default_port_path: &str, tls: bool| HttpCheck {
            method: f.method.clone().unwrap_or_else(|| "GET".into()),
            path: f.path.clone().unwrap_or_else(|| default_port_path.into()),
            host: f.host.clone(),
            headers: f.headers.clone().unwrap_or_default(),
            expect: f.expect.clone().unwrap_or_default(),
            expect_body: f.expect_body.clone(),
            tls: tls.then(|| TlsCheck {
                ca_file: f.ca_file.clone(),
                verify: f.verify.unwrap_or(true),
                server_name: f.server_name.clone().or_else(|| f.host.clone()),
            }),
        };
        let (kind, default_port) = match kind_name {
            "tcp" => (CheckKind::Tcp, None),
            "http" => {
                if f.ca_file.is_some() || f.verify.is_some() || f.server_name.is_some() {
                    self.err(kind_span.clone(), "ca_file, verify and server_name need kind = \"https\"");
                    ok = false;
                }
                (CheckKind::Http(http("/", false)), None)
            }
            "https" => {
                let h = http("/", true);
                if let Some(t) = &h.tls {
                    if let Err(e) = self.io.check_ca(t.ca_file.as_deref(), t.verify) {
                        self.err(kind_span.clone(), format!("https check: {e}"));
                        ok = false;
                    }
                }
                (CheckKind::Http(h), None)
            }
            "clustercheck" => {
                let mut h = http("/", false);
                if h.expect.is_empty() {
                    h.expect = vec![200];
                }
                (CheckKind::Clustercheck(h), Some(DEFAULT_CLUSTERCHECK_PORT))
            }
            _ => {
                if f.password.is_some() && f.user.is_none() {
                    self.err(kind_span.clone(), "a mysql check with a password needs a user");
                    ok = false;
                }
                (
                    CheckKind::Mysql(MysqlCheck {
                        user: f.user.clone(),
                        password: f.password.clone().unwrap_or_default(),
                        password_file: f.password_file.clone(),
                        available_when_donor: f.available_when_donor.unwrap_or(false),
                        available_when_readonly: f.available_when_readonly.unwrap_or(true),
                    }),
                    None,
                )
            }
        };
        let interval = f.interval.unwrap_or(DEFAULT_CHECK_INTERVAL);
        ok.then(|| Check {
            kind,
            port: f.port.or(default_port),
            address: f.address,
            interval,
            fastinter: f.fastinter.unwrap_or(interval),
            downinter: f.downinter.unwrap_or(interval),
            // As HAProxy without `timeout check`: a probe may take up to one interval.
            timeout: f.timeout.unwrap_or(interval),
            rise: f.rise.unwrap_or(DEFAULT_RISE),
            fall: f.fall.unwrap_or(DEFAULT_FALL),
        })
    }

    fn method(&mut self, key: &Key<'_>, value: &Val<'_>) -> Option<String> {
        let m = self.string(key, value)?;
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
            self.err(value.span(), format!("bad HTTP method \"{m}\" (e.g. GET, HEAD, OPTIONS)"));
            return None;
        }
        Some(m.to_string())
    }

    fn http_path(&mut self, key: &Key<'_>, value: &Val<'_>) -> Option<String> {
        let p = self.string(key, value)?;
        if !p.starts_with('/') || p.bytes().any(|b| b <= b' ' || b == 0x7f) {
            self.err(value.span(), format!("bad check path \"{p}\": must start with / and contain no spaces"));
            return None;
        }
        Some(p.to_string())
    }

    pub(super) fn header_value(&mut self, key: &Key<'_>, value: &Val<'_>) -> Option<String> {
        let v = self.string(key, value)?;
        if v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            self.err(value.span(), format!("\"{}\" must not contain line breaks", key.get_ref()));
            return None;
        }
        Some(v.to_string())
    }

    pub(super) fn headers(&mut self, key: &Key<'_>, value: &Val<'_>) -> Option<Vec<(String, String)>> {
        let DeValue::Table(t) = value.get_ref() else {
            self.err(value.span(), "\"headers\" must be a table, e.g. headers = { Authorization = \"Basic ...\" }");
            return None;
        };
        let _ = key;
        let mut out = Vec::new();
        for (name, v) in t.iter() {
            let n = name.get_ref().as_ref();
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_!#$%&'*+.^`|~".contains(&b)) {
                self.err(name.span(), format!("bad header name \"{n}\""));
                continue;
            }
            if let Some(val) = self.header_value(name, v) {
                out.push((n.to_string(), val));
            }
        }
        Some(out)
    }

    fn statuses(&mut self, key: &Key<'_>, value: &Val<'_>) -> Option<Vec<u16>> {
        let DeValue::Array(items) = value.get_ref() else {
            self.err(value.span(), "\"expect\" must be a list of HTTP statuses, e.g. [200, 405]");
            return None;
        };
        let mut out = Vec::new();
        for item in items.iter() {
            out.push(self.integer(key, item, 100, 599)? as u16);
        }
        if out.is_empty() {
            self.err(value.span(), "\"expect\" lists no status");
            return None;
        }
        Some(out)
    }
}
