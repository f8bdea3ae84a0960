//! The small grammar pieces of header values that several rules share.

/// The non-empty, whitespace-trimmed elements of a comma-separated header value.
pub(super) fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows).filter(|t| !t.is_empty())
}

/// `b` without the optional whitespace (RFC 9110 OWS) around it.
pub(super) fn trim_ows(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

/// A byte allowed in an RFC 9110 token.
pub(super) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
