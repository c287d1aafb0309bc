//! `cargo xtask fuzz`: libFuzzer targets built and run on stable Rust.
//!
//! The fuzz crates use the cargo-fuzz layout (`<crate>/fuzz/`, a crate with `libfuzzer-sys`), so
//! `cargo fuzz run` works on nightly too; they are members of one workspace, `fuzz/`, outside the
//! main one. Stable needs no `-Z` flag:
//! SanitizerCoverage is an LLVM pass that `-Cpasses` and `-Cllvm-args` reach on any channel, and
//! libfuzzer-sys compiles libFuzzer itself with the C++ compiler. What stable lacks is
//! `-Zsanitizer=address`; our crates forbid `unsafe`, so panics and failed assertions are the
//! crashes that matter.
//!
//! Layout:
//! - `<crate>/fuzz/corpus/<target>/`: committed seeds (`cargo xtask fuzz-seeds` regenerates them);
//!   read, never written.
//! - `target/fuzz/corpus/<target>/`: the growing working corpus, kept between local runs.
//! - `<crate>/fuzz/artifacts/<target>/`: crash inputs (git-ignored).
//! - `target/fuzz/logs/<target>.log`: libFuzzer's output of the last run.

pub(crate) mod seeds;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::sh;

/// Seconds per target when none are given, sized for the CI smoke run (ten targets: two minutes).
pub(crate) const DEFAULT_SECONDS: u64 = 12;

/// Codegen flags that instrument the fuzz build like `cargo fuzz build` does (all stable).
const RUSTFLAGS: &[&str] = &[
    "--cfg=fuzzing",
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "-Cllvm-args=-sanitizer-coverage-stack-depth",
    "-Cdebug-assertions",
    "-Coverflow-checks",
];

/// Every fuzz target: the crate whose `fuzz/` directory holds it, and its name.
const TARGETS: &[Target] = &[
    Target::new("trust-bundle", "bundle_json"),
    Target::new("trust-bundle", "pem"),
    Target::new("trust-bundle", "spiffe_id"),
    Target::new("east-west-gateway", "client_hello"),
    Target::new("east-west-gateway", "sni_name"),
    Target::new("east-west-gateway", "gateway_config"),
    Target::new("federation-ctl", "peering_token"),
    Target::new("federation-ctl", "peering_message"),
    Target::new("federation-ctl", "controller_config"),
    Target::new("federation-ctl", "registry_file"),
];

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The target to run; all of them when omitted
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(TARGETS.iter().map(|t| t.name)))]
    target: Option<String>,
    /// How long to fuzz each target
    #[arg(long, value_name = "N", default_value_t = DEFAULT_SECONDS)]
    seconds: u64,
    /// Stream libFuzzer's own output
    #[arg(long)]
    verbose: bool,
    /// Run one input (such as a crash artifact) through TARGET instead of fuzzing
    #[arg(long, value_name = "FILE", requires = "target")]
    repro: Option<PathBuf>,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let targets: Vec<&Target> = TARGETS
        .iter()
        .filter(|t| args.target.as_deref().is_none_or(|name| name == t.name))
        .collect();
    let bin_dir = build(&targets)?;
    if let Some(input) = &args.repro {
        let input = std::path::absolute(input)?;
        return sh::run(Command::new(bin_dir.join(targets[0].name)).arg(input));
    }
    fuzz_all(&bin_dir, &targets, args.seconds, None, args.verbose)
}

/// libFuzzer's seed for the smoke run. A fixed seed makes a test run reproducible: the same
/// mutations in the same order, so a crash it finds is found again by the next run. Open-ended
/// exploration is `cargo xtask fuzz`, which lets libFuzzer pick a seed.
const SMOKE_SEED: u32 = 1;

/// The bounded run `cargo xtask test` ends with: every target for `seconds`.
pub(crate) fn smoke(seconds: u64) -> anyhow::Result<()> {
    let targets: Vec<&Target> = TARGETS.iter().collect();
    let bin_dir = build(&targets)?;
    fuzz_all(&bin_dir, &targets, seconds, Some(SMOKE_SEED), false)
}

// === impl Target ===

struct Target {
    krate: &'static str,
    name: &'static str,
}

impl Target {
    const fn new(krate: &'static str, name: &'static str) -> Self {
        Self { krate, name }
    }

    /// `<crate>/fuzz`, relative to the workspace root.
    fn fuzz_dir(&self) -> PathBuf {
        Path::new(self.krate).join("fuzz")
    }

    fn seed_dir(&self) -> PathBuf {
        sh::root()
            .join(self.fuzz_dir())
            .join("corpus")
            .join(self.name)
    }

    fn artifact_dir(&self) -> PathBuf {
        sh::root()
            .join(self.fuzz_dir())
            .join("artifacts")
            .join(self.name)
    }
}

/// What libFuzzer reported about one run.
#[derive(Default)]
struct Stats {
    execs: u64,
    execs_per_sec: u64,
    new_units: u64,
    coverage: String,
    seed: String,
}

// === build ===

/// The fuzz crates' workspace, relative to the workspace root.
const FUZZ_WORKSPACE: &str = "fuzz";

/// Builds the targets with coverage instrumentation; returns the binary directory.
///
/// One cargo run builds every target, from the fuzz workspace: features are unified across the
/// fuzz crates, so the dependencies they share are built once.
fn build(targets: &[&Target]) -> anyhow::Result<PathBuf> {
    sh::section("build fuzz targets", || {
        let host = host_triple()?;
        let target_dir = sh::target_dir().join("fuzz");
        let mut rustflags = std::env::var("RUSTFLAGS").unwrap_or_default();
        for flag in RUSTFLAGS {
            rustflags = format!("{rustflags} {flag}").trim_start().to_owned();
        }
        let manifest = Path::new(FUZZ_WORKSPACE).join("Cargo.toml");
        sync_lockfile(&manifest)?;
        let mut cmd = sh::cargo();
        cmd.args(["build", "--release", "--manifest-path"])
            .arg(&manifest)
            // With an explicit --target, RUSTFLAGS skips build scripts and proc macros.
            .args(["--target", &host])
            .env("CARGO_TARGET_DIR", &target_dir)
            .env("RUSTFLAGS", &rustflags)
            .env_remove("CARGO_ENCODED_RUSTFLAGS");
        for t in targets {
            cmd.args(["--bin", t.name]);
        }
        sh::run(&mut cmd)?;
        Ok(target_dir.join(host).join("release"))
    })
}

/// Starts the fuzz workspace's lockfile from the main workspace's, so the fuzzed code runs with
/// the dependency versions the workspace ships; cargo then only adds the fuzzing crates.
fn sync_lockfile(manifest: &Path) -> anyhow::Result<()> {
    let workspace_lock = sh::root().join("Cargo.lock");
    let fuzz_lock = sh::root().join(manifest.with_file_name("Cargo.lock"));
    let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&fuzz_lock) < modified(&workspace_lock) {
        fs::copy(&workspace_lock, &fuzz_lock)
            .with_context(|| format!("cannot copy Cargo.lock to {}", fuzz_lock.display()))?;
    }
    Ok(())
}

fn host_triple() -> anyhow::Result<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc)
        .arg("-vV")
        .output()
        .context("cannot run `rustc -vV`")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .context("`rustc -vV` names no host")
}

// === run ===

fn fuzz_all(
    bin_dir: &Path,
    targets: &[&Target],
    seconds: u64,
    seed: Option<u32>,
    verbose: bool,
) -> anyhow::Result<()> {
    let mut results = Vec::new();
    for t in targets {
        let stats = sh::section(&format!("fuzz {} for {seconds} s", t.name), || {
            fuzz_one(bin_dir, t, seconds, seed, verbose)
        })?;
        results.push((t.name, stats));
    }
    println!(
        "\n{:<17} {:>10} {:>8} {:>6}  coverage",
        "target", "execs", "exec/s", "new"
    );
    for (name, s) in &results {
        println!(
            "{name:<17} {:>10} {:>8} {:>6}  {}",
            s.execs, s.execs_per_sec, s.new_units, s.coverage
        );
    }
    Ok(())
}

fn fuzz_one(
    bin_dir: &Path,
    t: &Target,
    seconds: u64,
    seed: Option<u32>,
    verbose: bool,
) -> anyhow::Result<Stats> {
    let work_corpus = sh::target_dir().join("fuzz/corpus").join(t.name);
    let log_path = sh::target_dir()
        .join("fuzz/logs")
        .join(format!("{}.log", t.name));
    let artifacts = t.artifact_dir();
    for dir in [&work_corpus, &artifacts, &t.seed_dir()] {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    fs::create_dir_all(log_path.parent().unwrap_or(Path::new(".")))?;

    let mut cmd = Command::new(bin_dir.join(t.name));
    cmd.arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        // Any single input taking 10 s is a hang worth reporting.
        .arg("-timeout=10")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .args(seed.map(|s| format!("-seed={s}")))
        // libFuzzer adds new inputs to the first directory only.
        .arg(&work_corpus)
        .arg(t.seed_dir());
    println!("$ {}", sh::display(&cmd));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start fuzz target {}", t.name))?;
    let mut log = fs::File::create(&log_path)?;
    let mut text = String::new();
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines() {
            let line = line?;
            if verbose {
                eprintln!("{line}");
            }
            writeln!(log, "{line}")?;
            text.push_str(&line);
            text.push('\n');
        }
    }
    let status = child.wait()?;
    let stats = parse_stats(&text);
    if !status.success() {
        for line in tail(&text, 40) {
            eprintln!("  | {line}");
        }
        let artifact = text
            .lines()
            .find_map(|l| l.split_once("Test unit written to ").map(|(_, p)| p.trim()));
        match artifact {
            Some(path) => bail!(
                "fuzz target {} crashed ({status}); the input is in {path}\n\
                 reproduce: cargo xtask fuzz {} --repro {path}\nlog: {}",
                t.name,
                t.name,
                log_path.display()
            ),
            None => bail!(
                "fuzz target {} failed ({status}); log: {}",
                t.name,
                log_path.display()
            ),
        }
    }
    if stats.execs == 0 {
        bail!(
            "fuzz target {} ran no inputs; log: {}",
            t.name,
            log_path.display()
        );
    }
    println!(
        "{}: {} execs ({}/s), {} new units, {}, libFuzzer seed {}",
        t.name, stats.execs, stats.execs_per_sec, stats.new_units, stats.coverage, stats.seed
    );
    Ok(stats)
}

fn parse_stats(text: &str) -> Stats {
    let stat = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    // The last status line, e.g. `#123	DONE   cov: 812 ft: 2903 corp: 410/19Kb ...`.
    let coverage = text
        .lines()
        .rev()
        .find_map(|l| l.split_once("cov: "))
        .map(|(_, rest)| {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            match fields.as_slice() {
                [cov, "ft:", ft, "corp:", corp, ..] => format!("cov {cov}, ft {ft}, corpus {corp}"),
                _ => format!("cov {rest}"),
            }
        })
        .unwrap_or_else(|| "no coverage reported".to_owned());
    let seed = text
        .lines()
        .find_map(|l| l.strip_prefix("INFO: Seed: "))
        .unwrap_or("?")
        .trim()
        .to_owned();
    Stats {
        execs: stat("stat::number_of_executed_units:"),
        execs_per_sec: stat("stat::average_exec_per_sec:"),
        new_units: stat("stat::new_units_added:"),
        coverage,
        seed,
    }
}

fn tail(text: &str, n: usize) -> impl Iterator<Item = &str> {
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(n);
    lines.into_iter().skip(skip)
}

#[cfg(test)]
mod tests;
