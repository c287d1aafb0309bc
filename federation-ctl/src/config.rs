//! Controller configuration: YAML → [`RawConfig`](raw) (serde, unknown fields rejected) →
//! validated [`ControllerConfig`]. Every validation error names the file, the field path and the
//! fix. Relative paths resolve against the config file's directory, so a config works the same
//! from any working directory.
//!
//! ```yaml
//! cluster: aws                       # RFC 1123 label, unique in the clusterset (required)
//! trust_domain: aws.example          # default: the CA's bound trust domain; must match it if given
//! ca: ./pki/aws                      # intermediate CA dir from `trust-bundle intermediate create` (required)
//! trust_bundle: ./pki/bundle.json    # SPIFFE bundle or PEM of our trust domain's roots (keep the
//!                                    # old and new roots here during a rotation); default: the
//!                                    # root in the CA dir
//! identity_validity: 24h             # leaves for the controller and gateways; renewed at half-life (min 10s)
//! registry:                          # required; one kind
//!   file: ./registry.yaml            # services and exports (see `registry`)
//!   watch_interval: 500ms            # poll for edits (default 1s)
//!   # or, instead of `file`:
//!   # kubernetes:
//!   #   kubeconfig: ./kubeconfig       # default: in-cluster, then $KUBECONFIG / ~/.kube/config
//!   #   namespaces: [default]          # where Services and ServiceExports are read; [] = all
//!   #   gateway_selector: {app.kubernetes.io/name: isthmus-gateway}  # gateway pods' labels (default)
//! state_dir: ./state/aws             # links, tokens, imports, CLI exports (required; made 0700)
//! peering:
//!   listen: 127.0.0.1:0              # default 0.0.0.0:15050; port 0 picks a free port
//!   advertise: []                    # host:port peers dial; empty = the bound address
//!                                    # (required when listen is a wildcard address)
//! api:
//!   socket: ./state/aws/api.sock     # the CLI's Unix socket (0600); default <state_dir>/api.sock
//! gateways:                          # required
//!   addresses: [127.0.0.2:15443, gw.aws.example:15443]   # public ingress peers dial (IP or host)
//!   egress:
//!     address: 127.0.0.1             # where our gateway opens one listener per imported port
//!     ports: 15100-15999             # the range those listeners get ports from (or one port)
//! lease:
//!   heartbeat_interval: 1s
//!   missed_heartbeats: 3             # a silent peer's imports go after interval × (missed + 1)
//! token_ttl: 1h                      # default lifetime of `link token` tokens
//! preferences: [gcp, onprem]         # import sources: these first, in order; then the rest by name
//! dns:                               # optional: answer NAME.NS.svc.<zone> for imports (off when absent)
//!   listen: 127.0.0.1:15053          # UDP and TCP; port 0 picks one (the `ready` event says which)
//!   zone: clusterset.local           # the default
//!   ttl: 5s                          # TTL of the answers (default 5s)
//! leader_election:                   # optional: replicas elect one writer with a Lease (off when absent)
//!   kubeconfig: ./kubeconfig         # default: in-cluster config, then $KUBECONFIG / ~/.kube/config
//!   namespace: isthmus-system        # where the Lease, ClusterLinks and state Secret live (required)
//!   lease_name: isthmus-controller   # the default
//!   identity: pod-a                  # this replica's name in the Lease (default: <hostname>-<pid>)
//!   lease_duration: 15s              # a standby takes over a Lease not renewed for this long
//!   renew_deadline: 10s              # the leader exits when it could not renew for this long
//!   retry_period: 2s                 # between attempts to acquire or renew
//! ```

mod raw;
mod validate;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use trust_bundle::TrustDomain;

use crate::model::{ClusterName, Lease};

/// Default peering listener. Outside the default egress range and Istio's 150xx ports.
pub const DEFAULT_PEERING_LISTEN: &str = "0.0.0.0:15050";
/// Default validity of the leaves issued to the controller and its gateways.
pub const DEFAULT_IDENTITY_VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// The shortest `identity_validity`: renewal at half-life must have time to reach the gateways.
pub const MIN_IDENTITY_VALIDITY: Duration = Duration::from_secs(10);
/// Default registry file poll interval.
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// Default address of the gateway's egress listeners.
pub const DEFAULT_EGRESS_ADDRESS: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
/// Default egress port range.
pub const DEFAULT_EGRESS_PORTS: PortRange = PortRange {
    first: 15100,
    last: 15999,
};
/// Default interval between heartbeats on a link.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Default heartbeats a peer may miss before its imports are withdrawn.
pub const DEFAULT_MISSED_HEARTBEATS: u32 = 3;
/// Default peering-token lifetime.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Default DNS zone for imported services (the MCS clusterset zone).
pub const DEFAULT_DNS_ZONE: &str = "clusterset.local";
/// Default DNS listener, when a `dns` section is given without `listen`.
pub const DEFAULT_DNS_LISTEN: &str = "127.0.0.1:15053";
/// Default TTL of DNS answers: short, since an import's listener can go with its last source.
pub const DEFAULT_DNS_TTL: Duration = Duration::from_secs(5);
/// Default name of the leader-election Lease.
pub const DEFAULT_LEASE_NAME: &str = "isthmus-controller";
/// Default leader-election timings, as Kubernetes' own controllers use.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);
/// The API socket's file name inside the state directory, when not configured.
pub const DEFAULT_API_SOCKET: &str = "api.sock";

/// Why a config was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The YAML does not fit the schema (serde names the field, line and column).
    #[error("{}: not a valid controller config: {source}", file.display())]
    Yaml {
        file: PathBuf,
        source: serde_yaml_ng::Error,
    },
    #[error("{}: {field}: {problem}; {fix}", file.display())]
    Invalid {
        file: PathBuf,
        /// Path to the field, e.g. `gateways.addresses[1]`.
        field: String,
        problem: String,
        fix: String,
    },
}

/// A validated controller configuration. Paths are absolute or relative to the working
/// directory (already resolved against the config file's directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerConfig {
    /// The config file this came from.
    pub source: PathBuf,
    pub cluster: ClusterName,
    /// `None`: whatever the CA is bound to (checked when the CA is loaded).
    pub trust_domain: Option<TrustDomain>,
    /// The cluster intermediate CA directory.
    pub ca: PathBuf,
    /// Our trust domain's roots; `None`: the root in the CA directory.
    pub trust_bundle: Option<PathBuf>,
    pub identity_validity: Duration,
    pub registry: RegistryConfig,
    pub state_dir: PathBuf,
    pub peering: Peering,
    pub api: Api,
    pub gateways: Gateways,
    pub lease: LeaseConfig,
    pub token_ttl: Duration,
    /// Preferred import sources, most preferred first.
    pub preferences: Vec<ClusterName>,
    /// The DNS server for imported services; `None`: off.
    pub dns: Option<Dns>,
    /// Leader election among replicas; `None`: off (this process is the only writer).
    pub leader_election: Option<LeaderElection>,
}

/// One writer per cluster: replicas hold a `coordination.k8s.io` Lease, and the leader mirrors
/// its durable state into the API so a standby can take over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderElection {
    /// `None`: `kube::Config::infer` (in-cluster, then `$KUBECONFIG` / `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    pub namespace: String,
    pub lease_name: String,
    /// This replica's `holderIdentity`.
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// DNS for imports: `NAME.NS.svc.<zone>` A/AAAA to the egress address, SRV with the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dns {
    pub listen: SocketAddr,
    /// Lowercase, no leading or trailing dot, e.g. `clusterset.local`.
    pub zone: String,
    pub ttl: Duration,
}

/// Where local services and exports come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryConfig {
    /// A watched YAML file.
    File {
        path: PathBuf,
        watch_interval: Duration,
    },
    /// The Kubernetes API: Services, EndpointSlices and ServiceExports in, ServiceImports,
    /// derived Services and EndpointSlices out.
    Kubernetes(KubernetesRegistry),
}

/// `registry.kubernetes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesRegistry {
    /// `None`: in-cluster config, then `$KUBECONFIG` / `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// Namespaces whose Services and ServiceExports are read; empty: all.
    pub namespaces: Vec<String>,
    /// Labels of the local gateway pods: the selector of derived Services.
    pub gateway_selector: std::collections::BTreeMap<String, String>,
}

/// The default `gateway_selector`, as the gateway Deployment in the manifests labels its pods.
pub const DEFAULT_GATEWAY_SELECTOR: (&str, &str) = ("app.kubernetes.io/name", "isthmus-gateway");

/// The controller-to-controller listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peering {
    pub listen: SocketAddr,
    /// What peers dial; empty: the bound address (never a wildcard, see validation).
    pub advertise: Vec<HostPort>,
}

/// The local API the CLI and the gateways use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Api {
    pub socket: PathBuf,
}

/// This cluster's gateways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateways {
    /// Public ingress addresses peers dial, in order.
    pub addresses: Vec<HostPort>,
    pub egress: Egress,
}

/// Where our gateway opens listeners for imported services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Egress {
    pub address: IpAddr,
    pub ports: PortRange,
}

/// An inclusive range of ports, never containing 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

/// Heartbeats and the import lease they keep alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseConfig {
    pub heartbeat_interval: Duration,
    pub missed_heartbeats: u32,
}

/// `host:port` where host is an IP address or a lowercase DNS name. IPv6 is written `[::1]:443`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostPort {
    host: Host,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Host {
    Ip(IpAddr),
    Name(String),
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<ControllerConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// Parses and validates config text read from `path` (used for relative paths and messages).
pub fn parse(text: &str, path: &Path) -> Result<ControllerConfig, ConfigError> {
    let raw: raw::RawConfig =
        serde_yaml_ng::from_str(text).map_err(|source| ConfigError::Yaml {
            file: path.to_owned(),
            source,
        })?;
    validate::validate(raw, path)
}

// === impl ControllerConfig ===

impl ControllerConfig {
    /// The lease a peer's imports are held under.
    pub fn lease(&self) -> Lease {
        Lease {
            heartbeat_interval_ms: u64::try_from(self.lease.heartbeat_interval.as_millis())
                .unwrap_or(u64::MAX),
            missed_allowed: self.lease.missed_heartbeats,
        }
    }

    /// The import priority of `peer` (lower is preferred): its position in `preferences`, or
    /// one past the end for unlisted clusters, which `merge_imports` then orders by name.
    pub fn priority_of(&self, peer: &ClusterName) -> u32 {
        let pos = self
            .preferences
            .iter()
            .position(|p| p == peer)
            .unwrap_or(self.preferences.len());
        u32::try_from(pos).unwrap_or(u32::MAX)
    }

    /// The addresses to advertise for peering once the listener is bound to `bound`.
    pub fn peering_addresses(&self, bound: SocketAddr) -> Vec<HostPort> {
        if self.peering.advertise.is_empty() {
            vec![HostPort::from(bound)]
        } else {
            self.peering.advertise.clone()
        }
    }
}

// === impl PortRange ===

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    pub fn len(&self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    /// Never true: a range holds at least one port. Here for the `len` convention.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Parses `15100-15999` or a single port `15100`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (s.trim(), s.trim()),
        };
        let port = |p: &str| port_number(p).ok_or_else(|| format!("{p:?} is not a port (1-65535)"));
        let (first, last) = (port(first)?, port(last)?);
        if first > last {
            return Err(format!("range {s:?} ends before it starts"));
        }
        Ok(Self { first, last })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// A port written as decimal digits only, 1-65535. `u16::from_str` also takes a leading `+`,
/// which would let `127.0.0.1:+80` parse as a host *name* and print back as an IP address.
fn port_number(p: &str) -> Option<u16> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse().ok().filter(|&n| n != 0)
}

// === impl HostPort ===

impl HostPort {
    /// Parses `IP:PORT`, `[IPv6]:PORT` or `host.name:PORT`; the port must not be 0.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            if addr.port() == 0 {
                return Err(format!("{s:?} has port 0; give the real port"));
            }
            return Ok(Self::from(addr));
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} has no port; write HOST:PORT"))?;
        let port = port_number(port).ok_or_else(|| format!("{s:?} has no valid port (1-65535)"))?;
        if host.contains(':') || host.starts_with('[') {
            return Err(format!(
                "{s:?} is not a valid address; write IPv6 addresses as [ADDR]:PORT"
            ));
        }
        east_west_gateway::names::check_host_name(host)
            .map_err(|e| format!("{host:?} is neither an IP address nor a DNS name: {e}"))?;
        Ok(Self {
            host: Host::Name(host.to_owned()),
            port,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The IP address, when the host is one (hostnames are resolved at dial time).
    pub fn ip(&self) -> Option<IpAddr> {
        match &self.host {
            Host::Ip(ip) => Some(*ip),
            Host::Name(_) => None,
        }
    }

    /// The host as written (IPv6 without brackets).
    pub fn host(&self) -> String {
        match &self.host {
            Host::Ip(ip) => ip.to_string(),
            Host::Name(n) => n.clone(),
        }
    }
}

impl From<SocketAddr> for HostPort {
    fn from(addr: SocketAddr) -> Self {
        Self {
            host: Host::Ip(addr.ip()),
            port: addr.port(),
        }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(ip) => write!(f, "{}", SocketAddr::new(*ip, self.port)),
            Host::Name(n) => write!(f, "{n}:{}", self.port),
        }
    }
}

impl TryFrom<String> for HostPort {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<HostPort> for String {
    fn from(h: HostPort) -> String {
        h.to_string()
    }
}

impl std::str::FromStr for HostPort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests;
