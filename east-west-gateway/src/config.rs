//! Gateway configuration: YAML → [`RawConfig`](raw) (serde, unknown fields rejected) → validated
//! [`Config`]. Every validation error names the field path and says how to fix it.
//!
//! ```yaml
//! cluster: aws-east                  # this gateway's cluster (native SNI names must target it)
//! cluster_domain: cluster.local      # Istio alias domain (default cluster.local)
//! ingress:
//!   listen: 0.0.0.0:15443            # port 0 picks a free port (see --ready-file)
//!   hello_timeout: 5s
//!   max_hello_bytes: 16384
//!   max_connections: 10000
//! admin:
//!   listen: 127.0.0.1:15021
//! upstream:
//!   connect_timeout: 2s
//!   idle_timeout: 1h
//!   connect_attempts: 3              # distinct endpoints tried before giving up
//!   ejection_base: 1s                # passive ejection backoff: base * 2^(failures-1) ...
//!   ejection_max: 30s                # ... capped here
//!   buffer_bytes: 32768              # largest copy buffer (or splice pipe) per direction
//!   splice: off                      # off: copy (default); auto: splice(2) on Linux
//! limits:
//!   max_concurrent_handshakes: 512   # TLS handshakes in progress (ingress terminate + mtls
//!                                    # egress); the rest wait their turn (read at startup)
//! drain_timeout: 30s
//! reload:
//!   watch_interval: 1s               # config file poll; "0s" disables (SIGHUP still reloads)
//! routes:
//!   - name: reviews
//!     services: [{ name: reviews, namespace: default, port: 9080 }]
//!     hosts: [reviews.example.com, "*.reviews.example.com"]
//!     mode: passthrough              # bytes untouched; TLS ends at the endpoint
//!     max_connections: 1000
//!     endpoints:
//!       - { address: 10.0.0.7:9080, weight: 2 }
//!   - name: ratings
//!     services: [{ name: ratings, namespace: default, port: 9080 }]
//!     mode: terminate                # gateway-to-gateway mTLS ends here; plain TCP onwards
//!     authorize:                     # any-of; at least one entry
//!       trust_domains: [gcp.example]
//!       clusters: [gcp]              # the L= of the peer's issuing intermediate
//!       spiffe_ids: [spiffe://aws.example/ns/isthmus/sa/gateway]
//!     endpoints: [{ address: 10.0.0.8:9080 }]
//! tls:                               # needed by terminate routes and mtls egress; reloaded
//!   cert_chain: /etc/isthmus/gateway.pem     # leaf first
//!   private_key: /etc/isthmus/gateway.key    # never logged or dumped
//!   trust_bundle: /etc/isthmus/bundle.json   # SPIFFE bundle map, or a PEM bundle (see tls)
//! egress:
//!   - name: reviews-gcp
//!     listen: 127.0.0.1:15001        # local clients speak plain TCP here
//!     mode: mtls                     # default; or passthrough (clients speak TLS with SNI)
//!     service: { name: reviews, namespace: default, port: 9080 }
//!     cluster: gcp                   # SNI 9080.reviews.default.gcp.v1.isthmus.internal ...
//!     # sni: reviews.gcp.example     # ... unless given explicitly
//!     trust_domain: gcp.example      # the remote gateway's certificate must be in it
//!     probe: { interval: 1s, timeout: 1s, unhealthy_after: 3 }
//!     gateways:                      # IPs or host names (re-resolved by TTL)
//!       - { address: gw1.gcp.example:15443, priority: 0, weight: 1 }
//!       - { address: 10.1.0.9:15443, priority: 1 }
//!       # cluster, sni and trust_domain above are defaults; a gateway may override them, so
//!       # one listener can fail over across the clusters an import was merged from. The most
//!       # specific wins: gateway sni > name derived from gateway cluster > listener sni >
//!       # name derived from listener cluster. mtls needs an SNI and a trust domain for every
//!       # gateway; passthrough allows only `cluster` (for logs and metrics).
//!       - { address: gw.aws.example:15443, priority: 2, cluster: aws, trust_domain: aws.example }
//! ```
//!
//! **Controller mode** (`east-west-gateway --controller unix:/run/isthmus/ctl.sock --config
//! bootstrap.yaml`): the file is a *bootstrap*, read once. It holds `cluster` (optional when the
//! controller names it; if both do, they must agree), `cluster_domain`, `ingress`, `admin`,
//! `upstream` and `drain_timeout`; `routes`, `egress`, `tls` and `reload` are refused there.
//! The controller's `GatewayConfig` messages carry routes and egress in this file's shape (the
//! same fields and defaults; proto3 empty strings and zero weights mean "not given"), and the
//! identity and bundle map in memory. Each message is merged into the bootstrap and validated
//! by the same code as a file; error paths (`routes[0].endpoints[1].address`) index the
//! message's lists.
//!
//! A reload applies everything but the ingress and admin addresses (bound once at startup; a
//! change warns that it needs a restart): routes, certificates and bundles, limits and timeouts
//! for new connections, and egress listeners, reconciled by name: new ones are bound, removed
//! ones stop accepting while their open connections finish within `drain_timeout`, changed ones
//! keep their socket when `listen` is unchanged (new connections use the new settings) and are
//! rebound when it changed. An egress listener that cannot bind is reported in the `reload`
//! event's `egress_errors` and retried by the next reload; the rest of the config applies.

mod bootstrap;
mod dump;
pub(crate) mod raw;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::names::{Label, ServiceRef};
use crate::route::Pattern;

pub use self::bootstrap::{Bootstrap, Dynamic};
pub use self::dump::dump;

/// Default ingress address: Istio's east-west port.
pub const DEFAULT_INGRESS_LISTEN: &str = "0.0.0.0:15443";
/// Default admin address; loopback only unless configured otherwise.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:15021";
/// Default ClientHello detection timeout.
pub const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Default gateway-wide connection limit.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default upstream connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default idle timeout: no byte either way for this long closes the connection.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default number of distinct endpoints tried per connection.
pub const DEFAULT_CONNECT_ATTEMPTS: usize = 3;
/// Default first ejection period after a connect failure.
pub const DEFAULT_EJECTION_BASE: Duration = Duration::from_secs(1);
/// Default longest ejection period.
pub const DEFAULT_EJECTION_MAX: Duration = Duration::from_secs(30);
/// Default largest copy buffer per direction. Buffers start at 4 KiB and grow only for
/// connections whose reads fill them. 32 KiB fits a core's L1 data cache, so a buffer read into
/// is written out while still there: with 16 bulk TLS connections it took 0.38–0.43 CPU-s per
/// GB where 256 KiB took 0.44–0.53 and 128 KiB 0.50 (bench/README.md, 2026-11-30); one long
/// plaintext stream gets about the same from either. A gateway carrying a few large streams
/// may raise it.
pub const DEFAULT_BUFFER_BYTES: usize = 32 * 1024;
/// Default bound on TLS handshakes in progress at once. A handshake costs about a millisecond
/// of CPU (far more in a debug build); past a few hundred in flight, more concurrency only
/// makes every handshake slower until they all miss their deadline together, so the rest wait
/// for a slot instead. 512 keeps a few cores busy and still allows ~850 egress setups/s over a
/// 200 ms cross-region round trip (TCP connect plus a two-round-trip handshake).
pub const DEFAULT_MAX_CONCURRENT_HANDSHAKES: usize = 512;
/// Default graceful drain deadline.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default config file poll interval.
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// Default interval between active probes of a remote gateway.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Default time a probe may take before it counts as failed.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Default consecutive probe failures before a remote gateway is marked dead.
pub const DEFAULT_UNHEALTHY_AFTER: u32 = 3;
/// Default Istio cluster domain.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// Why a config was rejected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The YAML does not fit the schema (the message names the field, line and column).
    #[error("config is not valid yaml for this schema: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    /// A field holds a bad value.
    #[error("{field}: {problem}; {fix}")]
    Invalid {
        /// Path to the field, e.g. `routes[1].endpoints[0].address`.
        field: String,
        /// What is wrong.
        problem: String,
        /// How to fix it.
        fix: String,
    },
}

/// A validated gateway configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// This gateway's cluster.
    pub cluster: Label,
    /// Istio cluster domain for `outbound_` aliases.
    pub cluster_domain: String,
    /// The SNI-routing listener.
    pub ingress: Ingress,
    /// The admin listener.
    pub admin: Admin,
    /// Upstream connection behaviour.
    pub upstream: Upstream,
    /// Gateway-wide resource limits.
    pub limits: Limits,
    /// How long open connections may finish after SIGTERM.
    pub drain_timeout: Duration,
    /// Config file polling; `None` disables polling.
    pub watch_interval: Option<Duration>,
    /// Certificates for terminate mode and egress.
    pub tls: Option<Tls>,
    /// Routes, in config order (order does not affect matching).
    pub routes: Vec<Route>,
    /// Egress listeners for imported services.
    pub egress: Vec<Egress>,
}

/// The ingress listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingress {
    /// Bind address.
    pub listen: SocketAddr,
    /// Time allowed for the whole ClientHello to arrive.
    pub hello_timeout: Duration,
    /// Cap on buffered ClientHello bytes, record headers included.
    pub max_hello_bytes: usize,
    /// Gateway-wide cap on open connections.
    pub max_connections: usize,
}

/// Gateway-wide resource limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// TLS handshakes (terminate ingress and mTLS egress) in progress at once; the rest queue.
    /// Read at startup: a reload that changes it warns that it needs a restart.
    pub max_concurrent_handshakes: usize,
}

/// The admin listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// Bind address.
    pub listen: SocketAddr,
}

/// Upstream connection behaviour, shared by all routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Per-attempt connect timeout.
    pub connect_timeout: Duration,
    /// Close a connection after this long without a byte either way.
    pub idle_timeout: Duration,
    /// Distinct endpoints tried before a connection fails.
    pub connect_attempts: usize,
    /// First ejection period after a connect failure.
    pub ejection_base: Duration,
    /// Longest ejection period.
    pub ejection_max: Duration,
    /// Copy buffer size per direction; with splice, the largest pipe per direction.
    pub buffer_bytes: usize,
    /// Whether plain TCP ↔ TCP legs move bytes with splice(2).
    pub splice: Splice,
}

/// How plain TCP ↔ TCP legs (passthrough routes, passthrough egress) move bytes. TLS legs
/// always copy: rustls needs the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Splice {
    /// splice(2) through a pipe per direction on Linux, falling back to copying for a
    /// connection whose sockets the kernel refuses to splice; copying elsewhere. Saves CPU per
    /// byte on long plaintext streams; costs throughput on TLS passthrough (see bench/README.md).
    Auto,
    /// Copy through pooled userspace buffers (the default: measured faster than splice for
    /// TLS passthrough, keep-alive and new connections).
    #[default]
    Off,
}

impl Splice {
    /// The YAML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Off => "off",
        }
    }
}

/// Where the gateway's own identity and the peers' trust anchors come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tls {
    /// PEM and JSON files named in the config file; their content is watched and reloaded.
    Files(TlsFiles),
    /// Sent by the controller with each config; the material itself never enters `Config`.
    Controller,
}

/// File paths for the gateway's own identity and the peers' trust anchors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert_chain: PathBuf,
    /// PEM private key. Only the path is ever held here; the dump redacts it.
    pub private_key: PathBuf,
    /// Bundle map or PEM bundle of trusted roots.
    pub trust_bundle: PathBuf,
}

/// One route: the patterns it answers to and where it sends traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Unique name; used as the metric label and in logs.
    pub name: Label,
    /// Host, wildcard and service patterns.
    pub patterns: Vec<Pattern>,
    /// What the gateway does with the TLS stream.
    pub mode: Mode,
    /// Per-route cap on open connections.
    pub max_connections: Option<usize>,
    /// Where traffic goes.
    pub endpoints: Vec<Endpoint>,
}

/// Per-route handling of the TLS stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Forward bytes untouched; TLS ends at the endpoint.
    Passthrough,
    /// Terminate gateway-to-gateway mTLS, authorize the peer, forward plaintext.
    Terminate(Authorization),
}

/// Which peers a terminate route accepts; a peer matching any entry is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Authorization {
    /// Whole trust domains (`spiffe://<td>/...`).
    pub trust_domains: Vec<String>,
    /// Peer clusters: the `L=` of the peer's issuing intermediate, as
    /// `trust-bundle intermediate create --cluster NAME` records it.
    pub clusters: Vec<Label>,
    /// Exact SPIFFE IDs.
    pub spiffe_ids: Vec<String>,
}

/// One upstream endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// IP and port.
    pub address: SocketAddr,
    /// Relative load share, at least 1.
    pub weight: u32,
}

/// A local listener that carries a local client's connection to a remote cluster's gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Egress {
    /// Unique name.
    pub name: Label,
    /// Local bind address.
    pub listen: SocketAddr,
    /// The imported service.
    pub service: ServiceRef,
    /// The listener-wide target cluster, when configured (gateways may override it).
    pub cluster: Option<Label>,
    /// How the connection travels to the remote gateway.
    pub mode: EgressMode,
    /// Active health checking of the remote gateways.
    pub probe: Probe,
    /// Remote gateways; lowest priority value first, weights within a priority.
    pub gateways: Vec<RemoteGateway>,
}

/// How an egress listener reaches the remote gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressMode {
    /// Plain TCP in; mutual TLS out, with each gateway's [`MtlsTarget`].
    Mtls,
    /// TLS in (the client's own, with SNI); the bytes go to the remote gateway untouched.
    Passthrough,
}

/// Active probes: a TCP connect to each remote gateway every `interval`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Probe {
    /// Time between probes.
    pub interval: Duration,
    /// Time a probe may take.
    pub timeout: Duration,
    /// Consecutive failures that mark a gateway dead; one success revives it.
    pub unhealthy_after: u32,
}

/// A remote gateway address (IP or host name, re-resolved at runtime).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteGateway {
    /// `host:port`.
    pub address: String,
    /// 0 is preferred; higher values are failover tiers.
    pub priority: u32,
    /// Relative load share within the priority.
    pub weight: u32,
    /// The cluster this gateway fronts: its own `cluster`, else the listener's.
    pub cluster: Option<Label>,
    /// What an mTLS connection through this gateway sends and expects; `None` in passthrough.
    pub mtls: Option<MtlsTarget>,
}

/// The SNI and the expected trust domain of an mTLS connection through one remote gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtlsTarget {
    /// SNI sent to the remote gateway.
    pub sni: String,
    /// Trust domain the remote gateway's certificate must belong to.
    pub trust_domain: String,
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text)
}

/// Parses and validates config text.
pub fn parse(text: &str) -> Result<Config, Error> {
    let raw: raw::RawConfig = serde_yaml_ng::from_str(text)?;
    validate::validate(raw)
}

#[cfg(test)]
mod tests;
