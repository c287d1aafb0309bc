//! `bench`: Isthmus gateways side by side with Envoy, HAProxy and nginx, every figure an
//! absolute value and a ratio to the direct connection measured in the same run.
//!
//! `bench run [--quick] [--out DIR]` creates certificates with the trust-bundle library,
//! starts the backend (`bench serve`, its own process), then every contender from the
//! templates in `bench/templates/`, runs the scenarios (see `scenario.rs`) and writes
//! `results.json` and `results.md` to `--out` (default `target/bench`), printing the table.
//! `cargo xtask bench [--quick]` builds in release mode and runs this.

mod backend;
mod contender;
mod control;
mod load;
mod minimal;
mod pki;
mod procs;
mod report;
mod scenario;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::contender::{Binaries, Name};
use crate::load::Window;
use crate::report::{Meta, Results};

#[derive(Parser)]
#[command(
    name = "bench",
    about = "Isthmus data-plane benchmarks against Envoy, HAProxy and nginx"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every scenario against every contender and write results.{json,md}
    Run(RunArgs),
    /// The backend process (started by `run`): prints its addresses, serves until killed
    Serve {
        /// Directory with the certificates `run` created
        #[arg(long, value_name = "DIR")]
        pki: PathBuf,
    },
    /// The `minimal` contender (started by `run`): a fixed-upstream forwarder per upstream,
    /// prints its listeners' addresses, serves until killed
    Forward {
        /// Where one listener forwards (repeatable: one listener each)
        #[arg(long, value_name = "ADDR", required = true)]
        upstream: Vec<std::net::SocketAddr>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// A smoke run (one short repetition, few idle connections): checks the harness, not speed
    #[arg(long)]
    quick: bool,
    /// Where results.json, results.md and the contenders' configs and logs go
    #[arg(long, value_name = "DIR", default_value = "target/bench")]
    out: PathBuf,
    /// The east-west-gateway binary (default: next to this executable)
    #[arg(long, value_name = "PATH")]
    gateway: Option<PathBuf>,
    /// Run only the scenarios whose name contains one of these (repeatable)
    #[arg(long, value_name = "TEXT")]
    only: Vec<String>,
    /// Contenders to run (comma-separated; direct is always included)
    #[arg(long, value_name = "NAMES", value_delimiter = ',', value_parser = parse_name)]
    contenders: Vec<Name>,
    /// An `upstream:` section for the Isthmus gateways, to try a variant (YAML flow mapping,
    /// e.g. "{ splice: off }")
    #[arg(long, value_name = "YAML")]
    isthmus_upstream: Option<String>,
}

fn parse_name(s: &str) -> Result<Name, String> {
    Name::ALL
        .into_iter()
        .find(|n| n.to_string() == s)
        .ok_or_else(|| {
            format!(
                "unknown contender {s:?}: use direct, isthmus, envoy, haproxy, nginx or minimal"
            )
        })
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Run(args) => run(&args),
        Command::Serve { pki } => backend::serve(&pki),
        Command::Forward { upstream } => minimal::serve(&upstream),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &RunArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let loadavg_start = loadavg();
    let bins = Binaries::find(args.gateway.clone())?;
    let (window, reps, idle_n) = if args.quick {
        (
            Window {
                warmup: Duration::from_millis(100),
                measure: Duration::from_millis(300),
            },
            1,
            20,
        )
    } else {
        (
            Window {
                warmup: Duration::from_millis(500),
                measure: Duration::from_secs(2),
            },
            3,
            1000,
        )
    };
    let work = args.out.join("work");
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("clearing {}", work.display()))?;
    }
    std::fs::create_dir_all(&work)?;
    let work = work.canonicalize()?;
    let pki = pki::Pki::create(&work.join("pki"))?;
    let (_backend, addrs) = backend::spawn(&pki.dir, &work.join("backend.log"))?;
    let options = contender::Options {
        isthmus_upstream: args.isthmus_upstream.clone(),
    };
    let mut contenders = Name::ALL
        .into_iter()
        .filter(|n| *n == Name::Direct || args.contenders.is_empty() || args.contenders.contains(n))
        .map(|name| {
            contender::start(name, &bins, &pki, &addrs, &work, &options)
                .with_context(|| format!("starting {name}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let clients = scenario::Clients::new(&pki)?;
    // One thread, as `wrk -t1`: the load generator gets no more cores than a contender.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut results = Results::default();
    scenario::run_all(
        &runtime,
        &mut contenders,
        &clients,
        &scenario::Plan {
            window,
            reps,
            idle_n,
            only: &args.only,
        },
        &mut results,
    )?;
    drop(contenders);
    let control = if args.only.is_empty()
        || control::SCENARIOS
            .iter()
            .any(|s| args.only.iter().any(|o| s.contains(o.as_str())))
    {
        Some(control::run(
            &bins.gateway,
            &work,
            &control::Plan::new(args.quick),
            &args.only,
        )?)
    } else {
        None
    };
    let meta = Meta {
        date: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        quick: args.quick,
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg_start,
        loadavg_end: loadavg(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        repetitions: reps,
        warmup_s: window.warmup.as_secs_f64(),
        measure_s: window.measure.as_secs_f64(),
        idle_connections: idle_n,
        versions: versions(&bins),
        only: args.only.clone(),
        isthmus_upstream: args.isthmus_upstream.clone(),
        duration_s: started.elapsed().as_secs_f64(),
    };
    let mut md = report::markdown(&meta, &results);
    let mut json: serde_json::Value = serde_json::from_str(&report::json(&meta, &results)?)?;
    if let Some(control) = &control {
        md += &control.markdown();
        json["control_plane"] = control.json();
    }
    write(&args.out.join("results.md"), &md)?;
    write(
        &args.out.join("results.json"),
        &serde_json::to_string_pretty(&json)?,
    )?;
    println!("{md}");
    println!(
        "bench: wrote {} and results.md ({:.0} s)",
        args.out.join("results.json").display(),
        meta.duration_s
    );
    Ok(())
}

fn write(path: &Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The first line each contender prints for its version.
fn versions(bins: &Binaries) -> BTreeMap<String, String> {
    let first_line = |program: &Path, arg: &str| {
        std::process::Command::new(program)
            .arg(arg)
            .output()
            .ok()
            .map(|out| {
                let text = if out.stdout.is_empty() {
                    out.stderr
                } else {
                    out.stdout
                };
                String::from_utf8_lossy(&text)
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            })
            .unwrap_or_default()
    };
    BTreeMap::from([
        ("isthmus".to_owned(), first_line(&bins.gateway, "--version")),
        ("envoy".to_owned(), first_line(&bins.envoy, "--version")),
        ("haproxy".to_owned(), first_line(&bins.haproxy, "-v")),
        ("nginx".to_owned(), first_line(&bins.nginx, "-v")),
    ])
}
