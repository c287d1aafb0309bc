//! The control-plane world: a hub cluster `a` and `peers` clusters, each a real
//! `federation-ctl controller` with a file registry and a real `east-west-gateway` in
//! controller mode, under one root made with the `trust-bundle` CLI. Every peer exports all
//! of its services to every linked cluster; the hub exports nothing. Links are made with
//! tokens, as an operator would: `link token` on the hub, `link join` on each peer.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::proc::{Proc, applied};

/// How long any one step may take before the run fails naming it.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);
const TRUST_DOMAIN: &str = "bench.example";
/// Egress ports reserved per peer (peers import nothing; the range is required).
const PEER_EGRESS: u16 = 4;

/// The size of the federation: peers × services per peer × endpoints per peer (spread over
/// its services, as in the Istio multicluster test: 300 services and 4000 endpoints per
/// cluster).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub(crate) peers: usize,
    pub(crate) services: usize,
    pub(crate) endpoints: usize,
}

/// Which sync implementation the controllers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Deltas on links, coalesced and deduplicated gateway pushes.
    Isthmus,
    /// `FEDERATION_SYNC=full-resync`: a full snapshot to every peer and a gateway push on
    /// every change.
    Naive,
}

/// Where the workspace binaries are.
#[derive(Debug, Clone)]
pub(crate) struct Bins {
    pub(crate) ctl: PathBuf,
    pub(crate) trust: PathBuf,
    pub(crate) gateway: PathBuf,
}

impl Bins {
    /// `federation-ctl` and `trust-bundle` next to the gateway binary.
    pub(crate) fn next_to(gateway: &Path) -> anyhow::Result<Self> {
        let dir = gateway
            .parent()
            .context("the gateway binary has no directory")?;
        let bins = Self {
            ctl: dir.join("federation-ctl"),
            trust: dir.join("trust-bundle"),
            gateway: gateway.to_owned(),
        };
        for bin in [&bins.ctl, &bins.trust] {
            if !bin.is_file() {
                bail!(
                    "{} is missing: build it with `cargo build --release -p federation-ctl -p trust-bundle` (`cargo xtask bench` does)",
                    bin.display()
                );
            }
        }
        Ok(bins)
    }
}

/// One cluster's processes and files.
pub(crate) struct Cluster {
    pub(crate) name: String,
    pub(crate) dir: PathBuf,
    pub(crate) gateway: Proc,
    pub(crate) controller: Proc,
    pub(crate) admin: SocketAddr,
}

impl Cluster {
    pub(crate) fn pids(&self) -> [u32; 2] {
        [self.controller.pid(), self.gateway.pid()]
    }
}

pub(crate) struct World {
    pub(crate) bins: Bins,
    pub(crate) shape: Shape,
    pub(crate) hub: Cluster,
    pub(crate) peers: Vec<Cluster>,
}

pub(crate) fn peer_name(i: usize) -> String {
    format!("p{:02}", i + 1)
}

/// Endpoints of service `s` of peer `p`: `endpoints` spread as evenly as possible.
fn endpoint_count(shape: &Shape, s: usize) -> usize {
    shape.endpoints / shape.services + usize::from(s < shape.endpoints % shape.services)
}

/// A peer's registry: its services (namespace = the peer's name), `svc-000` with `churn`'s
/// endpoints when given, every service exported to every linked cluster.
pub(crate) fn registry_yaml(shape: &Shape, peer: usize, churn: Option<&[Ipv4Addr]>) -> String {
    let ns = peer_name(peer);
    let mut yaml = String::from("services:\n");
    let mut next: u32 = 0;
    for s in 0..shape.services {
        yaml.push_str(&format!(
            "  - name: svc-{s:03}\n    namespace: {ns}\n    ports: [{{ name: http, port: 8080 }}]\n    endpoints: ["
        ));
        let generated: Vec<Ipv4Addr> = (0..endpoint_count(shape, s))
            .map(|_| {
                next += 1;
                let [_, _, x, y] = next.to_be_bytes();
                // 10.<peer>.0-199.y: churned sets use 200 and up, so they never collide.
                Ipv4Addr::new(10, (peer + 1) as u8, x, y)
            })
            .collect();
        let addrs = match churn {
            Some(set) if s == 0 => set,
            _ => &generated,
        };
        let list: Vec<String> = addrs
            .iter()
            .map(|a| format!("{{ address: {a} }}"))
            .collect();
        yaml.push_str(&list.join(", "));
        yaml.push_str("]\n");
    }
    yaml.push_str("exports:\n");
    for s in 0..shape.services {
        yaml.push_str(&format!("  - service: svc-{s:03}.{ns}\n"));
    }
    yaml
}

/// Replaces `path` whole (written aside, then renamed), so the registry poller never reads half
/// a file.
pub(crate) fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// A block of `n` consecutive free ports on 127.0.0.1 below the ephemeral range, so client
/// sockets never take them.
fn port_block(n: u16) -> anyhow::Result<u16> {
    let mut first = 20_000u16;
    while first + n < 32_000 {
        let held: Result<Vec<TcpListener>, _> = (first..first + n)
            .map(|p| TcpListener::bind((Ipv4Addr::LOCALHOST, p)))
            .collect();
        if held.is_ok() {
            return Ok(first);
        }
        first += 500;
    }
    bail!("no block of {n} free ports on 127.0.0.1 between 20000 and 32000")
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl World {
    /// Writes every file and starts every process (gateways first, then controllers, all at
    /// once), then waits for each gateway's first config. Nothing is linked yet.
    pub(crate) fn start(
        bins: &Bins,
        work: &Path,
        shape: Shape,
        mode: Mode,
    ) -> anyhow::Result<Self> {
        if work.exists() {
            std::fs::remove_dir_all(work)?;
        }
        std::fs::create_dir_all(work)?;
        let work = work.canonicalize()?;
        run(Command::new(&bins.trust).current_dir(&work).args([
            "root",
            "create",
            "--trust-domain",
            TRUST_DOMAIN,
            "--out",
            "root",
        ]))?;
        run(Command::new(&bins.trust).current_dir(&work).args([
            "bundle",
            "build",
            "--trust-domain",
            TRUST_DOMAIN,
            "--root",
            "root/cert.pem",
            "--out",
            "bundle.json",
        ]))?;
        let hub_ports = u16::try_from(shape.peers * shape.services)?.max(PEER_EGRESS);
        let total = hub_ports + PEER_EGRESS * u16::try_from(shape.peers)?;
        let first = port_block(total)?;
        let mut names = vec![("a".to_owned(), first, first + hub_ports - 1)];
        for p in 0..shape.peers {
            let start = first + hub_ports + PEER_EGRESS * p as u16;
            names.push((peer_name(p), start, start + PEER_EGRESS - 1));
        }
        // Gateways first (their ingress address goes into the controller's config); each
        // connects once its controller's socket exists.
        let mut gateways = Vec::new();
        for (i, (name, _, _)) in names.iter().enumerate() {
            let dir = work.join(name);
            std::fs::create_dir_all(&dir)?;
            run(Command::new(&bins.trust).current_dir(&work).args([
                "intermediate",
                "create",
                "--root",
                "root",
                "--cluster",
                name,
                "--out",
                &format!("{name}/ca"),
            ]))?;
            let registry = if i == 0 {
                "services: []\nexports: []\n".to_owned()
            } else {
                registry_yaml(&shape, i - 1, None)
            };
            write_atomic(&dir.join("registry.yaml"), &registry)?;
            std::fs::write(
                dir.join("gateway.yaml"),
                format!(
                    "cluster: {name}\ningress: {{ listen: 127.0.0.1:0 }}\nadmin: {{ listen: 127.0.0.1:0 }}\ndrain_timeout: 1s\n"
                ),
            )?;
            let mut cmd = Command::new(&bins.gateway);
            cmd.current_dir(&dir)
                .args(["--controller", "state/api.sock", "--config", "gateway.yaml"])
                .args(["--name", &format!("{name}-gw")])
                .env("EWG_LOG", "warn");
            gateways.push(Proc::spawn("gateway", cmd, &dir)?);
        }
        let mut clusters = Vec::new();
        for ((name, first, last), gateway) in names.iter().zip(gateways) {
            let dir = work.join(name);
            let (_, ready) = gateway.wait("ready", PATIENCE, |_| true)?;
            let address = |field: &str| -> anyhow::Result<SocketAddr> {
                ready[field]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .with_context(|| {
                        format!("{name}'s gateway ready event has no {field}: {ready}")
                    })
            };
            let (ingress, admin) = (address("ingress")?, address("admin")?);
            std::fs::write(
                dir.join("controller.yaml"),
                format!(
                    "cluster: {name}\nca: ca\ntrust_bundle: ../bundle.json\nregistry: {{ file: registry.yaml, watch_interval: 100ms }}\nstate_dir: state\npeering: {{ listen: 127.0.0.1:0 }}\ngateways:\n  addresses: [{ingress}]\n  egress: {{ address: 127.0.0.1, ports: {first}-{last} }}\n"
                ),
            )?;
            let mut cmd = Command::new(&bins.ctl);
            cmd.current_dir(&dir)
                .args(["controller", "--config", "controller.yaml"])
                .env("FEDERATION_LOG", "info");
            if mode == Mode::Naive {
                cmd.env("FEDERATION_SYNC", "full-resync");
            }
            let controller = Proc::spawn("controller", cmd, &dir)?;
            clusters.push(Cluster {
                name: name.clone(),
                dir,
                gateway,
                controller,
                admin,
            });
        }
        for c in &clusters {
            c.controller.wait("ready", PATIENCE, |_| true)?;
            c.gateway.wait("config", PATIENCE, applied)?;
        }
        let mut clusters = clusters.into_iter();
        let hub = clusters.next().context("the hub cluster")?;
        Ok(Self {
            bins: bins.clone(),
            shape,
            hub,
            peers: clusters.collect(),
        })
    }

    fn ctl(&self, cluster: &Cluster) -> Command {
        let mut cmd = Command::new(&self.bins.ctl);
        cmd.current_dir(&cluster.dir)
            .args(["--controller", "state/api.sock"]);
        cmd
    }

    /// Makes one token per peer on the hub, then starts every peer's `link join` at once; the
    /// instant they started. Waits for every join to succeed.
    pub(crate) fn link_all(&self) -> anyhow::Result<Instant> {
        let tokens = self
            .peers
            .iter()
            .map(|_| {
                Ok(run(self.ctl(&self.hub).args(["link", "token"]))?
                    .trim()
                    .to_owned())
            })
            .collect::<anyhow::Result<Vec<String>>>()?;
        let started = Instant::now();
        let joins = self
            .peers
            .iter()
            .zip(&tokens)
            .map(|(peer, token)| {
                let mut cmd = self.ctl(peer);
                cmd.args(["link", "join", token])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped());
                cmd.spawn()
                    .with_context(|| format!("{}: cannot start link join", peer.name))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        for (peer, join) in self.peers.iter().zip(joins) {
            let out = join.wait_with_output()?;
            if !out.status.success() {
                bail!(
                    "{}: link join failed: {}",
                    peer.name,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        Ok(started)
    }

    /// Every controller's and gateway's pid.
    pub(crate) fn all_pids(&self) -> Vec<u32> {
        std::iter::once(&self.hub)
            .chain(&self.peers)
            .flat_map(Cluster::pids)
            .collect()
    }
}

/// `GET http://addr/path`, the body (HTTP/1.0, so the server closes when done).
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {path} on {addr}: no HTTP response"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!(
            "GET {path} on {addr}: {}",
            head.lines().next().unwrap_or("")
        );
    }
    Ok(body.to_owned())
}
