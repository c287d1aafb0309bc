//! A long-running child process with its stdout JSON event stream (also copied to a log file)
//! and its stderr in a log file; killed on drop, so a failed test or demo leaves nothing behind.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::shell::display;
use crate::{Error, PATIENCE, Result};

/// Pids of the processes started here and not stopped yet, for [`kill_all`].
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// SIGKILLs every process started here and not stopped yet. For a signal handler about to exit
/// the program, where no destructor runs: without it, an interrupted demo would leave its
/// gateways and controllers running, holding their ports.
pub fn kill_all() {
    let pids: Vec<String> = std::mem::take(&mut *live())
        .iter()
        .map(u32::to_string)
        .collect();
    if !pids.is_empty() {
        // Best effort: the program is exiting either way.
        let _ = Command::new("kill").arg("-KILL").args(pids).status();
    }
}

fn live() -> std::sync::MutexGuard<'static, Vec<u32>> {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running process.
pub struct Process {
    pub name: String,
    child: Child,
    events: Receiver<Value>,
    /// The last event of each kind, kept apart from `events` so that waiting for one event does
    /// not lose the state another reader (e.g. `topology.json`) wants.
    last: Arc<Mutex<HashMap<String, Value>>>,
    /// Cleared when stdout closes (the process exited) or when we stop it.
    alive: Arc<AtomicBool>,
    stdout_log: PathBuf,
    stderr_log: PathBuf,
}

impl Process {
    /// Spawns `cmd` with stdout piped into the event stream and copied to `stdout_log`, and
    /// stderr appended to `stderr_log`.
    pub fn spawn(
        name: &str,
        stdout_log: &Path,
        stderr_log: &Path,
        cmd: &mut Command,
    ) -> Result<Self> {
        let command = display(cmd);
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(stderr_log)
            .map_err(Error::io(format!("open {}", stderr_log.display())))?;
        let mut stdout_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(stdout_log)
            .map_err(Error::io(format!("open {}", stdout_log.display())))?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|source| Error::Spawn { command, source })?;
        live().push(child.id());
        let alive = Arc::new(AtomicBool::new(true));
        let last = Arc::new(Mutex::new(HashMap::new()));
        let (tx, events) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            let (alive, last) = (alive.clone(), last.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    // The copy is for people reading logs; losing it must not stop the events.
                    let _ = writeln!(stdout_file, "{line}");
                    // Lines that are not JSON (tools other than ours, e.g. `openssl s_server`'s
                    // `ACCEPT host:port`) reach `wait_line` as strings.
                    let event = serde_json::from_str::<Value>(&line)
                        .unwrap_or_else(|_| Value::String(line.clone()));
                    if let Some(kind) = event["event"].as_str() {
                        last.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert(kind.to_owned(), event.clone());
                    }
                    // Nobody listening any more is fine: `last` still gets updated.
                    let _ = tx.send(event);
                }
                alive.store(false, Ordering::Relaxed);
            });
        }
        Ok(Self {
            name: name.to_owned(),
            child,
            events,
            last,
            alive,
            stdout_log: stdout_log.to_owned(),
            stderr_log: stderr_log.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process still runs, as far as its stdout tells.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    pub fn stdout_log(&self) -> &Path {
        &self.stdout_log
    }

    pub fn stderr_log(&self) -> &Path {
        &self.stderr_log
    }

    /// The last stdout event named `kind` seen so far.
    pub fn last_event(&self, kind: &str) -> Option<Value> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(kind)
            .cloned()
    }

    /// Waits for the next stdout event named `event` that satisfies `pred`.
    pub fn wait_event(&self, event: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
        self.wait_for(&format!("`{event}` event"), |e| {
            (e["event"] == event && pred(&e)).then_some(e)
        })
    }

    /// Waits for the next stdout line that is not JSON and satisfies `pred`; the line. For
    /// tools that announce themselves in text, such as the address they listen on.
    pub fn wait_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> Result<String> {
        self.wait_for(&format!("{what} line"), |e| match e {
            Value::String(line) if pred(&line) => Some(line),
            _ => None,
        })
    }

    /// Waits (bounded) for the next stdout line that `found` maps to something.
    fn wait_for<T>(&self, what: &str, found: impl Fn(Value) -> Option<T>) -> Result<T> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(e) => {
                    if let Some(t) = found(e) {
                        return Ok(t);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(self.fail(&format!("no {what} within {PATIENCE:?}")));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(self.fail(&format!("exited before a {what}")));
                }
            }
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        // Errors mean it is already gone, which is what we want.
        let _ = self.child.kill();
        let pid = self.child.id();
        live().retain(|&p| p != pid);
        let _ = self.child.wait();
        self.alive.store(false, Ordering::Relaxed);
    }

    /// SIGTERM and wait for the exit (bounded).
    pub fn terminate(&mut self) -> Result<()> {
        let mut kill = Command::new("kill");
        kill.arg("-TERM").arg(self.child.id().to_string());
        crate::run_ok(&mut kill)?;
        let deadline = Instant::now() + PATIENCE;
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                return Err(self.fail("did not exit after SIGTERM"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let pid = self.child.id();
        live().retain(|&p| p != pid);
        self.alive.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// The process's logs so far: its stdout and the last 40 lines of its stderr.
    pub fn logs(&self) -> String {
        let tail = |p: &Path| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        format!(
            "--- {} stdout ({}) ---\n{}\n--- {} stderr, last 40 lines ({}) ---\n{}",
            self.name,
            self.stdout_log.display(),
            tail(&self.stdout_log),
            self.name,
            self.stderr_log.display(),
            tail(&self.stderr_log)
        )
    }

    /// An error about this process, with its logs.
    pub fn fail(&self, what: &str) -> Error {
        Error::Process {
            who: self.name.clone(),
            what: what.to_owned(),
            logs: self.logs(),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
