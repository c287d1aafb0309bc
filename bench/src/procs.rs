//! Child processes (killed on drop, output in files) and what we measure of them from `/proc`:
//! CPU time (utime + stime) and resident memory, summed over a process and its children (an
//! nginx master and its worker).

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A child process, SIGKILLed when dropped.
pub(crate) struct Child {
    name: String,
    child: std::process::Child,
    stdout: Option<std::io::BufReader<std::process::ChildStdout>>,
    log: std::path::PathBuf,
}

impl Child {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    pub(crate) fn spawn(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Self> {
        let out =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        Self::start(name, cmd, log, false)
    }

    /// Starts `cmd` with stdout piped (see [`read_stdout_line`](Self::read_stdout_line)) and
    /// stderr in `log`.
    pub(crate) fn spawn_capturing(
        name: &str,
        mut cmd: Command,
        log: &Path,
    ) -> anyhow::Result<Self> {
        let err =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(err);
        Self::start(name, cmd, log, true)
    }

    fn start(name: &str, mut cmd: Command, log: &Path, capture: bool) -> anyhow::Result<Self> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("{name}: cannot start {program}"))?;
        let stdout = if capture {
            child.stdout.take().map(std::io::BufReader::new)
        } else {
            None
        };
        Ok(Self {
            name: name.to_owned(),
            child,
            stdout,
            log: log.to_owned(),
        })
    }

    /// Starts this executable with `args` (a `bench` subcommand that prints one JSON line once
    /// it serves, e.g. its bound addresses) and reads that line.
    pub(crate) fn spawn_self<T: serde::de::DeserializeOwned>(
        name: &str,
        args: &[String],
        log: &Path,
    ) -> anyhow::Result<(Self, T)> {
        let exe = std::env::current_exe().context("locating the bench executable")?;
        let mut cmd = Command::new(exe);
        cmd.args(args);
        let mut child = Self::spawn_capturing(name, cmd, log)?;
        let line = child.read_stdout_line()?;
        let value = serde_json::from_str(&line)
            .with_context(|| format!("{name} printed {line:?}, not its addresses"))?;
        Ok((child, value))
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line (blocking; the child prints it once ready or exits).
    pub(crate) fn read_stdout_line(&mut self) -> anyhow::Result<String> {
        let reader = self.stdout.as_mut().context("stdout is not captured")?;
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line.is_empty() {
            bail!(
                "{} exited before it was ready; its log: {}",
                self.name,
                self.tail()
            );
        }
        Ok(line.trim().to_owned())
    }

    /// The end of the child's log, for error messages.
    pub(crate) fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(1500);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        format!("{} ({})\n{}", self.log.display(), self.name, &text[start..])
    }

    /// Fails with the log if the child has exited.
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}); {}", self.name, self.tail());
        }
        Ok(())
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until something accepts TCP connections on `addr` (bounded), checking that `child`
/// is still alive meanwhile.
pub(crate) fn wait_listening(child: &mut Child, addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        child.check_alive()?;
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} does not listen on {addr} after 20 s; {}",
                child.name,
                child.tail()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Free loopback ports: all bound at once, then released, so they are distinct.
pub(crate) fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// A process and its direct children.
fn tree(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if stat_fields(child).and_then(|f| f.get(1).and_then(|p| p.parse::<u32>().ok()))
                == Some(pid)
            {
                pids.push(child);
            }
        }
    }
    pids
}

/// The fields of /proc/PID/stat after the command name (field 3 onwards).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// CPU seconds (user + system) used so far by `pids` and their children.
pub(crate) fn cpu_seconds(pids: &[u32]) -> f64 {
    // USER_HZ: 100 on every Linux this runs on.
    const TICKS: f64 = 100.0;
    let ticks: u64 = pids
        .iter()
        .flat_map(|&p| tree(p))
        .filter_map(stat_fields)
        .map(|f| {
            // utime and stime are fields 14 and 15, i.e. 11 and 12 here.
            let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            get(11) + get(12)
        })
        .sum();
    ticks as f64 / TICKS
}

/// Resident memory in KiB of `pids` and their children.
pub(crate) fn rss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .flat_map(|&p| tree(p))
        .filter_map(|p| {
            let status = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}
