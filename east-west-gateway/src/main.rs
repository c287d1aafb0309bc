//! `east-west-gateway`: run the gateway from a config file or from its controller, or validate
//! a config file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use east_west_gateway::{app, config, controller, telemetry};

/// Exit code for a bad config (EX_DATAERR-style, as sysexits' EX_USAGE family).
const EXIT_CONFIG: u8 = 64;

/// The Isthmus east-west gateway: SNI-routing data plane.
#[derive(Debug, Parser)]
#[command(name = "east-west-gateway", version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file (YAML); reloaded on change and on SIGHUP. With --controller: the bootstrap
    /// file (cluster, listeners, timeouts, limits; read once), without routes, egress or tls.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Take routes, egress listeners and TLS material from the federation controller at this
    /// Unix socket: `unix:/path/to.sock` or a plain path.
    #[arg(long, value_name = "ADDR", env = controller::ADDRESS_ENV)]
    controller: Option<String>,
    /// This gateway's name in the controller's status (default: the host name).
    #[arg(long, value_name = "NAME", requires = "controller")]
    name: Option<String>,
    /// Write the `ready` event (bound addresses, pid) as JSON to this file once listening.
    #[arg(long, value_name = "PATH")]
    ready_file: Option<PathBuf>,
    /// Unix socket for a restart without refused connections: take the ingress listener from
    /// the instance serving it (if any), then serve it for the next instance. Drain the old
    /// one with SIGTERM once the new one is ready.
    #[arg(long, value_name = "PATH", env = "EWG_HANDOVER")]
    handover: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a config file and exit: 0 if valid, 64 with the reason if not.
    Validate {
        /// Config file (YAML).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    telemetry::init(
        std::env::var(telemetry::LOG_ENV).ok().as_deref(),
        telemetry::Format::from_env_value(std::env::var(telemetry::LOG_FORMAT_ENV).ok().as_deref()),
    );
    let source = match (args.command, args.controller) {
        (Some(Command::Validate { config }), _) => return validate(&config),
        (None, Some(address)) => {
            let name = args.name.unwrap_or_else(host_name);
            let settings = match controller::Settings::new(&address, name) {
                Ok(settings) => settings,
                Err(error) => return config_error(&error),
            };
            match config::Bootstrap::load(args.config.as_deref()) {
                Ok(bootstrap) => app::Source::Controller {
                    bootstrap: Box::new(bootstrap),
                    settings,
                },
                Err(error) => {
                    let origin = args.config.as_deref().map_or_else(
                        || "bootstrap defaults".to_owned(),
                        |p| format!("bootstrap {}", p.display()),
                    );
                    return config_error(&format!("{origin}: {error}"));
                }
            }
        }
        (None, None) => {
            let Some(path) = args.config else {
                return config_error(
                    &"--config FILE or --controller ADDR is required (or use `validate --config FILE`)",
                );
            };
            match config::load(&path) {
                Ok(config) => app::Source::File {
                    config: Box::new(config),
                    path: Some(path),
                },
                Err(error) => return config_error(&error),
            }
        }
    };
    match run(source, args.ready_file, args.handover) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn config_error(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::from(EXIT_CONFIG)
}

/// The kernel's host name, for the controller's status; a fixed name if it cannot be read.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "east-west-gateway".to_owned())
}

fn validate(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(config) => {
            println!(
                "{}: ok ({} routes, cluster {})",
                path.display(),
                config.routes.len(),
                config.cluster
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{}: {error}", path.display());
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn run(
    source: app::Source,
    ready_file: Option<PathBuf>,
    handover: Option<PathBuf>,
) -> anyhow::Result<()> {
    let max_connections = match &source {
        app::Source::File { config, .. } => config.ingress.max_connections,
        app::Source::Controller { bootstrap, .. } => bootstrap.initial().ingress.max_connections,
    };
    raise_open_file_limit(max_connections);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    runtime.block_on(async {
        let bound = app::build_with_handover(source, handover.as_deref()).await?;
        let ready = bound.ready_event();
        if let Some(file) = ready_file {
            write_atomically(&file, &format!("{ready}\n"))
                .with_context(|| format!("writing ready file {}", file.display()))?;
        }
        telemetry::event(&ready);
        bound.wait_termination().await;
        Ok(())
    })
}

/// Raises the soft open-file limit to the hard one: every proxied connection holds two
/// descriptors, and distribution defaults (1024) would cap a gateway at a few hundred
/// connections with `accept failed` warnings. Warns when even the hard limit is below what
/// `ingress.max_connections` needs.
#[cfg(target_os = "linux")]
fn raise_open_file_limit(max_connections: usize) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    let before = limit.current;
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(error) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(%error, "cannot raise the open-file limit");
        }
    }
    let now = getrlimit(Resource::Nofile);
    let soft = now.current.unwrap_or(u64::MAX);
    tracing::info!(
        before = before.unwrap_or(u64::MAX),
        soft,
        hard = now.maximum.unwrap_or(u64::MAX),
        "open-file limit"
    );
    // Two per connection, plus listeners, admin and controller sockets.
    let needed = u64::try_from(max_connections)
        .unwrap_or(u64::MAX)
        .saturating_mul(2)
        .saturating_add(64);
    if soft < needed {
        tracing::warn!(
            soft,
            needed,
            max_connections,
            "the open-file limit is below what ingress.max_connections needs; raise the hard \
             limit (ulimit -Hn, LimitNOFILE=) or lower ingress.max_connections"
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn raise_open_file_limit(_max_connections: usize) {}

/// Write to a sibling temp file and rename, so readers never see a partial file.
fn write_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}
