//! What the controller knows about its own gateways and peers beyond the federation state:
//! the gateways' reports (`GatewayDiscovery.Report`: readiness, config version, probe health
//! and RTT per remote gateway) and each peer's clock as its heartbeats tell it.
//!
//! Reports are kept per gateway name, newest only; a gateway whose reports stop for
//! [`STALE_AFTER`] is shown as not reporting (and not ready). Bounded: at most [`MAX_GATEWAYS`]
//! names are kept, the stalest dropped first, so a misbehaving client cannot grow the map.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use east_west_gateway::api as gw;
use east_west_gateway::controller::REPORT_INTERVAL;

use crate::model::ClusterName;

/// A gateway is "not reporting" after this many report intervals of silence.
const STALE_INTERVALS: u32 = 3;
/// Gateways remembered.
const MAX_GATEWAYS: usize = 64;

/// How long a report stays current, in ms.
pub(crate) const STALE_AFTER: i64 = REPORT_INTERVAL.as_millis() as i64 * STALE_INTERVALS as i64;

/// A report and when it arrived (our clock).
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) at_ms: i64,
    pub(crate) report: gw::GatewayReport,
}

impl Received {
    pub(crate) fn is_current(&self, now_ms: i64) -> bool {
        now_ms.saturating_sub(self.at_ms) <= STALE_AFTER
    }
}

/// The latest report of each gateway.
#[derive(Debug, Default)]
pub(crate) struct Reports(Mutex<BTreeMap<String, Received>>);

impl Reports {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Received>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn record(&self, report: gw::GatewayReport, now_ms: i64) {
        let mut map = self.lock();
        if !map.contains_key(&report.gateway) && map.len() >= MAX_GATEWAYS {
            let stalest = map
                .iter()
                .min_by_key(|(_, r)| r.at_ms)
                .map(|(name, _)| name.clone());
            if let Some(name) = stalest {
                map.remove(&name);
            }
        }
        map.insert(
            report.gateway.clone(),
            Received {
                at_ms: now_ms,
                report,
            },
        );
    }

    /// Every gateway's latest report, by name.
    pub(crate) fn all(&self) -> Vec<Received> {
        self.lock().values().cloned().collect()
    }

    /// The current probe results toward `address` for egress `egress`: the first current
    /// report that has them.
    pub(crate) fn probe(
        &self,
        egress: &str,
        address: &str,
        now_ms: i64,
    ) -> Option<gw::ProbeReport> {
        self.lock()
            .values()
            .filter(|r| r.is_current(now_ms))
            .flat_map(|r| r.report.egress.iter())
            .filter(|e| e.name == egress)
            .flat_map(|e| e.gateways.iter())
            .find(|g| g.address == address)
            .cloned()
    }
}

/// A peer's clock minus ours, from a heartbeat it sent at `sent_at_ms` (its clock) that we
/// received at `now_ms`. The one-way delay counts as skew, which errs on the safe side.
pub(crate) fn skew_ms(sent_at_ms: i64, now_ms: i64) -> Option<i64> {
    (sent_at_ms > 0).then(|| sent_at_ms.saturating_sub(now_ms))
}

/// Records the skew of a heartbeat from `peer`.
pub(crate) fn heartbeat(shared: &super::Shared, peer: &ClusterName, sent_at_ms: i64, now_ms: i64) {
    if let Some(link) = shared.lock().links.get_mut(peer) {
        link.clock_skew_ms = skew_ms(sent_at_ms, now_ms);
    }
}

#[cfg(test)]
mod tests;
