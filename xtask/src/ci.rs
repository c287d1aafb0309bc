//! `cargo xtask test`: the README's test command (deps, every workspace test, a fuzz smoke run).
//!
//! CI (`.ci/run`) runs `cargo fmt --check` and `cargo clippy --workspace --all-targets -- -D
//! warnings` before it, as separate commands, so what it lints is exactly what a developer's
//! `cargo clippy` lints.

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
