//! `cargo xtask demo`: the multicloud demo (`examples/multicloud`), or with `trust` the trust
//! quickstart, a scripted walk through the `trust-bundle` CLI.
//!
//! The multicloud demo is its own binary, so it can be run without the xtask (and keeps running
//! under `--keep-running`); the xtask builds the workspace binaries it drives and runs it with
//! the arguments given after `--`. The quickstart is a function over a [`Session`]: a fresh work
//! directory with the workspace binaries first on `PATH`. Each step prints `$ command` and the
//! command's output, and checks that the command succeeded, or was refused for the stated
//! reason.

mod quickstart;

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, bail, ensure};

use crate::sh;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct Args {
    #[command(subcommand)]
    demo: Option<Demo>,
    /// Arguments for the multicloud demo, after `--` (e.g. `-- --keep-running`, `-- --help`)
    #[arg(last = true)]
    args: Vec<OsString>,
}

#[derive(clap::Subcommand)]
enum Demo {
    /// The trust quickstart: a shared root, cluster intermediates, identities, a bundle map
    Trust,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    match args.demo {
        None => multicloud(&args.args),
        Some(Demo::Trust) => trust(),
    }
}

/// Builds every workspace binary (debug: a release build of the workspace takes minutes on a
/// small machine, and the demo spends its time waiting on the network, not computing), then
/// runs `multicloud` from the current directory, so its work dir defaults to `./demo-work`.
fn multicloud(args: &[OsString]) -> anyhow::Result<()> {
    sh::run(sh::cargo().args(["build", "--workspace", "--bins"]))?;
    let demo = sh::target_dir().join("debug").join("multicloud");
    sh::run(Command::new(demo).args(args))
}

fn trust() -> anyhow::Result<()> {
    let bin_dir = build_bins(quickstart::BINS)?;
    let session = Session::fresh(&sh::target_dir().join("quickstart"), &bin_dir)?;
    quickstart::run(&session)?;
    println!("\ndemo: every step behaved as expected");
    Ok(())
}

/// Builds the workspace binaries (debug) and returns the directory they are in.
pub(crate) fn build_bins(bins: &[&str]) -> anyhow::Result<PathBuf> {
    let mut cmd = sh::cargo();
    cmd.args(["build", "--quiet", "--locked"]);
    for bin in bins {
        cmd.args(["--bin", bin]);
    }
    sh::run(&mut cmd)?;
    Ok(sh::target_dir().join("debug"))
}

/// A work directory where commands run with the workspace binaries first on `PATH`.
pub(crate) struct Session {
    dir: PathBuf,
    path: OsString,
    quiet: bool,
}

impl Session {
    /// A session in `dir`, which is created if needed.
    pub(crate) fn new(dir: &Path, bin_dir: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let inherited = std::env::var_os("PATH").unwrap_or_default();
        let path = std::env::join_paths(
            std::iter::once(bin_dir.to_owned()).chain(std::env::split_paths(&inherited)),
        )?;
        Ok(Self {
            dir: dir.to_owned(),
            path,
            quiet: false,
        })
    }

    /// A session in `dir`, emptied first.
    pub(crate) fn fresh(dir: &Path, bin_dir: &Path) -> anyhow::Result<Self> {
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("cannot empty {}", dir.display()))?;
        }
        let session = Self::new(dir, bin_dir)?;
        let shown = |p: &Path| {
            p.strip_prefix(sh::root())
                .map(|p| format!("$PWD/{}", p.display()))
                .unwrap_or_else(|_| p.display().to_string())
        };
        println!("# To follow along from the workspace root:");
        println!("export PATH=\"{}:$PATH\"", shown(bin_dir));
        println!("mkdir -p {0} && cd {0}", shown(dir));
        Ok(session)
    }

    /// Runs commands without echoing them or their output.
    pub(crate) fn quiet(self) -> Self {
        Self {
            quiet: true,
            ..self
        }
    }

    /// Prints a comment line introducing the next steps.
    pub(crate) fn say(&self, text: &str) {
        if !self.quiet {
            println!("\n# {text}");
        }
    }

    /// Runs `line` (split on whitespace) and requires success; returns its stdout.
    pub(crate) fn ok(&self, line: &str) -> anyhow::Result<String> {
        let (shown, out) = self.exec(line)?;
        if !out.status.success() {
            bail!(
                "`{shown}` failed ({}) but should have succeeded",
                out.status
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `line` and requires a refusal: a non-zero exit whose output contains `reason`.
    pub(crate) fn refused(&self, line: &str, reason: &str) -> anyhow::Result<()> {
        let (shown, out) = self.exec(line)?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(
            !out.status.success(),
            "`{shown}` succeeded but should have been refused"
        );
        ensure!(
            text.contains(reason),
            "`{shown}` was refused, but not because of {reason:?}"
        );
        if !self.quiet {
            println!(
                "(refused as expected: exit {})",
                out.status.code().unwrap_or(-1)
            );
        }
        Ok(())
    }

    /// Shows a file of the work directory as `cat` would.
    pub(crate) fn cat(&self, file: &str) -> anyhow::Result<()> {
        self.ok(&format!("cat {file}")).map(|_| ())
    }

    fn exec(&self, line: &str) -> anyhow::Result<(String, Output)> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let shown = words.join(" ");
        let [program, args @ ..] = words.as_slice() else {
            bail!("empty demo command");
        };
        if !self.quiet {
            println!("$ {shown}");
        }
        // Rust resolves `program` with the PATH given to the child.
        let out = Command::new(program)
            .args(args)
            .current_dir(&self.dir)
            .env("PATH", &self.path)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot start `{shown}`"))?;
        if !self.quiet {
            for stream in [&out.stdout, &out.stderr] {
                let text = String::from_utf8_lossy(stream);
                print!("{text}");
                if !text.is_empty() && !text.ends_with('\n') {
                    println!();
                }
            }
        }
        Ok((shown, out))
    }
}
