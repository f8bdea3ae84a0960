//! Text-protocol result sets, as answers to COM_QUERY.
//!
//! The answer is an OK packet (no result set), an ERR packet, or: the column count
//! (length-encoded), one column definition per column, an EOF packet, the rows (each
//! column a length-encoded string, 0xFB for NULL), and a closing EOF (or ERR). The client
//! does not ask for CLIENT_DEPRECATE_EOF, so both EOF packets are always there.

use super::packet::{is_eof, parse_err, text, Reader, ERR, OK};
use super::MysqlError;

/// Most columns / rows the probe accepts in one answer; its queries return 2 × ≤ 1.
pub const MAX_COLUMNS: u64 = 64;
pub const MAX_ROWS: usize = 1000;

pub type Row = Vec<Option<String>>;

/// First packet of a query answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryStart {
    /// OK: a statement without a result set.
    Done,
    /// A result set with this many columns follows.
    Columns(u64),
}

pub fn parse_query_start(payload: &[u8]) -> Result<QueryStart, MysqlError> {
    match payload.first() {
        None => Err(MysqlError::Protocol("empty query response".into())),
        Some(&ERR) => Err(parse_err(payload)),
        Some(&OK) => Ok(QueryStart::Done),
        Some(0xFB) => Err(MysqlError::Protocol("LOCAL INFILE request: not supported".into())),
        Some(_) => {
            let mut r = Reader::new(payload);
            let n = r.lenenc_int("column count")?.unwrap_or(0);
            if !r.is_empty() {
                return Err(MysqlError::Protocol("trailing bytes after the column count".into()));
            }
            if n == 0 || n > MAX_COLUMNS {
                return Err(MysqlError::Protocol(format!("result set with {n} columns")));
            }
            Ok(QueryStart::Columns(n))
        }
    }
}

/// One packet after the column definitions: a row, or the end of the rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowPacket {
    Row(Row),
    End,
}

pub fn parse_row_packet(payload: &[u8], columns: u64) -> Result<RowPacket, MysqlError> {
    if is_eof(payload) {
        return Ok(RowPacket::End);
    }
    if payload.first() == Some(&ERR) {
        return Err(parse_err(payload));
    }
    let mut r = Reader::new(payload);
    let mut row = Vec::new();
    for _ in 0..columns {
        row.push(r.lenenc_bytes("row value")?.map(text));
    }
    if !r.is_empty() {
        return Err(MysqlError::Protocol(format!("row has more than {columns} values")));
    }
    Ok(RowPacket::Row(row))
}

/// A column definition: only checked not to be an error or an early EOF.
pub fn check_column_definition(payload: &[u8]) -> Result<(), MysqlError> {
    match payload.first() {
        Some(&ERR) => Err(parse_err(payload)),
        _ if is_eof(payload) => Err(MysqlError::Protocol("result set ended before its column definitions".into())),
        None => Err(MysqlError::Protocol("empty column definition".into())),
        _ => Ok(()),
    }
}

/// The value of `name` in the two-column (`Variable_name`, `Value`) answer of
/// `SHOW ... LIKE`; None when no row names it.
pub fn show_value<'a>(rows: &'a [Row], name: &str) -> Option<&'a str> {
    rows.iter().find_map(|row| match row.as_slice() {
        [Some(n), Some(v), ..] if n.eq_ignore_ascii_case(name) => Some(v.as_str()),
        _ => None,
    })
}

/// `wsrep_local_state`: a number (1 Joining, 2 Donor/Desynced, 3 Joined, 4 Synced).
pub fn parse_wsrep_local_state(v: &str) -> Result<u32, MysqlError> {
    v.trim().parse().map_err(|_| MysqlError::Protocol(format!("wsrep_local_state is not a number: {v:?}")))
}

/// `read_only`: OFF (or 0/FALSE) is writable; ON and anything else (MariaDB 11's
/// NO_LOCK / NO_LOCK_NO_ADMIN are still read-only) is read-only.
pub fn parse_read_only(v: &str) -> Result<bool, MysqlError> {
    let v = v.trim();
    if v.is_empty() {
        return Err(MysqlError::Protocol("read_only has an empty value".into()));
    }
    Ok(!(v.eq_ignore_ascii_case("OFF") || v == "0" || v.eq_ignore_ascii_case("FALSE")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: Vec<u8> = s.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
        s.chunks(2).map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap()).collect()
    }

    /// Payloads (headers removed) of MariaDB 10.11's answer to
    /// `SHOW GLOBAL VARIABLES LIKE 'read_only'`, captured.
    fn read_only_answer() -> Vec<Vec<u8>> {
        [
            "02",
            "0364656612696e666f726d6174696f6e5f736368656d611153455353494f4e5f5641524941424c45531153455353494f4e5f\
             5641524941424c45530d5661726961626c655f6e616d650d5641524941424c455f4e414d450c2100c0000000fd0110000000",
            "0364656612696e666f726d6174696f6e5f736368656d611153455353494f4e5f5641524941424c45531153455353494f4e5f\
             5641524941424c45530556616c75650e5641524941424c455f56414c55450c210000300000fd0110000000",
            "fe00002200",
            "09726561645f6f6e6c79034f4646",
            "fe00002200",
        ]
        .iter()
        .map(|h| hex(h))
        .collect()
    }

    #[test]
    fn captured_read_only_result_set() {
        let p = read_only_answer();
        assert_eq!(parse_query_start(&p[0]).unwrap(), QueryStart::Columns(2));
        check_column_definition(&p[1]).unwrap();
        check_column_definition(&p[2]).unwrap();
        assert!(is_eof(&p[3]));
        let row = match parse_row_packet(&p[4], 2).unwrap() {
            RowPacket::Row(r) => r,
            RowPacket::End => panic!("row expected"),
        };
        assert_eq!(row, vec![Some("read_only".to_string()), Some("OFF".to_string())]);
        assert_eq!(parse_row_packet(&p[5], 2).unwrap(), RowPacket::End);
        assert_eq!(show_value(&[row], "READ_ONLY"), Some("OFF"));
    }

    #[test]
    fn query_starts() {
        assert_eq!(parse_query_start(b"\x00\x00\x00\x02\x00\x00\x00").unwrap(), QueryStart::Done);
        assert!(matches!(
            parse_query_start(b"\xff\x16\x04#3D000No database selected"),
            Err(MysqlError::Server { code: 1046, .. })
        ));
        assert!(parse_query_start(b"").is_err());
        assert!(parse_query_start(b"\xfbfile.csv").is_err());
        assert!(parse_query_start(b"\xfc\x00\x10").is_err()); // 4096 columns
        assert!(parse_query_start(b"\x02\x00").is_err());
        assert!(parse_query_start(b"\xfc\x01").is_err());
    }

    #[test]
    fn rows_with_nulls_long_values_and_errors() {
        assert_eq!(parse_row_packet(b"\xfb\x01x", 2).unwrap(), RowPacket::Row(vec![None, Some("x".to_string())]));
        let mut long = vec![0xFC, 0x2C, 0x01];
        long.extend_from_slice(&[b'a'; 300]);
        match parse_row_packet(&long, 1).unwrap() {
            RowPacket::Row(r) => assert_eq!(r[0].as_deref().map(str::len), Some(300)),
            RowPacket::End => panic!(),
        }
        // A row that begins with 0xFE (8-byte length) is not an EOF.
        let mut big = vec![0xFE, 3, 0, 0, 0, 0, 0, 0, 0];
        big.extend_from_slice(b"abc");
        assert_eq!(parse_row_packet(&big, 1).unwrap(), RowPacket::Row(vec![Some("abc".into())]));
        // Short, long, and error rows.
        assert!(parse_row_packet(b"\x01x", 2).is_err());
        assert!(parse_row_packet(b"\x01x\x01y", 1).is_err());
        assert!(parse_row_packet(b"\x05ab", 1).is_err());
        assert!(matches!(
            parse_row_packet(b"\xff\x7a\x04#HY000Query execution was interrupted", 2),
            Err(MysqlError::Server { code: 1146, .. })
        ));
        assert!(parse_row_packet(b"\xff", 2).is_err());
    }

    #[test]
    fn column_definitions() {
        assert!(check_column_definition(b"\x03def").is_ok());
        assert!(check_column_definition(b"\xfe\x00\x00\x02\x00").is_err());
        assert!(check_column_definition(b"").is_err());
        assert!(matches!(check_column_definition(b"\xff\x10\x04boom"), Err(MysqlError::Server { code: 1040, .. })));
    }

    #[test]
    fn values() {
        let rows =
            vec![vec![Some("wsrep_local_state".to_string()), Some("4".to_string())], vec![None, Some("x".to_string())]];
        assert_eq!(show_value(&rows, "wsrep_local_state"), Some("4"));
        assert_eq!(show_value(&rows, "read_only"), None);
        assert_eq!(show_value(&[], "read_only"), None);
        assert_eq!(parse_wsrep_local_state("4").unwrap(), 4);
        assert_eq!(parse_wsrep_local_state(" 2 ").unwrap(), 2);
        assert!(parse_wsrep_local_state("Synced").is_err());
        assert!(parse_wsrep_local_state("").is_err());
        for (v, want) in [("ON", true), ("OFF", false), ("off", false), ("0", false), ("1", true), ("NO_LOCK", true)] {
            assert_eq!(parse_read_only(v).unwrap(), want, "{v}");
        }
        assert!(parse_read_only("").is_err());
    }
}
