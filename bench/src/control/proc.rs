//! A controller or gateway process whose stdout event lines are timestamped the moment they
//! arrive, so "the gateway applied version N" has a time without polling; killed on drop.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;

/// One stdout event line and when it was read.
pub(crate) type Event = (Instant, Value);

pub(crate) struct Proc {
    pub(crate) name: String,
    child: std::process::Child,
    events: Receiver<Event>,
    stderr: PathBuf,
}

impl Proc {
    /// Starts `cmd`; stdout is read by a thread (and copied to `<dir>/<name>.out`), stderr goes
    /// to `<dir>/<name>.err`.
    pub(crate) fn spawn(name: &str, mut cmd: Command, dir: &Path) -> anyhow::Result<Self> {
        let stderr = dir.join(format!("{name}.err"));
        let err = std::fs::File::create(&stderr)
            .with_context(|| format!("creating {}", stderr.display()))?;
        let mut out = std::fs::File::create(dir.join(format!("{name}.out")))?;
        let program = cmd.get_program().to_string_lossy().into_owned();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .with_context(|| format!("{name}: cannot start {program}"))?;
        let stdout = child.stdout.take().context("stdout is piped")?;
        let (tx, events) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let at = Instant::now();
                // The copy is for people reading logs; losing it must not stop the events.
                let _ = writeln!(out, "{line}");
                let event = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if tx.send((at, event)).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            name: name.to_owned(),
            child,
            events,
            stderr,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next event named `kind` that satisfies `pred`, waiting at most `patience`.
    pub(crate) fn wait(
        &self,
        kind: &str,
        patience: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Event> {
        let deadline = Instant::now() + patience;
        loop {
            let (at, e) = self.next(deadline, kind)?;
            if e["event"] == kind && pred(&e) {
                return Ok((at, e));
            }
        }
    }

    /// The next event of any kind, before `deadline`; `what` names the wait in the error.
    pub(crate) fn next(&self, deadline: Instant, what: &str) -> anyhow::Result<Event> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.events.recv_timeout(left) {
            Ok(event) => Ok(event),
            Err(RecvTimeoutError::Timeout) => {
                bail!("{}: no `{what}` event in time; {}", self.name, self.tail())
            }
            Err(RecvTimeoutError::Disconnected) => {
                bail!(
                    "{}: exited before a `{what}` event; {}",
                    self.name,
                    self.tail()
                )
            }
        }
    }

    /// Every event read so far and not yet taken.
    pub(crate) fn drain(&self) -> Vec<Event> {
        self.events.try_iter().collect()
    }

    /// The end of stderr, for error messages.
    pub(crate) fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "last lines of {}:\n{}",
            self.stderr.display(),
            lines[lines.len().saturating_sub(15)..].join("\n")
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gateway's "config applied" event.
pub(crate) fn applied(e: &Value) -> bool {
    e["event"] == "config" && e["result"] == "applied"
}
