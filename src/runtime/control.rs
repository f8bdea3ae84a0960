//! The running process as seen from beside it (admin API, `vipgate reload`): the live
//! snapshot to read, process counters, and a way to ask the supervisor for a reload. The
//! reload itself runs in the supervisor task, which owns listeners and checks.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};

use super::{ProcessStats, ReloadReport, Snapshot};

/// Who asked for a reload (for the log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadSource {
    Signal,
    Api,
}

pub type ReloadReply = oneshot::Sender<Result<ReloadReport, String>>;

#[derive(Clone)]
pub struct Control {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub process: Arc<ProcessStats>,
    reload_tx: mpsc::Sender<(ReloadSource, ReloadReply)>,
}

impl Control {
    pub fn new(
        snapshot: Arc<ArcSwap<Snapshot>>,
        process: Arc<ProcessStats>,
    ) -> (Control, mpsc::Receiver<(ReloadSource, ReloadReply)>) {
        let (reload_tx, rx) = mpsc::channel(16);
        (Control { snapshot, process, reload_tx }, rx)
    }

    /// Re-read and apply the config file; Err carries the reason (`FILE:LINE:COL: ...`
    /// lines for an invalid file) and nothing changed.
    pub async fn reload(&self, source: ReloadSource) -> Result<ReloadReport, String> {
        let (tx, rx) = oneshot::channel();
        self.reload_tx.send((source, tx)).await.map_err(|_| "vipgate is shutting down".to_string())?;
        rx.await.map_err(|_| "vipgate is shutting down".to_string())?
    }
}
