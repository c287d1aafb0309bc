//! One cluster on loopback: its CA (made with the `trust-bundle` CLI), an echo endpoint, a
//! gateway driven by its controller, and the controller with a file registry.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::echo::Echo;
use crate::process::Process;
use crate::{PATIENCE, bin, run_ok};

/// Creates a root CA for `trust_domain` in `<work>/<name>`.
pub fn root(work: &Path, name: &str, trust_domain: &str) -> PathBuf {
    let dir = work.join(name);
    run_ok(
        Command::new(bin("trust-bundle"))
            .args(["root", "create", "--trust-domain", trust_domain, "--out"])
            .arg(&dir),
    );
    dir
}

/// Creates the intermediate CA of `cluster` under `root` in `<work>/ca-<cluster>`.
pub fn intermediate(work: &Path, root: &Path, cluster: &str) -> PathBuf {
    let dir = work.join(format!("ca-{cluster}"));
    run_ok(
        Command::new(bin("trust-bundle"))
            .args(["intermediate", "create", "--cluster", cluster, "--root"])
            .arg(root)
            .arg("--out")
            .arg(&dir),
    );
    dir
}

/// A block of free loopback ports for a cluster's egress listeners, away from the kernel's
/// ephemeral range so client sockets never take them.
fn egress_ports(n: u16) -> (u16, u16) {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let seed = u16::try_from(std::process::id() % 400).unwrap_or(0);
    for _ in 0..200 {
        let slot = (seed + NEXT.fetch_add(1, Ordering::Relaxed)) % 400;
        let first = 20_000 + slot * 25;
        let free =
            (first..first + n).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return (first, first + n - 1);
        }
    }
    panic!("no free block of {n} ports in 20000-30000");
}

/// How a cluster is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// Import preferences, most preferred first.
    pub preferences: Vec<String>,
    pub heartbeat: Duration,
    pub missed_heartbeats: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            preferences: Vec::new(),
            heartbeat: Duration::from_millis(200),
            missed_heartbeats: 4,
        }
    }
}

pub struct Cluster {
    pub name: String,
    pub dir: PathBuf,
    pub echo: Echo,
    pub gateway: Process,
    pub ingress: SocketAddr,
    pub controller: Process,
    pub api: PathBuf,
    config: PathBuf,
}

impl Cluster {
    /// Starts the gateway first (its ingress address goes into the controller's config; it
    /// connects as soon as the controller's socket exists), then the controller.
    pub fn start(work: &Path, name: &str, ca: &Path, opts: &Options) -> Self {
        let dir = work.join(name);
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let echo = Echo::start(name);
        let registry = dir.join("registry.yaml");
        std::fs::write(
            &registry,
            format!(
                "services:\n  - name: echo\n    namespace: default\n    ports: [{{ name: http, port: 8080, target_port: {} }}]\n    endpoints: [{{ address: 127.0.0.1 }}]\nexports: []\n",
                echo.addr.port()
            ),
        )
        .expect("write registry");
        let api = dir.join("state").join("api.sock");
        let bootstrap = dir.join("gateway.yaml");
        std::fs::write(
            &bootstrap,
            format!(
                "cluster: {name}\ningress: {{ listen: 127.0.0.1:0 }}\nadmin: {{ listen: 127.0.0.1:0 }}\ndrain_timeout: 2s\n"
            ),
        )
        .expect("write bootstrap");
        let gateway = start_gateway(&dir, name, &api, &bootstrap);
        let ready = gateway.wait_event("ready", |_| true);
        let ingress: SocketAddr = ready["ingress"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| gateway.fail("ready event has no ingress address"));
        let (first, last) = egress_ports(20);
        let prefs = opts.preferences.join(", ");
        let config = dir.join("controller.yaml");
        std::fs::write(
            &config,
            format!(
                "cluster: {name}\nca: {ca}\nregistry: {{ file: {registry}, watch_interval: 100ms }}\nstate_dir: {state}\npeering: {{ listen: 127.0.0.1:0 }}\napi: {{ socket: {api} }}\ngateways:\n  addresses: [{ingress}]\n  egress: {{ address: 127.0.0.1, ports: {first}-{last} }}\nlease: {{ heartbeat_interval: {hb}ms, missed_heartbeats: {missed} }}\npreferences: [{prefs}]\n",
                ca = ca.display(),
                registry = registry.display(),
                state = dir.join("state").display(),
                api = api.display(),
                hb = opts.heartbeat.as_millis(),
                missed = opts.missed_heartbeats,
            ),
        )
        .expect("write controller config");
        let controller = start_controller(&dir, name, &config);
        let cluster = Self {
            name: name.to_owned(),
            dir,
            echo,
            gateway,
            ingress,
            controller,
            api,
            config,
        };
        // The gateway has its first config once the controller serves.
        cluster
            .gateway
            .wait_event("config", |e| e["result"] == "applied");
        cluster
    }

    /// SIGKILLs the controller.
    pub fn kill_controller(&mut self) {
        self.controller.kill();
    }

    /// Starts the controller again from the same config and state directory.
    pub fn restart_controller(&mut self) {
        self.controller.kill();
        self.controller = start_controller(&self.dir, &self.name, &self.config);
    }

    /// SIGKILLs the gateway.
    pub fn kill_gateway(&mut self) {
        self.gateway.kill();
    }

    /// `federation-ctl --controller <api> ARGS`.
    pub fn ctl(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("federation-ctl"));
        cmd.arg("--controller").arg(&self.api).args(args);
        cmd.env_remove("ISTHMUS_CONTROLLER");
        cmd
    }

    pub fn token(&self) -> String {
        run_ok(&mut self.ctl(&["link", "token"])).trim().to_owned()
    }

    /// Redeems `token` (made by another cluster) and waits until the link is connected.
    pub fn join(&self, token: &str) {
        let out = run_ok(&mut self.ctl(&["link", "join", token, "-o", "json"]));
        let links: Value = serde_json::from_str(&out).expect("link join -o json");
        let peer = links[0]["peer"]
            .as_str()
            .expect("joined link names its peer")
            .to_owned();
        self.wait_links(&format!("link with {peer} connected"), |links| {
            links
                .iter()
                .any(|l| l["peer"] == peer.as_str() && l["state"] == "connected")
        });
    }

    pub fn export(&self, service: &str) {
        run_ok(&mut self.ctl(&["export", service]));
    }

    pub fn links(&self) -> Vec<Value> {
        let out = run_ok(&mut self.ctl(&["links", "-o", "json"]));
        serde_json::from_str::<Value>(&out)
            .expect("links -o json")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn services(&self) -> Value {
        let out = run_ok(&mut self.ctl(&["services", "-o", "json"]));
        serde_json::from_str(&out).expect("services -o json")
    }

    /// Polls `links` until `pred` holds (bounded).
    pub fn wait_links(&self, what: &str, pred: impl Fn(&[Value]) -> bool) {
        self.poll(what, || pred(&self.links()));
    }

    /// Polls `services` until the import of `service` satisfies `pred` (`None`: no import).
    pub fn wait_import(
        &self,
        what: &str,
        service: &str,
        pred: impl Fn(Option<&Value>) -> bool,
    ) -> Option<Value> {
        let mut found = None;
        self.poll(what, || {
            let services = self.services();
            let import = services["imports"]
                .as_array()
                .and_then(|a| a.iter().find(|i| i["service"] == service))
                .cloned();
            let ok = pred(import.as_ref());
            found = import;
            ok
        });
        found
    }

    /// The local egress listener for `service`'s first port, once imported.
    pub fn listener(&self, service: &str) -> SocketAddr {
        let import = self
            .wait_import(&format!("{service} imported"), service, |i| {
                i.is_some_and(|i| i["listeners"][0].as_str().is_some_and(|l| !l.is_empty()))
            })
            .unwrap_or_else(|| self.controller.fail("import vanished"));
        import["listeners"][0]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| self.controller.fail("listener is not an address"))
    }

    fn poll(&self, what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !ok() {
            if Instant::now() > deadline {
                panic!(
                    "{}: not within {PATIENCE:?}: {what}\n{}\n{}",
                    self.name,
                    self.controller.logs(),
                    self.gateway.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn start_gateway(dir: &Path, name: &str, api: &Path, bootstrap: &Path) -> Process {
    Process::spawn(
        &format!("{name}-gateway"),
        dir,
        Command::new(bin("east-west-gateway"))
            .arg("--controller")
            .arg(api)
            .arg("--config")
            .arg(bootstrap)
            .args(["--name", &format!("{name}-gw")])
            .env("EWG_LOG", "info")
            .env_remove("EWG_CONTROLLER"),
    )
}

fn start_controller(dir: &Path, name: &str, config: &Path) -> Process {
    let p = Process::spawn(
        &format!("{name}-controller"),
        dir,
        Command::new(bin("federation-ctl"))
            .arg("controller")
            .arg("--config")
            .arg(config)
            .env("FEDERATION_LOG", "info"),
    );
    p.wait_event("ready", |_| true);
    p
}
