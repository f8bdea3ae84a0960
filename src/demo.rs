//! `vipgate demo`: placeholder replaced below.
pub async fn run(_bind: std::net::SocketAddr, _once: bool) -> Result<(), String> { Ok(()) }
