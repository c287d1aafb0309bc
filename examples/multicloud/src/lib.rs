//! A runnable multi-cloud topology: several clusters on one machine, each with its own loopback
//! address, echo endpoint, east-west gateway (controller mode) and federation controller (file
//! registry), made and driven with the workspace's own binaries (`trust-bundle`,
//! `east-west-gateway`, `federation-ctl`) exactly as a user would type them.
//!
//! Two users share this one implementation: the `multicloud` binary (the README's first
//! command, `cargo xtask demo`) and the end-to-end scenarios in `tests/`. Commands run from the
//! topology's work directory with paths relative to it, so the demo can print them as a user
//! would type them after `cd`-ing there.
//!
//! - [`shell`]: where binaries are, running commands (echoed when the shell is verbose).
//! - [`process`]: a long-running child with its stdout event stream and log files.
//! - [`echo`]: an HTTP endpoint answering its cluster's name, and the client that calls it.
//! - [`cluster`]: one cluster: start, stop, restart, and the `federation-ctl` verbs.
//! - [`netns`]: clusters in network namespaces of their own, joined only through a bridge.
//! - [`topology`]: roots, intermediates and the clusters of one work directory; `topology.json`.
//! - [`traffic`]: calls until an answer, and continuous calls with success/failure counts.
//! - [`rotation`]: the `trust-bundle rotate` stages over a running topology, each waited out,
//!   and the checks of what gateways present and trust.
//!
//! Every wait is bounded by [`PATIENCE`] and fails with the logs of the processes involved.
//!
//! `main.rs` and `story.rs` belong to the `multicloud` binary (the demo's steps), not to this
//! library.

pub mod cluster;
pub mod echo;
pub mod netns;
pub mod process;
pub mod rotation;
pub mod shell;
pub mod topology;
pub mod traffic;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::shell::{bin, bin_dir, run_err, run_ok};

/// Upper bound for anything we wait on; generous because CI shares 2 cores.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Calls `attempt` every `every` until it yields `Some`, giving up once `bound` has passed:
/// the value and how long it took, `None` on timeout, or the first error `attempt` returns.
/// Every polling wait of the topology and of the end-to-end tests goes through here.
pub fn poll<T, E>(
    bound: Duration,
    every: Duration,
    mut attempt: impl FnMut() -> std::result::Result<Option<T>, E>,
) -> std::result::Result<Option<(T, Duration)>, E> {
    let start = std::time::Instant::now();
    loop {
        if let Some(value) = attempt()? {
            return Ok(Some((value, start.elapsed())));
        }
        if start.elapsed() > bound {
            return Ok(None);
        }
        std::thread::sleep(every);
    }
}

/// Why something in the topology did not happen. Messages carry the command or process and,
/// for processes, the tail of their logs, so a failure can be diagnosed from the message alone.
#[derive(thiserror::Error)]
pub enum Error {
    #[error(
        "{} is missing; build the workspace binaries first (`cargo build --workspace --bins`)",
        path.display()
    )]
    MissingBinary { path: PathBuf },
    #[error("cannot find the directory of the running executable: {0}")]
    CurrentExe(std::io::Error),
    #[error("cannot start `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}):\n{stderr}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("`{command}` should have failed but printed:\n{stdout}")]
    Succeeded { command: String, stdout: String },
    #[error("unexpected output from `{command}`: {detail}")]
    Output { command: String, detail: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// A process exited early, timed out or said something unexpected.
    #[error("{who}: {what}\n{logs}")]
    Process {
        who: String,
        what: String,
        logs: String,
    },
    #[error("not within {PATIENCE:?}: {what}{logs}")]
    Timeout { what: String, logs: String },
    #[error("no free block of {0} ports")]
    NoPorts(u16),
}

/// Debug is Display: test functions return `Result<(), Error>`, and the test harness prints an
/// error with Debug; the logs in it must stay readable.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Error {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
