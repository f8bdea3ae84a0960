//! Listener and server addresses, and binds that would collide at start.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;

use toml::de::DeValue;

use super::{Key, Val, Validator};
use crate::config::load::Io;
use crate::config::model::*;
use crate::net::host_port::HostPort;

impl Validator<'_> {
    pub(super) fn binds(&mut self, key: &Key<'_>, value: &Val<'_>) -> (Vec<SocketAddr>, Vec<Range<usize>>) {
        let mut addrs = Vec::new();
        let mut spans = Vec::new();
        match value.get_ref() {
            DeValue::String(s) => {
                if let Some(a) = self.bind_addr(&value.span(), s) {
                    addrs.push(a);
                    spans.push(value.span());
                }
            }
            DeValue::Array(items) => {
                if items.is_empty() {
                    self.err(value.span(), "bind list is empty");
                }
                for item in items.iter() {
                    match item.get_ref() {
                        DeValue::String(s) => {
                            if let Some(a) = self.bind_addr(&item.span(), s) {
                                if addrs.contains(&a) {
                                    self.err(item.span(), format!("bind {a} is listed twice"));
                                } else {
                                    addrs.push(a);
                                    spans.push(item.span());
                                }
                            }
                        }
                        _ => self.err(item.span(), "each bind must be a string \"IP:PORT\""),
                    }
                }
            }
            _ => self.err(value.span(), format!("\"{}\" must be a string or an array of strings", key.get_ref())),
        }
        (addrs, spans)
    }

    pub(super) fn check_bind_conflicts(&mut self, services: &[(Service, Vec<Range<usize>>)]) {
        let mut seen: Vec<(SocketAddr, &str)> = Vec::new();
        for (svc, spans) in services {
            for (addr, span) in svc.binds.iter().zip(spans) {
                let clash = seen.iter().find(|(other, _)| binds_overlap(*other, *addr));
                if let Some((other, owner)) = clash {
                    let msg = if other == addr {
                        format!("bind {addr} is already bound by service \"{owner}\"")
                    } else {
                        format!("bind {addr} overlaps {other}, already bound by service \"{owner}\"")
                    };
                    self.err(span.clone(), msg);
                } else {
                    seen.push((*addr, &svc.name));
                }
            }
        }
    }

    pub(super) fn bind_addr(&mut self, span: &Range<usize>, s: &str) -> Option<SocketAddr> {
        match parse_bind(s) {
            Ok(a) => Some(a),
            Err(why) => {
                self.err(span.clone(), format!("bad address \"{s}\": {why}"));
                None
            }
        }
    }

    pub(super) fn server_addr(&mut self, span: &Range<usize>, s: &str) -> Option<SocketAddr> {
        match parse_server_addr(s, self.io) {
            Ok(a) => Some(a),
            Err(why) => {
                self.err(span.clone(), format!("bad address \"{s}\": {why}"));
                None
            }
        }
    }
}

/// Listener address: `IP:PORT`, `[V6]:PORT`, or `*:PORT` / `:PORT` for every IPv4 address.
pub fn parse_bind(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Some(port) = s.strip_prefix("*:").or_else(|| s.strip_prefix(':')) {
        let port = parse_port(port)?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    if let Some(port) = s.strip_prefix("[::]:") {
        return Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), parse_port(port)?));
    }
    let addr: SocketAddr = s.parse().map_err(|_| "expected IP:PORT, [IPv6]:PORT or *:PORT".to_string())?;
    if addr.port() == 0 {
        return Err("port 0 is not a port one can connect to".into());
    }
    Ok(addr)
}

/// Server address: `IP:PORT`, `[V6]:PORT`, or `HOST:PORT` resolved by `io` (first address wins).
pub fn parse_server_addr(s: &str, io: &dyn Io) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err("port 0 is not a port one can connect to".into());
        }
        return Ok(addr);
    }
    match crate::net::host_port::split(s) {
        // A name: no brackets, no colon in it (an IP address parsed above).
        Some(HostPort { host, port: Some(port), bracketed: false }) if !host.is_empty() && !host.contains('[') => {
            io.resolve(host, parse_port(port)?)
        }
        _ if !s.contains(':') => Err("missing port (expected HOST:PORT)".into()),
        _ => Err("expected IP:PORT, [IPv6]:PORT or HOST:PORT".into()),
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("bad port \"{p}\" (expected 1-65535)")),
        Ok(n) => Ok(n),
    }
}

/// Whether the admin endpoint's bind collides with a service's. Services' `[::]` listeners
/// are IPv6-only, but the admin endpoint binds with the system's defaults, and there `[::]`
/// is dual-stack (net.ipv6.bindv6only = 0, every distribution's default): it takes every
/// IPv4 address of its port as well.
pub(super) fn admin_collides(admin: SocketAddr, service: SocketAddr) -> bool {
    let dual_stack = admin.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    binds_overlap(admin, service) || (dual_stack && service.is_ipv4() && admin.port() == service.port())
}

/// Two binds collide if they are equal, or share a port where one is the wildcard of the
/// same family (the second `bind()` would fail with EADDRINUSE at start).
fn binds_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    if a == b {
        return true;
    }
    a.port() == b.port() && a.is_ipv4() == b.is_ipv4() && (a.ip().is_unspecified() || b.ip().is_unspecified())
}
