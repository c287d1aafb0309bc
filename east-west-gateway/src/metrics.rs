//! Prometheus metrics for the gateway, under `federation_gateway_*`.
//!
//! Every label is bounded: `route` is a configured route name or [`UNMATCHED`] (a raw SNI would
//! let any client mint series), `outcome` and `reason` are closed enums, and `src_cluster` /
//! `dst_cluster` are cluster names the config mentions ([`ClusterLabels`]), [`OTHER`] or
//! [`UNKNOWN`] (a peer certificate's cluster is whatever its CA wrote).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::config::Config;
use crate::proxy::Outcome;
use crate::tls::FailureReason;

/// A gauge holding a float (seconds).
pub type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Route label for connections that never matched a route.
pub const UNMATCHED: &str = "unmatched";
/// Cluster label for a cluster the config does not mention.
pub const OTHER: &str = "other";
/// Cluster label when the cluster is not known (passthrough peers, unrouted connections).
pub const UNKNOWN: &str = "unknown";

/// The cluster names the config mentions: this gateway's, route `authorize.clusters` and egress
/// clusters. Only these become `src_cluster`/`dst_cluster` label values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterLabels(HashSet<String>);

impl ClusterLabels {
    /// The names `config` mentions.
    pub fn from_config(config: &Config) -> Self {
        let mut names = HashSet::from([config.cluster.to_string()]);
        for route in &config.routes {
            if let crate::config::Mode::Terminate(auth) = &route.mode {
                names.extend(auth.clusters.iter().map(ToString::to_string));
            }
        }
        for egress in &config.egress {
            names.extend(egress.cluster.iter().map(ToString::to_string));
            for gateway in &egress.gateways {
                names.extend(gateway.cluster.iter().map(ToString::to_string));
            }
        }
        Self(names)
    }

    /// The label value for `cluster`.
    pub fn label(&self, cluster: Option<&str>) -> String {
        match cluster {
            None | Some("") => UNKNOWN.to_owned(),
            Some(name) if self.0.contains(name) => name.to_owned(),
            Some(_) => OTHER.to_owned(),
        }
    }
}

/// `certificate_expiry_seconds`: seconds until our own leaf expires, computed at scrape time
/// from the notAfter of the certificate in force; absent until the gateway has one.
#[derive(Debug)]
pub struct CertificateExpiry {
    /// notAfter in Unix seconds, or [`i64::MIN`] for none.
    not_after: AtomicI64,
}

impl CertificateExpiry {
    fn new() -> Self {
        Self {
            not_after: AtomicI64::new(i64::MIN),
        }
    }

    /// Records the notAfter (Unix seconds) of the certificate now in force.
    pub fn set(&self, not_after: i64) {
        self.not_after.store(not_after, Ordering::Relaxed);
    }

    /// Seconds from now until expiry (negative once expired), if a certificate is in force.
    pub fn remaining(&self) -> Option<i64> {
        let not_after = self.not_after.load(Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        (not_after != i64::MIN).then(|| not_after.saturating_sub(now))
    }
}

impl Collector for CertificateExpiry {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(remaining) = self.remaining() else {
            return Ok(());
        };
        let gauge = ConstGauge::new(remaining);
        let metric = encoder.encode_descriptor(
            "certificate_expiry",
            "Seconds until the gateway's own leaf certificate expires",
            Some(&Unit::Seconds),
            gauge.metric_type(),
        )?;
        gauge.encode(metric)
    }
}

/// All gateway metrics; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Connections accepted on the ingress listener.
    pub opened: Counter,
    /// Connections closed, by route, outcome and clusters.
    pub closed: Family<RouteOutcome, Counter>,
    /// Connections currently open.
    pub active: Gauge,
    /// Connections currently open per route.
    pub route_active: Family<RouteLabel, Gauge>,
    /// Bytes from clients to upstreams.
    pub received_bytes: Family<RouteLabel, Counter>,
    /// Bytes from upstreams to clients.
    pub sent_bytes: Family<RouteLabel, Counter>,
    /// ClientHello detection failures, by reason.
    pub hello_failures: Family<ReasonLabel, Counter>,
    /// Time from accept to a parsed ClientHello.
    pub sni_detect: Histogram,
    /// Upstream connect time per attempt.
    pub upstream_connect: Family<RouteLabel, Histogram>,
    /// Failed upstream connect attempts.
    pub upstream_connect_failures: Family<RouteLabel, Counter>,
    /// Endpoints passively ejected after a connect failure.
    pub ejections: Family<RouteLabel, Counter>,
    /// Config reload attempts, by result.
    pub reloads: Family<ResultLabel, Counter>,
    /// Generation of the config in force (1 at startup, +1 per applied reload).
    pub config_generation: Gauge,
    /// 1 while the controller's Watch stream is open (controller mode).
    pub controller_connected: Gauge,
    /// Version of the last controller config applied (0: none yet).
    pub controller_config_version: Gauge,
    /// Controller configs received, by result.
    pub controller_configs: Family<ResultLabel, Counter>,
    /// Ingress mTLS handshakes that failed, by reason.
    pub tls_handshake_failures: Family<TlsFailureLabel, Counter>,
    /// mTLS handshakes that resumed a session and were let through, by side.
    pub tls_sessions_resumed: Family<SideLabel, Counter>,
    /// TLS material loads (startup and reloads), by result.
    pub tls_reloads: Family<ResultLabel, Counter>,
    /// Egress: connections accepted per listener.
    pub egress_opened: Family<EgressLabel, Counter>,
    /// Egress: connections closed, by listener, outcome and clusters.
    pub egress_closed: Family<EgressOutcome, Counter>,
    /// Egress: bytes from local clients toward remote gateways.
    pub egress_received_bytes: Family<EgressLabel, Counter>,
    /// Egress: bytes from remote gateways to local clients.
    pub egress_sent_bytes: Family<EgressLabel, Counter>,
    /// Egress listeners that could not be bound on reload.
    pub egress_bind_failures: Family<EgressLabel, Counter>,
    /// Egress: outbound connect or handshake failures per remote gateway and reason.
    pub egress_failures: Family<GatewayReason, Counter>,
    /// 1 while a remote gateway is considered alive, else 0.
    pub gateway_healthy: Family<GatewayLabel, Gauge>,
    /// Probe round-trip time quantiles over the recent window.
    pub gateway_rtt: Family<GatewayQuantile, FloatGauge>,
    /// Failed active probes.
    pub gateway_probe_failures: Family<GatewayLabel, Counter>,
    /// Remote gateways passively ejected after a failure.
    pub gateway_ejections: Family<GatewayLabel, Counter>,
    /// Resolved addresses in use per remote gateway.
    pub gateway_addresses: Family<GatewayLabel, Gauge>,
    /// Failed name resolutions (the last good answer stays in use).
    pub gateway_resolve_failures: Family<GatewayLabel, Counter>,
    /// 1 while a remote gateway's addresses come from a stale answer after a failed resolution.
    pub gateway_dns_stale: Family<GatewayLabel, Gauge>,
    /// TLS handshakes holding a slot of `limits.max_concurrent_handshakes`, by side.
    pub handshakes_in_progress: Family<SideLabel, Gauge>,
    /// Connections waiting for a handshake slot, by side.
    pub handshakes_queued: Family<SideLabel, Gauge>,
    /// Time connections waited for a handshake slot, by side.
    pub handshake_queue_wait: Family<SideLabel, Histogram>,
    /// Seconds until our own certificate expires.
    pub certificate_expiry: Arc<CertificateExpiry>,
}

/// `{reason}` for ingress TLS handshake failures.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TlsFailureLabel {
    /// Why the handshake failed.
    pub reason: FailureReason,
}

/// `{side}`: which end of the handshake the gateway is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SideLabel {
    /// `ingress` (terminate routes, TLS server) or `egress` (mTLS egress, TLS client).
    pub side: Side,
}

/// The gateway's end of a TLS handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// A terminate route: the gateway is the TLS server.
    Ingress,
    /// An mTLS egress listener: the gateway is the TLS client.
    Egress,
}

impl EncodeLabelValue for Side {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        })
    }
}

/// `{egress}`: a configured egress listener name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct EgressLabel {
    /// Egress listener name.
    pub egress: String,
}

/// `{egress, outcome, src_cluster, dst_cluster}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct EgressOutcome {
    /// Egress listener name.
    pub egress: String,
    /// How the connection ended.
    pub outcome: Outcome,
    /// This gateway's cluster.
    pub src_cluster: String,
    /// The cluster of the remote gateway used, see [`ClusterLabels`].
    pub dst_cluster: String,
}

/// `{egress, gateway}`: both from config (the gateway address as written, not as resolved).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct GatewayLabel {
    /// Egress listener name.
    pub egress: String,
    /// Remote gateway address as configured.
    pub gateway: String,
}

/// `{egress, gateway, reason}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct GatewayReason {
    /// Egress listener name.
    pub egress: String,
    /// Remote gateway address as configured.
    pub gateway: String,
    /// `connect`, `timeout` or a TLS [`FailureReason`].
    pub reason: &'static str,
}

/// `{egress, gateway, quantile}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct GatewayQuantile {
    /// Egress listener name.
    pub egress: String,
    /// Remote gateway address as configured.
    pub gateway: String,
    /// `0.5` or `0.99`.
    pub quantile: &'static str,
}

/// `{route}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RouteLabel {
    /// Route name or [`UNMATCHED`].
    pub route: String,
}

/// `{route, outcome, src_cluster, dst_cluster}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RouteOutcome {
    /// Route name or [`UNMATCHED`].
    pub route: String,
    /// How the connection ended.
    pub outcome: Outcome,
    /// The verified peer gateway's cluster (terminate routes), see [`ClusterLabels`].
    pub src_cluster: String,
    /// This gateway's cluster once a route matched.
    pub dst_cluster: String,
}

/// `{reason}` for hello failures.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The failing outcome.
    pub reason: Outcome,
}

/// `{result}` for reloads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResultLabel {
    /// `applied` or `rejected`.
    pub result: &'static str,
}

impl EncodeLabelValue for FailureReason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

fn connect_histogram() -> Histogram {
    // 100 µs … ~3.3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("federation");
        let this = Self {
            opened: Counter::default(),
            closed: Family::default(),
            active: Gauge::default(),
            route_active: Family::default(),
            received_bytes: Family::default(),
            sent_bytes: Family::default(),
            hello_failures: Family::default(),
            sni_detect: Histogram::new(exponential_buckets(0.00005, 2.0, 18)),
            upstream_connect: Family::new_with_constructor(connect_histogram),
            upstream_connect_failures: Family::default(),
            ejections: Family::default(),
            reloads: Family::default(),
            config_generation: Gauge::default(),
            controller_connected: Gauge::default(),
            controller_config_version: Gauge::default(),
            controller_configs: Family::default(),
            tls_handshake_failures: Family::default(),
            tls_sessions_resumed: Family::default(),
            tls_reloads: Family::default(),
            egress_opened: Family::default(),
            egress_closed: Family::default(),
            egress_received_bytes: Family::default(),
            egress_sent_bytes: Family::default(),
            egress_failures: Family::default(),
            egress_bind_failures: Family::default(),
            gateway_healthy: Family::default(),
            gateway_rtt: Family::default(),
            gateway_probe_failures: Family::default(),
            gateway_ejections: Family::default(),
            gateway_addresses: Family::default(),
            gateway_resolve_failures: Family::default(),
            gateway_dns_stale: Family::default(),
            handshakes_in_progress: Family::default(),
            handshakes_queued: Family::default(),
            // 1 ms … ~65 s.
            handshake_queue_wait: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 17))
            }),
            certificate_expiry: Arc::new(CertificateExpiry::new()),
            registry: Registry::default(),
        };
        let g = registry.sub_registry_with_prefix("gateway");
        g.register(
            "tcp_connections_opened",
            "Connections accepted on the ingress listener",
            this.opened.clone(),
        );
        g.register(
            "tcp_connections_closed",
            "Connections closed, by route, outcome and clusters",
            this.closed.clone(),
        );
        g.register(
            "tcp_connections_active",
            "Connections currently open",
            this.active.clone(),
        );
        g.register(
            "route_connections_active",
            "Connections currently open per route",
            this.route_active.clone(),
        );
        g.register_with_unit(
            "tcp_received",
            "Bytes received from clients",
            Unit::Bytes,
            this.received_bytes.clone(),
        );
        g.register_with_unit(
            "tcp_sent",
            "Bytes sent to clients",
            Unit::Bytes,
            this.sent_bytes.clone(),
        );
        g.register(
            "tls_hello_failures",
            "ClientHello detection failures by reason",
            this.hello_failures.clone(),
        );
        g.register_with_unit(
            "sni_detect_duration",
            "Time from accept to a parsed ClientHello",
            Unit::Seconds,
            this.sni_detect.clone(),
        );
        g.register_with_unit(
            "upstream_connect_duration",
            "Upstream connect time per attempt",
            Unit::Seconds,
            this.upstream_connect.clone(),
        );
        g.register(
            "upstream_connect_failures",
            "Failed upstream connect attempts",
            this.upstream_connect_failures.clone(),
        );
        g.register(
            "endpoint_ejections",
            "Endpoints ejected after a connect failure",
            this.ejections.clone(),
        );
        g.register(
            "config_reloads",
            "Config reload attempts by result",
            this.reloads.clone(),
        );
        g.register(
            "config_generation",
            "Generation of the config in force",
            this.config_generation.clone(),
        );
        g.register(
            "controller_connected",
            "1 while the controller's config stream is open",
            this.controller_connected.clone(),
        );
        g.register(
            "controller_config_version",
            "Version of the last controller config applied",
            this.controller_config_version.clone(),
        );
        g.register(
            "controller_configs",
            "Controller configs received, by result",
            this.controller_configs.clone(),
        );
        g.register_collector(Box::new(this.certificate_expiry.clone()));
        this.register_mtls(g);
        Self { registry, ..this }
    }

    fn register_mtls(&self, g: &mut Registry) {
        g.register(
            "tls_handshake_failures",
            "Ingress mTLS handshakes that failed, by reason",
            self.tls_handshake_failures.clone(),
        );
        g.register(
            "tls_sessions_resumed",
            "mTLS handshakes that resumed a session and were let through (no certificate signed \
             or verified; the session's chain checked again), by side",
            self.tls_sessions_resumed.clone(),
        );
        g.register(
            "tls_handshakes_in_progress",
            "TLS handshakes in progress (bounded by limits.max_concurrent_handshakes), by side",
            self.handshakes_in_progress.clone(),
        );
        g.register(
            "tls_handshakes_queued",
            "Connections waiting for a TLS handshake slot, by side",
            self.handshakes_queued.clone(),
        );
        g.register_with_unit(
            "tls_handshake_queue_wait",
            "Time connections waited for a TLS handshake slot, by side",
            Unit::Seconds,
            self.handshake_queue_wait.clone(),
        );
        g.register(
            "tls_reloads",
            "Certificate and bundle loads (startup and reloads) by result",
            self.tls_reloads.clone(),
        );
        g.register(
            "egress_connections_opened",
            "Connections accepted on egress listeners",
            self.egress_opened.clone(),
        );
        g.register(
            "egress_connections_closed",
            "Egress connections closed, by listener, outcome and clusters",
            self.egress_closed.clone(),
        );
        g.register_with_unit(
            "egress_received",
            "Bytes from local clients toward remote gateways",
            Unit::Bytes,
            self.egress_received_bytes.clone(),
        );
        g.register_with_unit(
            "egress_sent",
            "Bytes from remote gateways to local clients",
            Unit::Bytes,
            self.egress_sent_bytes.clone(),
        );
        g.register(
            "egress_upstream_failures",
            "Outbound connect or handshake failures per remote gateway",
            self.egress_failures.clone(),
        );
        g.register(
            "egress_bind_failures",
            "Egress listeners that could not be bound (the rest of the config applied)",
            self.egress_bind_failures.clone(),
        );
        g.register(
            "remote_gateway_healthy",
            "1 while a remote gateway is alive",
            self.gateway_healthy.clone(),
        );
        g.register_with_unit(
            "remote_gateway_rtt",
            "Probe round-trip time quantiles over the recent window",
            Unit::Seconds,
            self.gateway_rtt.clone(),
        );
        g.register(
            "remote_gateway_probe_failures",
            "Failed active probes",
            self.gateway_probe_failures.clone(),
        );
        g.register(
            "remote_gateway_ejections",
            "Remote gateways ejected after a failure",
            self.gateway_ejections.clone(),
        );
        g.register(
            "remote_gateway_addresses",
            "Resolved addresses in use",
            self.gateway_addresses.clone(),
        );
        g.register(
            "remote_gateway_resolve_failures",
            "Failed name resolutions",
            self.gateway_resolve_failures.clone(),
        );
        g.register(
            "remote_gateway_dns_stale",
            "1 while serving the last good answer after a failed resolution",
            self.gateway_dns_stale.clone(),
        );
    }

    /// Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Drops the gauge series of a remote gateway that is no longer configured (counters stay).
    pub fn forget_gateway(&self, label: &GatewayLabel) {
        self.gateway_healthy.remove(label);
        self.gateway_addresses.remove(label);
        self.gateway_dns_stale.remove(label);
        for quantile in ["0.5", "0.99"] {
            self.gateway_rtt.remove(&GatewayQuantile {
                egress: label.egress.clone(),
                gateway: label.gateway.clone(),
                quantile,
            });
        }
    }

    /// The `{route}` label value for a route name, or [`UNMATCHED`].
    pub fn route(name: Option<&str>) -> RouteLabel {
        RouteLabel {
            route: name.unwrap_or(UNMATCHED).to_owned(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests;
