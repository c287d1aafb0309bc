//! The remote gateways of one egress listener: resolved addresses, health (the shared active
//! probe result, see [`super::probe`], and this listener's passive ejection), and the choice of
//! gateway for a new connection.
//!
//! Choice: among untried gateways that are alive, not ejected and have addresses, the lowest
//! priority value wins and weight shares load within it. When none qualifies, every untried
//! gateway with addresses is tried in the same order (trying a maybe-dead gateway beats refusing
//! the connection outright).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::time::Instant;

use super::probe::Probed;
use crate::config;
use crate::metrics::{GatewayLabel, Metrics};
use crate::proxy::balance::ejection_period;
use crate::proxy::random::Rng;

/// What an mTLS connection through one gateway uses: a client verifying the gateway's expected
/// trust domain, and the SNI naming the service in that gateway's cluster.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) connector: tokio_rustls::TlsConnector,
    pub(crate) sni: rustls_pki_types::ServerName<'static>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("sni", &self.sni)
            .finish_non_exhaustive()
    }
}

/// One remote gateway's runtime state.
#[derive(Debug)]
pub(crate) struct Gateway {
    pub(crate) config: config::RemoteGateway,
    /// `Some` for mTLS egress.
    pub(crate) tls: Option<Target>,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) label: GatewayLabel,
    addresses: ArcSwap<Vec<SocketAddr>>,
    next_address: AtomicUsize,
    /// Active probe result, shared with every listener naming the same address.
    pub(crate) probe: Arc<Probed>,
    /// Passive ejection: this listener's own connection failures.
    health: Mutex<Health>,
    dns: Mutex<Dns>,
}

#[derive(Debug, Clone, Copy)]
struct Health {
    passive_failures: u32,
    ejected_until: Option<Instant>,
}

/// Name resolution state, for `/config_dump`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Dns {
    pub(crate) resolved_at: Option<SystemTime>,
    pub(crate) ttl: Option<Duration>,
    pub(crate) last_error: Option<String>,
    pub(crate) stale: bool,
}

/// A set of gateways and a lock-free random source for weighted choice.
#[derive(Debug)]
pub(crate) struct Gateways {
    pub(crate) list: Vec<Arc<Gateway>>,
    ejection_base: Duration,
    ejection_max: Duration,
    rng: Rng,
}

impl Gateway {
    pub(crate) fn new(egress: &str, config: &config::RemoteGateway, probe: Arc<Probed>) -> Self {
        // Config validation guarantees `host:port` with a valid port.
        let (host, port) = config.address.rsplit_once(':').unwrap_or(("", "0"));
        let label = GatewayLabel {
            egress: egress.to_owned(),
            gateway: config.address.clone(),
        };
        Self {
            config: config.clone(),
            tls: None,
            host: host.trim_matches(['[', ']']).to_owned(),
            port: port.parse().unwrap_or(0),
            label,
            addresses: ArcSwap::from_pointee(Vec::new()),
            next_address: AtomicUsize::new(0),
            probe,
            health: Mutex::new(Health {
                passive_failures: 0,
                ejected_until: None,
            }),
            dns: Mutex::new(Dns::default()),
        }
    }

    pub(crate) fn with_tls(self, tls: Option<Target>) -> Self {
        Self { tls, ..self }
    }

    /// Every resolved address, starting at a rotating offset so connections spread over them.
    pub(crate) fn addresses(&self) -> Vec<SocketAddr> {
        let all = self.addresses.load();
        if all.is_empty() {
            return Vec::new();
        }
        let start = self.next_address.fetch_add(1, Ordering::Relaxed) % all.len();
        all[start..].iter().chain(&all[..start]).copied().collect()
    }

    pub(crate) fn set_addresses(&self, addresses: Vec<SocketAddr>, metrics: &Metrics) {
        metrics
            .gateway_addresses
            .get_or_create(&self.label)
            .set(i64::try_from(addresses.len()).unwrap_or(i64::MAX));
        self.addresses.store(Arc::new(addresses));
    }

    pub(crate) fn update_dns(&self, f: impl FnOnce(&mut Dns)) {
        f(&mut lock(&self.dns));
    }

    pub(crate) fn dns(&self) -> Dns {
        lock(&self.dns).clone()
    }

    fn usable(&self, now: Instant) -> bool {
        let ejected_until = lock(&self.health).ejected_until;
        self.probe.is_alive() && ejected_until.is_none_or(|until| now >= until)
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.probe.is_alive()
    }

    /// The probe RTT quantiles (p50, p99) over the window, if any sample exists.
    pub(crate) fn rtt(&self) -> Option<(Duration, Duration)> {
        self.probe.rtt()
    }
}

impl Gateways {
    pub(crate) fn new(list: Vec<Arc<Gateway>>, upstream: &config::Upstream) -> Self {
        Self {
            list,
            ejection_base: upstream.ejection_base,
            ejection_max: upstream.ejection_max,
            rng: Rng::new(),
        }
    }

    /// The next gateway to try, not in `tried`.
    pub(crate) fn pick(&self, tried: &[usize], now: Instant) -> Option<usize> {
        let untried: Vec<usize> = (0..self.list.len())
            .filter(|i| !tried.contains(i) && !self.list[*i].addresses.load().is_empty())
            .collect();
        let usable: Vec<usize> = untried
            .iter()
            .copied()
            .filter(|&i| self.list[i].usable(now))
            .collect();
        let candidates = if usable.is_empty() { untried } else { usable };
        let best = candidates
            .iter()
            .map(|&i| self.list[i].config.priority)
            .min()?;
        let tier: Vec<usize> = candidates
            .into_iter()
            .filter(|&i| self.list[i].config.priority == best)
            .collect();
        self.rng.weighted(
            tier.iter()
                .map(|&i| (i, u64::from(self.list[i].config.weight))),
        )
    }

    /// A connection through gateway `index` failed before any byte was sent: eject it.
    pub(crate) fn report_failure(&self, index: usize, now: Instant, metrics: &Metrics) {
        let Some(gateway) = self.list.get(index) else {
            return;
        };
        let mut h = lock(&gateway.health);
        h.passive_failures = h.passive_failures.saturating_add(1);
        let period = ejection_period(self.ejection_base, self.ejection_max, h.passive_failures);
        h.ejected_until = Some(now + period);
        metrics
            .gateway_ejections
            .get_or_create(&gateway.label)
            .inc();
        tracing::info!(egress = %gateway.label.egress, gateway = %gateway.label.gateway, ejected_for = ?period, "remote gateway ejected");
    }

    /// A connection through gateway `index` was established: end any ejection.
    pub(crate) fn report_success(&self, index: usize) {
        if let Some(gateway) = self.list.get(index) {
            let mut h = lock(&gateway.health);
            h.passive_failures = 0;
            h.ejected_until = None;
        }
    }
}

/// State updates are single assignments, so a poisoned lock still holds consistent data.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
