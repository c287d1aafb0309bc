//! `east-west-gateway`: run the gateway from a config file, or validate one.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use east_west_gateway::{app, config, telemetry};

/// Exit code for a bad config (EX_DATAERR-style, as sysexits' EX_USAGE family).
const EXIT_CONFIG: u8 = 64;

/// The Isthmus east-west gateway: SNI-routing data plane.
#[derive(Debug, Parser)]
#[command(name = "east-west-gateway", version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file (YAML); reloaded on change and on SIGHUP.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Write the `ready` event (bound addresses, pid) as JSON to this file once listening.
    #[arg(long, value_name = "PATH")]
    ready_file: Option<PathBuf>,
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
    let path = match (&args.command, &args.config) {
        (Some(Command::Validate { config }), _) => return validate(config),
        (None, Some(path)) => path.clone(),
        (None, None) => {
            eprintln!("error: --config FILE is required (or use `validate --config FILE`)");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let config = match config::load(&path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match run(config, path, args.ready_file) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
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

fn run(config: config::Config, path: PathBuf, ready_file: Option<PathBuf>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    runtime.block_on(async {
        let bound = app::build(config, Some(path)).await?;
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

/// Write to a sibling temp file and rename, so readers never see a partial file.
fn write_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}
