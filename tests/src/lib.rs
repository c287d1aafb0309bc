//! Harness for cross-crate end-to-end scenarios that start real processes: the workspace's own
//! binaries (`trust-bundle`, `east-west-gateway`, `federation-ctl`) on loopback, each with its
//! stdout event stream, and an HTTP echo endpoint per cluster that answers with the cluster's
//! name, so a call shows which cluster served it.
//!
//! Every wait is bounded by [`PATIENCE`] and fails with the logs of the processes involved.

pub mod cluster;
pub mod echo;
pub mod process;

use std::path::PathBuf;
use std::time::Duration;

/// Upper bound for anything a test waits on; generous because CI shares 2 cores.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The path of a workspace binary. `cargo test --workspace` builds every binary before any test
/// runs; a single-package run may not, hence the hint.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test binary> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing; build it first (`cargo build --workspace --bins`, or run the tests with `cargo test --workspace`)",
        path.display()
    );
    path
}

/// Runs a short-lived command to completion and returns its stdout; panics with its stderr if it
/// fails.
pub fn run_ok(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().expect("spawn command");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Runs a command expected to fail; returns (exit code, stderr).
pub fn run_err(cmd: &mut std::process::Command) -> (i32, String) {
    let out = cmd.output().expect("spawn command");
    assert!(
        !out.status.success(),
        "{cmd:?} should have failed but printed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
