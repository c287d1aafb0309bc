//! The YAML shape, exactly as written by users. Every struct rejects unknown fields so a typo is
//! an error, not a silently ignored setting. Durations are humantime strings (`5s`, `1h 30m`).

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub(crate) cluster: Option<String>,
    pub(crate) cluster_domain: Option<String>,
    #[serde(default)]
    pub(crate) ingress: RawIngress,
    #[serde(default)]
    pub(crate) admin: RawAdmin,
    #[serde(default)]
    pub(crate) upstream: RawUpstream,
    #[serde(default)]
    pub(crate) limits: RawLimits,
    pub(crate) drain_timeout: Option<String>,
    #[serde(default)]
    pub(crate) reload: RawReload,
    pub(crate) tls: Option<RawTls>,
    #[serde(default)]
    pub(crate) routes: Vec<RawRoute>,
    #[serde(default)]
    pub(crate) egress: Vec<RawEgress>,
    /// Where the config came from; never read from YAML.
    #[serde(skip)]
    pub(crate) origin: Origin,
}

/// Where a raw config came from, which decides where TLS material comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A config file: TLS material from the files `tls` names.
    #[default]
    File,
    /// The controller merged into a bootstrap file; `tls` says whether the message carried an
    /// identity or a bundle map.
    Controller {
        /// Identity or bundle map present.
        tls: bool,
    },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIngress {
    pub(crate) listen: Option<String>,
    pub(crate) hello_timeout: Option<String>,
    pub(crate) max_hello_bytes: Option<usize>,
    pub(crate) max_connections: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub(crate) listen: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    pub(crate) connect_timeout: Option<String>,
    pub(crate) idle_timeout: Option<String>,
    pub(crate) connect_attempts: Option<usize>,
    pub(crate) ejection_base: Option<String>,
    pub(crate) ejection_max: Option<String>,
    pub(crate) buffer_bytes: Option<usize>,
    pub(crate) splice: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub(crate) max_concurrent_handshakes: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawReload {
    pub(crate) watch_interval: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub(crate) cert_chain: Option<String>,
    pub(crate) private_key: Option<String>,
    pub(crate) trust_bundle: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) hosts: Vec<String>,
    #[serde(default)]
    pub(crate) services: Vec<RawService>,
    pub(crate) mode: Option<String>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) authorize: Option<RawAuthorize>,
    #[serde(default)]
    pub(crate) endpoints: Vec<RawEndpoint>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub(crate) name: Option<String>,
    pub(crate) namespace: Option<String>,
    /// Wider than a port so that a controller's out-of-range value gets a named error.
    pub(crate) port: Option<u32>,
    pub(crate) subset: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuthorize {
    #[serde(default)]
    pub(crate) trust_domains: Vec<String>,
    #[serde(default)]
    pub(crate) clusters: Vec<String>,
    #[serde(default)]
    pub(crate) spiffe_ids: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEndpoint {
    pub(crate) address: Option<String>,
    pub(crate) weight: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEgress {
    pub(crate) name: Option<String>,
    pub(crate) listen: Option<String>,
    pub(crate) mode: Option<String>,
    pub(crate) probe: Option<RawProbe>,
    pub(crate) service: Option<RawService>,
    pub(crate) cluster: Option<String>,
    pub(crate) sni: Option<String>,
    pub(crate) trust_domain: Option<String>,
    #[serde(default)]
    pub(crate) gateways: Vec<RawGateway>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGateway {
    pub(crate) address: Option<String>,
    pub(crate) priority: Option<u32>,
    pub(crate) weight: Option<u32>,
    /// Overrides the listener's `cluster` for this gateway.
    pub(crate) cluster: Option<String>,
    /// Overrides the listener's `sni` (and the name derived from `cluster`) for this gateway.
    pub(crate) sni: Option<String>,
    /// Overrides the listener's `trust_domain` for this gateway.
    pub(crate) trust_domain: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProbe {
    pub(crate) interval: Option<String>,
    pub(crate) timeout: Option<String>,
    pub(crate) unhealthy_after: Option<u32>,
}
