//! A small MySQL/MariaDB client: just enough protocol for health probes.
//!
//! [`check`] reads the server's greeting and, with credentials, logs in
//! (mysql_native_password), reads `wsrep_local_state` and `read_only`, and quits with
//! COM_QUIT. [`galera_verdict`] judges those two values as the clustercheck script does.
//! [`parse_greeting`] is the pure parser of the first packet.
//!
//! Every read and write of one conversation is bounded by the caller's timeout, every
//! packet by [`packet::MAX_PAYLOAD`], and nothing from the network can make it panic.
//!
//! Files: `packet` (framing, length-encoded values, OK/ERR/EOF), `greeting`, `auth`
//! (handshake response, native password, auth switch), `resultset` (text result sets),
//! `client` (the conversation), `verdict` (the clustercheck decision table).

mod auth;
mod client;
mod greeting;
mod packet;
mod resultset;
#[cfg(test)]
mod tests;
mod verdict;

use std::fmt;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

pub use greeting::parse_greeting;
pub use packet::MAX_PAYLOAD;
pub use verdict::{galera_verdict, NOT_SYNCED, READ_ONLY};

/// Capability flags used here (protocol names without the `CLIENT_` prefix).
pub mod caps {
    /// CLIENT_LONG_PASSWORD; MariaDB servers clear it to say "not MySQL" (CLIENT_MYSQL).
    pub const LONG_PASSWORD: u32 = 1;
    pub const CONNECT_WITH_DB: u32 = 1 << 3;
    pub const PROTOCOL_41: u32 = 1 << 9;
    pub const SSL: u32 = 1 << 11;
    pub const TRANSACTIONS: u32 = 1 << 13;
    pub const SECURE_CONNECTION: u32 = 1 << 15;
    pub const PLUGIN_AUTH: u32 = 1 << 19;
    pub const DEPRECATE_EOF: u32 = 1 << 24;
}

/// The server's initial handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// Always 10.
    pub protocol: u8,
    /// As `SELECT VERSION()` shows it: MariaDB's "5.5.5-" replication prefix removed.
    pub server_version: String,
    pub connection_id: u32,
    /// Capability flags (low and high halves joined; see [`caps`]).
    pub capabilities: u32,
    /// The server's default auth plugin ("" from servers without CLIENT_PLUGIN_AUTH).
    pub auth_plugin: String,
    /// The auth challenge, both parts joined, without the trailing NUL (20 bytes).
    pub scramble: Vec<u8>,
}

/// Who the probe logs in as.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).field("password", &"<redacted>").finish()
    }
}

/// What the Galera check needs. `None` = the server has no such row (a server without
/// Galera has no `wsrep_local_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GaleraStatus {
    /// 1 Joining, 2 Donor/Desynced, 3 Joined, 4 Synced.
    pub wsrep_local_state: Option<u32>,
    /// `read_only`: ON → true.
    pub read_only: Option<bool>,
}

#[derive(Debug)]
pub enum MysqlError {
    Io(std::io::Error),
    /// The caller's timeout ran out.
    Timeout,
    /// The server closed the connection in the middle of the conversation.
    Closed,
    /// The bytes are not the protocol (or not a MySQL server at all).
    Protocol(String),
    /// The server said no: an ERR packet.
    Server {
        code: u16,
        message: String,
    },
    /// The account needs an auth plugin other than mysql_native_password.
    UnsupportedAuth(String),
}

impl fmt::Display for MysqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MysqlError::Io(e) => write!(f, "{e}"),
            MysqlError::Timeout => write!(f, "timed out"),
            MysqlError::Closed => write!(f, "server closed the connection"),
            MysqlError::Protocol(m) => write!(f, "protocol error: {m}"),
            MysqlError::Server { code, message } => write!(f, "server error {code}: {message}"),
            MysqlError::UnsupportedAuth(p) => {
                write!(f, "account uses auth plugin {p:?}; only mysql_native_password is supported")
            }
        }
    }
}

impl std::error::Error for MysqlError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MysqlError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for MysqlError {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::TimedOut => MysqlError::Timeout,
            std::io::ErrorKind::UnexpectedEof => MysqlError::Closed,
            _ => MysqlError::Io(e),
        }
    }
}

/// Talk to a MySQL/MariaDB server over `stream` (TCP or unix socket), all of it within
/// `timeout`.
///
/// Reads the greeting (an ERR in its place, e.g. "Host ... is blocked" or "Too many
/// connections", is `MysqlError::Server`). Then:
/// - with `creds`: logs in with mysql_native_password (following an AuthSwitchRequest to
///   it; another plugin is [`MysqlError::UnsupportedAuth`]), runs
///   `SHOW GLOBAL STATUS LIKE 'wsrep_local_state'` and
///   `SHOW GLOBAL VARIABLES LIKE 'read_only'`, sends COM_QUIT and waits for the server to
///   close. Returns the status.
/// - without: answers the greeting as the anonymous user with no password (refused, or
///   let in and logged out with COM_QUIT) — the ending MariaDB does not count against
///   the address. Returns `None`; only the greeting decides the result.
pub async fn check<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    creds: Option<&Credentials>,
    timeout: Duration,
) -> Result<(Greeting, Option<GaleraStatus>), MysqlError> {
    client::check(stream, creds, timeout).await
}
