//! Active probes: a TCP connect to a remote gateway every `probe.interval`, timed for the RTT
//! window. `probe.unhealthy_after` consecutive failures mark it dead; one success revives it.
//! A TCP connect (not a TLS handshake) keeps probes cheap for the remote gateway and out of its
//! access log; TLS problems show up as connection failures and passive ejection instead.
//!
//! Because a probe verifies nothing but the TCP connect, its answer depends only on the remote
//! gateway's configured address (and the probe settings), not on the egress listener, SNI or
//! trust domain. So one [`Probed`] per distinct (address, settings) is probed once per interval
//! and shared through the [`Registry`] by every egress listener that names that gateway: a
//! gateway importing thousands of services behind a few remote gateways makes a few connects per
//! interval, not one per (listener, gateway). Each subscribed listener's gateway still has its
//! own `{egress, gateway}` metric series, set from the shared result.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::gateways::{Gateway, lock};
use crate::config;
use crate::metrics::{GatewayQuantile, Metrics};

/// Probe RTT samples kept per remote gateway for the quantiles.
const RTT_WINDOW: usize = 128;

/// Who probes what: one entry per (configured address, probe settings) while any pool uses it.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    entries: Mutex<HashMap<Key, Weak<Probed>>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    address: String,
    probe: config::Probe,
}

/// One remote gateway address under active probes, shared by every egress gateway naming it.
#[derive(Debug)]
pub(crate) struct Probed {
    key: Key,
    state: Mutex<State>,
    /// The egress listeners' gateways reading this result: their metric series are set from it,
    /// and the probe connects to their resolved addresses.
    subscribers: Mutex<Vec<Weak<Gateway>>>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Probe rounds that connected or failed; lets tests count rounds against connections.
    #[cfg(test)]
    rounds: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct State {
    alive: bool,
    failures: u32,
    rtt: VecDeque<Duration>,
}

impl Registry {
    /// The shared probe state for `address` under `probe`, created (not yet probing) if no pool
    /// uses it now.
    pub(crate) fn get(&self, address: &str, probe: &config::Probe) -> Arc<Probed> {
        let key = Key {
            address: address.to_owned(),
            probe: probe.clone(),
        };
        let mut entries = lock(&self.entries);
        if let Some(probed) = entries.get(&key).and_then(Weak::upgrade) {
            return probed;
        }
        // Entries whose pools are all gone are dropped here, so the map stays as large as the
        // set of gateways in use.
        entries.retain(|_, weak| weak.strong_count() > 0);
        let probed = Arc::new(Probed {
            key: key.clone(),
            state: Mutex::new(State {
                alive: true,
                failures: 0,
                rtt: VecDeque::with_capacity(RTT_WINDOW),
            }),
            subscribers: Mutex::new(Vec::new()),
            task: Mutex::new(None),
            #[cfg(test)]
            rounds: std::sync::atomic::AtomicU64::new(0),
        });
        entries.insert(key, Arc::downgrade(&probed));
        probed
    }
}

impl Probed {
    pub(crate) fn is_alive(&self) -> bool {
        lock(&self.state).alive
    }

    /// The probe RTT quantiles (p50, p99) over the window, if any sample exists.
    pub(crate) fn rtt(&self) -> Option<(Duration, Duration)> {
        let state = lock(&self.state);
        (!state.rtt.is_empty()).then(|| quantiles(&state.rtt))
    }

    /// `gateway` reads this result from now on: its series get the current state, and the
    /// probes start if it is the first reader.
    pub(crate) fn subscribe(self: &Arc<Self>, gateway: &Arc<Gateway>, metrics: &Arc<Metrics>) {
        {
            let state = lock(&self.state);
            let mut subscribers = lock(&self.subscribers);
            subscribers.retain(|s| s.strong_count() > 0);
            subscribers.push(Arc::downgrade(gateway));
            set_health(gateway, state.alive, metrics);
            if !state.rtt.is_empty() {
                set_rtt(gateway, quantiles(&state.rtt), metrics);
            }
        }
        let mut task = lock(&self.task);
        if task.is_none() {
            *task = Some(tokio::spawn(run(
                Arc::downgrade(self),
                self.key.probe.clone(),
                metrics.clone(),
            )));
        }
    }

    /// `gateway` no longer reads this result: its series are not touched again (so they can be
    /// forgotten). Probes go on while another gateway reads it.
    pub(crate) fn unsubscribe(&self, gateway: &Gateway) {
        lock(&self.subscribers)
            .retain(|s| s.strong_count() > 0 && !std::ptr::eq(s.as_ptr(), gateway));
    }

    /// A probe answered in `rtt`: alive, and the sample enters the window.
    pub(crate) fn succeeded(&self, rtt: Duration, metrics: &Metrics) {
        let mut state = lock(&self.state);
        if !state.alive {
            tracing::info!(gateway = %self.key.address, "remote gateway alive");
        }
        state.alive = true;
        state.failures = 0;
        if state.rtt.len() == RTT_WINDOW {
            state.rtt.pop_front();
        }
        state.rtt.push_back(rtt);
        let rtt = quantiles(&state.rtt);
        // Under the state lock, so a subscriber joining now sees either the old state and then
        // this update, or the new state.
        for gateway in self.readers() {
            set_health(&gateway, true, metrics);
            set_rtt(&gateway, rtt, metrics);
        }
    }

    /// A probe failed; `unhealthy_after` consecutive failures mark the gateway dead.
    pub(crate) fn failed(&self, metrics: &Metrics) {
        let mut state = lock(&self.state);
        state.failures = state.failures.saturating_add(1);
        let died = state.alive && state.failures >= self.key.probe.unhealthy_after;
        if died {
            state.alive = false;
            tracing::warn!(gateway = %self.key.address, failures = state.failures, "remote gateway dead");
        }
        for gateway in self.readers() {
            metrics
                .gateway_probe_failures
                .get_or_create(&gateway.label)
                .inc();
            if died {
                set_health(&gateway, false, metrics);
            }
        }
    }

    /// The live subscribers, pruning the dropped ones.
    fn readers(&self) -> Vec<Arc<Gateway>> {
        let mut subscribers = lock(&self.subscribers);
        subscribers.retain(|s| s.strong_count() > 0);
        subscribers.iter().filter_map(Weak::upgrade).collect()
    }

    /// Addresses to probe: the first subscriber's that has any (every subscriber names the same
    /// host and port, so their resolutions agree).
    fn addresses(&self) -> Option<Vec<std::net::SocketAddr>> {
        let subscribers = lock(&self.subscribers);
        subscribers
            .iter()
            .filter_map(Weak::upgrade)
            .map(|g| g.addresses())
            .find(|a| !a.is_empty())
            .or_else(|| {
                subscribers
                    .iter()
                    .any(|s| s.strong_count() > 0)
                    .then(Vec::new)
            })
    }
}

impl Drop for Probed {
    fn drop(&mut self) {
        if let Some(task) = self
            .task
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

fn set_health(gateway: &Gateway, alive: bool, metrics: &Metrics) {
    metrics
        .gateway_healthy
        .get_or_create(&gateway.label)
        .set(i64::from(alive));
}

fn set_rtt(gateway: &Gateway, (p50, p99): (Duration, Duration), metrics: &Metrics) {
    for (quantile, value) in [("0.5", p50), ("0.99", p99)] {
        metrics
            .gateway_rtt
            .get_or_create(&GatewayQuantile {
                egress: gateway.label.egress.clone(),
                gateway: gateway.label.gateway.clone(),
                quantile,
            })
            .set(value.as_secs_f64());
    }
}

/// Probes until the shared state is dropped (every pool naming the gateway is gone) or the task
/// is aborted. A round with no subscriber (all retired, the state kept alive by a pool still
/// serving connections) connects to nothing.
async fn run(probed: Weak<Probed>, probe: config::Probe, metrics: Arc<Metrics>) {
    let mut ticks = tokio::time::interval(probe.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(addresses) = probed.upgrade().and_then(|p| p.addresses()) else {
            if probed.strong_count() == 0 {
                return;
            }
            continue;
        };
        let answer = once(&addresses, &probe).await;
        let Some(probed) = probed.upgrade() else {
            return;
        };
        match answer {
            Some(rtt) => probed.succeeded(rtt, &metrics),
            None => probed.failed(&metrics),
        }
        #[cfg(test)]
        probed
            .rounds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Tries the addresses in turn; the first that accepts gives the RTT.
async fn once(addresses: &[std::net::SocketAddr], probe: &config::Probe) -> Option<Duration> {
    for &address in addresses {
        let started = Instant::now();
        if let Ok(Ok(_stream)) =
            tokio::time::timeout(probe.timeout, TcpStream::connect(address)).await
        {
            return Some(started.elapsed());
        }
    }
    None
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

#[cfg(test)]
mod tests;
