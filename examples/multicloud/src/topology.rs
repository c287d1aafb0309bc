//! A topology: the roots of trust, the intermediates and the clusters of one work directory,
//! made with the `trust-bundle` CLI and described in `topology.json`.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::cluster::{Cluster, Options};
use crate::shell::Shell;
use crate::{Error, Result};

/// A root CA directory (relative to the work directory), its trust domain, and the bundle file
/// of that trust domain the controllers read (a rotation rewrites it).
#[derive(Debug, Clone)]
pub struct Root {
    pub dir: PathBuf,
    pub trust_domain: String,
    pub bundle: PathBuf,
}

/// A cluster's intermediate CA directory (relative to the work directory), under `root`.
#[derive(Debug, Clone)]
pub struct Ca {
    pub dir: PathBuf,
    pub root: Root,
}

/// The clusters of one work directory, in the order they were started.
pub struct Topology {
    pub shell: Shell,
    pub roots: Vec<Root>,
    pub clusters: Vec<Cluster>,
    /// (cluster, trust domain), for `topology.json`.
    trust_domains: Vec<(String, String)>,
}

impl Topology {
    pub fn new(shell: Shell) -> Self {
        Self {
            shell,
            roots: Vec::new(),
            clusters: Vec::new(),
            trust_domains: Vec::new(),
        }
    }

    /// `trust-bundle root create --trust-domain TD --out DIR`, then the trust domain's bundle
    /// `bundle-TD.json` from it (`trust-bundle bundle build`).
    pub fn root(&mut self, dir: &str, trust_domain: &str) -> Result<Root> {
        let mut cmd = self.shell.command("trust-bundle")?;
        cmd.args([
            "root",
            "create",
            "--trust-domain",
            trust_domain,
            "--out",
            dir,
        ]);
        self.shell
            .run_as(&crate::shell::display(&cmd), &mut cmd, false)?;
        let bundle = PathBuf::from(format!("bundle-{trust_domain}.json"));
        let mut cmd = self.shell.command("trust-bundle")?;
        cmd.args(["bundle", "build", "--trust-domain", trust_domain, "--root"])
            .arg(Path::new(dir).join("cert.pem"))
            .arg("--out")
            .arg(&bundle);
        self.shell
            .run_as(&crate::shell::display(&cmd), &mut cmd, false)?;
        let root = Root {
            dir: PathBuf::from(dir),
            trust_domain: trust_domain.to_owned(),
            bundle,
        };
        self.roots.push(root.clone());
        Ok(root)
    }

    /// `trust-bundle intermediate create --root ROOT --cluster NAME --out NAME/ca`.
    pub fn intermediate(&self, root: &Root, cluster: &str) -> Result<Ca> {
        let dir = Path::new(cluster).join("ca");
        let mut cmd = self.shell.command("trust-bundle")?;
        cmd.args(["intermediate", "create", "--root"])
            .arg(&root.dir)
            .args(["--cluster", cluster, "--out"])
            .arg(&dir);
        self.shell
            .run_as(&crate::shell::display(&cmd), &mut cmd, false)?;
        Ok(Ca {
            dir,
            root: root.clone(),
        })
    }

    /// Starts cluster `name` with its intermediate `ca` and the bundle of its root's trust
    /// domain; the cluster, now part of the topology.
    pub fn start(&mut self, name: &str, ca: &Ca, opts: &Options) -> Result<&mut Cluster> {
        let cluster = Cluster::start(&self.shell, name, &ca.dir, &ca.root.bundle, opts)?;
        self.clusters.push(cluster);
        self.trust_domains
            .push((name.to_owned(), ca.root.trust_domain.clone()));
        let last = self.clusters.len() - 1;
        Ok(&mut self.clusters[last])
    }

    /// Starts each `(cluster, trust domain)` under a root of its own (`root-<cluster>`), so
    /// they federate by bundle exchange; their intermediates, in order.
    pub fn start_with_own_roots(&mut self, clusters: &[(&str, &str)]) -> Result<Vec<Ca>> {
        let mut cas = Vec::new();
        for (name, trust_domain) in clusters {
            let root = self.root(&format!("root-{name}"), trust_domain)?;
            let ca = self.intermediate(&root, name)?;
            self.start(name, &ca, &Options::default())?;
            cas.push(ca);
        }
        Ok(cas)
    }

    /// The cluster named `name`.
    pub fn get(&self, name: &str) -> Result<&Cluster> {
        self.clusters
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| unknown(name))
    }

    pub fn get_mut(&mut self, name: &str) -> Result<&mut Cluster> {
        self.clusters
            .iter_mut()
            .find(|c| c.name == name)
            .ok_or_else(|| unknown(name))
    }

    /// Every process's pid, the controllers' API sockets and peering addresses, the gateways'
    /// ingress, admin and egress listener addresses, and the echo endpoints (served by this
    /// process).
    pub fn json(&self) -> Value {
        let clusters: Map<String, Value> = self
            .clusters
            .iter()
            .map(|c| {
                let mut json = c.json();
                if let Some((_, td)) = self.trust_domains.iter().find(|(n, _)| *n == c.name) {
                    json["trust_domain"] = json!(td);
                }
                (c.name.clone(), json)
            })
            .collect();
        json!({
            "work_dir": self.shell.work(),
            "pid": std::process::id(),
            "roots": self.roots.iter().map(|r| json!({
                "dir": self.shell.work().join(&r.dir),
                "trust_domain": r.trust_domain,
            })).collect::<Vec<_>>(),
            "clusters": clusters,
        })
    }

    /// Writes [`Topology::json`] to `path`, replacing it whole (written aside, then renamed) so
    /// a script reading it never sees half a file.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.json()).map_err(|e| Error::Output {
            command: "topology.json".into(),
            detail: e.to_string(),
        })?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text + "\n")
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(Error::io(format!("write {}", path.display())))
    }
}

fn unknown(name: &str) -> Error {
    Error::Output {
        command: "topology".into(),
        detail: format!("no cluster named {name}"),
    }
}
