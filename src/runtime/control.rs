//! The running process as seen from beside it (admin API, `vipgate reload`): the live
//! snapshot to read, process counters, and a way to ask the supervisor for a reload. The
//! reload itself runs in the supervisor task, which owns listeners and checks.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};

use super::{ProcessStats, ReloadReport, RunError, Snapshot};
use crate::config::ConfigError;

/// Who asked for a reload (for the log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadSource {
    Signal,
    Api,
}

/// Why a reload changed nothing.
#[derive(Debug)]
pub enum ReloadError {
    /// The file is unreadable or invalid (`FILE:LINE:COL: problem`, every one).
    Config(ConfigError),
    /// A valid file could not be applied: a bind, certificates, a check's TLS.
    Apply(RunError),
    /// The process is stopping (or upgrading) and takes no reload.
    ShuttingDown,
    /// Something of vipgate's own failed on the way.
    Internal(String),
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::Config(e) => write!(f, "{e}"),
            ReloadError::Apply(e) => write!(f, "{e}"),
            ReloadError::ShuttingDown => f.write_str("vipgate is shutting down"),
            ReloadError::Internal(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for ReloadError {}

pub type ReloadReply = oneshot::Sender<Result<ReloadReport, ReloadError>>;

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

    /// Re-read and apply the config file; on an error nothing changed.
    pub async fn reload(&self, source: ReloadSource) -> Result<ReloadReport, ReloadError> {
        let (tx, rx) = oneshot::channel();
        self.reload_tx.send((source, tx)).await.map_err(|_| ReloadError::ShuttingDown)?;
        rx.await.map_err(|_| ReloadError::ShuttingDown)?
    }
}
