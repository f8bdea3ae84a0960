//! The command-line verbs (`run`, `check`, `import-haproxy`, `clustercheck`, `status`,
//! `reload`, `upgrade`, `demo`): clap's description of them and what each one does. It
//! sits on top of the house with the supervisor, so the binary is only `parse` and `run`,
//! and tests can drive a verb without a process.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing::{error, info, warn};

use crate::config;
use crate::runtime;
use crate::supervisor;

/// TCP load balancer for OpenStack controller VIPs and Galera.
#[derive(Parser)]
#[command(name = "vipgate", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the balancer in the foreground (logs to stderr).
    Run {
        /// Configuration file (TOML). Default: the VIPGATE_CONFIG environment variable.
        #[arg(short, long, env = "VIPGATE_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration file: exit 0 if valid, else print FILE:LINE:COL for every problem and exit 1.
    Check {
        #[arg(short, long, env = "VIPGATE_CONFIG")]
        config: PathBuf,
    },
    /// Translate a haproxy.cfg into vipgate TOML on stdout; every directive not translated
    /// is reported on stderr as FILE:LINE.
    ImportHaproxy {
        /// The haproxy.cfg to read.
        file: PathBuf,
        /// Exit 1 if any directive could not be translated (notes about things vipgate does
        /// its own way do not count).
        #[arg(long)]
        strict: bool,
    },
    /// Serve the Galera clustercheck probe (HTTP, 200 = synced, 503 = not) for the local MariaDB.
    ///
    /// Credentials come from --credentials-file (my.cnf style: user=, password= in its
    /// [client] section) or the environment (MYSQL_USERNAME, MYSQL_PASSWORD), never from
    /// the command line.
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
    /// Hand over to the binary now at the running vipgate's path without refusing a connect
    /// (sends it SIGUSR2; see README "Hitless upgrade").
    Upgrade {
        /// Process id of the running vipgate.
        #[arg(long, required_unless_present = "config")]
        pid: Option<i32>,
        /// Or its configuration file: its [admin] endpoint names the process.
        #[arg(short, long, env = "VIPGATE_CONFIG")]
        config: Option<PathBuf>,
        /// Ask this admin endpoint instead: IP:PORT, or the admin unix socket's path.
        #[arg(long)]
        admin: Option<String>,
    },
    /// Show every service and server of the running vipgate, through its admin API.
    Status {
        /// The running vipgate's configuration file: its [admin] table says where to ask.
        #[arg(short, long, env = "VIPGATE_CONFIG")]
        config: PathBuf,
        /// Ask here instead: IP:PORT, or the path of the admin unix socket.
        #[arg(long)]
        admin: Option<String>,
    },
    /// Ask the running vipgate to re-read its configuration file; exit 1 with the problems if it refused.
    Reload {
        /// The running vipgate's configuration file: its [admin] table says where to ask.
        #[arg(short, long, env = "VIPGATE_CONFIG")]
        config: PathBuf,
        /// Ask here instead: IP:PORT, or the path of the admin unix socket.
        #[arg(long)]
        admin: Option<String>,
    },
}

#[derive(clap::Args)]
pub struct ClustercheckArgs {
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
    /// my.cnf-style file with user= and password= in its [client] section (else
    /// MYSQL_USERNAME / MYSQL_PASSWORD).
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
    /// Connections served at once; more are closed at accept (never queued).
    #[arg(long, default_value_t = crate::clustercheck::DEFAULT_MAX_CONNECTIONS,
        value_parser = clap::value_parser!(u16).range(1..))]
    max_connections: u16,
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
    use crate::clustercheck::{self, Database, Settings};
    let credentials = match &args.credentials_file {
        Some(path) => {
            if let Some(w) = config::loose_secret_file("clustercheck credentials file", path, config::Readers::Owner) {
                warn!("{w}");
            }
            clustercheck::read_credentials_file(path)
        }
        None => match std::env::var("MYSQL_USERNAME") {
            Ok(user) => {
                Ok(crate::mysql::Credentials { user, password: std::env::var("MYSQL_PASSWORD").unwrap_or_default() })
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
        max_connections: usize::from(args.max_connections),
    };
    let rt = match supervisor::build_runtime(1) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vipgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let mut signals = match runtime::signals::Signals::install() {
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

/// Run the verb the command line names; the exit code is the process's.
pub fn run(cli: Cli) -> ExitCode {
    dispatch(cli)
}

fn dispatch(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Check { config } => match config::load_with_warnings(&config) {
            Ok((cfg, warnings)) => {
                for w in warnings {
                    eprintln!("{w}");
                }
                for w in config::loose_secret_files(&cfg) {
                    eprintln!("{}: warning: {w}", config.display());
                }
                let servers: usize = cfg.services.iter().map(|s| s.servers.len()).sum();
                println!("{}: OK ({} services, {} servers)", config.display(), cfg.services.len(), servers);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::ImportHaproxy { file, strict } => import_haproxy(&file, strict),
        Command::Run { config } => {
            init_logging();
            let cfg = match config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            supervisor::run(config, cfg)
        }
        Command::Clustercheck(args) => {
            init_logging();
            clustercheck(args)
        }
        Command::Upgrade { pid, config, admin } => {
            let pid = match (pid, config) {
                (Some(pid), _) => pid,
                (None, Some(config)) => match crate::admin::client::pid(&config, admin.as_deref()) {
                    Ok(pid) => pid as i32,
                    Err(e) => {
                        eprintln!("vipgate {e}");
                        return ExitCode::FAILURE;
                    }
                },
                (None, None) => {
                    eprintln!("vipgate upgrade: give --pid or --config");
                    return ExitCode::FAILURE;
                }
            };
            upgrade(pid)
        }
        Command::Status { config, admin } => admin_command(crate::admin::client::status(&config, admin.as_deref())),
        Command::Reload { config, admin } => admin_command(crate::admin::client::reload(&config, admin.as_deref())),
        Command::Demo { bind, once } => {
            init_logging();
            let rt = match supervisor::build_runtime(2) {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("vipgate: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(crate::demo::run(bind, once)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vipgate demo: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `status` and `reload`: the answer on stdout and exit 0, or the error on stderr and exit 1.
fn admin_command(outcome: Result<String, String>) -> ExitCode {
    match outcome {
        Ok(text) => {
            println!("{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn import_haproxy(file: &Path, strict: bool) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("vipgate: cannot read {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let imported = crate::import::import(&text);
    print!("{}", imported.toml);
    for r in &imported.reports {
        eprintln!("{}:{r}", file.display());
    }
    let lost = imported.untranslated().count();
    let mut ok = !(strict && lost > 0);
    if strict && lost > 0 {
        eprintln!("vipgate: {lost} directive(s) not translated (--strict)");
    }
    // The output must be a config vipgate accepts; say so now if it is not.
    if let Err(e) = config::parse(&imported.toml, "(translation)") {
        eprintln!("vipgate: the translation does not pass `vipgate check`:\n{e}");
        ok = false;
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Logs go to stderr: `key=value` text, or one JSON object per line with
/// `VIPGATE_LOG_FORMAT=json` (container log collectors). `VIPGATE_LOG` filters.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VIPGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let format = std::env::var("VIPGATE_LOG_FORMAT").unwrap_or_default();
    match format.trim().to_ascii_lowercase().as_str() {
        "json" => {
            tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .init();
        }
        other => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
            if !matches!(other, "" | "text") {
                tracing::warn!(value = other, "VIPGATE_LOG_FORMAT is neither \"text\" nor \"json\"; logging text");
            }
        }
    }
}

/// `vipgate upgrade --pid PID`: SIGUSR2 to a running vipgate (checked to be one).
fn upgrade(pid: i32) -> ExitCode {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() != "vipgate" {
        eprintln!("vipgate upgrade: process {pid} is not a running vipgate");
        return ExitCode::FAILURE;
    }
    let Some(target) = rustix::process::Pid::from_raw(pid) else {
        eprintln!("vipgate upgrade: {pid} is not a process id");
        return ExitCode::FAILURE;
    };
    if let Err(e) = rustix::process::kill_process(target, rustix::process::Signal::USR2) {
        eprintln!("vipgate upgrade: cannot signal {pid}: {e}");
        return ExitCode::FAILURE;
    }
    println!("asked vipgate {pid} to upgrade; it logs \"upgrade: the new process accepts\" when done");
    ExitCode::SUCCESS
}
