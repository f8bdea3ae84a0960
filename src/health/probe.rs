//! The one interface every probe kind implements.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;

/// Where and how to probe one server.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Check address and port (overrides applied).
    pub addr: SocketAddr,
    /// Local address to probe from, as the traffic goes.
    pub source: Option<IpAddr>,
}

/// `Ok(detail)` = usable, with what was seen ("HTTP 200", "Galera cluster node is
/// synced."); `Err(reason)` = not usable, and why.
pub type Verdict = Result<String, String>;

pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Verdict> + Send + 'a>>;

/// One kind of health probe. The scheduler bounds every call by the check's timeout.
pub trait Probe: Send + Sync {
    fn probe<'a>(&'a self, target: &'a Target) -> ProbeFuture<'a>;
}
