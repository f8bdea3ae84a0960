//! `kind = "clustercheck"`: the Galera probe deployers serve over HTTP on a side port
//! (49000 in our users' guides; 9200 or 4569 elsewhere). 200 = synced and usable;
//! 503 or anything else, a timeout or a refused connect = not. The responder's body
//! ("Galera cluster node is not synced.") becomes the reason operators see.

use super::http::HttpProbe;
use super::probe::{Probe, ProbeFuture, Target};
use crate::config::HttpCheck;

pub struct ClustercheckProbe(HttpProbe);

impl ClustercheckProbe {
    pub fn new(check: &HttpCheck) -> Result<Self, String> {
        Ok(ClustercheckProbe(HttpProbe::new(check, true)?))
    }
}

impl Probe for ClustercheckProbe {
    fn probe<'a>(&'a self, target: &'a Target) -> ProbeFuture<'a> {
        Box::pin(async move { self.0.probe(target).await.map_err(|e| format!("clustercheck: {e}")) })
    }
}
