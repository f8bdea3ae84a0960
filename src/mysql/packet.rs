//! Packet framing and the small pure decoders every other part uses.
//!
//! A MySQL packet is a 3-byte little-endian payload length, a 1-byte sequence id, then
//! the payload. The sequence id restarts at 0 with every command and goes up by one per
//! packet in either direction. A payload of exactly 0xFFFFFF bytes would continue in the
//! next packet; nothing a probe reads comes near that, so any payload above
//! [`MAX_PAYLOAD`] is refused before a byte of it is buffered.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout_at, Instant};

use super::MysqlError;

/// Largest payload accepted or sent. A greeting is ~100 bytes and the probe's result
/// sets a few hundred.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// First byte of an OK packet.
pub const OK: u8 = 0x00;
/// First byte of an EOF packet (payload shorter than 9 bytes) or an AuthSwitchRequest.
pub const EOF: u8 = 0xFE;
/// First byte of an ERR packet.
pub const ERR: u8 = 0xFF;

/// Reads a payload front to back; every read is checked, a short payload is an error
/// naming what was being read.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn truncated(what: &str) -> MysqlError {
    MysqlError::Protocol(format!("truncated packet (reading {what})"))
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8], MysqlError> {
        let end = self.pos.checked_add(n).ok_or_else(|| truncated(what))?;
        let out = self.buf.get(self.pos..end).ok_or_else(|| truncated(what))?;
        self.pos = end;
        Ok(out)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        let out = self.buf.get(self.pos..).unwrap_or(&[]);
        self.pos = self.buf.len();
        out
    }

    pub fn u8(&mut self, what: &str) -> Result<u8, MysqlError> {
        Ok(self.bytes(1, what)?[0])
    }

    /// A little-endian unsigned integer of `n` bytes (n ≤ 8).
    pub fn uint(&mut self, n: usize, what: &str) -> Result<u64, MysqlError> {
        let b = self.bytes(n.min(8), what)?;
        Ok(b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    }

    pub fn u16(&mut self, what: &str) -> Result<u16, MysqlError> {
        Ok(self.uint(2, what)? as u16)
    }

    pub fn u32(&mut self, what: &str) -> Result<u32, MysqlError> {
        Ok(self.uint(4, what)? as u32)
    }

    /// Bytes up to a NUL (consumed, not returned). Without a NUL it is an error.
    pub fn nul_terminated(&mut self, what: &str) -> Result<&'a [u8], MysqlError> {
        let rest = self.buf.get(self.pos..).unwrap_or(&[]);
        let n = rest.iter().position(|&b| b == 0).ok_or_else(|| truncated(what))?;
        let out = self.bytes(n, what)?;
        self.pos += 1;
        Ok(out)
    }

    /// Bytes up to a NUL or the end of the payload, whichever comes first (some servers
    /// leave the NUL off the last string of a packet).
    pub fn nul_or_end(&mut self) -> &'a [u8] {
        let rest = self.buf.get(self.pos..).unwrap_or(&[]);
        match rest.iter().position(|&b| b == 0) {
            Some(n) => {
                self.pos += n + 1;
                &rest[..n]
            }
            None => self.rest(),
        }
    }

    /// A length-encoded integer; `None` is the NULL marker 0xFB (only meaningful in a
    /// result-set row). 0xFF is not a valid first byte.
    pub fn lenenc_int(&mut self, what: &str) -> Result<Option<u64>, MysqlError> {
        match self.u8(what)? {
            b @ 0..=0xFA => Ok(Some(u64::from(b))),
            0xFB => Ok(None),
            0xFC => Ok(Some(self.uint(2, what)?)),
            0xFD => Ok(Some(self.uint(3, what)?)),
            0xFE => Ok(Some(self.uint(8, what)?)),
            0xFF => Err(MysqlError::Protocol(format!("invalid length-encoded integer (reading {what})"))),
        }
    }

    /// A length-encoded string; `None` is SQL NULL.
    pub fn lenenc_bytes(&mut self, what: &str) -> Result<Option<&'a [u8]>, MysqlError> {
        match self.lenenc_int(what)? {
            None => Ok(None),
            Some(n) => {
                let n = usize::try_from(n).map_err(|_| truncated(what))?;
                Ok(Some(self.bytes(n, what)?))
            }
        }
    }
}

/// Text from the wire: invalid UTF-8 is replaced, not rejected.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// An ERR packet payload (first byte 0xFF) as `MysqlError::Server`. The `#` + 5-byte
/// SQLSTATE after the code is optional: servers leave it out of errors sent before the
/// handshake is done (e.g. "Host ... is blocked" in place of the greeting).
pub fn parse_err(payload: &[u8]) -> MysqlError {
    let mut r = Reader::new(payload);
    match (r.u8("error header"), r.u16("error code")) {
        (Ok(ERR), Ok(code)) => {
            if r.peek() == Some(b'#') && r.remaining() >= 6 {
                let _ = r.bytes(6, "sqlstate");
            }
            MysqlError::Server { code, message: text(r.rest()) }
        }
        _ => MysqlError::Protocol("malformed ERR packet".into()),
    }
}

/// What an OK packet says (the fields a probe might want to look at).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OkPacket {
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
}

/// An OK packet payload (first byte 0x00).
pub fn parse_ok(payload: &[u8]) -> Result<OkPacket, MysqlError> {
    let mut r = Reader::new(payload);
    if r.u8("OK header")? != OK {
        return Err(MysqlError::Protocol("expected an OK packet".into()));
    }
    let affected_rows = r.lenenc_int("affected rows")?.unwrap_or(0);
    let last_insert_id = r.lenenc_int("last insert id")?.unwrap_or(0);
    // Status and warnings are there with CLIENT_PROTOCOL_41, which the client insists on.
    let status = r.u16("status flags")?;
    let warnings = r.u16("warnings")?;
    Ok(OkPacket { affected_rows, last_insert_id, status, warnings })
}

/// True for an EOF packet: 0xFE and shorter than 9 bytes (a row may begin with 0xFE, the
/// prefix of an 8-byte length, but is then at least 9 bytes long).
pub fn is_eof(payload: &[u8]) -> bool {
    payload.first() == Some(&EOF) && payload.len() < 9
}

/// A frame of the conversation: a stream, the sequence id expected next, and the one
/// deadline every read and write of the conversation is bounded by.
pub struct Conn<S> {
    stream: S,
    seq: u8,
    deadline: Instant,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub fn new(stream: S, deadline: Instant) -> Self {
        Conn { stream, seq: 0, deadline }
    }

    /// A new command starts: the sequence restarts at 0.
    pub fn reset_seq(&mut self) {
        self.seq = 0;
    }

    /// Read one packet and return its payload; its sequence id must be the expected one.
    pub async fn read_packet(&mut self) -> Result<Vec<u8>, MysqlError> {
        let mut header = [0u8; 4];
        self.read_exact(&mut header).await?;
        let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
        if len > MAX_PAYLOAD {
            return Err(MysqlError::Protocol(format!(
                "packet of {len} bytes is larger than the {MAX_PAYLOAD}-byte limit (not a MySQL server?)"
            )));
        }
        if header[3] != self.seq {
            return Err(MysqlError::Protocol(format!(
                "packet out of order: sequence id {} where {} was expected",
                header[3], self.seq
            )));
        }
        self.seq = self.seq.wrapping_add(1);
        let mut payload = vec![0u8; len];
        self.read_exact(&mut payload).await?;
        Ok(payload)
    }

    /// Send one packet with the next sequence id.
    pub async fn write_packet(&mut self, payload: &[u8]) -> Result<(), MysqlError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(MysqlError::Protocol(format!("refusing to send a {}-byte packet", payload.len())));
        }
        let len = payload.len() as u32;
        let mut frame = Vec::with_capacity(4 + payload.len());
        frame.extend_from_slice(&len.to_le_bytes()[..3]);
        frame.push(self.seq);
        frame.extend_from_slice(payload);
        self.seq = self.seq.wrapping_add(1);
        match timeout_at(self.deadline, async {
            self.stream.write_all(&frame).await?;
            self.stream.flush().await
        })
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(MysqlError::from(e)),
            Err(_) => Err(MysqlError::Timeout),
        }
    }

    async fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), MysqlError> {
        match timeout_at(self.deadline, self.stream.read_exact(buf)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(MysqlError::Closed),
            Ok(Err(e)) => Err(MysqlError::from(e)),
            Err(_) => Err(MysqlError::Timeout),
        }
    }

    /// After COM_QUIT: wait (until the deadline at most) for the server to close its
    /// side, so the conversation ends with the server's own close. Errors no longer matter.
    pub async fn drain_until_closed(&mut self) {
        let mut sink = [0u8; 512];
        // MariaDB closes at once after COM_QUIT; a server that does not must not hold the
        // probe for its whole timeout.
        let until = self.deadline.min(Instant::now() + std::time::Duration::from_secs(1));
        let _ = timeout_at(until, async {
            loop {
                match self.stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_ints_of_every_width() {
        let cases: &[(&[u8], Option<u64>)] = &[
            (&[0x00], Some(0)),
            (&[0xFA], Some(250)),
            (&[0xFB], None),
            (&[0xFC, 0xFB, 0x00], Some(251)),
            (&[0xFC, 0xFF, 0xFF], Some(65535)),
            (&[0xFD, 0x00, 0x00, 0x01], Some(65536)),
            (&[0xFE, 1, 2, 3, 4, 5, 6, 7, 8], Some(0x0807060504030201)),
        ];
        for (bytes, want) in cases {
            let mut r = Reader::new(bytes);
            assert_eq!(r.lenenc_int("x").unwrap(), *want, "{bytes:?}");
            assert!(r.is_empty());
        }
        for bad in [&[0xFF][..], &[], &[0xFC, 1], &[0xFD, 1, 2], &[0xFE, 1, 2, 3, 4, 5, 6, 7]] {
            assert!(matches!(Reader::new(bad).lenenc_int("x"), Err(MysqlError::Protocol(_))), "{bad:?}");
        }
    }

    #[test]
    fn lenenc_strings_and_null() {
        let mut r = Reader::new(b"\x03abc\xfb\x00\xfc\x02\x00hi");
        assert_eq!(r.lenenc_bytes("s").unwrap(), Some(&b"abc"[..]));
        assert_eq!(r.lenenc_bytes("s").unwrap(), None);
        assert_eq!(r.lenenc_bytes("s").unwrap(), Some(&b""[..]));
        assert_eq!(r.lenenc_bytes("s").unwrap(), Some(&b"hi"[..]));
        assert!(r.is_empty());
        // A length running past the end, and a huge 8-byte length.
        assert!(Reader::new(b"\x05abc").lenenc_bytes("s").is_err());
        assert!(Reader::new(b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff").lenenc_bytes("s").is_err());
    }

    #[test]
    fn nul_terminated_strings() {
        let mut r = Reader::new(b"abc\0def");
        assert_eq!(r.nul_terminated("s").unwrap(), b"abc");
        assert!(r.clone().nul_terminated("s").is_err());
        assert_eq!(r.nul_or_end(), b"def");
        assert!(r.is_empty());
        assert_eq!(r.nul_or_end(), b"");
    }

    #[test]
    fn err_packets_with_and_without_sqlstate() {
        // From MariaDB 10.11: an unknown table without a default database.
        let p = b"\xff\x16\x04#3D000No database selected";
        match parse_err(p) {
            MysqlError::Server { code, message } => {
                assert_eq!((code, message.as_str()), (1046, "No database selected"))
            }
            e => panic!("{e:?}"),
        }
        // Before the handshake the server sends no SQLSTATE.
        match parse_err(b"\xff\x10\x04Too many connections") {
            MysqlError::Server { code, message } => {
                assert_eq!((code, message.as_str()), (1040, "Too many connections"))
            }
            e => panic!("{e:?}"),
        }
        // Code only, empty message; then truncated ones.
        assert!(matches!(parse_err(b"\xff\x15\x04"), MysqlError::Server { code: 1045, .. }));
        assert!(matches!(parse_err(b"\xff\x15"), MysqlError::Protocol(_)));
        assert!(matches!(parse_err(b""), MysqlError::Protocol(_)));
        assert!(matches!(parse_err(b"\x00\x15\x04"), MysqlError::Protocol(_)));
    }

    #[test]
    fn ok_and_eof_packets() {
        // The OK after a MariaDB 10.11 login: 0 rows, 0 id, SERVER_STATUS_AUTOCOMMIT.
        let ok = parse_ok(b"\x00\x00\x00\x02\x00\x00\x00").unwrap();
        assert_eq!(ok, OkPacket { affected_rows: 0, last_insert_id: 0, status: 2, warnings: 0 });
        let ok = parse_ok(b"\x00\xfc\x00\x01\x05\x22\x00\x01\x00info").unwrap();
        assert_eq!((ok.affected_rows, ok.last_insert_id, ok.status, ok.warnings), (256, 5, 0x22, 1));
        assert!(parse_ok(b"\x00\x00\x00\x02").is_err());
        assert!(parse_ok(b"").is_err());
        assert!(parse_ok(b"\xff\x00\x00\x02\x00\x00\x00").is_err());

        assert!(is_eof(b"\xfe\x00\x00\x22\x00"));
        assert!(is_eof(b"\xfe"));
        assert!(!is_eof(b"\xfe\x00\x00\x00\x00\x00\x00\x00\x00"));
        assert!(!is_eof(b"\x00\x00\x00\x02\x00"));
        assert!(!is_eof(b""));
    }

    #[tokio::test]
    async fn framing_checks_sequence_size_and_eof() {
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        // Two packets, sequence 0 then 1.
        let (a, mut b) = tokio::io::duplex(4096);
        b.write_all(b"\x02\x00\x00\x00hi\x00\x00\x00\x01").await.unwrap();
        let mut c = Conn::new(a, deadline);
        assert_eq!(c.read_packet().await.unwrap(), b"hi");
        assert_eq!(c.read_packet().await.unwrap(), b"");
        drop(b);
        assert!(matches!(c.read_packet().await, Err(MysqlError::Closed)));

        // Wrong sequence id.
        let (a, mut b) = tokio::io::duplex(4096);
        b.write_all(b"\x01\x00\x00\x05x").await.unwrap();
        assert!(matches!(Conn::new(a, deadline).read_packet().await, Err(MysqlError::Protocol(_))));

        // Too large, before anything is buffered: "HTTP" read as a header.
        let (a, mut b) = tokio::io::duplex(4096);
        b.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        assert!(matches!(Conn::new(a, deadline).read_packet().await, Err(MysqlError::Protocol(_))));

        // Truncated payload.
        let (a, mut b) = tokio::io::duplex(4096);
        b.write_all(b"\x09\x00\x00\x00abc").await.unwrap();
        drop(b);
        assert!(matches!(Conn::new(a, deadline).read_packet().await, Err(MysqlError::Closed)));

        // Written frames carry the length and the running sequence id.
        let (a, mut b) = tokio::io::duplex(4096);
        let mut c = Conn::new(a, deadline);
        c.write_packet(b"\x01").await.unwrap();
        c.write_packet(b"ab").await.unwrap();
        let mut got = [0u8; 11];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"\x01\x00\x00\x00\x01\x02\x00\x00\x01ab");
    }

    #[tokio::test]
    async fn reads_are_bounded_by_the_deadline() {
        let (a, mut b) = tokio::io::duplex(4096);
        b.write_all(b"\x05\x00\x00\x00ab").await.unwrap(); // and then nothing
        let mut c = Conn::new(a, Instant::now() + std::time::Duration::from_millis(100));
        assert!(matches!(c.read_packet().await, Err(MysqlError::Timeout)));
    }
}
