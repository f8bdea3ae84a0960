//! Process signals the balancer reacts to. Handlers are installed before anything
//! starts, so a SIGTERM that arrives during startup still means "drain and exit 0".

use std::io;

#[cfg(unix)]
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
}

/// What a signal asks of the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    /// SIGTERM / SIGINT: drain and exit.
    Stop(&'static str),
    /// SIGHUP: reload the config.
    Reload,
    /// SIGUSR2: hand over to a new binary.
    Upgrade,
}

#[cfg(unix)]
impl Signals {
    pub fn install() -> io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }

    pub async fn next(&mut self) -> Sig {
        tokio::select! {
            _ = self.term.recv() => Sig::Stop("SIGTERM"),
            _ = self.int.recv() => Sig::Stop("SIGINT"),
            _ = self.hup.recv() => Sig::Reload,
            _ = self.usr2.recv() => Sig::Upgrade,
        }
    }

    /// Resolves on SIGTERM or SIGINT, naming which.
    pub async fn terminate(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

#[cfg(not(unix))]
pub struct Signals;

#[cfg(not(unix))]
impl Signals {
    pub fn install() -> io::Result<Self> {
        Ok(Signals)
    }
    pub async fn terminate(&mut self) -> &'static str {
        let _ = tokio::signal::ctrl_c().await;
        "ctrl-c"
    }
    pub async fn next(&mut self) -> Sig {
        Sig::Stop(self.terminate().await)
    }
}
