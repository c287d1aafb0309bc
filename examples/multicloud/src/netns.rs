//! Clusters in network namespaces: each cluster's processes run in a namespace of its own
//! (`ip netns exec`), joined to the others only through a "wan" namespace holding a bridge.
//!
//! ```text
//!   <prefix>-a                      <prefix>-wan                     <prefix>-b
//!   lo   10.213.1.10  (pod)                                          lo   10.213.2.10  (pod)
//!   wan0 10.213.0.1/24 ── veth ──▶ br0 ◀── veth ── wan0 10.213.0.2/24
//! ```
//!
//! A cluster's endpoints and egress listeners bind its pod address, which no other namespace
//! has a route to; its gateway ingress and controller peering bind its wan address. So the only
//! way from one cluster to another is through the gateways, as between real clusters. Every
//! namespace gets the same addresses in every run: namespaces do not share addresses, so
//! concurrent runs never collide. Only the namespaces made here are touched, and [`Net`]
//! deletes them when dropped, failure or not.

use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{Error, Result, run_ok};

/// A command run inside network namespace `netns`: `ip netns exec NETNS PROGRAM`. The program
/// replaces `ip` (exec), so the child's pid is the program's.
pub fn exec(netns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns]).arg(program);
    cmd
}

/// Why clusters cannot run in namespaces here (not root, no `ip`, no netns support), or `None`
/// when they can. Checked by making and deleting one namespace.
pub fn unavailable() -> Option<String> {
    match Command::new("id").arg("-u").output() {
        Ok(out) if out.stdout.trim_ascii() == b"0" => {}
        Ok(_) => return Some("not running as root (`ip netns add` needs it)".into()),
        Err(e) => return Some(format!("cannot run `id -u`: {e}")),
    }
    let probe = format!("{}-probe", unique_prefix());
    if let Err(e) = ip(&["netns", "add", &probe]) {
        return Some(format!(
            "`ip netns add` does not work here (install iproute2; containers need CAP_SYS_ADMIN): {e}"
        ));
    }
    // Best effort: a probe that outlives us holds no process and no address.
    let _ = ip(&["netns", "del", &probe]);
    None
}

/// One cluster's place in the network.
#[derive(Debug, Clone)]
pub struct Site {
    pub cluster: String,
    pub netns: String,
    /// Where other clusters reach it: the gateway's ingress and the controller's peering.
    pub wan: IpAddr,
    /// Inside only: endpoints and egress listeners.
    pub pod: IpAddr,
}

/// The namespaces of one run; deleted on drop.
pub struct Net {
    pub sites: Vec<Site>,
    wan: String,
    /// Every namespace made so far, deleted in reverse order on drop.
    made: Vec<String>,
}

impl Net {
    /// Makes the wan namespace with its bridge and one namespace per cluster, named
    /// `isthmus-<pid>-<n>-<cluster>` (at most 250 clusters).
    pub fn create(clusters: &[&str]) -> Result<Self> {
        let prefix = unique_prefix();
        let mut net = Self {
            sites: Vec::new(),
            wan: format!("{prefix}-wan"),
            made: Vec::new(),
        };
        net.add_netns(&net.wan.clone())?;
        ip(&["-n", &net.wan, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &net.wan, "link", "set", "br0", "up"])?;
        for (i, cluster) in clusters.iter().enumerate() {
            let n = u8::try_from(i + 1)
                .ok()
                .filter(|&n| n <= 250)
                .ok_or_else(|| Error::Output {
                    command: "netns".into(),
                    detail: format!("{} clusters; at most 250 fit", clusters.len()),
                })?;
            let site = Site {
                cluster: (*cluster).to_owned(),
                netns: format!("{prefix}-{cluster}"),
                wan: IpAddr::V4(Ipv4Addr::new(10, 213, 0, n)),
                pod: IpAddr::V4(Ipv4Addr::new(10, 213, n, 10)),
            };
            net.add_site(&site, n)?;
            net.sites.push(site);
        }
        Ok(net)
    }

    /// The site of `cluster`.
    pub fn site(&self, cluster: &str) -> Result<&Site> {
        self.sites
            .iter()
            .find(|s| s.cluster == cluster)
            .ok_or_else(|| Error::Output {
                command: "netns".into(),
                detail: format!("no namespace for cluster {cluster}"),
            })
    }

    /// Takes `cluster`'s link to the bridge down (`up == false`) or back up: the cluster is cut
    /// off from every other, as by a failed uplink, with its processes still running.
    pub fn set_link(&self, cluster: &str, up: bool) -> Result<()> {
        let n = self
            .sites
            .iter()
            .position(|s| s.cluster == cluster)
            .ok_or_else(|| Error::Output {
                command: "netns".into(),
                detail: format!("no namespace for cluster {cluster}"),
            })?
            + 1;
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.wan, "link", "set", &format!("p{n}"), state])
    }

    fn add_netns(&mut self, name: &str) -> Result<()> {
        ip(&["netns", "add", name])?;
        self.made.push(name.to_owned());
        ip(&["-n", name, "link", "set", "lo", "up"])
    }

    fn add_site(&mut self, site: &Site, n: u8) -> Result<()> {
        let ns = site.netns.as_str();
        self.add_netns(ns)?;
        // Both ends are created in their namespaces directly: nothing appears in ours.
        let port = format!("p{n}");
        ip(&[
            "link", "add", "wan0", "netns", ns, "type", "veth", "peer", "name", &port, "netns",
            &self.wan,
        ])?;
        ip(&["-n", &self.wan, "link", "set", &port, "master", "br0", "up"])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{}/24", site.wan),
            "dev",
            "wan0",
        ])?;
        ip(&["-n", ns, "link", "set", "wan0", "up"])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{}/32", site.pod),
            "dev",
            "lo",
        ])
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            // Nothing more to do if it fails; the name is unique to this run.
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("cannot delete network namespace {ns}: {e}");
            }
        }
    }
}

/// `isthmus-<pid>-<n>`: unique among the runs of this machine.
fn unique_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "isthmus-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn ip(args: &[&str]) -> Result<()> {
    run_ok(Command::new("ip").args(args)).map(drop)
}
