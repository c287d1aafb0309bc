//! Isthmus task runner: the one place for project commands (`cargo xtask <command>`).
//!
//! Each command prints the commands it runs, so a failure can be reproduced by hand. The xtask
//! depends on std, anyhow and clap only, and it deliberately is not a build system: cargo builds,
//! the xtask sequences.

mod bench;
mod ci;
mod demo;
mod deps;
mod fuzz;
mod sh;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about,
    disable_version_flag = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the system and Python packages the tests need (Debian; idempotent)
    Deps,
    /// Run deps, the workspace tests, then a bounded fuzz smoke run
    Test(ci::TestArgs),
    /// Build the fuzz targets on stable Rust and run them for a bounded time
    Fuzz(fuzz::Args),
    /// Regenerate the fuzz seed corpora from the trust-bundle CLI and real TLS clients
    FuzzSeeds,
    /// Run the multicloud demo (`demo trust`: the trust quickstart), printing each command as
    /// a user would type it
    Demo(demo::Args),
    /// Build in release mode and benchmark the gateway against Envoy, HAProxy and nginx
    /// (results in target/bench/)
    Bench(bench::Args),
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the context chain on one line, without anyhow's backtrace.
            eprintln!("\nxtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Deps => deps::install(),
        Command::Test(args) => ci::test(&args),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::FuzzSeeds => fuzz::seeds::generate(),
        Command::Demo(args) => demo::run(&args),
        Command::Bench(args) => bench::run(&args),
    }
}
