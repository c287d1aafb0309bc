//! `cargo xtask test` and `cargo xtask ci`: the README test command and what CI adds on top.
//!
//! Warnings fail CI through clippy's `-D warnings`; RUSTFLAGS stays untouched here so that clippy,
//! tests and local builds share one build cache.

use std::process::Command;

use crate::{deps, fuzz, sh};

#[derive(clap::Args)]
pub(crate) struct TestArgs {
    /// Seconds of fuzzing per target after the tests; 0 skips the fuzz smoke run
    #[arg(long, value_name = "N", default_value_t = fuzz::DEFAULT_SECONDS)]
    fuzz_seconds: u64,
    /// Extra arguments for `cargo test` (after `--`, for the test binaries)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    cargo_test_args: Vec<String>,
}

pub(crate) fn test(args: &TestArgs) -> anyhow::Result<()> {
    sh::section("deps", deps::install)?;
    sh::section("cargo test", || {
        sh::run(
            sh::cargo()
                .args(["test", "--workspace", "--all-targets", "--locked"])
                .args(&args.cargo_test_args),
        )
    })?;
    if args.fuzz_seconds > 0 {
        sh::section("fuzz smoke", || fuzz::smoke(args.fuzz_seconds))?;
    }
    Ok(())
}

pub(crate) fn ci(args: &TestArgs) -> anyhow::Result<()> {
    sh::section("rustfmt", || {
        sh::run(sh::cargo().args(["fmt", "--all", "--", "--check"]))?;
        // The fuzz crates are workspaces of their own, out of `cargo fmt --all`'s reach.
        sh::run(
            Command::new("rustfmt")
                .current_dir(sh::root())
                .args(["--check", "--edition", "2024"])
                .args(fuzz::target_sources()),
        )
    })?;
    sh::section("clippy", || {
        sh::run(sh::cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    test(args)
}
