//! Helpers that start a cluster's processes and write its files: config text, process
//! spawning, paths and port choice.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use super::{EGRESS_PORTS, GatewayLimits};
use crate::process::Process;
use crate::shell::Shell;
use crate::{Error, Result};

/// A registry listing `names` (namespace `default`, port `http` 8080), all served by the echo
/// endpoint at `echo`; no exports (the CLI makes them).
pub(super) fn registry_yaml(echo: SocketAddr, names: &[&str]) -> String {
    let mut yaml = String::from("services:\n");
    for name in names {
        yaml.push_str(&format!(
            "  - name: {name}\n    namespace: default\n    ports: [{{ name: http, port: 8080, target_port: {} }}]\n    endpoints: [{{ address: {} }}]\n",
            echo.port(),
            echo.ip()
        ));
    }
    yaml + "exports: []\n"
}

/// Writes config files, shown as heredocs when the shell is verbose and `show` is set.
pub(super) struct Files<'a> {
    pub(super) shell: &'a Shell,
    pub(super) show: bool,
}

impl Files<'_> {
    pub(super) fn write(&self, rel: &Path, text: &str) -> Result<()> {
        if self.show {
            self.shell
                .echo(&format!("cat > {} <<'EOF'\n{text}EOF", rel.display()));
        }
        let path = self.shell.work().join(rel);
        std::fs::write(&path, text).map_err(Error::io(format!("write {}", path.display())))
    }
}

pub(super) fn gateway_yaml(
    name: &str,
    ingress: SocketAddr,
    admin: SocketAddr,
    drain: Duration,
    limits: GatewayLimits,
) -> String {
    let mut ingress_opts = String::new();
    if let Some(n) = limits.max_connections {
        ingress_opts.push_str(&format!(", max_connections: {n}"));
    }
    if let Some(t) = limits.hello_timeout {
        ingress_opts.push_str(&format!(", hello_timeout: {}ms", t.as_millis()));
    }
    let upstream = limits
        .connect_timeout
        .map(|t| format!("upstream: {{ connect_timeout: {}ms }}\n", t.as_millis()))
        .unwrap_or_default();
    format!(
        "cluster: {name}\ningress: {{ listen: {ingress}{ingress_opts} }}\nadmin: {{ listen: {admin} }}\n{upstream}drain_timeout: {}ms\n",
        drain.as_millis()
    )
}

/// Starts a gateway of cluster `name` in controller mode; its stdout and stderr go to
/// `<name>/<file>.out|.err`.
pub(super) fn spawn_gateway(
    shell: &Shell,
    netns: Option<&str>,
    name: &str,
    file: &str,
    api: &Path,
    bootstrap: &Path,
    handover: Option<&Path>,
) -> Result<Process> {
    let mut cmd = shell.command_in(netns, "east-west-gateway")?;
    cmd.arg("--controller")
        .arg(api)
        .arg("--config")
        .arg(bootstrap)
        .args(["--name", &format!("{name}-gw")]);
    if let Some(path) = handover {
        cmd.arg("--handover").arg(path);
    }
    cmd.env("EWG_LOG", "info");
    shell.spawn(&format!("{name}-{file}"), Path::new(name), file, &mut cmd)
}

/// Starts the controller and waits until it serves; its peering address.
pub(super) fn spawn_controller(
    shell: &Shell,
    netns: Option<&str>,
    name: &str,
    rel: &Path,
    config: &Path,
    env: &[(String, String)],
) -> Result<(Process, SocketAddr)> {
    let p = spawn_controller_process(shell, netns, name, "controller", rel, config, env)?;
    let peering = peering_of(&p)?;
    Ok((p, peering))
}

/// Starts a controller process; its output goes to `<rel>/<file>.out|.err`.
pub(super) fn spawn_controller_process(
    shell: &Shell,
    netns: Option<&str>,
    name: &str,
    file: &str,
    rel: &Path,
    config: &Path,
    env: &[(String, String)],
) -> Result<Process> {
    let mut cmd = shell.command_in(netns, "federation-ctl")?;
    cmd.arg("controller")
        .arg("--config")
        .arg(config)
        .env("FEDERATION_LOG", "info")
        .envs(env.iter().map(|(k, v)| (k, v)));
    shell.spawn(&format!("{name}-{file}"), rel, file, &mut cmd)
}

/// Waits until a controller serves; its peering address.
pub(super) fn peering_of(p: &Process) -> Result<SocketAddr> {
    let ready = p.wait_event("ready", |_| true)?;
    ready["peering"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| p.fail("its ready event has no peering address"))
}

/// `path` (relative to the work directory) as seen from `dir` (also relative to it): the
/// config files name paths relative to themselves.
pub(super) fn relative_to(path: &Path, dir: &Path) -> PathBuf {
    match path.strip_prefix(dir) {
        Ok(inside) => inside.to_owned(),
        Err(_) if path.is_absolute() => path.to_owned(),
        Err(_) => dir
            .components()
            .map(|_| Path::new(".."))
            .collect::<PathBuf>()
            .join(path),
    }
}

/// `port` if it is free on `host`, else 0 (any free port).
pub(super) fn free_or_any(host: IpAddr, port: u16) -> u16 {
    if port != 0 && TcpListener::bind((host, port)).is_ok() {
        port
    } else {
        0
    }
}

/// A block of free ports on `host` for a cluster's egress listeners: `preferred..` if free, else
/// one in 20000-30000, away from the kernel's ephemeral range so client sockets never take them.
pub(super) fn egress_block(host: IpAddr, preferred: Option<u16>) -> Result<(u16, u16)> {
    let free =
        |first: u16| (first..first + EGRESS_PORTS).all(|p| TcpListener::bind((host, p)).is_ok());
    if let Some(first) = preferred.filter(|&p| p <= u16::MAX - EGRESS_PORTS && free(p)) {
        return Ok((first, first + EGRESS_PORTS - 1));
    }
    // Clusters started by concurrent tests of one process take successive slots; concurrent
    // processes start from different ones.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let slots = 10_000 / EGRESS_PORTS;
    let seed = u16::try_from(std::process::id() % u32::from(slots)).unwrap_or(0);
    for _ in 0..slots {
        let slot = (seed + NEXT.fetch_add(1, Ordering::Relaxed)) % slots;
        let first = 20_000 + slot * EGRESS_PORTS;
        if free(first) {
            return Ok((first, first + EGRESS_PORTS - 1));
        }
    }
    Err(Error::NoPorts(EGRESS_PORTS))
}
