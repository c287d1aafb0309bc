//! `cargo xtask test` and `cargo xtask ci`: the README test command and what CI adds on top.
//!
//! CI lints and builds in one compilation: `cargo build --workspace --all-targets` runs with
//! clippy-driver as cargo's `RUSTC_WORKSPACE_WRAPPER` and `CLIPPY_ARGS` set to `-D warnings`,
//! which is how `cargo clippy` itself runs `cargo check`. Clippy thus lints every crate and target
//! `cargo clippy --workspace --all-targets -- -D warnings` does (it lints what it compiles), and
//! the dependencies, compiled without the wrapper, are built once instead of checked for clippy
//! and then built again for the tests; `cargo test` runs with the same wrapper and reuses it all.
//! RUSTFLAGS stays untouched, so dependencies share one build cache with local builds; only the
//! workspace crates differ (cargo fingerprints the wrapper).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

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
    run_tests(args, None)
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
    let clippy = sh::section("clippy-driver", Clippy::find)?;
    run_tests(args, Some(&clippy))
}

/// Deps, the tests (built by clippy when `clippy` is given) and the fuzz smoke run.
fn run_tests(args: &TestArgs, clippy: Option<&Clippy>) -> anyhow::Result<()> {
    sh::section("deps", deps::install)?;
    let cargo = |subcommand: &str| {
        let mut cmd = sh::cargo();
        cmd.args([subcommand, "--workspace", "--all-targets", "--locked"]);
        if let Some(clippy) = clippy {
            clippy.wrap(&mut cmd);
        }
        cmd
    };
    if clippy.is_some() {
        // `cargo clippy --workspace --all-targets` is `cargo check` with these targets; `build`
        // compiles the same units and more (the tests' binaries), which `cargo test` then reuses.
        sh::section("clippy -D warnings + build", || {
            sh::run(&mut cargo("build"))
        })?;
    }
    sh::section("cargo test", || {
        sh::run(cargo("test").args(&args.cargo_test_args))
    })?;
    if args.fuzz_seconds > 0 {
        sh::section("fuzz smoke", || fuzz::smoke(args.fuzz_seconds))?;
    }
    Ok(())
}

/// clippy-driver as `cargo clippy -- -D warnings` runs it.
struct Clippy {
    driver: PathBuf,
}

/// What `cargo clippy -- -D warnings` passes to clippy-driver: the arguments after `--`, each
/// followed by this separator, in `CLIPPY_ARGS`.
const CLIPPY_ARGS: &str = "-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__";

impl Clippy {
    /// Finds the toolchain's clippy-driver and proves that it fails on a warning when run the
    /// way [`Clippy::wrap`] runs it, so a change in that protocol cannot quietly stop the lints.
    fn find() -> anyhow::Result<Self> {
        let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
        let out = Command::new(&rustc)
            .current_dir(sh::root())
            .args(["--print", "sysroot"])
            .output()
            .context("cannot run `rustc --print sysroot`")?;
        let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let driver = sysroot.join("bin").join("clippy-driver");
        if !driver.is_file() {
            bail!(
                "no clippy-driver in {}; install it with `rustup component add clippy`",
                sysroot.display()
            );
        }
        let clippy = Self { driver };
        clippy.self_check()?;
        Ok(clippy)
    }

    /// Lints and compiles the workspace crates of a cargo build with clippy, `-D warnings`.
    fn wrap(&self, cmd: &mut Command) {
        cmd.env("RUSTC_WORKSPACE_WRAPPER", &self.driver)
            .env("CLIPPY_ARGS", CLIPPY_ARGS);
    }

    /// Runs clippy-driver, as cargo would, on a crate with one clippy warning; it must fail.
    fn self_check(&self) -> anyhow::Result<()> {
        let dir = sh::target_dir().join("xtask-clippy-check");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let source = dir.join("lib.rs");
        // clippy::needless_return, a warn-by-default lint.
        std::fs::write(&source, "pub fn one() -> u8 {\n    return 1;\n}\n")?;
        let mut cmd = Command::new(&self.driver);
        // Cargo runs a wrapper with the compiler's path as its first argument.
        cmd.arg("rustc")
            .args([
                "--crate-type=lib",
                "--edition=2024",
                "--emit=metadata",
                "--out-dir",
            ])
            .arg(&dir)
            .arg(&source)
            .env("CLIPPY_ARGS", CLIPPY_ARGS);
        println!("$ {}", sh::display(&cmd));
        let out = cmd.output().context("cannot run clippy-driver")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !stderr.contains("clippy::needless_return") {
            bail!(
                "clippy-driver with CLIPPY_ARGS={CLIPPY_ARGS} did not deny a clippy warning \
                 ({}); has the way `cargo clippy` passes lint levels changed?\n{stderr}",
                out.status
            );
        }
        println!("clippy-driver: {} denies warnings", self.driver.display());
        Ok(())
    }
}
