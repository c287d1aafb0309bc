//! Remote gateway host names: resolved with hickory (system config, so `/etc/hosts` too),
//! re-resolved when the answer's TTL runs out, clamped to [`MIN_TTL`, `MAX_TTL`]. Every address
//! of an answer is used. A failed resolution keeps the last good answer, marks it stale in
//! `/metrics` and `/config_dump`, and retries after [`MIN_TTL`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::gateways::Gateway;
use crate::metrics::Metrics;
use hickory_resolver::TokioResolver;

/// Shortest time an answer is used before asking again (also the retry delay after a failure).
pub(crate) const MIN_TTL: Duration = Duration::from_secs(5);
/// Longest time an answer is used before asking again.
pub(crate) const MAX_TTL: Duration = Duration::from_secs(300);
/// Time one lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the resolver could not be created.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up DNS resolution from the system configuration: {0}")]
pub(crate) struct Error(String);

/// The system resolver.
pub(crate) fn resolver() -> Result<TokioResolver, Error> {
    TokioResolver::builder_tokio()
        .and_then(|b| b.build())
        .map_err(|e| Error(e.to_string()))
}

/// IP literals get their one address now and never a task; host names are resolved once now
/// (so the first connections have somewhere to go) and then by TTL in a background task.
pub(crate) async fn start(
    gateway: &Arc<Gateway>,
    resolver: Option<&TokioResolver>,
    metrics: &Arc<Metrics>,
) -> Option<tokio::task::JoinHandle<()>> {
    if let Ok(ip) = gateway.host.parse::<IpAddr>() {
        gateway.set_addresses(vec![SocketAddr::new(ip, gateway.port)], metrics);
        return None;
    }
    let Some(resolver) = resolver else {
        record_failure(gateway, metrics, "no DNS resolver".to_owned());
        return None;
    };
    let wait = resolve_once(gateway, resolver, metrics).await;
    let (gateway, resolver, metrics) = (gateway.clone(), resolver.clone(), metrics.clone());
    Some(tokio::spawn(async move {
        let mut wait = wait;
        loop {
            tokio::time::sleep(wait).await;
            wait = resolve_once(&gateway, &resolver, &metrics).await;
        }
    }))
}

/// One lookup; returns how long to wait before the next.
async fn resolve_once(gateway: &Gateway, resolver: &TokioResolver, metrics: &Metrics) -> Duration {
    let lookup = tokio::time::timeout(LOOKUP_TIMEOUT, resolver.lookup_ip(gateway.host.as_str()));
    let answer = match lookup.await {
        Ok(Ok(answer)) => answer,
        Ok(Err(error)) => {
            record_failure(gateway, metrics, error.to_string());
            return MIN_TTL;
        }
        Err(_elapsed) => {
            record_failure(gateway, metrics, "lookup timed out".to_owned());
            return MIN_TTL;
        }
    };
    let mut addresses: Vec<SocketAddr> = answer
        .iter()
        .map(|ip| SocketAddr::new(ip, gateway.port))
        .collect();
    addresses.sort_unstable();
    addresses.dedup();
    if addresses.is_empty() {
        record_failure(gateway, metrics, "no addresses in the answer".to_owned());
        return MIN_TTL;
    }
    let ttl = answer
        .valid_until()
        .saturating_duration_since(std::time::Instant::now())
        .clamp(MIN_TTL, MAX_TTL);
    tracing::debug!(host = %gateway.host, addresses = addresses.len(), ?ttl, "resolved remote gateway");
    gateway.set_addresses(addresses, metrics);
    metrics
        .gateway_dns_stale
        .get_or_create(&gateway.label)
        .set(0);
    gateway.update_dns(|dns| {
        dns.resolved_at = Some(SystemTime::now());
        dns.ttl = Some(ttl);
        dns.last_error = None;
        dns.stale = false;
    });
    ttl
}

fn record_failure(gateway: &Gateway, metrics: &Metrics, error: String) {
    metrics
        .gateway_resolve_failures
        .get_or_create(&gateway.label)
        .inc();
    let stale = !gateway.addresses().is_empty();
    metrics
        .gateway_dns_stale
        .get_or_create(&gateway.label)
        .set(i64::from(stale));
    tracing::warn!(host = %gateway.host, %error, stale, "remote gateway name resolution failed; keeping the last answer");
    gateway.update_dns(|dns| {
        dns.last_error = Some(error);
        dns.stale = stale;
    });
}
