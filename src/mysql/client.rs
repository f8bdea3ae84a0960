//! The probe conversation: greeting, login, two SHOW statements, COM_QUIT.
//!
//! How a conversation ends decides whether MariaDB counts it against the client's address
//! (`max_connect_errors`, then "Host ... is blocked"). Measured on MariaDB 10.11
//! (tests/mariadb.rs): closing or resetting the connection after the greeting is a
//! handshake error and counts, every time; a finished login attempt does not count,
//! whether it succeeds or is refused. So without credentials the probe still answers the
//! greeting, as the anonymous user with no password: the server refuses ("Access
//! denied", not a blocking error) or, where an anonymous account exists, lets it in and
//! gets a COM_QUIT. With credentials the probe logs in and ends with COM_QUIT, which
//! leaves no trace at all (and a successful login clears the address's error count).

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::auth::{self, NATIVE_PASSWORD};
use super::packet::{is_eof, parse_err, parse_ok, Conn, EOF, ERR, OK};
use super::resultset::{self, QueryStart, Row, RowPacket, MAX_ROWS};
use super::{parse_greeting, Credentials, GaleraStatus, Greeting, MysqlError};

const COM_QUIT: u8 = 0x01;
const COM_QUERY: u8 = 0x03;
/// Auth packets the client answers before giving up (a normal login needs one switch).
const MAX_AUTH_ROUNDS: usize = 4;

pub const WSREP_QUERY: &str = "SHOW GLOBAL STATUS LIKE 'wsrep_local_state'";
pub const READ_ONLY_QUERY: &str = "SHOW GLOBAL VARIABLES LIKE 'read_only'";

/// See [`super::check`].
pub async fn check<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    creds: Option<&Credentials>,
    timeout: std::time::Duration,
) -> Result<(Greeting, Option<GaleraStatus>), MysqlError> {
    let deadline = Instant::now() + timeout;
    let mut conn = Conn::new(stream, deadline);
    let first = conn.read_packet().await?;
    let greeting = parse_greeting(&first)?;
    match creds {
        None => {
            // The server is there and greeted: that is the verdict. What follows only
            // ends the conversation the way the server does not count as an error.
            end_without_login(&mut conn, &greeting).await;
            Ok((greeting, None))
        }
        Some(creds) => {
            login(&mut conn, &greeting, &creds.user, creds.password.as_bytes()).await?;
            let status = galera_status(&mut conn).await;
            quit(&mut conn).await;
            Ok((greeting, Some(status?)))
        }
    }
}

/// Log in as `user`. Ok when the server says OK.
async fn login<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    greeting: &Greeting,
    user: &str,
    password: &[u8],
) -> Result<(), MysqlError> {
    let caps = auth::client_capabilities(greeting.capabilities)?;
    // Always offer mysql_native_password; a server whose default plugin differs switches
    // the client over (AuthSwitchRequest) when the account uses native passwords.
    let token = auth::native_password_token(password, &greeting.scramble)?;
    conn.write_packet(&auth::handshake_response(caps, user, &token, NATIVE_PASSWORD)?).await?;
    for _ in 0..MAX_AUTH_ROUNDS {
        let reply = conn.read_packet().await?;
        match reply.first() {
            Some(&OK) => return parse_ok(&reply).map(|_| ()),
            Some(&ERR) => return Err(parse_err(&reply)),
            Some(&EOF) => {
                let switch = auth::parse_auth_switch(&reply)?;
                if switch.plugin == NATIVE_PASSWORD {
                    conn.write_packet(&auth::native_password_token(password, &switch.data)?).await?;
                } else {
                    return Err(decline_plugin(conn, switch.plugin).await);
                }
            }
            Some(0x01) => {
                return Err(MysqlError::Protocol("unexpected extra authentication data from the server".into()))
            }
            _ => return Err(MysqlError::Protocol("unexpected packet during authentication".into())),
        }
    }
    Err(MysqlError::Protocol("authentication did not finish".into()))
}

/// The server wants a plugin the client does not speak. Answer it with something of
/// the shape the plugin expects (a wrong one) rather than hanging up, so the server ends
/// the attempt as a failed login, not as a handshake error that counts against this
/// address (measured on MariaDB 10.11: for ed25519 an empty answer counts, a 64-byte
/// wrong signature does not; PAM's dialog is a plugin error either way). Bounded rounds,
/// then the plugin is reported.
async fn decline_plugin<S: AsyncRead + AsyncWrite + Unpin>(conn: &mut Conn<S>, plugin: String) -> MysqlError {
    let answer = wrong_answer(&plugin);
    for _ in 0..MAX_AUTH_ROUNDS {
        if conn.write_packet(answer).await.is_err() {
            break;
        }
        match conn.read_packet().await {
            Ok(reply) if reply.first() == Some(&OK) => {
                quit(conn).await;
                break;
            }
            // More questions (a dialog prompt, extra auth data): answer again.
            Ok(reply) if reply.first() != Some(&ERR) && !reply.is_empty() => {}
            _ => break,
        }
    }
    MysqlError::UnsupportedAuth(plugin)
}

/// An answer of the right shape for `plugin` that cannot be right: 64 zero bytes for an
/// ed25519 signature, else nothing (which is also mysql_native_password's answer for an
/// empty password).
fn wrong_answer(plugin: &str) -> &'static [u8] {
    match plugin {
        "client_ed25519" => &[0u8; 64],
        _ => &[],
    }
}

/// No credentials: answer the greeting as the anonymous user with no password and
/// take whatever the server says; log out if it let us in. Best effort, bounded by the
/// deadline; nothing here changes the probe's result.
async fn end_without_login<S: AsyncRead + AsyncWrite + Unpin>(conn: &mut Conn<S>, greeting: &Greeting) {
    let Ok(caps) = auth::client_capabilities(greeting.capabilities) else { return };
    let Ok(response) = auth::handshake_response(caps, "", &[], NATIVE_PASSWORD) else { return };
    if conn.write_packet(&response).await.is_err() {
        return;
    }
    for _ in 0..MAX_AUTH_ROUNDS {
        let Ok(reply) = conn.read_packet().await else { return };
        match reply.first() {
            Some(&OK) => return quit(conn).await,
            // ERR (normally 1045 Access denied): the server closes; so do we.
            Some(&ERR) | None => {
                conn.drain_until_closed().await;
                return;
            }
            // An auth switch or a plugin's question: answer as for no password.
            Some(&first) => {
                let answer = match auth::parse_auth_switch(&reply) {
                    Ok(switch) if first == EOF => wrong_answer(&switch.plugin),
                    _ => &[],
                };
                if conn.write_packet(answer).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn galera_status<S: AsyncRead + AsyncWrite + Unpin>(conn: &mut Conn<S>) -> Result<GaleraStatus, MysqlError> {
    let rows = query(conn, WSREP_QUERY).await?;
    let wsrep_local_state =
        resultset::show_value(&rows, "wsrep_local_state").map(resultset::parse_wsrep_local_state).transpose()?;
    let rows = query(conn, READ_ONLY_QUERY).await?;
    let read_only = resultset::show_value(&rows, "read_only").map(resultset::parse_read_only).transpose()?;
    Ok(GaleraStatus { wsrep_local_state, read_only })
}

/// Run one text-protocol query and collect its rows (none for a statement without a
/// result set).
async fn query<S: AsyncRead + AsyncWrite + Unpin>(conn: &mut Conn<S>, sql: &str) -> Result<Vec<Row>, MysqlError> {
    conn.reset_seq();
    let mut packet = Vec::with_capacity(1 + sql.len());
    packet.push(COM_QUERY);
    packet.extend_from_slice(sql.as_bytes());
    conn.write_packet(&packet).await?;
    let columns = match resultset::parse_query_start(&conn.read_packet().await?)? {
        QueryStart::Done => return Ok(Vec::new()),
        QueryStart::Columns(n) => n,
    };
    for _ in 0..columns {
        resultset::check_column_definition(&conn.read_packet().await?)?;
    }
    let eof = conn.read_packet().await?;
    if !is_eof(&eof) {
        return Err(MysqlError::Protocol("missing EOF after the column definitions".into()));
    }
    let mut rows = Vec::new();
    loop {
        match resultset::parse_row_packet(&conn.read_packet().await?, columns)? {
            RowPacket::End => return Ok(rows),
            RowPacket::Row(row) => {
                if rows.len() >= MAX_ROWS {
                    return Err(MysqlError::Protocol(format!("more than {MAX_ROWS} rows")));
                }
                rows.push(row);
            }
        }
    }
}

/// COM_QUIT, then wait (bounded) for the server to close: the polite end of a session.
async fn quit<S: AsyncRead + AsyncWrite + Unpin>(conn: &mut Conn<S>) {
    conn.reset_seq();
    if conn.write_packet(&[COM_QUIT]).await.is_ok() {
        conn.drain_until_closed().await;
    }
}
