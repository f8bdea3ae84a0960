//! vipgate's own HTTP/1.1 engine.

pub mod headers;
