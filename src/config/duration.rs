//! Duration strings as operators write them: "500ms", "5s", "1m", "48h", "1h30m", "0".
//!
//! `"0"` means "no timeout" (as HAProxy's `timeout client 0`), so parsing yields
//! `Option<Duration>` at the call sites that allow it; here we only turn text into a
//! `Duration` and let the caller decide what zero means.

use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError(pub String);

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parse a duration such as `"250ms"`, `"5s"`, `"48h"` or `"1h30m"`; `"0"` is zero.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(DurationError("empty duration (use e.g. \"5s\", \"500ms\", \"48h\", or \"0\" for none)".into()));
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad(text, "expected a number"));
        }
        let (num, after) = rest.split_at(digits);
        let value: u128 = num.parse().map_err(|_| bad(text, "number too large"))?;
        let unit_len = after.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        if unit_len == 0 {
            return Err(bad(text, "missing unit (ms, s, m, h or d)"));
        }
        let (unit, next) = after.split_at(unit_len);
        let nanos_per: u128 = match unit {
            "us" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            "d" => 86_400 * 1_000_000_000,
            other => return Err(bad(text, &format!("unknown unit \"{other}\" (use ms, s, m, h or d)"))),
        };
        total =
            value.checked_mul(nanos_per).and_then(|v| total.checked_add(v)).ok_or_else(|| bad(text, "too large"))?;
        rest = next;
    }
    // Ten years is far beyond any sane timeout; refusing it keeps Instant arithmetic safe.
    const MAX_NANOS: u128 = 10 * 365 * 86_400 * 1_000_000_000;
    if total > MAX_NANOS {
        return Err(bad(text, "too large (at most 10 years)"));
    }
    let secs = (total / 1_000_000_000) as u64;
    let nanos = (total % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

fn bad(text: &str, why: &str) -> DurationError {
    DurationError(format!("bad duration \"{text}\": {why}"))
}

/// Render a duration back in the largest unit that is exact, for logs and docs.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0".into();
    }
    const UNITS: [(&str, u128); 6] = [
        ("d", 86_400_000_000_000),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
    ];
    for (unit, size) in UNITS {
        if nanos % size == 0 {
            return format!("{}{unit}", nanos / size);
        }
    }
    // Below a microsecond: round up so the text never claims zero.
    format!("{}us", nanos.div_ceil(1_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_operator_forms() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("48h").unwrap(), Duration::from_secs(48 * 3600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(2 * 86400));
    }

    #[test]
    fn rejects_garbage_with_reason() {
        for bad in ["", "5", "s", "5x", "-1s", "1.5s", "99999999999999999999999h", "5 s"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.0.contains("duration"), "{bad}: {err}");
        }
    }

    #[test]
    fn formats_round_trip() {
        assert_eq!(format_duration(Duration::from_secs(48 * 3600)), "2d");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        for s in ["500ms", "5s", "1m", "48h", "0", "2d", "1500us"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d, "{s}");
        }
    }
}
