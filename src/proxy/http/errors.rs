//! The responses vipgate writes itself: short, honest, and never cached.

use http::{header, HeaderValue, Response, StatusCode};

use super::body::{full, ProxyBody};

/// A plain-text response for `status` with one line saying why.
pub fn response(status: StatusCode, why: &str) -> Response<ProxyBody> {
    let text = format!("{} {}\n{why}\n", status.as_u16(), status.canonical_reason().unwrap_or(""));
    let mut resp = Response::new(full(text));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The same response as raw HTTP/1.1 bytes, for answers written before hyper has the
/// connection (408 on a slow first head, 431 on an oversized one). The connection closes.
pub fn raw(status: StatusCode, why: &str) -> Vec<u8> {
    let text = format!("{} {}\n{why}\n", status.as_u16(), status.canonical_reason().unwrap_or(""));
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncache-control: no-store\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{text}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        text.len()
    )
    .into_bytes()
}
