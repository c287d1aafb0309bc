//! One cluster on loopback: an echo endpoint, a gateway driven by its controller, and the
//! controller with a file registry; and the `federation-ctl` verbs run against it.
//!
//! Files live in `<work>/<name>/` and are written with paths relative to the file that names
//! them, as a user would: `registry.yaml`, `gateway.yaml` (the gateway's bootstrap),
//! `controller.yaml`, the CA in `ca/`, the state directory `state/` with the API socket
//! `state/api.sock`, and each process's stdout and stderr in `<process>.out` / `.err`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

mod files;
mod replica;

use files::{
    Files, egress_block, free_or_any, gateway_yaml, registry_yaml, relative_to, spawn_controller,
    spawn_gateway,
};

use crate::echo::Echo;
use crate::process::Process;
use crate::shell::Shell;
use crate::{Error, PATIENCE, Result};

/// The echo service every cluster's registry lists (exported only when asked).
pub const ECHO: &str = "echo.default";

/// How a cluster is set up. Ports are preferences: a port that is taken falls back to any free
/// one, so a busy machine slows nothing down and fails nothing.
#[derive(Debug, Clone)]
pub struct Options {
    /// The address the cluster's listeners bind: its endpoint, egress and admin listeners, and
    /// unless `public` is set, its gateway ingress and controller peering too.
    pub host: IpAddr,
    /// The address other clusters reach it on, when it differs from `host`: the gateway's
    /// ingress and the controller's peering bind it.
    pub public: Option<IpAddr>,
    /// Run the cluster's processes (endpoint, gateway, controller) inside this network
    /// namespace (`ip netns exec`); see [`crate::netns`]. The CLI still runs here: it talks to
    /// the controller over its Unix socket, which namespaces do not separate.
    pub netns: Option<String>,
    pub ingress_port: u16,
    pub admin_port: u16,
    pub peering_port: u16,
    /// First port of the block of 20 for the egress listeners of imported services.
    pub egress_port: Option<u16>,
    /// Import preferences, most preferred first.
    pub preferences: Vec<String>,
    pub heartbeat: Duration,
    pub missed_heartbeats: u32,
    /// Print the config files as they are written (when the shell is verbose).
    pub show_files: bool,
    /// The gateway's `drain_timeout`.
    pub drain_timeout: Duration,
    /// Start the gateway with `--handover <name>/gateway.handover`, so
    /// [`Cluster::replace_gateway`] can start its successor on the same ingress socket.
    pub handover: bool,
    /// Serve the echo endpoint from a process of its own (Python's `http.server`) rather than
    /// threads of this one, so it can be killed and restarted ([`Cluster::restart_echo`]).
    pub echo_process: bool,
    /// `identity_validity` in the controller's config (its default, 24h, when `None`).
    pub identity_validity: Option<Duration>,
    /// Extra environment for the controller (e.g. libfaketime's `LD_PRELOAD` and `FAKETIME`).
    pub controller_env: Vec<(String, String)>,
    /// Extra top-level sections appended to the controller's config (e.g. `leader_election`).
    pub controller_extra: String,
    /// Gateway limits for load scenarios; the gateway's defaults when `None`.
    pub gateway: GatewayLimits,
    /// Read services and exports from the Kubernetes API this kubeconfig names (namespace
    /// `default`), and write imports there, instead of the registry file.
    pub kubeconfig: Option<PathBuf>,
}

/// The gateway's `ingress.max_connections`, `ingress.hello_timeout` (which also bounds a
/// terminate handshake) and `upstream.connect_timeout` (which also bounds an egress handshake).
#[derive(Debug, Clone, Copy, Default)]
pub struct GatewayLimits {
    pub max_connections: Option<usize>,
    pub hello_timeout: Option<Duration>,
    pub connect_timeout: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            public: None,
            netns: None,
            ingress_port: 0,
            admin_port: 0,
            peering_port: 0,
            egress_port: None,
            preferences: Vec::new(),
            // Fast leases: the scenarios watch them lapse.
            heartbeat: Duration::from_millis(200),
            missed_heartbeats: 4,
            show_files: true,
            drain_timeout: Duration::from_secs(2),
            handover: false,
            echo_process: false,
            identity_validity: None,
            controller_env: Vec::new(),
            controller_extra: String::new(),
            gateway: GatewayLimits::default(),
            kubeconfig: None,
        }
    }
}

/// Number of egress ports per cluster: plenty for the services of a demo or a scenario.
const EGRESS_PORTS: u16 = 20;

/// A single-use peering token and the cluster that issued it.
#[derive(Debug, Clone)]
pub struct Token {
    pub value: String,
    pub issuer: String,
}

impl Token {
    pub fn as_str(&self) -> &str {
        &self.value
    }
}

pub struct Cluster {
    pub name: String,
    pub host: IpAddr,
    /// The network namespace its processes run in, if any.
    pub netns: Option<String>,
    /// `<work>/<name>`, for reading the files it holds.
    pub dir: PathBuf,
    pub echo: Echo,
    pub gateway: Process,
    pub ingress: SocketAddr,
    pub admin: SocketAddr,
    pub controller: Process,
    /// The API socket, relative to the work directory (as the CLI is given it).
    pub api: PathBuf,
    pub peering: SocketAddr,
    pub egress_ports: (u16, u16),
    controller_env: Vec<(String, String)>,
    shell: Shell,
    rel: PathBuf,
    bootstrap: PathBuf,
    drain_timeout: Duration,
    /// The gateway's handover socket, relative to the work directory.
    handover: Option<PathBuf>,
    config: PathBuf,
    limits: GatewayLimits,
}

impl Cluster {
    /// Starts the gateway first (its ingress address goes into the controller's config; it
    /// connects as soon as the controller's socket exists), then the controller, and waits for
    /// the gateway's first config. `ca` is relative to the work directory.
    ///
    /// A preferred port found free can be taken by someone else before our process binds it
    /// (another demo starting at the same moment); then the cluster starts again on any free
    /// ports.
    pub fn start(
        shell: &Shell,
        name: &str,
        ca: &Path,
        bundle: &Path,
        opts: &Options,
    ) -> Result<Self> {
        let fixed = opts.ingress_port != 0
            || opts.admin_port != 0
            || opts.peering_port != 0
            || opts.egress_port.is_some();
        match Self::start_once(shell, name, ca, bundle, opts) {
            Err(e) if fixed && e.to_string().contains("Address already in use") => {
                shell.note(&format!(
                    "{name}: a port was taken meanwhile; starting again on any free ports"
                ));
                let any = Options {
                    ingress_port: 0,
                    admin_port: 0,
                    peering_port: 0,
                    egress_port: None,
                    ..opts.clone()
                };
                Self::start_once(shell, name, ca, bundle, &any)
            }
            started => started,
        }
    }

    fn start_once(
        shell: &Shell,
        name: &str,
        ca: &Path,
        bundle: &Path,
        opts: &Options,
    ) -> Result<Self> {
        let rel = PathBuf::from(name);
        let dir = shell.work().join(&rel);
        std::fs::create_dir_all(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
        let host = opts.host;
        let public = opts.public.unwrap_or(host);
        let netns = opts.netns.as_deref();
        let files = Files {
            shell,
            show: opts.show_files,
        };
        let echo = match netns {
            Some(ns) => Echo::spawn_in(shell, ns, host, name, &rel)?,
            None if opts.echo_process => {
                Echo::spawn(shell, None, SocketAddr::new(host, 0), name, &rel)?
            }
            None => Echo::start(host, name)?,
        };
        shell.note(&format!(
            "{name}: the {ECHO} endpoint, http://{} {}, answers \"{name}\"",
            echo.addr,
            if echo.process.is_some() {
                "in its namespace"
            } else {
                "in this process"
            }
        ));
        files.write(
            &rel.join("registry.yaml"),
            &registry_yaml(echo.addr, &["echo"]),
        )?;

        let bootstrap = rel.join("gateway.yaml");
        let ingress = SocketAddr::new(public, free_or_any(public, opts.ingress_port));
        let admin = SocketAddr::new(host, free_or_any(host, opts.admin_port));
        files.write(
            &bootstrap,
            &gateway_yaml(name, ingress, admin, opts.drain_timeout, opts.gateway),
        )?;
        let api = rel.join("state").join("api.sock");
        let handover = opts.handover.then(|| rel.join("gateway.handover"));
        let gateway = spawn_gateway(
            shell,
            netns,
            name,
            "gateway",
            &api,
            &bootstrap,
            handover.as_deref(),
        )?;
        let ready = gateway.wait_event("ready", |_| true)?;
        let address = |field: &str| -> Result<SocketAddr> {
            ready[field]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| gateway.fail(&format!("its ready event has no {field} address")))
        };
        let (ingress, admin) = (address("ingress")?, address("admin")?);

        let egress_ports = match netns {
            // A namespace of our own: every port in it is free, and none can be probed from here.
            Some(_) => {
                let first = opts
                    .egress_port
                    .unwrap_or(20_000)
                    .min(u16::MAX - EGRESS_PORTS);
                (first, first + EGRESS_PORTS - 1)
            }
            None => egress_block(host, opts.egress_port)?,
        };
        let config = rel.join("controller.yaml");
        let controller_yaml = format!(
            "cluster: {name}\nca: {ca}\ntrust_bundle: {bundle}\nregistry: {registry}\nstate_dir: state\npeering: {{ listen: {public}:{peering} }}\ngateways:\n  addresses: [{ingress}]\n  egress: {{ address: {host}, ports: {first}-{last} }}\nlease: {{ heartbeat_interval: {hb}ms, missed_heartbeats: {missed} }}\npreferences: [{prefs}]\ndns: {{ listen: {host}:0 }}\n{validity}{extra}",
            ca = relative_to(ca, &rel).display(),
            bundle = relative_to(bundle, &rel).display(),
            registry = match &opts.kubeconfig {
                Some(kubeconfig) => format!(
                    "{{ kubernetes: {{ kubeconfig: {}, namespaces: [default] }} }}",
                    kubeconfig.display()
                ),
                None => "{ file: registry.yaml, watch_interval: 100ms }".to_owned(),
            },
            peering = free_or_any(public, opts.peering_port),
            first = egress_ports.0,
            last = egress_ports.1,
            hb = opts.heartbeat.as_millis(),
            missed = opts.missed_heartbeats,
            prefs = opts.preferences.join(", "),
            validity = opts
                .identity_validity
                .map(|v| format!("identity_validity: {}s\n", v.as_secs()))
                .unwrap_or_default(),
            extra = opts.controller_extra,
        );
        files.write(&config, &controller_yaml)?;
        let (controller, peering) =
            spawn_controller(shell, netns, name, &rel, &config, &opts.controller_env)?;
        let cluster = Self {
            name: name.to_owned(),
            host,
            netns: opts.netns.clone(),
            dir,
            echo,
            gateway,
            ingress,
            admin,
            controller,
            api,
            peering,
            egress_ports,
            controller_env: opts.controller_env.clone(),
            shell: shell.clone(),
            rel,
            bootstrap,
            drain_timeout: opts.drain_timeout,
            handover,
            config,
            limits: opts.gateway,
        };
        // The gateway has its first config once the controller serves.
        cluster
            .gateway
            .wait_event("config", |e| e["result"] == "applied")?;
        Ok(cluster)
    }

    /// The controller's DNS server for imports (`NAME.NS.svc.clusterset.local`), as its
    /// `ready` event says.
    pub fn dns(&self) -> Option<SocketAddr> {
        self.controller.last_event("ready")?["dns"]
            .as_str()?
            .parse()
            .ok()
    }

    /// SIGKILLs the controller.
    pub fn kill_controller(&mut self) {
        self.controller.kill();
    }

    /// Starts the controller again from the same config and state directory.
    pub fn restart_controller(&mut self) -> Result<()> {
        self.controller.kill();
        let (controller, peering) = spawn_controller(
            &self.shell,
            self.netns.as_deref(),
            &self.name,
            &self.rel,
            &self.config,
            &self.controller_env,
        )?;
        self.controller = controller;
        self.peering = peering;
        Ok(())
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to the controller, echoed as `kill -SIGNAL PID`.
    pub fn signal_controller(&self, signal: &str) -> Result<()> {
        let pid = self.controller.pid().to_string();
        self.shell.echo(&format!(
            "kill -{signal} {pid}    # {}'s controller",
            self.name
        ));
        crate::run_ok(Command::new("kill").arg(format!("-{signal}")).arg(&pid)).map(drop)
    }

    /// SIGKILLs the echo endpoint's process and starts it again on the same address; only
    /// with [`Options::echo_process`]. `between` runs while it is down.
    pub fn restart_echo(&mut self, between: impl FnOnce() -> Result<()>) -> Result<()> {
        let Some(process) = self.echo.process.as_mut() else {
            return Err(Error::Output {
                command: format!("{}'s echo endpoint", self.name),
                detail: "it runs in this process; set Options::echo_process".into(),
            });
        };
        process.kill();
        between()?;
        self.echo = Echo::spawn(
            &self.shell,
            self.netns.as_deref(),
            self.echo.addr,
            &self.name,
            &self.rel,
        )?;
        Ok(())
    }

    /// SIGKILLs the gateway, echoed as `kill -KILL PID`.
    pub fn kill_gateway(&mut self) {
        self.shell.echo(&format!(
            "kill -KILL {}    # {}'s gateway",
            self.gateway.pid(),
            self.name
        ));
        self.gateway.kill();
    }

    /// Starts the gateway again on the addresses it had (the controller advertises them to
    /// peers) and waits for its first config.
    pub fn restart_gateway(&mut self) -> Result<()> {
        self.gateway.kill();
        std::fs::write(
            self.shell.work().join(&self.bootstrap),
            gateway_yaml(
                &self.name,
                self.ingress,
                self.admin,
                self.drain_timeout,
                self.limits,
            ),
        )
        .map_err(Error::io(format!("write {}", self.bootstrap.display())))?;
        self.gateway = spawn_gateway(
            &self.shell,
            self.netns.as_deref(),
            &self.name,
            "gateway",
            &self.api,
            &self.bootstrap,
            self.handover.as_deref(),
        )?;
        self.gateway
            .wait_event("config", |e| e["result"] == "applied")?;
        Ok(())
    }

    /// Adds services named `names` (namespace `default`) to the registry file, next to `echo`
    /// and served by the same endpoint, and exports each once the controller has read the
    /// edit.
    pub fn add_and_export(&self, names: &[&str]) -> Result<()> {
        let mut all = vec!["echo"];
        all.extend_from_slice(names);
        Files {
            shell: &self.shell,
            show: true,
        }
        .write(
            &self.rel.join("registry.yaml"),
            &registry_yaml(self.echo.addr, &all),
        )?;
        for name in names {
            let service = format!("{name}.default");
            self.wait_for(&format!("{service} exported"), || {
                Ok(crate::run_ok(&mut self.ctl(&["export", &service])?).is_ok())
            })?;
            self.shell
                .echo(&self.ctl_line(&format!("export {service}")));
        }
        Ok(())
    }

    /// The gateway's `/config_dump`.
    pub fn config_dump(&self) -> Result<Value> {
        let body = crate::echo::get(self.admin, "/config_dump", "admin").map_err(|e| {
            self.gateway
                .fail(&format!("GET http://{}/config_dump: {e}", self.admin))
        })?;
        serde_json::from_str(&body).map_err(|e| Error::Output {
            command: format!("curl http://{}/config_dump", self.admin),
            detail: e.to_string(),
        })
    }

    /// Polls the gateway's `/config_dump` until its `tls` section satisfies `pred` (bounded);
    /// that section.
    pub fn wait_gateway_tls(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
        let mut last = Value::Null;
        self.wait_for(what, || {
            last = self.config_dump()?["tls"].clone();
            Ok(pred(&last))
        })
        .map_err(|e| match e {
            Error::Timeout { what, logs } => Error::Timeout {
                what,
                logs: format!("\nlast tls section: {last:#}{logs}"),
            },
            other => other,
        })?;
        Ok(last)
    }

    /// Starts a second gateway on the same ingress socket, taken over from the running one
    /// through the handover socket (the cluster must start with `Options::handover`), with its
    /// own admin listener; waits until it has the controller's config, then makes it the
    /// cluster's gateway. The old one, still serving, is returned: drain it with SIGTERM.
    pub fn replace_gateway(&mut self) -> Result<Process> {
        let Some(handover) = self.handover.clone() else {
            return Err(self
                .gateway
                .fail("started without a handover socket (Options::handover)"));
        };
        let bootstrap = self.rel.join("gateway-next.yaml");
        let admin = SocketAddr::new(self.host, 0);
        Files {
            shell: &self.shell,
            show: true,
        }
        .write(
            &bootstrap,
            &gateway_yaml(
                &self.name,
                self.ingress,
                admin,
                self.drain_timeout,
                self.limits,
            ),
        )?;
        let next = spawn_gateway(
            &self.shell,
            self.netns.as_deref(),
            &self.name,
            "gateway-next",
            &self.api,
            &bootstrap,
            Some(&handover),
        )?;
        let ready = next.wait_event("ready", |_| true)?;
        if ready["ingress_handed_over"] != true || ready["ingress"] != self.ingress.to_string() {
            return Err(next.fail(&format!(
                "did not take over the ingress listener {}: {ready}",
                self.ingress
            )));
        }
        next.wait_event("config", |e| e["result"] == "applied")?;
        self.admin = ready["admin"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| next.fail("its ready event has no admin address"))?;
        self.bootstrap = bootstrap;
        Ok(std::mem::replace(&mut self.gateway, next))
    }

    /// `federation-ctl --controller <api> ARGS`, run from the work directory.
    pub fn ctl(&self, args: &[&str]) -> Result<Command> {
        let mut cmd = self.shell.command("federation-ctl")?;
        cmd.arg("--controller").arg(&self.api).args(args);
        Ok(cmd)
    }

    /// The `ctl` command line as a user types it.
    fn ctl_line(&self, args: &str) -> String {
        format!("federation-ctl --controller {} {args}", self.api.display())
    }

    /// Runs a verb, echoed with its output (table form) when the shell is verbose.
    pub fn show(&self, args: &[&str]) -> Result<String> {
        self.shell.run(&mut self.ctl(args)?)
    }

    /// A fresh peering token, echoed as `TOKEN=$(… link token)`.
    pub fn token(&self) -> Result<Token> {
        let out = self.shell.run_as(
            &format!("TOKEN=$({})", self.ctl_line("link token")),
            &mut self.ctl(&["link", "token"])?,
            false,
        )?;
        Ok(Token {
            value: out.trim().to_owned(),
            issuer: self.name.clone(),
        })
    }

    /// Redeems `token` (made by another cluster), echoed as `… link join "$TOKEN"`, and waits
    /// until the link is connected.
    pub fn join(&self, token: &Token) -> Result<()> {
        self.shell.run_as(
            &self.ctl_line("link join \"$TOKEN\""),
            &mut self.ctl(&["link", "join", token.as_str()])?,
            true,
        )?;
        let peer = token.issuer.as_str();
        self.wait_links(&format!("link with {peer} connected"), |links| {
            links
                .iter()
                .any(|l| l["peer"] == peer && l["state"] == "connected")
        })
    }

    pub fn export(&self, service: &str) -> Result<()> {
        self.show(&["export", service]).map(drop)
    }

    pub fn unlink(&self, peer: &str) -> Result<()> {
        self.show(&["unlink", peer]).map(drop)
    }

    /// `links -o json`, silently.
    pub fn links(&self) -> Result<Vec<Value>> {
        Ok(self
            .json_verb(&["links", "-o", "json"])?
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// `services -o json`, silently.
    pub fn services(&self) -> Result<Value> {
        self.json_verb(&["services", "-o", "json"])
    }

    fn json_verb(&self, args: &[&str]) -> Result<Value> {
        let mut cmd = self.ctl(args)?;
        let out = crate::run_ok(&mut cmd)?;
        serde_json::from_str(&out).map_err(|e| Error::Output {
            command: crate::shell::display(&cmd),
            detail: e.to_string(),
        })
    }

    /// Polls `links` until `pred` holds (bounded).
    pub fn wait_links(&self, what: &str, pred: impl Fn(&[Value]) -> bool) -> Result<()> {
        self.poll(what, || Ok(pred(&self.links()?)))
    }

    /// Polls `services` until the import of `service` satisfies `pred` (`None`: no import);
    /// the import last seen.
    pub fn wait_import(
        &self,
        what: &str,
        service: &str,
        pred: impl Fn(Option<&Value>) -> bool,
    ) -> Result<Option<Value>> {
        let mut found = None;
        self.poll(what, || {
            let services = self.services()?;
            let import = services["imports"]
                .as_array()
                .and_then(|a| a.iter().find(|i| i["service"] == service))
                .cloned();
            let ok = pred(import.as_ref());
            found = import;
            Ok(ok)
        })?;
        Ok(found)
    }

    /// The local egress listener for `service`'s first port, once imported.
    pub fn listener(&self, service: &str) -> Result<SocketAddr> {
        let import = self.wait_import(&format!("{service} imported"), service, |i| {
            i.is_some_and(|i| i["listeners"][0].as_str().is_some_and(|l| !l.is_empty()))
        })?;
        import
            .as_ref()
            .and_then(|i| i["listeners"][0].as_str())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                self.controller
                    .fail(&format!("no listener address for {service}"))
            })
    }

    /// What `topology.json` says about this cluster.
    pub fn json(&self) -> Value {
        let work = self.shell.work();
        let process = |p: &Process| {
            json!({
                "pid": p.pid(),
                "running": p.is_alive(),
                "stdout": p.stdout_log(),
                "stderr": p.stderr_log(),
            })
        };
        let mut controller = process(&self.controller);
        controller["api"] = json!(work.join(&self.api));
        controller["peering"] = json!(self.peering.to_string());
        controller["config"] = json!(work.join(&self.config));
        controller["dns"] = json!(self.dns().map(|a| a.to_string()));
        let mut gateway = process(&self.gateway);
        gateway["ingress"] = json!(self.ingress.to_string());
        gateway["admin"] = json!(self.admin.to_string());
        gateway["bootstrap"] = json!(work.join(&self.bootstrap));
        gateway["egress"] = match self.gateway.last_event("config") {
            Some(config) if self.gateway.is_alive() => config["egress"].clone(),
            _ => json!({}),
        };
        json!({
            "address": self.host.to_string(),
            "netns": self.netns,
            "dir": self.dir,
            "echo": {
                "address": self.echo.addr.to_string(),
                "pid": self.echo.process.as_ref().map_or(std::process::id(), Process::pid),
            },
            "controller": controller,
            "gateway": gateway,
            "egress_ports": format!("{}-{}", self.egress_ports.0, self.egress_ports.1),
        })
    }

    /// Polls `ok` until it holds (bounded); a timeout carries the controller's and gateway's
    /// logs.
    pub fn wait_for(&self, what: &str, ok: impl FnMut() -> Result<bool>) -> Result<()> {
        self.poll(what, ok)
    }

    fn poll(&self, what: &str, mut ok: impl FnMut() -> Result<bool>) -> Result<()> {
        match crate::poll(PATIENCE, Duration::from_millis(50), || {
            Ok(ok()?.then_some(()))
        })? {
            Some(_) => Ok(()),
            None => Err(Error::Timeout {
                what: format!("{}: {what}", self.name),
                logs: format!("\n{}\n{}", self.controller.logs(), self.gateway.logs()),
            }),
        }
    }
}
