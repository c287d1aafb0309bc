//! The remote gateways of one egress listener: resolved addresses, health (active probes and
//! passive ejection), probe RTT window, and the choice of gateway for a new connection.
//!
//! Choice: among untried gateways that are alive, not ejected and have addresses, the lowest
//! priority value wins and weight shares load within it. When none qualifies, every untried
//! gateway with addresses is tried in the same order (trying a maybe-dead gateway beats refusing
//! the connection outright).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::time::Instant;

use crate::config;
use crate::metrics::{GatewayLabel, GatewayQuantile, Metrics};
use crate::proxy::balance::ejection_period;
use crate::proxy::random::Rng;

/// Probe RTT samples kept per gateway for the quantiles.
const RTT_WINDOW: usize = 128;

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
    health: Mutex<Health>,
    rtt: Mutex<VecDeque<Duration>>,
    dns: Mutex<Dns>,
}

#[derive(Debug, Clone, Copy)]
struct Health {
    alive: bool,
    probe_failures: u32,
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
    pub(crate) fn new(egress: &str, config: &config::RemoteGateway, metrics: &Metrics) -> Self {
        // Config validation guarantees `host:port` with a valid port.
        let (host, port) = config.address.rsplit_once(':').unwrap_or(("", "0"));
        let label = GatewayLabel {
            egress: egress.to_owned(),
            gateway: config.address.clone(),
        };
        metrics.gateway_healthy.get_or_create(&label).set(1);
        Self {
            config: config.clone(),
            tls: None,
            host: host.trim_matches(['[', ']']).to_owned(),
            port: port.parse().unwrap_or(0),
            label,
            addresses: ArcSwap::from_pointee(Vec::new()),
            next_address: AtomicUsize::new(0),
            health: Mutex::new(Health {
                alive: true,
                probe_failures: 0,
                passive_failures: 0,
                ejected_until: None,
            }),
            rtt: Mutex::new(VecDeque::with_capacity(RTT_WINDOW)),
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
        let h = *lock(&self.health);
        h.alive && h.ejected_until.is_none_or(|until| now >= until)
    }

    pub(crate) fn is_alive(&self) -> bool {
        lock(&self.health).alive
    }

    /// A probe answered in `rtt`: alive, and the sample enters the window.
    pub(crate) fn probe_succeeded(&self, rtt: Duration, metrics: &Metrics) {
        {
            let mut h = lock(&self.health);
            if !h.alive {
                tracing::info!(egress = %self.label.egress, gateway = %self.label.gateway, "remote gateway alive");
            }
            h.alive = true;
            h.probe_failures = 0;
        }
        metrics.gateway_healthy.get_or_create(&self.label).set(1);
        let (p50, p99) = {
            let mut window = lock(&self.rtt);
            if window.len() == RTT_WINDOW {
                window.pop_front();
            }
            window.push_back(rtt);
            quantiles(&window)
        };
        for (quantile, value) in [("0.5", p50), ("0.99", p99)] {
            metrics
                .gateway_rtt
                .get_or_create(&GatewayQuantile {
                    egress: self.label.egress.clone(),
                    gateway: self.label.gateway.clone(),
                    quantile,
                })
                .set(value.as_secs_f64());
        }
    }

    /// A probe failed; `unhealthy_after` consecutive failures mark the gateway dead.
    pub(crate) fn probe_failed(&self, unhealthy_after: u32, metrics: &Metrics) {
        metrics
            .gateway_probe_failures
            .get_or_create(&self.label)
            .inc();
        let mut h = lock(&self.health);
        h.probe_failures = h.probe_failures.saturating_add(1);
        if h.alive && h.probe_failures >= unhealthy_after {
            h.alive = false;
            metrics.gateway_healthy.get_or_create(&self.label).set(0);
            tracing::warn!(egress = %self.label.egress, gateway = %self.label.gateway, failures = h.probe_failures, "remote gateway dead");
        }
    }

    /// The probe RTT quantiles (p50, p99) over the window, if any sample exists.
    pub(crate) fn rtt(&self) -> Option<(Duration, Duration)> {
        let window = lock(&self.rtt);
        (!window.is_empty()).then(|| quantiles(&window))
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

/// Nearest-rank p50 and p99 of a non-empty window.
pub(crate) fn quantiles(window: &VecDeque<Duration>) -> (Duration, Duration) {
    let mut sorted: Vec<Duration> = window.iter().copied().collect();
    sorted.sort_unstable();
    let rank = |q: f64| {
        // ceil(q * n) - 1, clamped to the window; n ≤ RTT_WINDOW so the casts are exact.
        let n = sorted.len();
        let r = (q * n as f64).ceil() as usize;
        sorted[r.clamp(1, n.max(1)) - 1]
    };
    if sorted.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    (rank(0.5), rank(0.99))
}

/// State updates are single assignments, so a poisoned lock still holds consistent data.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
