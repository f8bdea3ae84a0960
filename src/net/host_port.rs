//! `host[:port]` split once for everyone who reads one: Host headers and redirects in the
//! proxy, server addresses in the config, Host criteria in the importer. Each caller
//! judges the parts its own way (a Host header's reg-name, a config's port range); the
//! split itself, brackets and bare IPv6 included, is the same everywhere.

/// The two halves of `host[:port]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPort<'a> {
    /// Without brackets.
    pub host: &'a str,
    /// As written, possibly empty (`host:`) or not a number: the caller decides.
    pub port: Option<&'a str>,
    /// The host was an `[IPv6]` literal.
    pub bracketed: bool,
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`. A bare IPv6 address (more than one colon, no
/// brackets) is all host. `None` when a bracket is not closed or something other than
/// `:port` follows it.
pub fn split(s: &str) -> Option<HostPort<'_>> {
    if let Some(inner) = s.strip_prefix('[') {
        let (host, after) = inner.split_once(']')?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        return Some(HostPort { host, port, bracketed: true });
    }
    Some(match s.split_once(':') {
        Some((host, port)) if !port.contains(':') => HostPort { host, port: Some(port), bracketed: false },
        _ => HostPort { host: s, port: None, bracketed: false },
    })
}

impl HostPort<'_> {
    /// The port when it is all digits and fits (an empty one is `None` too).
    pub fn numeric_port(&self) -> Option<u16> {
        self.port.filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())).and_then(|p| p.parse().ok())
    }

    /// The host as it is written in a URL: brackets back around an IPv6 literal.
    pub fn host_for_url(&self) -> std::borrow::Cow<'_, str> {
        if self.bracketed || self.host.contains(':') {
            format!("[{}]", self.host).into()
        } else {
            self.host.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(s: &str) -> Option<(&str, Option<&str>, bool)> {
        split(s).map(|h| (h.host, h.port, h.bracketed))
    }

    #[test]
    fn splits() {
        assert_eq!(parts("keystone"), Some(("keystone", None, false)));
        assert_eq!(parts("keystone:5000"), Some(("keystone", Some("5000"), false)));
        assert_eq!(parts("keystone:"), Some(("keystone", Some(""), false)));
        assert_eq!(parts("[fd00::1]"), Some(("fd00::1", None, true)));
        assert_eq!(parts("[fd00::1]:443"), Some(("fd00::1", Some("443"), true)));
        assert_eq!(parts("fd00::1"), Some(("fd00::1", None, false)), "a bare IPv6 address is all host");
        assert_eq!(parts("[fd00::1"), None);
        assert_eq!(parts("[fd00::1]x"), None);
        assert_eq!(parts(""), Some(("", None, false)));
        assert_eq!(split("a:b").and_then(|h| h.numeric_port()), None);
        assert_eq!(split("a:99999").and_then(|h| h.numeric_port()), None);
        assert_eq!(split("a:+1").and_then(|h| h.numeric_port()), None);
        assert_eq!(split("a:8080").and_then(|h| h.numeric_port()), Some(8080));
        assert_eq!(split("[::1]:8080").map(|h| h.host_for_url().into_owned()).as_deref(), Some("[::1]"));
        assert_eq!(split("a:8080").map(|h| h.host_for_url().into_owned()).as_deref(), Some("a"));
    }
}
