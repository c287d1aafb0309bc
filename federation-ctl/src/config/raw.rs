//! The YAML shape, exactly as written by users. Every struct rejects unknown fields so a typo is
//! an error, not a silently ignored setting. Durations are humantime strings (`500ms`, `1h`).

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub(crate) cluster: Option<String>,
    pub(crate) trust_domain: Option<String>,
    pub(crate) ca: Option<String>,
    pub(crate) trust_bundle: Option<String>,
    pub(crate) identity_validity: Option<String>,
    pub(crate) registry: Option<RawRegistry>,
    pub(crate) state_dir: Option<String>,
    #[serde(default)]
    pub(crate) peering: RawPeering,
    #[serde(default)]
    pub(crate) api: RawApi,
    pub(crate) gateways: Option<RawGateways>,
    #[serde(default)]
    pub(crate) lease: RawLease,
    pub(crate) token_ttl: Option<String>,
    #[serde(default)]
    pub(crate) preferences: Vec<String>,
    pub(crate) dns: Option<RawDns>,
    pub(crate) leader_election: Option<RawLeaderElection>,
}

/// Leader election among controller replicas with a `coordination.k8s.io` Lease; absent: off.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLeaderElection {
    pub(crate) kubeconfig: Option<String>,
    pub(crate) namespace: Option<String>,
    pub(crate) lease_name: Option<String>,
    pub(crate) identity: Option<String>,
    pub(crate) lease_duration: Option<String>,
    pub(crate) renew_deadline: Option<String>,
    pub(crate) retry_period: Option<String>,
}

/// DNS for imported services; absent: no DNS server.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDns {
    pub(crate) listen: Option<String>,
    pub(crate) zone: Option<String>,
    pub(crate) ttl: Option<String>,
}

/// One key per registry kind: `file` (with `watch_interval`) or `kubernetes`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRegistry {
    pub(crate) file: Option<String>,
    pub(crate) watch_interval: Option<String>,
    pub(crate) kubernetes: Option<RawKubernetes>,
}

/// The Kubernetes registry: the API server to read and write, and what to watch.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKubernetes {
    pub(crate) kubeconfig: Option<String>,
    #[serde(default)]
    pub(crate) namespaces: Vec<String>,
    pub(crate) gateway_selector: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPeering {
    pub(crate) listen: Option<String>,
    #[serde(default)]
    pub(crate) advertise: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApi {
    pub(crate) socket: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGateways {
    #[serde(default)]
    pub(crate) addresses: Vec<String>,
    #[serde(default)]
    pub(crate) egress: RawEgress,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEgress {
    pub(crate) address: Option<String>,
    /// `15100-15999` (a string) or a single port (a number).
    pub(crate) ports: Option<serde_yaml_ng::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLease {
    pub(crate) heartbeat_interval: Option<String>,
    pub(crate) missed_heartbeats: Option<u32>,
}
