//! `/config_dump`: the effective config as JSON, defaults filled in, secrets redacted.
//!
//! Built by hand rather than derived so that adding a field to `Config` cannot leak it: a field
//! appears here only when someone decides it may.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Config, Egress, EgressMode, Endpoint, Mode, Route, Tls};

/// Marker written instead of anything secret.
const REDACTED: &str = "[redacted]";

/// The effective config as JSON. Private key paths are redacted; key material is never loaded
/// into `Config` at all.
pub fn dump(config: &Config) -> Value {
    json!({
        "cluster": config.cluster.as_str(),
        "cluster_domain": config.cluster_domain,
        "ingress": {
            "listen": config.ingress.listen.to_string(),
            "hello_timeout": human(config.ingress.hello_timeout),
            "max_hello_bytes": config.ingress.max_hello_bytes,
            "max_connections": config.ingress.max_connections,
        },
        "admin": { "listen": config.admin.listen.to_string() },
        "upstream": {
            "connect_timeout": human(config.upstream.connect_timeout),
            "idle_timeout": human(config.upstream.idle_timeout),
            "connect_attempts": config.upstream.connect_attempts,
            "ejection_base": human(config.upstream.ejection_base),
            "ejection_max": human(config.upstream.ejection_max),
            "buffer_bytes": config.upstream.buffer_bytes,
            "splice": config.upstream.splice.as_str(),
        },
        "limits": {
            "max_concurrent_handshakes": config.limits.max_concurrent_handshakes,
        },
        "drain_timeout": human(config.drain_timeout),
        "reload": { "watch_interval": config.watch_interval.map(human) },
        "tls": config.tls.as_ref().map(|t| match t {
            Tls::Files(files) => json!({
                "cert_chain": files.cert_chain.display().to_string(),
                "private_key": REDACTED,
                "trust_bundle": files.trust_bundle.display().to_string(),
            }),
            Tls::Controller => json!({ "source": "controller" }),
        }),
        "routes": config.routes.iter().map(route).collect::<Vec<_>>(),
        "egress": config.egress.iter().map(egress).collect::<Vec<_>>(),
    })
}

fn egress(e: &Egress) -> Value {
    let mode = match e.mode {
        EgressMode::Mtls => "mtls",
        EgressMode::Passthrough => "passthrough",
    };
    json!({
        "name": e.name.as_str(),
        "listen": e.listen.to_string(),
        "mode": mode,
        "service": e.service.to_string(),
        "cluster": e.cluster.as_ref().map(|c| c.as_str()),
        "probe": {
            "interval": human(e.probe.interval),
            "timeout": human(e.probe.timeout),
            "unhealthy_after": e.probe.unhealthy_after,
        },
        // Effective per-gateway values: the listener's defaults already applied.
        "gateways": e.gateways.iter().map(|g| json!({
            "address": g.address,
            "priority": g.priority,
            "weight": g.weight,
            "cluster": g.cluster.as_ref().map(|c| c.as_str()),
            "sni": g.mtls.as_ref().map(|m| &m.sni),
            "trust_domain": g.mtls.as_ref().map(|m| &m.trust_domain),
        })).collect::<Vec<_>>(),
    })
}

fn route(r: &Route) -> Value {
    let mode = match &r.mode {
        Mode::Passthrough => json!("passthrough"),
        Mode::Terminate(a) => json!({
            "terminate": {
                "trust_domains": a.trust_domains,
                "clusters": a.clusters.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
                "spiffe_ids": a.spiffe_ids,
            }
        }),
    };
    json!({
        "name": r.name.as_str(),
        "patterns": r.patterns.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "mode": mode,
        "max_connections": r.max_connections,
        "endpoints": r.endpoints.iter().map(endpoint).collect::<Vec<_>>(),
    })
}

fn endpoint(e: &Endpoint) -> Value {
    json!({ "address": e.address.to_string(), "weight": e.weight })
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
