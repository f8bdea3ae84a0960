//! Every section of the config file and the keys it takes: the one place the key schema
//! is written down. The validator names these in its unknown-key problems, the admin CLI
//! reads `[admin]` by these names, and the importer's tests hold its output to them.

/// A kind of table in the config file, by where it sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// The top level of the file.
    Top,
    Global,
    Admin,
    /// `[defaults]` and `[services.NAME]`: keys of both modes.
    Service,
    /// Service keys that only mean something in `mode = "http"`.
    ServiceHttp,
    /// Service keys of the PROXY protocol (both modes).
    ServiceProxy,
    /// `[services.NAME.pools.POOL]`.
    Pool,
    /// `check` tables: keys of every kind.
    Check,
    /// `check` keys of kinds http, https and clustercheck.
    CheckHttp,
    /// `check` keys of kind mysql.
    CheckMysql,
    /// One `[[services.NAME.servers]]`.
    Server,
    /// `[services.NAME.request]` and `[services.NAME.response]`.
    HeaderRules,
    /// One `[[services.NAME.deny]]`.
    DenyRule,
    /// One `[[services.NAME.routes]]`.
    Route,
    /// One entry of `certificates`.
    Certificate,
}

/// `[admin]` and the keys of it the admin CLI reads from a possibly broken file.
pub const ADMIN_SECTION: &str = "admin";
pub const ADMIN_BIND: &str = "bind";
pub const ADMIN_TOKEN_FILE: &str = "token_file";
pub const ADMIN_SOCKET: &str = "socket";

impl Section {
    /// The keys named in an unknown-key problem, in the order they are named.
    pub fn listed(self) -> &'static [&'static str] {
        match self {
            Section::Top => &["global", ADMIN_SECTION, "defaults", "services"],
            Section::Global => &["workers", "grace", "splice", "resolve_interval"],
            Section::Admin => &[ADMIN_BIND, ADMIN_TOKEN_FILE, ADMIN_SOCKET, "socket_mode"],
            Section::Service => &[
                "bind",
                "mode",
                "balance",
                "connect_timeout",
                "client_timeout",
                "server_timeout",
                "retries",
                "maxconn",
                "queue_timeout",
                "keepalive",
                "keepalive_idle",
                "keepalive_interval",
                "keepalive_count",
                "source",
                "check",
                "pools",
                "observe_errors",
                "on_down",
                "failback",
                "all_backups",
                "servers",
            ],
            Section::ServiceHttp => &[
                "header_timeout",
                "tunnel_timeout",
                "max_header_bytes",
                "max_headers",
                "min_body_rate",
                "body_rate_window",
                "h2c",
                "http2",
                "server_http2",
                "pool_max_idle",
                "pool_idle_timeout",
                "forwarded_for",
                "forwarded_proto",
                "forwarded_host",
                "forwarded",
                "trusted_forwarders",
                "redirect_https",
                "https_port",
                "set_headers",
                "del_headers",
                "request",
                "response",
                "rewrite_location",
                "deny",
                "cookie",
                "routes",
                "certificates",
                "tls",
                "tls_ca_file",
                "tls_verify",
                "tls_server_name",
            ],
            Section::ServiceProxy => &["send_proxy", "accept_proxy"],
            Section::Pool => &["check"],
            Section::Check => {
                &["kind", "port", "address", "interval", "fastinter", "downinter", "timeout", "rise", "fall"]
            }
            Section::CheckHttp => {
                &["method", "path", "host", "headers", "expect", "expect_body", "ca_file", "verify", "server_name"]
            }
            Section::CheckMysql => {
                &["user", "password", "password_file", "available_when_donor", "available_when_readonly"]
            }
            Section::Server => &[
                "name",
                "address",
                "weight",
                "backup",
                "tier",
                "source",
                "check_port",
                "check_address",
                "cookie",
                "pool",
                "disabled",
            ],
            Section::HeaderRules => &["set_headers", "del_headers"],
            Section::DenyRule => &["path_prefix", "path_contains", "path_regex", "status"],
            Section::Route => &["host", "path_prefix", "pool"],
            Section::Certificate => &["cert", "key"],
        }
    }

    /// Keys taken but left out of the unknown-key hint, which predates them.
    fn unlisted(self) -> &'static [&'static str] {
        match self {
            Section::Server => &["maxconn"],
            _ => &[],
        }
    }

    /// Whether `key` is one this section takes.
    pub fn takes(self, key: &str) -> bool {
        self.listed().contains(&key) || self.unlisted().contains(&key)
    }
}

/// Every key a service section takes, as the unknown-key problem names them.
pub fn service_keys() -> Vec<&'static str> {
    [Section::Service, Section::ServiceHttp, Section::ServiceProxy].iter().flat_map(|s| s.listed()).copied().collect()
}

/// Every key a check table takes, as the unknown-key problem names them.
pub fn check_keys() -> Vec<&'static str> {
    [Section::Check, Section::CheckHttp, Section::CheckMysql].iter().flat_map(|s| s.listed()).copied().collect()
}
