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
    /// Serve the Galera clustercheck probe (HTTP, 200 = synced, 503 = not) for the local MariaDB.
    ///
    /// Credentials come from --credentials-file (my.cnf style: user=, password=) or the
    /// environment (MYSQL_USERNAME, MYSQL_PASSWORD), never from the command line.
    Clustercheck(ClustercheckArgs),
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

#[derive(clap::Args)]
struct ClustercheckArgs {
    /// Address to answer probes on.
    #[arg(long, default_value = "0.0.0.0:49000")]
    listen: std::net::SocketAddr,
    /// MariaDB address (env MYSQL_HOST / MYSQL_PORT).
    #[arg(long, env = "MYSQL_HOST", default_value = "127.0.0.1")]
    mysql_host: std::net::IpAddr,
    #[arg(long, env = "MYSQL_PORT", default_value_t = 3306)]
    mysql_port: u16,
    /// Connect over this unix socket instead of TCP.
    #[arg(long)]
    mysql_socket: Option<PathBuf>,
    /// my.cnf-style file with user= and password= (else MYSQL_USERNAME / MYSQL_PASSWORD).
    #[arg(long)]
    credentials_file: Option<PathBuf>,
    /// A donor/desynced node (wsrep_local_state 2) counts as synced (env AVAILABLE_WHEN_DONOR=1).
    #[arg(long, env = "AVAILABLE_WHEN_DONOR", value_parser = parse_flag, default_value = "0", action = clap::ArgAction::Set)]
    available_when_donor: bool,
    /// A read_only node counts as synced (env AVAILABLE_WHEN_READONLY; default 1, as the script).
    #[arg(long, env = "AVAILABLE_WHEN_READONLY", value_parser = parse_flag, default_value = "1", action = clap::ArgAction::Set)]
    available_when_readonly: bool,
    /// How long one verdict answers every probe.
    #[arg(long, default_value = "1s", value_parser = parse_duration_arg)]
    cache: std::time::Duration,
    /// Bound on one database check; past it the answer is 503.
    #[arg(long, default_value = "5s", value_parser = parse_duration_arg)]
    timeout: std::time::Duration,
    /// While this file exists, answer 503 "manually disabled".
    #[arg(long)]
    disabled_file: Option<PathBuf>,
}

fn parse_flag(s: &str) -> Result<bool, String> {
    match s {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("\"{s}\" is not 0/1 or true/false")),
    }
}

fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    config::parse_duration(s).map_err(|e| e.to_string())
}

fn clustercheck(args: ClustercheckArgs) -> ExitCode {
    use vipgate::clustercheck::{self, Database, Settings};
    let credentials = match &args.credentials_file {
        Some(path) => clustercheck::read_credentials_file(path),
        None => match std::env::var("MYSQL_USERNAME") {
            Ok(user) => {
                Ok(vipgate::mysql::Credentials { user, password: std::env::var("MYSQL_PASSWORD").unwrap_or_default() })
            }
            Err(_) => {
                Err("no credentials: give --credentials-file, or set MYSQL_USERNAME (and MYSQL_PASSWORD)".to_string())
            }
        },
    };
    let credentials = match credentials {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vipgate clustercheck: {e}");
            return ExitCode::FAILURE;
        }
    };
    let database = match args.mysql_socket {
        Some(path) => Database::Socket(path),
        None => Database::Tcp(std::net::SocketAddr::new(args.mysql_host, args.mysql_port)),
    };
    let settings = Settings {
        listen: args.listen,
        database,
        credentials,
        available_when_donor: args.available_when_donor,
        available_when_readonly: args.available_when_readonly,
        cache: args.cache,
        timeout: args.timeout,
        disabled_file: args.disabled_file,
    };
    let rt = match build_runtime(1) {
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
        tokio::select! {
            r = clustercheck::serve(settings) => match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!(error = %e, "clustercheck responder failed");
                    ExitCode::FAILURE
                }
            },
            sig = signals.terminate() => {
                info!(signal = sig, "stopping");
                ExitCode::SUCCESS
            }
        }
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match config::load(&config) {
            Ok(cfg) => {
                let servers: usize = cfg.services.iter().map(|s| s.servers.len()).sum();
                println!("{}: OK ({} services, {} servers)", config.display(), cfg.services.len(), servers);
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
        Command::Clustercheck(args) => {
            init_logging();
            clustercheck(args)
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
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}

/// Worker threads: `VIPGATE_WORKERS`, else `[global] workers`, else one per CPU.
fn workers(cfg: &Config) -> Result<usize, String> {
    if let Ok(v) = std::env::var("VIPGATE_WORKERS") {
        return match v.trim().parse::<usize>() {
            Ok(n) if (1..=1024).contains(&n) => Ok(n),
            _ => Err(format!("VIPGATE_WORKERS=\"{v}\" is not a whole number from 1 to 1024")),
        };
    }
    Ok(cfg.global.workers.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)))
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
        info!(version = env!("CARGO_PKG_VERSION"), workers = n, services = cfg.services.len(), "starting");
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
