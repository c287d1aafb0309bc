//! The demo's steps over one [`Topology`]. Each step does what it says through the library,
//! which echoes the real commands (`trust-bundle`, `east-west-gateway`, `federation-ctl`) with
//! paths relative to the work directory; a step fails when what it shows did not happen.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use multicloud::cluster::{Cluster, ECHO, Options};
use multicloud::echo::call;
use multicloud::shell::Shell;
use multicloud::topology::{Ca, Topology};
use multicloud::traffic::{call_until, call_until_refused};

/// The clusters, and the third octet of each one's loopback address (127.0.N.1).
const CLUSTERS: [(&str, u8); 3] = [("aws", 10), ("gcp", 20), ("onprem", 30)];
/// Calls per look at who answers.
const CALLS: usize = 5;

pub(crate) struct Demo {
    topo: Topology,
    topology_json: PathBuf,
    cas: Vec<Ca>,
    /// aws's egress listener for echo.default, once imported.
    listener: Option<SocketAddr>,
}

impl Demo {
    pub(crate) fn new(shell: Shell, topology_json: PathBuf) -> Self {
        Self {
            topo: Topology::new(shell),
            topology_json,
            cas: Vec::new(),
            listener: None,
        }
    }

    pub(crate) fn write_topology(&self) -> anyhow::Result<()> {
        Ok(self.topo.write_json(&self.topology_json)?)
    }

    fn note(&self, text: &str) {
        self.topo.shell.note(text);
    }

    fn cluster(&self, name: &str) -> anyhow::Result<&Cluster> {
        Ok(self.topo.get(name)?)
    }

    fn listener(&self) -> anyhow::Result<SocketAddr> {
        self.listener
            .context("aws has no listener for echo.default (the export step did not run)")
    }

    pub(crate) fn trust(&mut self) -> anyhow::Result<()> {
        self.note("aws and gcp: one root for the trust domain mesh.example, an intermediate each");
        let mesh = self.topo.root("mesh-root", "mesh.example")?;
        let aws = self.topo.intermediate(&mesh, "aws")?;
        let gcp = self.topo.intermediate(&mesh, "gcp")?;
        self.note(
            "onprem: a root of its own; it federates with aws by exchanging bundles over the link",
        );
        let own = self.topo.root("onprem-root", "onprem.example")?;
        let onprem = self.topo.intermediate(&own, "onprem")?;
        self.cas = vec![aws, gcp, onprem];
        Ok(())
    }

    pub(crate) fn start(&mut self) -> anyhow::Result<()> {
        let cas = self.cas.clone();
        ensure!(cas.len() == CLUSTERS.len(), "the trust step did not run");
        for (i, ((name, octet), ca)) in CLUSTERS.into_iter().zip(&cas).enumerate() {
            let host = loopback(octet);
            if i > 0 {
                self.note(&format!(
                    "{name}: the same files as aws's, with its own name, address and echo port and no preferences (see {name}/*.yaml)"
                ));
            }
            let opts = Options {
                host,
                ingress_port: 15443,
                admin_port: 15021,
                peering_port: 15050,
                egress_port: Some(15100),
                preferences: if name == "aws" {
                    vec!["gcp".into(), "onprem".into()]
                } else {
                    Vec::new()
                },
                show_files: i == 0,
                ..Options::default()
            };
            self.topo.start(name, ca, &opts)?;
        }
        for c in &self.topo.clusters {
            println!(
                "# {:<6} gateway ingress {} admin {}, controller peering {} API {}",
                c.name,
                c.ingress,
                c.admin,
                c.peering,
                c.api.display()
            );
        }
        Ok(())
    }

    pub(crate) fn link(&mut self) -> anyhow::Result<()> {
        let (aws, gcp, onprem) = (
            self.cluster("aws")?,
            self.cluster("gcp")?,
            self.cluster("onprem")?,
        );
        self.note("gcp issues a token (single-use, expiring: gcp's bundle and peering address, no key); aws redeems it");
        aws.join(&gcp.token()?)?;
        self.note("onprem, under another root, the same way: its token carries its bundle, aws's join carries aws's");
        aws.join(&onprem.token()?)?;
        aws.show(&["links"])?;
        Ok(())
    }

    pub(crate) fn export(&mut self) -> anyhow::Result<()> {
        let aws = self.cluster("aws")?;
        for name in ["gcp", "onprem"] {
            self.cluster(name)?.export(ECHO)?;
        }
        aws.wait_import("echo.default imported from gcp and onprem", ECHO, |i| {
            i.is_some_and(|i| i["sources"].as_array().map(Vec::len) == Some(2))
        })?;
        let listener = aws.listener(ECHO)?;
        self.note(&format!(
            "aws imports echo.default from both, merged into one service, and its gateway listens for it on {listener}"
        ));
        aws.show(&["services"])?;
        self.listener = Some(listener);
        Ok(())
    }

    pub(crate) fn call(&mut self) -> anyhow::Result<()> {
        let listener = self.listener()?;
        self.note("plain TCP to aws's gateway, mutual TLS between the gateways; the demo calls with its own HTTP client, by hand:");
        self.topo.shell.echo(&format!("curl -s http://{listener}/"));
        call_until(listener, "gcp")?;
        println!("gcp");
        let answers = tally(listener)?;
        self.note(&format!(
            "{CALLS} more calls, answered by: {answers} (aws prefers gcp, then onprem: preferences in aws/controller.yaml)"
        ));
        ensure!(
            answers == format!("gcp {CALLS}"),
            "gcp should answer every call while its gateway is up"
        );
        self.caller_seen_by("gcp")?;
        self.note("where a call from aws goes, and why (RTT from aws's gateway's probes):");
        self.cluster("aws")?.show(&["trace", ECHO])?;
        Ok(())
    }

    pub(crate) fn failover(&mut self) -> anyhow::Result<()> {
        let listener = self.listener()?;
        let killed = Instant::now();
        self.topo.get_mut("gcp")?.kill_gateway();
        let (gap, failed) = call_until(listener, "onprem")?;
        println!(
            "# failover: the first call answered by onprem came {:.1} ms after the kill; {failed} calls failed meanwhile",
            gap.as_secs_f64() * 1000.0
        );
        let answers = tally(listener)?;
        self.note(&format!("{CALLS} more calls, answered by: {answers}"));
        ensure!(
            answers == format!("onprem {CALLS}"),
            "onprem should answer every call once gcp's gateway is gone ({} ms after the kill)",
            killed.elapsed().as_millis()
        );
        self.caller_seen_by("onprem")
    }

    pub(crate) fn unlink(&mut self) -> anyhow::Result<()> {
        let listener = self.listener()?;
        let aws = self.cluster("aws")?;
        aws.unlink("gcp")?;
        aws.unlink("onprem")?;
        aws.wait_import("echo.default no longer imported", ECHO, |i| i.is_none())?;
        for name in ["gcp", "onprem"] {
            self.cluster(name)?
                .wait_links(&format!("{name} dropped its side"), <[_]>::is_empty)?;
        }
        aws.show(&["services"])?;
        call_until_refused(listener)?;
        let why = call(listener).err().unwrap_or_default();
        self.note(&format!(
            "gcp and onprem dropped their side too; aws's listener is closed: curl -s http://{listener}/ fails ({why})"
        ));
        self.listener = None;
        Ok(())
    }

    /// Under `--keep-running`: gcp's gateway back on its addresses, and both links made again
    /// (with new tokens: a used one is refused), so the topology left running is whole.
    pub(crate) fn restore(&mut self) -> anyhow::Result<()> {
        self.topo.get_mut("gcp")?.restart_gateway()?;
        let (aws, gcp, onprem) = (
            self.cluster("aws")?,
            self.cluster("gcp")?,
            self.cluster("onprem")?,
        );
        aws.join(&gcp.token()?)?;
        aws.join(&onprem.token()?)?;
        aws.wait_import(
            "echo.default imported from gcp and onprem again",
            ECHO,
            |i| i.is_some_and(|i| i["sources"].as_array().map(Vec::len) == Some(2)),
        )?;
        let listener = aws.listener(ECHO)?;
        call_until(listener, "gcp")?;
        self.note(&format!("http://{listener}/ is answered by gcp again"));
        self.listener = Some(listener);
        Ok(())
    }

    /// Stops every process (SIGKILL) and records it in `topology.json`.
    pub(crate) fn stop(&mut self) -> anyhow::Result<()> {
        for c in &mut self.topo.clusters {
            c.gateway.kill();
            c.controller.kill();
        }
        self.write_topology()
    }

    /// How to use the topology left running.
    pub(crate) fn usage(&self) {
        let shell = &self.topo.shell;
        let mut lines: Vec<(String, String)> = vec![
            (
                format!("export PATH=\"{}:$PATH\"", shell.bins().display()),
                String::new(),
            ),
            (format!("cd {}", shell.work().display()), String::new()),
        ];
        for c in &self.topo.clusters {
            lines.push((
                format!("export ISTHMUS_CONTROLLER={}", c.api.display()),
                format!(
                    "{}: then federation-ctl status, check, trace echo.default, links ...",
                    c.name
                ),
            ));
        }
        if let Some(listener) = self.listener {
            lines.push((
                format!("curl http://{listener}/"),
                "echo.default called from aws: gcp answers".into(),
            ));
        }
        if let Some(dns) = self.topo.get("aws").ok().and_then(Cluster::dns) {
            lines.push((
                format!(
                    "dig @{} -p {} _http._tcp.echo.default.svc.clusterset.local SRV",
                    dns.ip(),
                    dns.port()
                ),
                "aws's DNS for imports: the listener's port".into(),
            ));
        }
        for c in &self.topo.clusters {
            lines.push((
                format!("curl http://{}/config_dump", c.admin),
                format!("{}'s gateway (also /metrics, /readyz)", c.name),
            ));
        }
        if let Ok(gcp) = self.topo.get("gcp") {
            lines.push((
                format!("kill {}", gcp.gateway.pid()),
                "gcp's gateway: calls move to onprem".into(),
            ));
        }
        let width = lines.iter().map(|(cmd, _)| cmd.len()).max().unwrap_or(0);
        println!("\nThe topology is up. In another shell:");
        for (cmd, comment) in lines {
            if comment.is_empty() {
                println!("  {cmd}");
            } else {
                println!("  {cmd:<width$}  # {comment}");
            }
        }
        println!(
            "{} has every pid and address. Ctrl-C here stops everything.",
            self.topology_json.display()
        );
    }

    /// Prints the identity `server`'s gateway verified for the last call it accepted, from its
    /// access log: evidence that the hop between the gateways was mutual TLS.
    fn caller_seen_by(&self, server: &str) -> anyhow::Result<()> {
        let log = self.cluster(server)?.gateway.stderr_log().to_owned();
        let (peer, route) = last_peer(&log).with_context(|| {
            format!(
                "{} has no access-log entry with a peer identity",
                log.display()
            )
        })?;
        let shown = log
            .strip_prefix(self.topo.shell.work())
            .unwrap_or(&log)
            .display()
            .to_string();
        self.note(&format!(
            "{shown}: route {route}, caller verified as {peer} (mutual TLS)"
        ));
        Ok(())
    }
}

/// `CALLS` calls; who answered, e.g. `gcp 5` or `gcp 3, onprem 2`.
fn tally(listener: SocketAddr) -> anyhow::Result<String> {
    let mut seen = BTreeMap::<String, usize>::new();
    for _ in 0..CALLS {
        let who = match call(listener) {
            Ok(body) => body,
            Err(e) => format!("failure ({e})"),
        };
        *seen.entry(who).or_default() += 1;
    }
    if seen.is_empty() {
        bail!("no calls made");
    }
    Ok(seen
        .iter()
        .map(|(who, n)| format!("{who} {n}"))
        .collect::<Vec<_>>()
        .join(", "))
}

/// 127.0.N.1 when this system routes all of 127/8 to loopback (Linux does), else 127.0.0.1.
fn loopback(octet: u8) -> IpAddr {
    let own = IpAddr::V4(Ipv4Addr::new(127, 0, octet, 1));
    if TcpListener::bind((own, 0)).is_ok() {
        own
    } else {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }
}

/// The last access-log line of a gateway naming a peer identity: (peer SPIFFE ID, route).
fn last_peer(log: &Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().rev().find_map(|line| {
        let peer = field(line, "peer_spiffe_id").filter(|p| !p.is_empty())?;
        let route = field(line, "route").unwrap_or_else(|| "?".into());
        Some((peer, route))
    })
}

/// The string value of `"name":"…"` in a JSON log line, wherever it is nested.
fn field(line: &str, name: &str) -> Option<String> {
    let key = format!("\"{name}\":\"");
    let start = line.find(&key)? + key.len();
    let len = line[start..].find('"')?;
    Some(line[start..start + len].to_owned())
}
