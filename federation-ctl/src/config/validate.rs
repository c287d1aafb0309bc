//! `RawConfig` → `ControllerConfig`: defaults, path resolution, parsing of names, addresses and
//! durations, and cross-field checks.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use trust_bundle::TrustDomain;

use super::raw::{
    RawConfig, RawDns, RawEgress, RawGateways, RawKubernetes, RawLeaderElection, RawRegistry,
};
use super::{
    Api, ConfigError, ControllerConfig, DEFAULT_API_SOCKET, DEFAULT_DNS_LISTEN, DEFAULT_DNS_TTL,
    DEFAULT_DNS_ZONE, DEFAULT_EGRESS_ADDRESS, DEFAULT_EGRESS_PORTS, DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_IDENTITY_VALIDITY, DEFAULT_LEASE_DURATION, DEFAULT_LEASE_NAME,
    DEFAULT_MISSED_HEARTBEATS, DEFAULT_PEERING_LISTEN, DEFAULT_RENEW_DEADLINE,
    DEFAULT_RETRY_PERIOD, DEFAULT_TOKEN_TTL, DEFAULT_WATCH_INTERVAL, Dns, Egress, Gateways,
    HostPort, KubernetesRegistry, LeaderElection, LeaseConfig, MIN_IDENTITY_VALIDITY, Peering,
    PortRange, RegistryConfig,
};
use crate::model::ClusterName;

/// The longest Unix socket path (`sun_path` is 108 bytes including the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Validation context: the file (for messages) and the directory relative paths start from.
struct Cx<'a> {
    file: &'a Path,
    base: PathBuf,
}

pub(super) fn validate(raw: RawConfig, file: &Path) -> Result<ControllerConfig, ConfigError> {
    let base = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let cx = Cx { file, base };

    let cluster_text = cx.required(
        "cluster",
        raw.cluster,
        "set it to this cluster's name, e.g. `cluster: aws`",
    )?;
    let cluster = ClusterName::parse(&cluster_text)
        .map_err(|e| cx.invalid("cluster", e, "use an RFC 1123 label such as aws-east"))?;
    let trust_domain = raw
        .trust_domain
        .map(|td| {
            TrustDomain::parse(&td).map_err(|e| {
                cx.invalid(
                    "trust_domain",
                    e,
                    "use a trust domain name such as aws.example, or remove it to use the CA's",
                )
            })
        })
        .transpose()?;
    let ca = cx.path(
        "ca",
        raw.ca,
        "point it at the cluster's CA directory from `trust-bundle intermediate create --out DIR`",
    )?;
    let trust_bundle = raw.trust_bundle.map(|p| cx.resolve(&p));
    let identity_validity = cx.duration(
        "identity_validity",
        raw.identity_validity.as_deref(),
        DEFAULT_IDENTITY_VALIDITY,
    )?;
    if identity_validity < MIN_IDENTITY_VALIDITY {
        return Err(cx.invalid(
            "identity_validity",
            "shorter than ten seconds",
            "use at least 10s (short values are for renewal drills); the default is 24h",
        ));
    }
    let registry = cx.registry(raw.registry)?;
    let state_dir = cx.path(
        "state_dir",
        raw.state_dir,
        "name a directory for links, tokens and imports, e.g. `state_dir: ./state/aws`",
    )?;

    let listen_text = raw
        .peering
        .listen
        .unwrap_or_else(|| DEFAULT_PEERING_LISTEN.to_owned());
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        cx.invalid(
            "peering.listen",
            format!("{listen_text:?} is not an IP:PORT address"),
            "write e.g. 0.0.0.0:15050 or 127.0.0.1:0",
        )
    })?;
    let advertise = cx.host_ports("peering.advertise", &raw.peering.advertise)?;
    if advertise.is_empty() && listen.ip().is_unspecified() {
        return Err(cx.invalid(
            "peering.advertise",
            format!("empty while peering.listen is the wildcard address {listen}"),
            "list the host:port peers dial (e.g. `advertise: [ctl.aws.example:15050]`), or listen on a specific IP",
        ));
    }

    let socket = match raw.api.socket {
        Some(p) => cx.resolve(&p),
        None => state_dir.join(DEFAULT_API_SOCKET),
    };
    let socket_len = socket.as_os_str().len();
    if socket_len > MAX_SOCKET_PATH {
        return Err(cx.invalid(
            "api.socket",
            format!(
                "{} is {socket_len} bytes; Unix socket paths may have at most {MAX_SOCKET_PATH}",
                socket.display()
            ),
            "set `api: { socket: ... }` to a shorter path",
        ));
    }

    let gateways = cx.gateways(raw.gateways)?;
    let egress = gateways.egress;
    if egress.ports.contains(listen.port())
        && (listen.ip() == egress.address || listen.ip().is_unspecified())
    {
        return Err(cx.invalid(
            "peering.listen",
            format!(
                "port {} is inside gateways.egress.ports {}",
                listen.port(),
                egress.ports
            ),
            "move the peering port or the egress range so they do not overlap",
        ));
    }

    let lease = LeaseConfig {
        heartbeat_interval: cx.duration(
            "lease.heartbeat_interval",
            raw.lease.heartbeat_interval.as_deref(),
            DEFAULT_HEARTBEAT_INTERVAL,
        )?,
        missed_heartbeats: raw
            .lease
            .missed_heartbeats
            .unwrap_or(DEFAULT_MISSED_HEARTBEATS),
    };
    if lease.missed_heartbeats == 0 {
        return Err(cx.invalid(
            "lease.missed_heartbeats",
            "0 would withdraw imports after one late heartbeat",
            "use at least 1; the default is 3",
        ));
    }
    let token_ttl = cx.duration("token_ttl", raw.token_ttl.as_deref(), DEFAULT_TOKEN_TTL)?;
    if token_ttl > Duration::from_secs(30 * 86_400) {
        return Err(cx.invalid(
            "token_ttl",
            "longer than 30 days",
            "tokens carry a secret; keep them short-lived (the default is 1h)",
        ));
    }

    let mut preferences = Vec::with_capacity(raw.preferences.len());
    let mut seen = BTreeSet::new();
    for (i, p) in raw.preferences.iter().enumerate() {
        let at = format!("preferences[{i}]");
        let name =
            ClusterName::parse(p).map_err(|e| cx.invalid(&at, e, "list peer cluster names"))?;
        if name == cluster {
            return Err(cx.invalid(
                &at,
                format!("{name} is this cluster"),
                "list only peers; a cluster never imports from itself",
            ));
        }
        if !seen.insert(name.clone()) {
            return Err(cx.invalid(&at, format!("{name} is listed twice"), "list it once"));
        }
        preferences.push(name);
    }

    let dns = raw.dns.map(|d| cx.dns(d)).transpose()?;
    let leader_election = raw
        .leader_election
        .map(|l| cx.leader_election(l))
        .transpose()?;

    Ok(ControllerConfig {
        source: file.to_owned(),
        cluster,
        trust_domain,
        ca,
        trust_bundle,
        identity_validity,
        registry,
        state_dir,
        peering: Peering { listen, advertise },
        api: Api { socket },
        gateways,
        lease,
        token_ttl,
        preferences,
        dns,
        leader_election,
    })
}

impl Cx<'_> {
    fn invalid(&self, field: &str, problem: impl ToString, fix: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_owned(),
            field: field.to_owned(),
            problem: problem.to_string(),
            fix: fix.into(),
        }
    }

    fn required<T>(&self, field: &str, value: Option<T>, fix: &str) -> Result<T, ConfigError> {
        value.ok_or_else(|| self.invalid(field, "missing", fix))
    }

    fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base.join(p)
        }
    }

    fn path(&self, field: &str, value: Option<String>, fix: &str) -> Result<PathBuf, ConfigError> {
        let text = self.required(field, value, fix)?;
        if text.trim().is_empty() {
            return Err(self.invalid(field, "empty", fix));
        }
        Ok(self.resolve(&text))
    }

    fn duration(
        &self,
        field: &str,
        value: Option<&str>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(text) = value else {
            return Ok(default);
        };
        let d = humantime::parse_duration(text).map_err(|e| {
            self.invalid(
                field,
                format!("{text:?} is not a duration ({e})"),
                "write e.g. 500ms, 30s, 1h",
            )
        })?;
        if d.is_zero() {
            return Err(self.invalid(field, "zero", "use a positive duration"));
        }
        Ok(d)
    }

    fn registry(&self, raw: Option<RawRegistry>) -> Result<RegistryConfig, ConfigError> {
        let fix = "add `registry: { file: ./registry.yaml }` or `registry: { kubernetes: {} }`";
        let raw = self.required("registry", raw, fix)?;
        if let Some(kube) = raw.kubernetes {
            if raw.file.is_some() || raw.watch_interval.is_some() {
                return Err(self.invalid(
                    "registry",
                    "both `file` and `kubernetes` are set",
                    "keep one registry kind: `kubernetes` (remove `file` and `watch_interval`) or `file`",
                ));
            }
            return self.kubernetes(kube).map(RegistryConfig::Kubernetes);
        }
        let path = self.path("registry.file", raw.file, fix)?;
        let watch_interval = self.duration(
            "registry.watch_interval",
            raw.watch_interval.as_deref(),
            DEFAULT_WATCH_INTERVAL,
        )?;
        Ok(RegistryConfig::File {
            path,
            watch_interval,
        })
    }

    fn kubernetes(&self, raw: RawKubernetes) -> Result<KubernetesRegistry, ConfigError> {
        let kubeconfig = match raw.kubeconfig {
            None => None,
            Some(p) => Some(self.path(
                "registry.kubernetes.kubeconfig",
                Some(p),
                "name a kubeconfig file, or remove the field to use the in-cluster config",
            )?),
        };
        let mut namespaces: Vec<String> = Vec::new();
        for (i, ns) in raw.namespaces.into_iter().enumerate() {
            let at = format!("registry.kubernetes.namespaces[{i}]");
            crate::model::ServiceKey::new("x", &ns).map_err(|e| {
                self.invalid(&at, e, "use namespace names such as default, or [] for all")
            })?;
            if namespaces.contains(&ns) {
                return Err(self.invalid(&at, format!("{ns:?} is listed twice"), "list it once"));
            }
            namespaces.push(ns);
        }
        let gateway_selector = match raw.gateway_selector {
            None => std::iter::once(super::DEFAULT_GATEWAY_SELECTOR)
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            Some(s) if s.is_empty() => {
                return Err(self.invalid(
                    "registry.kubernetes.gateway_selector",
                    "empty: derived Services would select no pod",
                    "give the gateway pods' labels, e.g. {app.kubernetes.io/name: isthmus-gateway}",
                ));
            }
            Some(s) => {
                for (k, v) in &s {
                    if !label_ok(k, true) || !label_ok(v, false) {
                        return Err(self.invalid(
                            "registry.kubernetes.gateway_selector",
                            format!("{k:?}: {v:?} is not a Kubernetes label"),
                            "use label keys like app or example.com/role and values of letters, digits, '-', '_' or '.'",
                        ));
                    }
                }
                s
            }
        };
        Ok(KubernetesRegistry {
            kubeconfig,
            namespaces,
            gateway_selector,
        })
    }

    fn host_ports(&self, field: &str, values: &[String]) -> Result<Vec<HostPort>, ConfigError> {
        let mut out: Vec<HostPort> = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            let at = format!("{field}[{i}]");
            let hp = HostPort::parse(v).map_err(|e| {
                self.invalid(&at, e, "write IP:PORT, [IPv6]:PORT or host.name:PORT")
            })?;
            if hp.ip().is_some_and(|ip| ip.is_unspecified()) {
                return Err(self.invalid(
                    &at,
                    format!("{hp} is a wildcard address, which peers cannot dial"),
                    "give an address reachable from the other clusters",
                ));
            }
            if out.contains(&hp) {
                return Err(self.invalid(&at, format!("{hp} is listed twice"), "list it once"));
            }
            out.push(hp);
        }
        Ok(out)
    }

    fn gateways(&self, raw: Option<RawGateways>) -> Result<Gateways, ConfigError> {
        let fix = "add `gateways: { addresses: [HOST:15443] }`, the ingress address peers dial";
        let raw = self.required("gateways", raw, fix)?;
        let addresses = self.host_ports("gateways.addresses", &raw.addresses)?;
        if addresses.is_empty() {
            return Err(self.invalid("gateways.addresses", "empty", fix));
        }
        Ok(Gateways {
            addresses,
            egress: self.egress(raw.egress)?,
        })
    }

    fn egress(&self, raw: RawEgress) -> Result<Egress, ConfigError> {
        let address = match raw.address {
            None => DEFAULT_EGRESS_ADDRESS,
            Some(text) => text.parse::<IpAddr>().map_err(|_| {
                self.invalid(
                    "gateways.egress.address",
                    format!("{text:?} is not an IP address"),
                    "give the local IP the gateway binds egress listeners on, e.g. 127.0.0.1",
                )
            })?,
        };
        let fix = "write a range like 15100-15999 or a single port";
        let ports = match raw.ports {
            None => DEFAULT_EGRESS_PORTS,
            Some(serde_yaml_ng::Value::String(s)) => {
                PortRange::parse(&s).map_err(|e| self.invalid("gateways.egress.ports", e, fix))?
            }
            Some(serde_yaml_ng::Value::Number(n)) => PortRange::parse(&n.to_string())
                .map_err(|e| self.invalid("gateways.egress.ports", e, fix))?,
            Some(_) => {
                return Err(self.invalid("gateways.egress.ports", "not a port range", fix));
            }
        };
        Ok(Egress { address, ports })
    }

    fn dns(&self, raw: RawDns) -> Result<Dns, ConfigError> {
        let listen_text = raw.listen.as_deref().unwrap_or(DEFAULT_DNS_LISTEN);
        let listen = listen_text.parse::<SocketAddr>().map_err(|_| {
            self.invalid(
                "dns.listen",
                format!("{listen_text:?} is not IP:PORT"),
                "write e.g. 127.0.0.1:15053 (port 0 picks a free port)",
            )
        })?;
        let zone = raw
            .zone
            .as_deref()
            .unwrap_or(DEFAULT_DNS_ZONE)
            .trim_matches('.')
            .to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if zone.is_empty() || zone.len() > 200 || !zone.split('.').all(label_ok) {
            return Err(self.invalid(
                "dns.zone",
                format!("{zone:?} is not a DNS zone name"),
                "use dot-separated DNS labels, e.g. clusterset.local",
            ));
        }
        let ttl = self.duration("dns.ttl", raw.ttl.as_deref(), DEFAULT_DNS_TTL)?;
        Ok(Dns { listen, zone, ttl })
    }

    fn leader_election(&self, raw: RawLeaderElection) -> Result<LeaderElection, ConfigError> {
        let fix =
            "set it to the namespace the controller runs in, e.g. `namespace: isthmus-system`";
        let namespace = self.required("leader_election.namespace", raw.namespace, fix)?;
        if !is_dns_label(&namespace) {
            return Err(self.invalid(
                "leader_election.namespace",
                format!("{namespace:?} is not a namespace name"),
                "use an RFC 1123 label, e.g. isthmus-system",
            ));
        }
        let lease_name = raw
            .lease_name
            .unwrap_or_else(|| DEFAULT_LEASE_NAME.to_owned());
        if !is_dns_subdomain(&lease_name) {
            return Err(self.invalid(
                "leader_election.lease_name",
                format!("{lease_name:?} is not an object name"),
                "use lowercase letters, digits, '-' and '.', e.g. isthmus-controller",
            ));
        }
        let identity = match raw.identity {
            Some(id) if id.trim().is_empty() || id.len() > 253 => {
                return Err(self.invalid(
                    "leader_election.identity",
                    "empty or longer than 253 bytes",
                    "remove it to use <hostname>-<pid>, or give the pod's name",
                ));
            }
            Some(id) => id,
            None => default_identity(),
        };
        let kubeconfig = raw
            .kubeconfig
            .map(|p| {
                self.path(
                    "leader_election.kubeconfig",
                    Some(p),
                    "give a kubeconfig file, or remove it to use the in-cluster config",
                )
            })
            .transpose()?;
        let d = |field: &str, value: Option<String>, default| {
            self.duration(
                &format!("leader_election.{field}"),
                value.as_deref(),
                default,
            )
        };
        let lease_duration = d("lease_duration", raw.lease_duration, DEFAULT_LEASE_DURATION)?;
        let renew_deadline = d("renew_deadline", raw.renew_deadline, DEFAULT_RENEW_DEADLINE)?;
        let retry_period = d("retry_period", raw.retry_period, DEFAULT_RETRY_PERIOD)?;
        // The leader gives up before a standby may take over, and retries within its deadline:
        // otherwise two replicas could both believe they lead.
        for (shorter, s, longer, l, example) in [
            (
                "renew_deadline",
                renew_deadline,
                "lease_duration",
                lease_duration,
                "10s and 15s",
            ),
            (
                "retry_period",
                retry_period,
                "renew_deadline",
                renew_deadline,
                "2s and 10s",
            ),
        ] {
            if s >= l {
                return Err(self.invalid(
                    &format!("leader_election.{shorter}"),
                    format!(
                        "{} is not shorter than {longer} ({})",
                        humantime::format_duration(s),
                        humantime::format_duration(l)
                    ),
                    format!("make {shorter} shorter than {longer}, e.g. {example}"),
                ));
            }
        }
        if lease_duration.as_secs() == 0 || lease_duration.subsec_nanos() != 0 {
            return Err(self.invalid(
                "leader_election.lease_duration",
                "not a whole number of seconds (the Lease stores seconds)",
                "write e.g. 15s",
            ));
        }
        Ok(LeaderElection {
            kubeconfig,
            namespace,
            lease_name,
            identity,
            lease_duration,
            renew_deadline,
            retry_period,
        })
    }
}

/// `<hostname>-<pid>`: unique among replicas, the pod's name on Kubernetes.
fn default_identity() -> String {
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    format!("{host}-{}", std::process::id())
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A Kubernetes label key (`prefix/name`, `key` true) or value: name parts are up to 63
/// alphanumerics, '-', '_' or '.', starting and ending alphanumeric; values may be empty.
fn label_ok(s: &str, key: bool) -> bool {
    let part = |p: &str| {
        p.len() <= 63
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && p.bytes().next().is_none_or(|b| b.is_ascii_alphanumeric())
            && p.bytes().last().is_none_or(|b| b.is_ascii_alphanumeric())
    };
    if !key {
        return part(s);
    }
    let name = match s.split_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty() || prefix.len() > 253 || !part(prefix) {
                return false;
            }
            name
        }
        None => s,
    };
    !name.is_empty() && part(name)
}
