//! The supervisor: one process's life around the runtime. It starts the services (from
//! handed-over listeners after an upgrade), tells systemd, serves the admin endpoint, and
//! then waits: SIGHUP or the admin API reload, SIGUSR2 hands over to a new binary,
//! SIGTERM/SIGINT drain and exit. `main.rs` only parses the command line and calls
//! [`run`]. It sits on top of everything: it uses the runtime and the admin endpoint,
//! and neither uses it (the admin endpoint asks for a reload through
//! [`crate::runtime::Control`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tracing::{error, info, warn};

use crate::config::{self, Config};
use crate::runtime::signals::{Sig, Signals};
use crate::runtime::{self, sdnotify, upgrade, Control, Loaded, ReloadError, ReloadReport, ReloadSource, Running};

/// How the wait ended.
enum Ending {
    /// SIGTERM or SIGINT: drain and exit.
    Signal(&'static str),
    /// A new process took the listeners over: drain and exit, the service runs on.
    Upgraded,
}

/// Worker threads: `VIPGATE_WORKERS`, else `[global] workers`, else one per CPU.
pub fn workers(cfg: &Config) -> Result<usize, String> {
    if let Ok(v) = std::env::var("VIPGATE_WORKERS") {
        return match v.trim().parse::<usize>() {
            Ok(n) if (1..=1024).contains(&n) => Ok(n),
            _ => Err(format!("VIPGATE_WORKERS=\"{v}\" is not a whole number from 1 to 1024")),
        };
    }
    Ok(cfg.global.workers.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)))
}

/// One worker runs everything on the main thread with tokio's current-thread scheduler,
/// as HAProxy's `nbthread 1` does: no work-stealing queues, no cross-thread wakeups
/// (measured in benches/load S2). Blocking work (an upgrade's hand-over) still goes to
/// tokio's blocking pool.
pub fn build_runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if workers == 1 {
        return tokio::runtime::Builder::new_current_thread().thread_name("vipgate-worker").enable_all().build();
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("vipgate-worker")
        .enable_all()
        .build()
}

pub fn run(path: PathBuf, cfg: Config) -> ExitCode {
    let n = match workers(&cfg) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("vipgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match build_runtime(n) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vipgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let mut signals = match Signals::install() {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "cannot install signal handlers");
                return ExitCode::FAILURE;
            }
        };
        info!(version = env!("CARGO_PKG_VERSION"), workers = n, services = cfg.services.len(), "starting");
        for w in config::loose_secret_files(&cfg) {
            warn!("{w}");
        }
        let exec = upgrade::Exec::current().ok();
        let inherited = match upgrade::inherit() {
            Ok(i) => i,
            Err(e) => {
                error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let (handed, notify) = match inherited {
            Some(i) => {
                let (listeners, notify) = i.split();
                (listeners, Some(notify))
            }
            None => (Default::default(), None),
        };
        let mut running = tokio::select! {
            r = runtime::start_with(&cfg, handed) => match r {
                Ok(r) => r,
                Err(e) => {
                    error!("{e}");
                    return ExitCode::FAILURE;
                }
            },
            sig = signals.terminate() => {
                info!(signal = sig, "signal during startup; exiting");
                return ExitCode::SUCCESS;
            }
        };
        let status = format!("serving {} services", cfg.services.len());
        match notify {
            Some(notify) => {
                notify.ready();
                sdnotify::main_pid_ready(&status);
            }
            None => sdnotify::ready(&status),
        }
        let process = running.process();
        if let Ok(mut h) = process.config_hash.lock() {
            *h = file_hash(&path);
        }
        let (control, mut reloads) = Control::new(running.snapshot_handle(), process);
        if let Some(admin) = cfg.admin.clone() {
            let control = control.clone();
            tokio::spawn(async move {
                let bind = admin.bind;
                if let Err(e) = crate::admin::serve(admin, control).await {
                    error!(bind = %bind, error = %e, "admin endpoint failed");
                }
            });
        }
        let ending = loop {
            tokio::select! {
                sig = signals.next() => match sig {
                    Sig::Stop(sig) => break Ending::Signal(sig),
                    Sig::Reload => {
                        let _ = reload(&path, &mut running, ReloadSource::Signal).await;
                    }
                    Sig::Upgrade => {
                        let Some(exec) = exec.as_ref() else {
                            error!("upgrade: the binary's path was not known at start; upgrade refused");
                            continue;
                        };
                        // Ready once the new process has run its first health-check round.
                        let within = Duration::from_secs(60);
                        let listeners = match running.listener_fds() {
                            Ok(l) => l,
                            Err(e) => {
                                error!("upgrade refused; this process keeps serving: {e}");
                                continue;
                            }
                        };
                        match upgrade::hand_over(exec, listeners, within).await {
                            Ok(pid) => {
                                info!(pid, "upgrade: the new process accepts; this one stops accepting and drains");
                                break Ending::Upgraded;
                            }
                            Err(e) => error!("upgrade failed; this process keeps serving: {e}"),
                        }
                    }
                },
                Some((source, reply)) = reloads.recv() => {
                    let outcome = reload(&path, &mut running, source).await;
                    let _ = reply.send(outcome);
                }
            }
        };
        match ending {
            Ending::Signal(sig) => {
                info!(signal = sig, "shutting down");
                sdnotify::stopping();
            }
            // The new process is systemd's main PID now, and the service runs on.
            Ending::Upgraded => info!(signal = "upgrade", "shutting down"),
        }
        let grace = running.config().global.grace;
        running.shutdown(grace).await;
        ExitCode::SUCCESS
    })
}

/// Re-read `path` and switch to it; an invalid file or a failed switch leaves the running
/// config in place, is logged and counted, and is the error returned.
async fn reload(path: &Path, running: &mut Running, source: ReloadSource) -> Result<ReloadReport, ReloadError> {
    let process = running.process();
    process.reloads_total.fetch_add(1, Relaxed);
    sdnotify::reloading();
    // Reading the file and resolving its names is blocking I/O: off the workers, so a
    // slow DNS answer stalls no connection (with `workers = 1` they all share one thread).
    let file = path.to_path_buf();
    // Certificates and CA files too: the snapshot is then built without a read.
    let loaded = tokio::task::spawn_blocking(move || {
        let cfg = config::load(&file).map_err(ReloadError::Config)?;
        for w in config::loose_secret_files(&cfg) {
            warn!("{w}");
        }
        Loaded::read(cfg).map_err(ReloadError::Apply)
    })
    .await
    .map_err(|e| ReloadError::Internal(format!("loading the config: {e}")))
    .and_then(|r| r);
    let outcome = match loaded {
        Err(e) => Err(e),
        Ok(loaded) => running.reload(loaded).await.map_err(ReloadError::Apply),
    };
    match &outcome {
        Ok(r) => {
            if let Ok(mut h) = process.config_hash.lock() {
                *h = file_hash(path);
            }
            if let Ok(mut last) = process.last_reload_error.lock() {
                *last = None;
            }
            info!(?source, generation = r.generation, services = r.services, binds_added = ?r.binds_added,
                binds_removed = ?r.binds_removed, servers_added = r.servers_added, servers_removed = r.servers_removed,
                "config reloaded");
            sdnotify::ready(&format!("serving {} services, config generation {}", r.services, r.generation));
        }
        Err(e) => {
            process.reloads_failed.fetch_add(1, Relaxed);
            if let Ok(mut last) = process.last_reload_error.lock() {
                *last = Some(e.to_string());
            }
            error!(?source, "reload failed; the running config stays:\n{e}");
            // Still serving, on the previous config.
            sdnotify::ready("reload failed; serving the previous config");
        }
    }
    outcome
}

/// SHA-1 of the config file as read now (hex), for metrics and the API.
fn file_hash(path: &Path) -> String {
    use sha1::{Digest, Sha1};
    match std::fs::read(path) {
        Ok(bytes) => Sha1::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect(),
        Err(_) => String::new(),
    }
}
