use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing::{error, info};

use vipgate::config::{self, Config};
use vipgate::runtime::{self, signals::Signals};

/// TCP load balancer for OpenStack controller VIPs and Galera.
#[derive(Parser)]
#[command(name = "vipgate", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the balancer in the foreground (logs to stderr).
    Run {
        /// Configuration file (TOML).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate a configuration file: exit 0 if valid, else print FILE:LINE:COL for every problem and exit 1.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Start three local demo backends with vipgate in front and show balancing and failover.
    Demo {
        /// Where the demo balancer listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        bind: std::net::SocketAddr,
        /// Run the scripted tour, then exit instead of serving until Ctrl-C.
        #[arg(long)]
        once: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match config::load(&config) {
            Ok(cfg) => {
                let servers: usize = cfg.services.iter().map(|s| s.servers.len()).sum();
                println!(
                    "{}: OK ({} services, {} servers)",
                    config.display(),
                    cfg.services.len(),
                    servers
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => {
            init_logging();
            let cfg = match config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            run(cfg)
        }
        Command::Demo { bind, once } => {
            init_logging();
            let rt = match build_runtime(2) {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("vipgate: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(vipgate::demo::run(bind, once)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vipgate demo: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VIPGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

/// Worker threads: `VIPGATE_WORKERS`, else `[global] workers`, else one per CPU.
fn workers(cfg: &Config) -> Result<usize, String> {
    if let Ok(v) = std::env::var("VIPGATE_WORKERS") {
        return match v.trim().parse::<usize>() {
            Ok(n) if (1..=1024).contains(&n) => Ok(n),
            _ => Err(format!(
                "VIPGATE_WORKERS=\"{v}\" is not a whole number from 1 to 1024"
            )),
        };
    }
    Ok(cfg.global.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }))
}

fn build_runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("vipgate-worker")
        .enable_all()
        .build()
}

fn run(cfg: Config) -> ExitCode {
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
        info!(
            version = env!("CARGO_PKG_VERSION"),
            workers = n,
            services = cfg.services.len(),
            "starting"
        );
        let running = tokio::select! {
            r = runtime::start(&cfg) => match r {
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
        let sig = signals.terminate().await;
        info!(signal = sig, "shutting down");
        running.shutdown(cfg.global.grace).await;
        ExitCode::SUCCESS
    })
}
