//! `[global]` and `[admin]`, and the admin bind's clashes with the services'.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

use super::binds::admin_collides;
use super::Validator;
use crate::config::keys::Section;
use crate::config::model::*;

/// Where `[admin]` and its keys are, for problems found once the services are known.
pub(super) struct AdminSpans {
    /// The `[admin]` table's name: where a problem of the default bind is reported.
    table: Range<usize>,
    bind_key: Option<Range<usize>>,
    bind_value: Option<Range<usize>>,
    token_file_given: bool,
}

impl Validator<'_> {
    pub(super) fn global(&mut self, t: &DeTable<'_>) -> Global {
        let mut g = Global::default();
        for (key, value) in t.iter() {
            match key.get_ref().as_ref() {
                "workers" => g.workers = self.integer(key, value, 1, 1024).map(|n| n as usize),
                "grace" => {
                    if let Some(d) = self.duration(key, value) {
                        g.grace = d;
                    }
                }
                "splice" => {
                    if let Some(b) = self.boolean(key, value) {
                        g.splice = b;
                    }
                }
                "resolve_interval" => {
                    if let Some(d) = self.duration(key, value) {
                        g.resolve_interval = (!d.is_zero()).then_some(d);
                    }
                }
                _ => self.unknown(key, "[global]", Section::Global.listed()),
            }
        }
        g
    }

    pub(super) fn admin(&mut self, t: &DeTable<'_>, table: Range<usize>) -> Option<(Admin, AdminSpans)> {
        let mut spans = AdminSpans { table, bind_key: None, bind_value: None, token_file_given: false };
        let mut admin = Admin {
            bind: Admin::DEFAULT_BIND,
            token: None,
            token_file: None,
            socket: None,
            socket_mode: Admin::DEFAULT_SOCKET_MODE,
        };
        for (key, value) in t.iter() {
            match key.get_ref().as_ref() {
                "bind" => {
                    if let Some(bind) = self.string(key, value).and_then(|s| self.bind_addr(&value.span(), s)) {
                        admin.bind = bind;
                        spans.bind_key = Some(key.span());
                        spans.bind_value = Some(value.span());
                    }
                }
                "token_file" => {
                    spans.token_file_given = true;
                    let Some(path) = self.string(key, value) else { continue };
                    match self.io.read_secret(path) {
                        Ok(text) => {
                            // Editors end a one-line secret with a newline; it is not part of the token.
                            let token = text.trim();
                            if token.is_empty() {
                                self.err(value.span(), format!("token_file \"{path}\" is empty"));
                            } else if !token.bytes().all(|b| b.is_ascii_graphic()) {
                                self.err(
                                    value.span(),
                                    format!(
                                        "token_file \"{path}\": the token must be one line of printable ASCII \
                                         without spaces (it travels in an Authorization header)"
                                    ),
                                );
                            } else {
                                admin.token = Some(token.to_string());
                                admin.token_file = Some(path.into());
                            }
                        }
                        Err(e) => self.err(value.span(), format!("cannot read token_file \"{path}\": {e}")),
                    }
                }
                "socket" => {
                    let Some(path) = self.string(key, value) else { continue };
                    // sun_path holds 108 bytes including the terminating NUL.
                    if path.is_empty() || path.len() > 107 {
                        self.err(value.span(), "\"socket\" must be a path of 1 to 107 bytes (the unix socket limit)");
                    } else {
                        admin.socket = Some(path.into());
                    }
                }
                "socket_mode" => {
                    // An octal string ("0660") or a TOML octal integer (0o660).
                    let mode = match value.get_ref() {
                        DeValue::String(s) => u32::from_str_radix(s.trim_start_matches("0o"), 8).ok(),
                        DeValue::Integer(i) => u32::from_str_radix(&i.as_str().replace('_', ""), i.radix()).ok(),
                        _ => None,
                    };
                    match mode {
                        Some(m) if m <= 0o777 && m & 0o002 == 0 => admin.socket_mode = m,
                        Some(m) if m <= 0o777 => self.err(
                            value.span(),
                            format!(
                                "socket_mode {m:04o} lets every local user write to the admin socket (drain \
                                 servers, reload); use 0600 or 0660 with a group"
                            ),
                        ),
                        _ => self.err(value.span(), "\"socket_mode\" must be an octal file mode such as \"0660\""),
                    }
                }
                _ => self.unknown(key, "[admin]", Section::Admin.listed()),
            }
        }
        Some((admin, spans))
    }

    /// The admin bind off loopback without a token is a warning (it may be firewalled);
    /// sharing a service's address and port is an error: whichever binds second fails, and
    /// a failed admin bind is retried forever, so `/readyz` never answers and keepalived
    /// moves the VIP away while `check` had said OK.
    pub(super) fn check_admin_bind(
        &mut self,
        admin: &Admin,
        spans: &AdminSpans,
        services: &[(Service, Vec<Range<usize>>)],
    ) {
        let bind = admin.bind;
        if let Some(key) = &spans.bind_key {
            if !bind.ip().is_loopback() && !spans.token_file_given {
                self.warn(
                    key.clone(),
                    format!(
                        "admin endpoint on {bind}, off loopback, without token_file: anyone who can reach it can \
                         drain servers and reload (add token_file, or bind to 127.0.0.1)"
                    ),
                );
            }
        }
        let at = spans.bind_value.clone().unwrap_or_else(|| spans.table.clone());
        let what = if spans.bind_value.is_some() { "admin bind" } else { "the default admin bind" };
        for (svc, _) in services {
            if let Some(other) = svc.binds.iter().find(|b| admin_collides(bind, **b)) {
                self.err(
                    at.clone(),
                    format!(
                        "{what} {bind} collides with bind {other} of service \"{}\": the admin endpoint could not \
                         listen and /readyz would never answer (give [admin] bind another port or address)",
                        svc.name
                    ),
                );
            }
        }
    }
}
