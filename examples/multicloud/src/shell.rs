//! Finding the workspace binaries and running them from a work directory, echoed as a user
//! would type them when the shell is verbose (the demo) and silently otherwise (the tests).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use crate::process::Process;
use crate::{Error, Result};

/// The directory holding the workspace binaries: `target/<profile>/`. The demo binary lives
/// there itself; test binaries live one level down, in `target/<profile>/deps/`, and examples in
/// `target/<profile>/examples/`.
pub fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(Error::CurrentExe)?;
    let dir = exe.parent().ok_or_else(|| {
        Error::CurrentExe(std::io::Error::other(format!(
            "{} has no parent directory",
            exe.display()
        )))
    })?;
    let nested = matches!(
        dir.file_name().and_then(OsStr::to_str),
        Some("deps" | "examples")
    );
    Ok(match (nested, dir.parent()) {
        (true, Some(parent)) => parent.to_owned(),
        _ => dir.to_owned(),
    })
}

/// The path of a workspace binary, which must have been built (`cargo build --workspace
/// --bins`; `cargo test --workspace` builds them too, a single-package test run may not).
pub fn bin(name: &str) -> Result<PathBuf> {
    existing(bin_dir()?.join(name))
}

fn existing(path: PathBuf) -> Result<PathBuf> {
    if path.exists() {
        Ok(path)
    } else {
        Err(Error::MissingBinary { path })
    }
}

/// Runs a short-lived command to completion; its stdout, or why it failed (with its stderr).
pub fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    if !out.status.success() {
        return Err(Error::Failed {
            command: display(cmd),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command expected to fail; its exit code (-1 for a signal) and stderr.
pub fn run_err(cmd: &mut Command) -> Result<(i32, String)> {
    let out = output(cmd)?;
    if out.status.success() {
        return Err(Error::Succeeded {
            command: display(cmd),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        });
    }
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn output(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            command: display(cmd),
            source,
        })
}

/// A command as a user would type it: the program's file name (the binaries are expected on
/// `PATH`), then its arguments, quoted for a POSIX shell where needed. Environment variables
/// the harness sets (log filters) are left out: they change nothing a user would see.
pub fn display(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program())
        .file_name()
        .unwrap_or(cmd.get_program());
    std::iter::once(quote(program))
        .chain(cmd.get_args().map(quote))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quotes a word for a POSIX shell when it needs it.
pub fn quote(word: impl AsRef<OsStr>) -> String {
    let word = word.as_ref().to_string_lossy();
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./:=,@+%".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Runs the workspace binaries in one work directory. Cheap to clone; every cluster of a
/// topology holds one.
#[derive(Clone, Debug)]
pub struct Shell {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    work: PathBuf,
    bins: PathBuf,
    verbose: bool,
}

impl Shell {
    /// A silent shell in `work` (which must exist) running the binaries of [`bin_dir`].
    pub fn new(work: &Path) -> Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                work: work.to_owned(),
                bins: bin_dir()?,
                verbose: false,
            }),
        })
    }

    /// The same shell, echoing the commands that change something (and their output).
    pub fn verbose(self) -> Self {
        Self {
            inner: Arc::new(Inner {
                work: self.inner.work.clone(),
                bins: self.inner.bins.clone(),
                verbose: true,
            }),
        }
    }

    /// The work directory (absolute if it was given so); commands run there.
    pub fn work(&self) -> &Path {
        &self.inner.work
    }

    pub fn bins(&self) -> &Path {
        &self.inner.bins
    }

    /// A workspace binary, run from the work directory. Inherited settings that would redirect
    /// it (`ISTHMUS_CONTROLLER`, `EWG_CONTROLLER`) are removed: every command says what it means.
    pub fn command(&self, program: &str) -> Result<Command> {
        self.command_in(None, program)
    }

    /// [`Shell::command`], run inside network namespace `netns` when given
    /// (`ip netns exec NETNS PROGRAM`).
    pub fn command_in(&self, netns: Option<&str>, program: &str) -> Result<Command> {
        let bin = existing(self.inner.bins.join(program))?;
        let mut cmd = match netns {
            Some(ns) => crate::netns::exec(ns, bin),
            None => Command::new(bin),
        };
        cmd.current_dir(&self.inner.work)
            .env_remove("ISTHMUS_CONTROLLER")
            .env_remove("EWG_CONTROLLER");
        Ok(cmd)
    }

    /// Prints `line` as a typed command, when verbose.
    pub fn echo(&self, line: &str) {
        if self.inner.verbose {
            println!("$ {line}");
        }
    }

    /// Prints a comment line, when verbose.
    pub fn note(&self, text: &str) {
        if self.inner.verbose {
            println!("# {text}");
        }
    }

    /// Runs `cmd` to completion, echoing it and its output when verbose; its stdout.
    pub fn run(&self, cmd: &mut Command) -> Result<String> {
        self.run_as(&display(cmd), cmd, true)
    }

    /// Runs `cmd` echoed as `shown` (e.g. with a secret replaced by `"$TOKEN"`), printing its
    /// output when verbose and `print_output`; its stdout.
    pub fn run_as(&self, shown: &str, cmd: &mut Command, print_output: bool) -> Result<String> {
        self.echo(shown);
        let out = run_ok(cmd)?;
        if self.inner.verbose && print_output {
            print!("{out}");
            if !out.is_empty() && !out.ends_with('\n') {
                println!();
            }
        }
        Ok(out)
    }

    /// Starts a long-running process with its stdout and stderr in `<dir>/<file>.out` and
    /// `.err` (`dir` relative to the work directory), echoed as a background job.
    pub fn spawn(&self, name: &str, dir: &Path, file: &str, cmd: &mut Command) -> Result<Process> {
        let out = dir.join(format!("{file}.out"));
        let err = dir.join(format!("{file}.err"));
        self.echo(&format!(
            "{} > {} 2> {} &",
            display(cmd),
            quote(&out),
            quote(&err)
        ));
        Process::spawn(name, &self.work().join(out), &self.work().join(err), cmd)
    }
}
