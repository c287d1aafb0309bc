//! A child process with its stdout JSON event stream and its stderr in a log file.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Instant;

use serde_json::Value;

use crate::PATIENCE;

/// A running process; killed on drop.
pub struct Process {
    pub name: String,
    child: Child,
    events: Receiver<Value>,
    stderr_log: PathBuf,
    stdout_log: PathBuf,
}

impl Process {
    /// Spawns `cmd` with stdout piped into the event stream and stderr into `<dir>/<name>.err`.
    pub fn spawn(name: &str, dir: &Path, cmd: &mut Command) -> Self {
        let stderr_log = dir.join(format!("{name}.err"));
        let stdout_log = dir.join(format!("{name}.out"));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr_log)
            .expect("log file");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, events) = mpsc::channel();
        let log_path = stdout_log.clone();
        std::thread::spawn(move || {
            let mut log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log_path)
                .ok();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(log) = log.as_mut() {
                    let _ = writeln!(log, "{line}");
                }
                let Ok(event) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if tx.send(event).is_err() {
                    return;
                }
            }
        });
        Self {
            name: name.to_owned(),
            child,
            events,
            stderr_log,
            stdout_log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the next stdout event named `event` that satisfies `pred`.
    pub fn wait_event(&self, event: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(e) if e["event"] == event && pred(&e) => return e,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    self.fail(&format!("no `{event}` event within {PATIENCE:?}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.fail(&format!("exited before a `{event}` event"))
                }
            }
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for the exit.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + PATIENCE;
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                self.fail("did not exit after SIGTERM");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The process's logs so far.
    pub fn logs(&self) -> String {
        let tail = |p: &Path| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr (last 40 lines) ---\n{}",
            self.name,
            tail(&self.stdout_log),
            self.name,
            tail(&self.stderr_log)
        )
    }

    pub fn fail(&self, why: &str) -> ! {
        panic!("{}: {why}\n{}", self.name, self.logs())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
