//! `acl` and `use_backend ... if ...` lines to vipgate routes. Only what a route can say
//! exactly is translated: a Host (exact, or a domain and its subdomains) and a path
//! prefix, ANDed; alternatives (`or`, several values) become several routes, in HAProxy's
//! order, since the first match wins in both. Anything else (negation, regexes, exact
//! paths, map files) is reported with the reason.

use super::parse::Line;

/// One vipgate route: both `None` never happens (that would match everything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub host: Option<String>,
    pub path_prefix: Option<String>,
}

/// `use_backend BACKEND if COND`, translated.
#[derive(Debug, Clone)]
pub struct UseBackend {
    pub line: usize,
    pub backend: String,
    pub routes: Vec<RouteSpec>,
}

/// What one ACL (or an inline `{ ... }` condition) matches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Matches {
    /// Host patterns as vipgate writes them (`name`, `*.domain`).
    Hosts(Vec<String>),
    PathPrefixes(Vec<String>),
}

/// A remark the caller files against a line: (handled, why).
pub type Remark = (bool, String);

/// The ACLs of one proxy section, by name, as they are declared; a name declared
/// twice ORs its values, as in HAProxy.
#[derive(Default)]
pub struct Acls {
    list: Vec<(String, Result<Matches, String>)>,
}

impl Acls {
    /// `acl NAME CRITERION [FLAGS] VALUES...`
    pub fn declare(&mut self, line: &Line, remarks: &mut Vec<Remark>) {
        let Some(name) = line.words.get(1) else {
            remarks.push((false, "an acl without a name".into()));
            return;
        };
        let m = criterion(&line.words[2..], remarks);
        if let Err(e) = &m {
            // Reported here too: rules other than use_backend may name it.
            remarks.push((false, e.clone()));
        }
        match self.list.iter_mut().find(|(n, _)| n == name) {
            Some((_, existing)) => {
                *existing = match (existing.clone(), m) {
                    (Ok(Matches::Hosts(mut a)), Ok(Matches::Hosts(b))) => {
                        a.extend(b);
                        Ok(Matches::Hosts(a))
                    }
                    (Ok(Matches::PathPrefixes(mut a)), Ok(Matches::PathPrefixes(b))) => {
                        a.extend(b);
                        Ok(Matches::PathPrefixes(a))
                    }
                    (Err(e), _) | (_, Err(e)) => Err(e),
                    _ => Err(format!("acl {name} mixes Host and path criteria")),
                }
            }
            None => self.list.push((name.clone(), m)),
        }
    }

    /// `use_backend BACKEND if COND` → routes, or why not.
    pub fn use_backend(&self, line: &Line, remarks: &mut Vec<Remark>) -> Result<UseBackend, String> {
        let w: Vec<&str> = line.words.iter().map(String::as_str).collect();
        let (backend, cond) = match w.as_slice() {
            [_, b, "if", cond @ ..] if !cond.is_empty() => (*b, cond),
            [_, _, "unless", ..] => return Err("\"unless\" conditions are not translated".into()),
            [_, _] => return Err("an unconditional use_backend is not translated: make it the default_backend".into()),
            _ => return Err("only \"use_backend BACKEND if CONDITION\" is translated".into()),
        };
        if backend.contains("%[") {
            return Err("a backend chosen by an expression (map files) is not translated".into());
        }
        let mut routes = Vec::new();
        for alt in alternatives(cond) {
            let (mut hosts, mut paths): (Option<Vec<String>>, Option<Vec<String>>) = (None, None);
            let mut i = 0;
            while i < alt.len() {
                let term = alt[i];
                let m = if term == "{" {
                    let Some(end) = alt[i..].iter().position(|t| *t == "}") else {
                        return Err("an inline condition without its closing }".into());
                    };
                    let inner: Vec<String> = alt[i + 1..i + end].iter().map(|s| s.to_string()).collect();
                    i += end + 1;
                    criterion(&inner, remarks)?
                } else if term.starts_with('!') {
                    return Err(format!("the negated condition {term} is not translated"));
                } else {
                    i += 1;
                    match self.list.iter().find(|(n, _)| n == term) {
                        Some((_, Ok(m))) => m.clone(),
                        Some((_, Err(e))) => return Err(format!("acl {term}: {e}")),
                        None => return Err(format!("acl {term} is not declared in this section")),
                    }
                };
                let slot = match m {
                    Matches::Hosts(h) => (&mut hosts, h),
                    Matches::PathPrefixes(p) => (&mut paths, p),
                };
                if slot.0.is_some() {
                    return Err("two Host (or two path) conditions ANDed are not translated".into());
                }
                *slot.0 = Some(slot.1);
            }
            let hosts: Vec<Option<String>> = hosts.map_or(vec![None], |h| h.into_iter().map(Some).collect());
            let paths: Vec<Option<String>> = paths.map_or(vec![None], |p| p.into_iter().map(Some).collect());
            for h in &hosts {
                for p in &paths {
                    if h.is_none() && p.is_none() {
                        return Err("a condition that matches every request is not translated".into());
                    }
                    routes.push(RouteSpec { host: h.clone(), path_prefix: p.clone() });
                }
            }
        }
        Ok(UseBackend { line: line.number, backend: backend.to_string(), routes })
    }
}

/// Split a condition on `or` / `||` (HAProxy: AND binds tighter than OR).
fn alternatives<'a>(cond: &[&'a str]) -> Vec<Vec<&'a str>> {
    let mut out = vec![Vec::new()];
    for t in cond {
        if *t == "or" || *t == "||" {
            out.push(Vec::new());
        } else if let Some(last) = out.last_mut() {
            last.push(*t);
        }
    }
    out
}

/// `CRITERION [-i] [-m METHOD] VALUES...` → what it matches, for the criteria a route
/// can express.
fn criterion(words: &[String], remarks: &mut Vec<Remark>) -> Result<Matches, String> {
    let Some(first) = words.first() else { return Err("an empty condition".into()) };
    let fetch = first.to_ascii_lowercase();
    let mut method: Option<String> = None;
    let mut nocase = false;
    let mut values: Vec<&str> = Vec::new();
    let mut i = 1;
    while i < words.len() {
        match words[i].as_str() {
            "-i" => nocase = true,
            "-m" => {
                method = words.get(i + 1).cloned();
                i += 1;
            }
            "-f" => return Err("patterns from a file (-f) are not translated".into()),
            "--" => {
                values.extend(words[i + 1..].iter().map(String::as_str));
                break;
            }
            v => values.push(v),
        }
        i += 1;
    }
    if values.is_empty() {
        return Err(format!("{first} without a value is not translated"));
    }
    let (what, implied) = match fetch.as_str() {
        "hdr(host)" | "req.hdr(host)" | "hdr(host,-1)" => ("host", "str"),
        "hdr_dom(host)" => ("host", "dom"),
        "hdr_end(host)" => ("host", "end"),
        "hdr_beg(host)" => ("host", "beg"),
        "path_beg" => ("path", "beg"),
        "path" => ("path", "str"),
        _ => return Err(format!("the criterion {first} is not translated (Host and path prefix are)")),
    };
    let method = method.unwrap_or_else(|| implied.to_string());
    match (what, method.as_str()) {
        ("host", m @ ("str" | "dom" | "end")) => {
            if !nocase {
                remarks.push((true, "vipgate compares hosts without regard to case".into()));
            }
            let mut hosts = Vec::new();
            for v in values {
                let v = v.to_ascii_lowercase();
                let (bare, port) = match crate::net::host_port::split(&v) {
                    Some(hp) if !hp.bracketed && hp.port.is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit())) => {
                        (hp.host.to_string(), true)
                    }
                    _ => (v.clone(), false),
                };
                if port {
                    remarks.push((true, format!("{v}: vipgate's routes match the host whatever the port")));
                }
                match m {
                    "str" => hosts.push(bare),
                    "dom" => {
                        remarks.push((true, format!("{bare}: translated as {bare} and *.{bare}")));
                        hosts.push(bare.clone());
                        hosts.push(format!("*.{bare}"));
                    }
                    _ => match bare.strip_prefix('.') {
                        Some(d) if !d.is_empty() => hosts.push(format!("*.{d}")),
                        _ => return Err(format!("a Host suffix must start with a dot to be a domain: {bare}")),
                    },
                }
            }
            Ok(Matches::Hosts(hosts))
        }
        ("path", "beg") => {
            if nocase {
                return Err("vipgate's path_prefix is case-sensitive: -i is not translated".into());
            }
            if let Some(bad) = values.iter().find(|v| !v.starts_with('/')) {
                return Err(format!("the path prefix {bad} does not start with /"));
            }
            Ok(Matches::PathPrefixes(values.iter().map(|v| v.to_string()).collect()))
        }
        (_, m) => Err(format!("{first} with match method {m} is not translated (exact Host, domain, or path prefix)")),
    }
}
