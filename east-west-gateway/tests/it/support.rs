//! Harness: a real `east-west-gateway` process on ephemeral ports, its stdout event stream, its
//! admin endpoint, and bounded waits that fail with the gateway's logs attached.

pub(crate) mod backend;
pub(crate) mod controller;
pub(crate) mod pki;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Upper bound for anything the tests wait on; generous because CI shares 2 cores.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

/// Awaits every task of a load test in order, each within a bounded time.
pub(crate) async fn join_bounded<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(
            tokio::time::timeout(PATIENCE * 4, task)
                .await
                .expect("connection finished in time")
                .expect("task"),
        );
    }
    results
}

/// A background tokio runtime for backends and async clients, so tests themselves can block.
pub(crate) fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("test runtime")
    })
}

/// A running gateway process; killed on drop.
pub(crate) struct Gateway {
    child: Child,
    pub(crate) ingress: SocketAddr,
    pub(crate) admin: SocketAddr,
    ready: Value,
    events: Receiver<Value>,
    dir: tempfile::TempDir,
    config_path: PathBuf,
}

impl Gateway {
    /// Starts the binary with `config` (ports should be 0) and waits for its `ready` event.
    pub(crate) fn start(config: &str) -> Self {
        Self::launch(config, &[])
    }

    /// Starts the binary in controller mode: `--controller ADDRESS --config BOOTSTRAP`.
    pub(crate) fn start_controlled(address: &str, bootstrap: &str, name: &str) -> Self {
        Self::launch(bootstrap, &["--controller", address, "--name", name])
    }

    fn launch(config: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("gateway.yaml");
        std::fs::write(&config_path, config).expect("write config");
        let ready_file = dir.path().join("ready.json");
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_east-west-gateway"))
            .arg("--config")
            .arg(&config_path)
            .arg("--ready-file")
            .arg(&ready_file)
            .args(args)
            .env("EWG_LOG", "info")
            .env_remove("EWG_CONTROLLER")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn east-west-gateway");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, events) = mpsc::channel();
        let stdout_log = dir.path().join("stdout.log");
        std::thread::spawn(move || {
            let mut log = std::fs::File::create(stdout_log).ok();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(log) = log.as_mut() {
                    let _ = writeln!(log, "{line}");
                }
                let event = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
                if tx.send(event).is_err() {
                    return;
                }
            }
        });
        let mut gateway = Self {
            child,
            ingress: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            ready: Value::Null,
            events,
            dir,
            config_path,
        };
        let ready = gateway.wait_event("ready", |_| true);
        gateway.ingress = addr(&ready["ingress"]);
        gateway.admin = addr(&ready["admin"]);
        gateway.ready = ready.clone();
        let file: Value = serde_json::from_str(
            &std::fs::read_to_string(&ready_file).expect("ready file exists once ready"),
        )
        .expect("ready file is JSON");
        assert_eq!(file, ready, "ready file and ready event agree");
        gateway
    }

    /// The `ready` event.
    pub(crate) fn ready_event(&self) -> &Value {
        &self.ready
    }

    /// The bound address of egress listener `name`.
    pub(crate) fn egress(&self, name: &str) -> SocketAddr {
        addr(&self.ready["egress"][name])
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits until `series` equals `value` exactly.
    pub(crate) fn wait_metric_eq(&self, series: &str, value: f64) {
        let deadline = Instant::now() + PATIENCE;
        while self.metric(series) != value {
            if Instant::now() > deadline {
                self.fail(&format!("{series} never became {value}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the next stdout event named `name` that satisfies `pred`.
    pub(crate) fn wait_event(&self, name: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) if event["event"] == name && pred(&event) => return event,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    self.fail(&format!("no `{name}` event within {PATIENCE:?}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.fail(&format!("gateway exited before a `{name}` event"))
                }
            }
        }
    }

    /// Replaces the config file atomically, so the poller never sees half a file.
    pub(crate) fn write_config(&self, config: &str) {
        let tmp = self.dir.path().join("gateway.yaml.tmp");
        std::fs::write(&tmp, config).expect("write config");
        std::fs::rename(&tmp, &self.config_path).expect("replace config");
    }

    /// Sends a signal (`HUP`, `TERM`) to the process.
    pub(crate) fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit.
    pub(crate) fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                self.fail("gateway did not exit");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// GET on the admin endpoint; returns status and body.
    pub(crate) fn admin_get(&self, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(self.admin).expect("connect admin");
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
        )
        .expect("send request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read response");
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status code");
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    /// The value of one exact series in `/metrics`, 0 when absent.
    pub(crate) fn metric(&self, series: &str) -> f64 {
        let (_, body) = self.admin_get("/metrics");
        metric_in(&body, series)
    }

    /// Waits until `series` reaches at least `at_least`.
    pub(crate) fn wait_metric(&self, series: &str, at_least: f64) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let value = self.metric(series);
            if value >= at_least {
                return;
            }
            if Instant::now() > deadline {
                let (_, body) = self.admin_get("/metrics");
                self.fail(&format!(
                    "{series} stayed at {value}, wanted >= {at_least}\n--- metrics ---\n{body}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The gateway's stderr so far.
    pub(crate) fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// The gateway's stdout so far (every event line).
    pub(crate) fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
    }

    fn fail(&self, why: &str) -> ! {
        let logs = self.logs();
        let tail: Vec<&str> = logs.lines().rev().take(40).collect::<Vec<_>>();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "{why}\n--- gateway stderr (last 40 lines) ---\n{}",
            tail.join("\n")
        );
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `series` (`name` or `name{label="value",..}`) in Prometheus text: the sum over
/// every series of that name whose labels include the given ones, 0 when none matches.
pub(crate) fn metric_in(body: &str, series: &str) -> f64 {
    let (name, wanted) = split_series(series);
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (found, value) = line.rsplit_once(' ')?;
            let (found_name, labels) = split_series(found);
            (found_name == name && wanted.iter().all(|w| labels.contains(w)))
                .then(|| value.trim().parse::<f64>().expect("numeric metric"))
        })
        .sum()
}

/// Every value label `label` takes in the series of `name`.
pub(crate) fn label_values(body: &str, name: &str, label: &str) -> Vec<String> {
    let mut values: Vec<String> = body
        .lines()
        .filter_map(|line| {
            let (found, _) = line.rsplit_once(' ')?;
            let (found_name, labels) = split_series(found);
            (found_name == name)
                .then_some(labels)?
                .into_iter()
                .find(|(k, _)| k == label)
                .map(|(_, v)| v)
        })
        .collect();
    values.sort();
    values.dedup();
    values
}

/// `name{a="x",b="y"}` → (`name`, [(a, x), (b, y)]); label values hold no `,` or `"` here.
fn split_series(series: &str) -> (&str, Vec<(String, String)>) {
    let Some((name, rest)) = series.split_once('{') else {
        return (series, Vec::new());
    };
    let labels = rest
        .trim_end_matches('}')
        .split(',')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            Some((key.to_owned(), value.trim_matches('"').to_owned()))
        })
        .collect();
    (name, labels)
}

/// `federation_gateway_tcp_connections_closed_total{route=..,outcome=..}`.
pub(crate) fn closed(route: &str, outcome: &str) -> String {
    format!(
        "federation_gateway_tcp_connections_closed_total{{route=\"{route}\",outcome=\"{outcome}\"}}"
    )
}

/// An `"ip:port"` event field.
pub(crate) fn addr(v: &Value) -> SocketAddr {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an address: {v}"))
}

/// A gateway config on ephemeral ports: `ingress` adds fields to the ingress section, `rest`
/// is appended verbatim (routes, upstream, ...).
pub(crate) fn config(ingress: &str, rest: &str) -> String {
    let sep = if ingress.is_empty() { "" } else { ", " };
    format!(
        "cluster: aws-east\ningress: {{ listen: 127.0.0.1:0{sep}{ingress} }}\nadmin: {{ listen: 127.0.0.1:0 }}\n{rest}"
    )
}
