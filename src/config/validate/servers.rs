//! `[[services.NAME.servers]]` and the pools they are tagged with.

use std::net::SocketAddr;
use std::ops::Range;

use toml::de::{DeTable, DeValue};

use super::check::CheckFields;
use super::{Key, Val, Validator};
use crate::config::keys::Section;
use crate::config::model::*;

impl Validator<'_> {
    /// `pools = { POOL = { check = { ... } } }`, written `[services.NAME.pools.POOL.check]`.
    pub(super) fn pools(
        &mut self,
        key: &Key<'_>,
        value: &Val<'_>,
        section: &str,
    ) -> Vec<(String, Range<usize>, CheckFields)> {
        let Some(t) = self.table(key, value) else { return Vec::new() };
        let mut out = Vec::new();
        for (pool, body) in t.iter() {
            let name = pool.get_ref().as_ref().to_string();
            let Some(bt) = self.table(pool, body) else { continue };
            let mut fields = None;
            for (k, v) in bt.iter() {
                match k.get_ref().as_ref() {
                    "check" => {
                        if let Some(ct) = self.table(k, v) {
                            fields = Some(self.check_fields(ct, &format!("{section}.pools.{name}.check")));
                        }
                    }
                    _ => self.unknown(k, &format!("{section}.pools.{name}"), Section::Pool.listed()),
                }
            }
            if let Some(f) = fields {
                out.push((name, pool.span(), f));
            }
        }
        out
    }

    pub(super) fn servers(&mut self, key: &Key<'_>, value: &Val<'_>) -> Vec<(Server, Range<usize>)> {
        let DeValue::Array(items) = value.get_ref() else {
            self.err(value.span(), "\"servers\" must be an array of tables ([[services.NAME.servers]])");
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items.iter() {
            let span = if item.span().is_empty() { key.span() } else { item.span() };
            let DeValue::Table(t) = item.get_ref() else {
                self.err(span, "each server must be a table with name and address");
                continue;
            };
            if let Some(s) = self.server(t, span.clone()) {
                out.push((s, span));
            }
        }
        out
    }

    pub(super) fn server(&mut self, t: &DeTable<'_>, span: Range<usize>) -> Option<Server> {
        let (mut name, mut address, mut weight, mut source) = (None, None, 1, None);
        let mut disabled = false;
        let mut maxconn = 0;
        let (mut cookie, mut pool) = (None, None);
        let (mut backup, mut tier, mut check_port, mut check_address) = (None, None, None, None);
        let mut ok = true;
        for (key, value) in t.iter() {
            match key.get_ref().as_ref() {
                "name" => {
                    name = self.string(key, value).map(str::to_string);
                    if name.as_deref() == Some("") {
                        self.err(value.span(), "server name must not be empty");
                    }
                }
                "address" => {
                    address = self.string(key, value).and_then(|s| {
                        let a = self.server_addr(&value.span(), s)?;
                        Some((a, address_host(s)))
                    })
                }
                "weight" => match self.integer(key, value, 0, MAX_WEIGHT as i64) {
                    Some(w) => weight = w as u32,
                    None => ok = false,
                },
                "backup" => backup = self.boolean(key, value).map(|b| (b, value.span())),
                "tier" => tier = self.integer(key, value, 0, 100).map(|n| (n as u32, value.span())),
                "source" => source = self.string(key, value).and_then(|s| self.ip(&value.span(), s)),
                "check_port" => check_port = self.integer(key, value, 1, 65535).map(|n| n as u16),
                "check_address" => check_address = self.string(key, value).and_then(|s| self.ip(&value.span(), s)),
                "cookie" => {
                    cookie = self.header_value(key, value);
                    if cookie.as_deref().is_some_and(|c| c.is_empty() || c.contains([';', ',', ' ', '"', '='])) {
                        self.err(
                            value.span(),
                            "a server's cookie value must be non-empty, without ; , = space or quote",
                        );
                        cookie = None;
                    }
                }
                "pool" => pool = self.string(key, value).map(str::to_string),
                "disabled" => disabled = self.boolean(key, value).unwrap_or(false),
                "maxconn" => maxconn = self.integer(key, value, 0, 10_000_000).map_or(0, |n| n as u32),
                _ => self.unknown(key, "a server", Section::Server.listed()),
            }
        }
        let tier = match (backup, tier) {
            (Some((true, _)), Some((0, span))) => {
                self.err(span, "tier = 0 contradicts backup = true (backup means tier 1)");
                1
            }
            (_, Some((t, _))) => t,
            (Some((true, _)), None) => 1,
            _ => 0,
        };
        let Some(name) = name else {
            self.err(span, "server has no name");
            return None;
        };
        let Some((address, host)) = address else {
            if !t.iter().any(|(k, _)| k.get_ref() == "address") {
                self.err(span, format!("server \"{name}\" has no address"));
            }
            return None;
        };
        ok.then_some(Server {
            name,
            address,
            host,
            weight,
            tier,
            source,
            check_port,
            check_address,
            cookie,
            pool,
            disabled,
            maxconn,
        })
    }
}

/// The host name of a `HOST:PORT` server address (None for an IP address).
fn address_host(s: &str) -> Option<String> {
    let s = s.trim();
    if s.parse::<SocketAddr>().is_ok() {
        return None;
    }
    crate::net::host_port::split(s).filter(|hp| hp.port.is_some() && !hp.bracketed).map(|hp| hp.host.to_string())
}
