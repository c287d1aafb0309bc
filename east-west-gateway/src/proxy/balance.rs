//! Endpoint selection: weighted power of two choices on active connections, with passive
//! ejection after connect failures.
//!
//! Synchronous and clock-free (callers pass `now`), so it is unit- and property-testable. It
//! never blocks on IO; the only lock is a per-endpoint mutex held for a few instructions.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::config;
use crate::proxy::random::Rng;

/// The endpoints of one route and their load and health.
#[derive(Debug)]
pub(crate) struct Balancer {
    endpoints: Vec<Endpoint>,
    ejection_base: Duration,
    ejection_max: Duration,
    rng: Rng,
}

#[derive(Debug)]
struct Endpoint {
    address: SocketAddr,
    weight: u64,
    active: AtomicUsize,
    health: Mutex<Health>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Health {
    consecutive_failures: u32,
    ejected_until: Option<Instant>,
}

/// Counts an open connection against an endpoint until dropped.
#[derive(Debug)]
pub(crate) struct Active<'a> {
    endpoint: &'a Endpoint,
}

/// Ejection period after `failures` consecutive connect failures: `base * 2^(failures-1)`,
/// capped at `max`.
pub(crate) fn ejection_period(base: Duration, max: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    base.saturating_mul(1u32 << doublings).min(max)
}

impl Balancer {
    pub(crate) fn new(endpoints: &[config::Endpoint], upstream: &config::Upstream) -> Self {
        Self {
            endpoints: endpoints
                .iter()
                .map(|e| Endpoint {
                    address: e.address,
                    weight: u64::from(e.weight.max(1)),
                    active: AtomicUsize::new(0),
                    health: Mutex::new(Health::default()),
                })
                .collect(),
            ejection_base: upstream.ejection_base,
            ejection_max: upstream.ejection_max,
            rng: Rng::new(),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub(crate) fn address(&self, index: usize) -> Option<SocketAddr> {
        self.endpoints.get(index).map(|e| e.address)
    }

    /// Picks an endpoint not in `tried`. Healthy endpoints first; when every untried endpoint is
    /// ejected, ejection is ignored (Envoy's "panic routing"): trying a maybe-down endpoint beats
    /// refusing a connection outright.
    pub(crate) fn pick(&self, tried: &[usize], now: Instant) -> Option<usize> {
        let untried: Vec<usize> = (0..self.endpoints.len())
            .filter(|i| !tried.contains(i))
            .collect();
        let healthy: Vec<usize> = untried
            .iter()
            .copied()
            .filter(|&i| !self.endpoints[i].is_ejected(now))
            .collect();
        let candidates = if healthy.is_empty() { untried } else { healthy };
        match candidates.len() {
            0 => None,
            1 => Some(candidates[0]),
            _ => {
                let a = self.weighted(&candidates, None);
                let b = self.weighted(&candidates, Some(a));
                Some(if self.load_le(a, b) { a } else { b })
            }
        }
    }

    /// Marks `index` as in use until the guard drops.
    pub(crate) fn acquire(&self, index: usize) -> Option<Active<'_>> {
        let endpoint = self.endpoints.get(index)?;
        endpoint.active.fetch_add(1, Ordering::Relaxed);
        Some(Active { endpoint })
    }

    /// Records a connect failure; returns the ejection period now in force.
    pub(crate) fn report_failure(&self, index: usize, now: Instant) -> Option<Duration> {
        let endpoint = self.endpoints.get(index)?;
        let mut health = lock(&endpoint.health);
        health.consecutive_failures = health.consecutive_failures.saturating_add(1);
        let period = ejection_period(
            self.ejection_base,
            self.ejection_max,
            health.consecutive_failures,
        );
        health.ejected_until = Some(now + period);
        Some(period)
    }

    /// Records a successful connect, ending any ejection.
    pub(crate) fn report_success(&self, index: usize) {
        if let Some(endpoint) = self.endpoints.get(index) {
            *lock(&endpoint.health) = Health::default();
        }
    }

    /// Whether endpoint `a` carries no more load per weight than `b`:
    /// `(active_a + 1) / w_a <= (active_b + 1) / w_b`, cross-multiplied to stay in integers.
    fn load_le(&self, a: usize, b: usize) -> bool {
        let (ea, eb) = (&self.endpoints[a], &self.endpoints[b]);
        let load = |e: &Endpoint| e.active.load(Ordering::Relaxed) as u64 + 1;
        u128::from(load(ea)) * u128::from(eb.weight) <= u128::from(load(eb)) * u128::from(ea.weight)
    }

    /// Draws one candidate with probability proportional to weight, skipping `except`.
    fn weighted(&self, candidates: &[usize], except: Option<usize>) -> usize {
        let eligible = candidates
            .iter()
            .copied()
            .filter(move |&i| Some(i) != except)
            .map(|i| (i, self.endpoints[i].weight));
        // Callers pass at least one eligible candidate; fall back to the first rather than panic.
        self.rng.weighted(eligible).unwrap_or(candidates[0])
    }
}

impl Endpoint {
    fn is_ejected(&self, now: Instant) -> bool {
        lock(&self.health)
            .ejected_until
            .is_some_and(|until| now < until)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.endpoint.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Health updates are single assignments, so a poisoned lock still holds consistent data.
fn lock(m: &Mutex<Health>) -> std::sync::MutexGuard<'_, Health> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
