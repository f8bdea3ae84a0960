//! Service keys of `mode = "http"` and the PROXY protocol keys, read from `[defaults]` or
//! `[services.NAME]` and merged key by key like the rest of a service.

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use super::{Key, Val, Validator};
use crate::config::http::*;
use crate::config::keys::Section;

#[derive(Default, Clone)]
pub(super) struct HttpFields {
    header_timeout: Option<Duration>,
    tunnel_timeout: Option<Option<Duration>>,
    max_header_bytes: Option<usize>,
    max_headers: Option<usize>,
    min_body_rate: Option<u64>,
    body_rate_window: Option<Duration>,
    h2c: Option<bool>,
    http2: Option<bool>,
    server_http2: Option<bool>,
    pool_max_idle: Option<usize>,
    pool_idle_timeout: Option<Duration>,
    forwarded_for: Option<bool>,
    forwarded_proto: Option<bool>,
    forwarded_host: Option<bool>,
    forwarded: Option<bool>,
    trusted_forwarders: Option<Vec<IpNet>>,
    redirect_https: Option<bool>,
    https_port: Option<u16>,
    request: Option<HeaderRules>,
    response: Option<HeaderRules>,
    rewrite_location: Option<bool>,
    deny: Option<Vec<DenyRule>>,
    cookie: Option<String>,
    routes: Option<Vec<(Route, Range<usize>)>>,
    certificates: Option<Vec<CertFiles>>,
    tls: Option<bool>,
    tls_ca_file: Option<PathBuf>,
    tls_verify: Option<bool>,
    tls_server_name: Option<String>,
    pub(super) send_proxy: Option<Option<ProxyVersion>>,
    pub(super) accept_proxy: Option<Option<AcceptProxy>>,
    /// HTTP keys written in this section, to reject them in a tcp service.
    pub(super) present: Vec<(String, Range<usize>)>,
}

macro_rules! merge {
    ($base:expr, $over:expr, $($f:ident),*) => {
        HttpFields { $($f: $over.$f.clone().or_else(|| $base.$f.clone()),)* present: $over.present.clone() }
    };
}

impl HttpFields {
    /// `over` (a service's section) wins key by key over `self` (the defaults').
    pub(super) fn merged(&self, over: &HttpFields) -> HttpFields {
        merge!(
            self,
            over,
            header_timeout,
            tunnel_timeout,
            max_header_bytes,
            max_headers,
            min_body_rate,
            body_rate_window,
            h2c,
            http2,
            server_http2,
            pool_max_idle,
            pool_idle_timeout,
            forwarded_for,
            forwarded_proto,
            forwarded_host,
            forwarded,
            trusted_forwarders,
            redirect_https,
            https_port,
            request,
            response,
            rewrite_location,
            deny,
            cookie,
            routes,
            certificates,
            tls,
            tls_ca_file,
            tls_verify,
            tls_server_name,
            send_proxy,
            accept_proxy
        )
    }

    pub(super) fn has_cookie(&self) -> bool {
        self.cookie.is_some()
    }

    pub(super) fn redirects_only(&self) -> bool {
        self.redirect_https == Some(true)
    }

    pub(super) fn route_spans(&self) -> Vec<(&Route, Range<usize>)> {
        self.routes.iter().flatten().map(|(r, s)| (r, s.clone())).collect()
    }

    /// The validated model (mode = "http").
    pub(super) fn finish(&self) -> Http {
        let d = Http::default();
        let server_tls = (self.tls == Some(true)).then(|| ServerTls {
            ca_file: self.tls_ca_file.clone(),
            verify: self.tls_verify.unwrap_or(true),
            server_name: self.tls_server_name.clone(),
        });
        Http {
            header_timeout: self.header_timeout.unwrap_or(d.header_timeout),
            tunnel_timeout: self.tunnel_timeout.unwrap_or(d.tunnel_timeout),
            max_header_bytes: self.max_header_bytes.unwrap_or(d.max_header_bytes),
            max_headers: self.max_headers.unwrap_or(d.max_headers),
            min_body_rate: self.min_body_rate.unwrap_or(d.min_body_rate),
            body_rate_window: self.body_rate_window.unwrap_or(d.body_rate_window),
            h2c: self.h2c.unwrap_or(d.h2c),
            server_http2: self.server_http2.unwrap_or(d.server_http2),
            pool_max_idle: self.pool_max_idle.unwrap_or(d.pool_max_idle),
            pool_idle_timeout: self.pool_idle_timeout.unwrap_or(d.pool_idle_timeout),
            forwarded_for: self.forwarded_for.unwrap_or(d.forwarded_for),
            forwarded_proto: self.forwarded_proto.unwrap_or(d.forwarded_proto),
            forwarded_host: self.forwarded_host.unwrap_or(d.forwarded_host),
            forwarded: self.forwarded.unwrap_or(d.forwarded),
            trusted_forwarders: self.trusted_forwarders.clone().unwrap_or_default(),
            redirect_https: self.redirect_https.unwrap_or(false),
            https_port: self.https_port,
            request: self.request.clone().unwrap_or_default(),
            response: self.response.clone().unwrap_or_default(),
            rewrite_location: self.rewrite_location.unwrap_or(d.rewrite_location),
            deny: self.deny.clone().unwrap_or_default(),
            cookie: self.cookie.clone().map(|name| CookiePersistence { name }),
            routes: self.routes.iter().flatten().map(|(r, _)| r.clone()).collect(),
            tls: self
                .certificates
                .clone()
                .filter(|c| !c.is_empty())
                .map(|certificates| ListenerTls { certificates, http2: self.http2.unwrap_or(true) }),
            server_tls,
        }
    }
}

impl Validator<'_> {
    /// Read one http or PROXY key into `f`; false if `k` is not one of them.
    pub(super) fn http_field(&mut self, f: &mut HttpFields, key: &Key<'_>, value: &Val<'_>) -> bool {
        let k = key.get_ref().as_ref();
        if Section::ServiceProxy.takes(k) {
            match k {
                "send_proxy" => f.send_proxy = self.send_proxy(key, value),
                _ => f.accept_proxy = self.accept_proxy(key, value),
            }
            return true;
        }
        if !Section::ServiceHttp.takes(k) {
            return false;
        }
        f.present.push((k.to_string(), key.span()));
        match k {
            "header_timeout" => f.header_timeout = self.positive_duration(key, value),
            "tunnel_timeout" => f.tunnel_timeout = self.timeout(key, value),
            "max_header_bytes" => f.max_header_bytes = self.integer(key, value, 1024, 1 << 20).map(|n| n as usize),
            "max_headers" => f.max_headers = self.integer(key, value, 8, 1000).map(|n| n as usize),
            "min_body_rate" => f.min_body_rate = self.integer(key, value, 0, 1 << 40).map(|n| n as u64),
            "body_rate_window" => {
                f.body_rate_window = self.positive_duration(key, value).filter(|d| {
                    // Shorter windows would judge a client by single TCP bursts.
                    let ok = *d >= Duration::from_secs(1);
                    if !ok {
                        self.err(value.span(), "\"body_rate_window\" must be at least \"1s\"".to_string());
                    }
                    ok
                })
            }
            "h2c" => f.h2c = self.boolean(key, value),
            "http2" => f.http2 = self.boolean(key, value),
            "server_http2" => f.server_http2 = self.boolean(key, value),
            "pool_max_idle" => f.pool_max_idle = self.integer(key, value, 0, 10_000).map(|n| n as usize),
            "pool_idle_timeout" => f.pool_idle_timeout = self.positive_duration(key, value),
            "forwarded_for" => f.forwarded_for = self.boolean(key, value),
            "forwarded_proto" => f.forwarded_proto = self.boolean(key, value),
            "forwarded_host" => f.forwarded_host = self.boolean(key, value),
            "forwarded" => f.forwarded = self.boolean(key, value),
            "trusted_forwarders" => f.trusted_forwarders = self.nets(key, value),
            "redirect_https" => f.redirect_https = self.boolean(key, value),
            "https_port" => f.https_port = self.integer(key, value, 1, 65535).map(|n| n as u16),
            "set_headers" => {
                if let Some(set) = self.headers(key, value) {
                    f.request.get_or_insert_with(HeaderRules::default).set = lower(set);
                }
            }
            "del_headers" => {
                if let Some(del) = self.header_names(key, value) {
                    f.request.get_or_insert_with(HeaderRules::default).del = del;
                }
            }
            "request" | "response" => {
                if let Some(t) = self.table(key, value) {
                    let rules = self.header_rules(t, k);
                    if k == "request" {
                        f.request = Some(rules);
                    } else {
                        f.response = Some(rules);
                    }
                }
            }
            "rewrite_location" => f.rewrite_location = self.boolean(key, value),
            "deny" => f.deny = self.deny_rules(key, value),
            "cookie" => f.cookie = self.cookie_name(key, value),
            "routes" => f.routes = self.routes(key, value),
            "certificates" => f.certificates = self.certificates(key, value),
            "tls" => f.tls = self.boolean(key, value),
            "tls_ca_file" => {
                f.tls_ca_file = self.string(key, value).map(PathBuf::from);
                // Loaded now, so `vipgate check` fails where `vipgate run` would.
                if let Some(path) = &f.tls_ca_file {
                    if let Err(e) = self.io.check_ca(Some(path), true) {
                        self.err(value.span(), e);
                        f.tls_ca_file = None;
                    }
                }
            }
            "tls_verify" => f.tls_verify = self.boolean(key, value),
            "tls_server_name" => {
                f.tls_server_name = self.header_value(key, value);
                if let Some(name) = &f.tls_server_name {
                    if let Err(e) = crate::tls::server_name(name) {
                        self.err(value.span(), e);
                        f.tls_server_name = None;
                    }
                }
            }
            _ => {}
        }
        true
    }

    fn send_proxy(&mut self, key: &Key<'_>, value: &Val<'_>) -> Option<Option<ProxyVersion>> {
        match value.get_ref() {
            DeValue::Boolean(false) => Some(None),
            DeValue::Boolean(true) => Some(Some(ProxyVersion::V2)),
            DeValue::String(s) if s == "v1" => Some(Some(ProxyVersion::V1)),
            DeValue::String(s) if s == "v2" => Some(Some(ProxyVersion::V2)),
            _ => {
                self.err(
                    value.span(),
                    format!("\"{}\" must be \"v1\", \"v2\", true (= \"v2\") or false", key.get_ref()),
                );
                None
            }
        }
    }

    fn accept_proxy(&mut self, key: &Key<'_>, value: &Val<'_>) -> Option<Option<AcceptProxy>> {
        match value.get_ref() {
            DeValue::Boolean(false) => Some(None),
            DeValue::Boolean(true) => Some(Some(AcceptProxy::All)),
            DeValue::Array(_) => {
                let nets = self.nets(key, value)?;
                if nets.is_empty() {
                    self.err(value.span(), "\"accept_proxy\" lists no address: use false to turn it off");
                    return None;
                }
                Some(Some(AcceptProxy::From(nets)))
            }
            _ => {
                self.err(
                    value.span(),
                    format!(
                        "\"{}\" must be true, false, or a list of trusted balancers such as [\"10.0.0.2\", \"10.1.0.0/16\"]",
                        key.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn nets(&mut self, key: &Key<'_>, value: &Val<'_>) -> Option<Vec<IpNet>> {
        let DeValue::Array(items) = value.get_ref() else {
            self.err(value.span(), format!("\"{}\" must be a list of addresses or IP/PREFIX ranges", key.get_ref()));
            return None;
        };
        let mut out = Vec::new();
        for item in items.iter() {
            match item.get_ref() {
                DeValue::String(s) => match IpNet::parse(s) {
                    Ok(n) => out.push(n),
                    Err(e) => self.err(item.span(), e),
                },
                _ => self.err(item.span(), format!("each entry of \"{}\" must be a string", key.get_ref())),
            }
        }
        Some(out)
    }

    fn header_names(&mut self, key: &Key<'_>, value: &Val<'_>) -> Option<Vec<String>> {
        let DeValue::Array(items) = value.get_ref() else {
            self.err(value.span(), format!("\"{}\" must be a list of header names", key.get_ref()));
            return None;
        };
        let mut out = Vec::new();
        for item in items.iter() {
            match item.get_ref() {
                DeValue::String(s) if valid_header_name(s) => out.push(s.to_ascii_lowercase()),
                DeValue::String(s) => self.err(item.span(), format!("bad header name \"{s}\"")),
                _ => self.err(item.span(), format!("each entry of \"{}\" must be a header name", key.get_ref())),
            }
        }
        Some(out)
    }

    fn header_rules(&mut self, t: &DeTable<'_>, section: &str) -> HeaderRules {
        let mut rules = HeaderRules::default();
        for (key, value) in t.iter() {
            match key.get_ref().as_ref() {
                "set_headers" => rules.set = self.headers(key, value).map(lower).unwrap_or_default(),
                "del_headers" => rules.del = self.header_names(key, value).unwrap_or_default(),
                _ => self.unknown(key, &format!("[{section}]"), Section::HeaderRules.listed()),
            }
        }
        rules
    }

    fn deny_rules(&mut self, key: &Key<'_>, value: &Val<'_>) -> Option<Vec<DenyRule>> {
        let DeValue::Array(items) = value.get_ref() else {
            self.err(value.span(), "\"deny\" must be an array of tables ([[services.NAME.deny]])");
            return None;
        };
        let mut out = Vec::new();
        for item in items.iter() {
            let span = if item.span().is_empty() { key.span() } else { item.span() };
            let DeValue::Table(t) = item.get_ref() else {
                self.err(span, "each deny rule must be a table with path_prefix, path_contains or path_regex");
                continue;
            };
            let mut rule = DenyRule { path_prefix: None, path_contains: None, path_regex: None, status: 403 };
            // A condition that failed to parse is reported on its own, not as "no condition".
            let has_condition = t.iter().any(|(k, _)| k.get_ref().starts_with("path_"));
            for (k, v) in t.iter() {
                match k.get_ref().as_ref() {
                    "path_prefix" => rule.path_prefix = self.string(k, v).map(str::to_string),
                    "path_contains" => rule.path_contains = self.string(k, v).map(str::to_string),
                    "path_regex" => {
                        rule.path_regex = self.string(k, v).and_then(|s| match regex::Regex::new(s) {
                            Ok(r) => Some(r),
                            Err(e) => {
                                // regex's own message spans lines; a diagnostic is one line.
                                let why = match &e {
                                    regex::Error::Syntax(text) => {
                                        text.lines().last().unwrap_or("syntax error").trim().to_string()
                                    }
                                    other => other.to_string().replace('\n', "; "),
                                };
                                self.err(v.span(), format!("bad path_regex \"{s}\": {why}"));
                                None
                            }
                        })
                    }
                    "status" => {
                        if let Some(s) = self.integer(k, v, 200, 599) {
                            rule.status = s as u16;
                        }
                    }
                    _ => self.unknown(k, "a deny rule", Section::DenyRule.listed()),
                }
            }
            if rule.path_prefix.is_none() && rule.path_contains.is_none() && rule.path_regex.is_none() {
                if has_condition {
                    continue;
                }
                self.err(
                    span,
                    "deny rule has no condition (path_prefix, path_contains or path_regex): it would deny everything",
                );
                continue;
            }
            out.push(rule);
        }
        Some(out)
    }

    fn cookie_name(&mut self, key: &Key<'_>, value: &Val<'_>) -> Option<String> {
        let s = self.string(key, value)?;
        if s.is_empty() || !valid_header_name(s) {
            self.err(value.span(), format!("bad cookie name \"{s}\" (letters, digits and -_.!#$%&'*+^`|~)"));
            return None;
        }
        Some(s.to_string())
    }

    fn routes(&mut self, key: &Key<'_>, value: &Val<'_>) -> Option<Vec<(Route, Range<usize>)>> {
        let DeValue::Array(items) = value.get_ref() else {
            self.err(value.span(), "\"routes\" must be an array of tables ([[services.NAME.routes]])");
            return None;
        };
        let mut out = Vec::new();
        for item in items.iter() {
            let span = if item.span().is_empty() { key.span() } else { item.span() };
            let DeValue::Table(t) = item.get_ref() else {
                self.err(span, "each route must be a table with host and/or path_prefix, and pool");
                continue;
            };
            let (mut host, mut path_prefix, mut pool) = (None, None, None);
            for (k, v) in t.iter() {
                match k.get_ref().as_ref() {
                    "host" => host = self.header_value(k, v).map(|h| h.to_ascii_lowercase()),
                    "path_prefix" => {
                        path_prefix = self.string(k, v).and_then(|p| {
                            if p.starts_with('/') {
                                Some(p.to_string())
                            } else {
                                self.err(v.span(), format!("path_prefix \"{p}\" must start with '/'"));
                                None
                            }
                        })
                    }
                    "pool" => pool = self.string(k, v).map(str::to_string),
                    _ => self.unknown(k, "a route", Section::Route.listed()),
                }
            }
            let Some(pool) = pool else {
                self.err(span, "route has no pool (the `pool` its servers are tagged with)");
                continue;
            };
            if host.is_none() && path_prefix.is_none() {
                self.err(span, "route has neither host nor path_prefix: it would take every request");
                continue;
            }
            out.push((Route { host, path_prefix, pool }, span));
        }
        Some(out)
    }

    fn certificates(&mut self, key: &Key<'_>, value: &Val<'_>) -> Option<Vec<CertFiles>> {
        let DeValue::Array(items) = value.get_ref() else {
            self.err(
                value.span(),
                "\"certificates\" must be a list such as [{ cert = \"/etc/vipgate/api.pem\", key = \"/etc/vipgate/api.key\" }]",
            );
            return None;
        };
        let mut out = Vec::new();
        for item in items.iter() {
            let span = if item.span().is_empty() { key.span() } else { item.span() };
            let DeValue::Table(t) = item.get_ref() else {
                self.err(span, "each certificate must be a table with cert (and key, unless the cert file holds it)");
                continue;
            };
            let (mut cert, mut keyf) = (None, None);
            for (k, v) in t.iter() {
                match k.get_ref().as_ref() {
                    "cert" => cert = self.string(k, v).map(PathBuf::from),
                    "key" => keyf = self.string(k, v).map(PathBuf::from),
                    _ => self.unknown(k, "a certificate", Section::Certificate.listed()),
                }
            }
            let Some(cert) = cert else {
                self.err(span, "certificate has no cert file");
                continue;
            };
            let files = CertFiles { key: keyf.unwrap_or_else(|| cert.clone()), cert };
            // Operators learn of an unreadable or mismatched certificate from `vipgate
            // check`, not from a listener that fails at start (or at reload).
            if let Err(e) = self.io.check_certificates(&files) {
                self.err(span, e);
                continue;
            }
            out.push(files);
        }
        if out.is_empty() && items.iter().next().is_none() {
            self.err(value.span(), "\"certificates\" is empty: remove it for a plain-text listener");
        }
        Some(out)
    }
}

fn lower(headers: Vec<(String, String)>) -> Vec<(String, String)> {
    headers.into_iter().map(|(n, v)| (n.to_ascii_lowercase(), v)).collect()
}

fn valid_header_name(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_!#$%&'*+.^`|~".contains(&b))
}
