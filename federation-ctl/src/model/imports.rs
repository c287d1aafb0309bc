//! Imports: what linked clusters export to us, held per peer under a lease and merged by
//! `name.namespace` into one service (MCS `ServiceImport`), with conflicts resolved
//! oldest-export-wins and reported.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::feed::{self, FeedError, FeedUpdate};
use super::{ClusterName, ExportedService, ServiceKey, ServicePort};

/// How long a peer's imports outlive its last heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub heartbeat_interval_ms: u64,
    /// Heartbeats that may be missed before the peer's imports are withdrawn.
    pub missed_allowed: u32,
}

impl Lease {
    /// The instant (Unix ms) after which imports heard at `last_heard_ms` are withdrawn.
    pub fn expires_at(&self, last_heard_ms: i64) -> i64 {
        let span = self
            .heartbeat_interval_ms
            .saturating_mul(u64::from(self.missed_allowed) + 1);
        last_heard_ms.saturating_add(i64::try_from(span).unwrap_or(i64::MAX))
    }

    pub fn is_live(&self, last_heard_ms: i64, now_ms: i64) -> bool {
        now_ms <= self.expires_at(last_heard_ms)
    }
}

/// Everything received from one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerImports {
    pub cluster: ClusterName,
    /// Lower is preferred; set locally per link.
    pub priority: u32,
    pub last_heard_ms: i64,
    version: Option<u64>,
    services: BTreeMap<ServiceKey, ExportedService>,
}

impl PeerImports {
    pub fn new(cluster: ClusterName, priority: u32) -> Self {
        Self {
            cluster,
            priority,
            last_heard_ms: i64::MIN,
            version: None,
            services: BTreeMap::new(),
        }
    }

    /// Restores a peer's last known imports (from the state directory) with their lease time.
    pub fn restore(
        cluster: ClusterName,
        priority: u32,
        version: u64,
        services: Vec<ExportedService>,
        last_heard_ms: i64,
    ) -> Self {
        Self {
            cluster,
            priority,
            last_heard_ms,
            version: Some(version),
            services: services.into_iter().map(|s| (s.key.clone(), s)).collect(),
        }
    }

    /// Applies a feed message; any message also counts as hearing from the peer.
    pub fn apply(&mut self, update: &FeedUpdate, now_ms: i64) -> Result<(), FeedError> {
        feed::apply(&mut self.version, &mut self.services, update)?;
        self.last_heard_ms = now_ms;
        Ok(())
    }

    pub fn heard(&mut self, now_ms: i64) {
        self.last_heard_ms = self.last_heard_ms.max(now_ms);
    }

    pub fn version(&self) -> Option<u64> {
        self.version
    }

    pub fn services(&self) -> &BTreeMap<ServiceKey, ExportedService> {
        &self.services
    }
}

/// One cluster behind a merged import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportSource {
    pub cluster: ClusterName,
    pub priority: u32,
    pub ready_endpoints: u32,
    pub zones: BTreeSet<String>,
    pub exported_at_ms: i64,
    /// The ports this cluster serves (traffic on a port goes only to clusters that expose it).
    pub ports: Vec<ServicePort>,
}

/// A service imported from one or more clusters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedService {
    pub key: ServiceKey,
    /// The union of port names, each with the definition of the oldest export.
    pub ports: Vec<ServicePort>,
    /// Preferred first: by priority, then by cluster name.
    pub sources: Vec<ImportSource>,
}

/// A port defined differently by two exporters; the oldest export's definition wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    pub key: ServiceKey,
    pub port_name: String,
    pub winner: ClusterName,
    pub winning_port: u16,
    pub loser: ClusterName,
    pub losing_port: u16,
}

/// One cluster's export of a service, as conflict resolution sees it.
#[derive(Debug, Clone, Copy)]
pub struct Exporter<'a> {
    pub cluster: &'a ClusterName,
    pub exported_at_ms: i64,
    pub ports: &'a [ServicePort],
}

/// Resolves the port definitions of one service's exports, oldest export first (ties by
/// cluster name, so every cluster decides alike): each port name takes the number of the
/// oldest export defining it, and every export defining it otherwise is a [`Conflict`].
/// Returns port name → winning number, and the conflicts.
pub fn resolve_ports<'a>(
    key: &ServiceKey,
    exporters: &mut [Exporter<'a>],
) -> (BTreeMap<&'a str, u16>, Vec<Conflict>) {
    exporters.sort_by(|a, b| (a.exported_at_ms, a.cluster).cmp(&(b.exported_at_ms, b.cluster)));
    let mut ports: BTreeMap<&str, (u16, &ClusterName)> = BTreeMap::new();
    let mut conflicts = Vec::new();
    for e in exporters.iter() {
        for p in e.ports {
            match ports.get(p.name.as_str()) {
                None => {
                    ports.insert(&p.name, (p.port, e.cluster));
                }
                Some((port, winner)) if *port != p.port => conflicts.push(Conflict {
                    key: key.clone(),
                    port_name: p.name.clone(),
                    winner: (*winner).clone(),
                    winning_port: *port,
                    loser: e.cluster.clone(),
                    losing_port: p.port,
                }),
                Some(_) => {}
            }
        }
    }
    let ports = ports.into_iter().map(|(n, (p, _))| (n, p)).collect();
    (ports, conflicts)
}

/// Merges the imports of every live peer. The result does not depend on the order of `peers`.
pub fn merge_imports(
    peers: &[PeerImports],
    lease: Lease,
    now_ms: i64,
) -> (BTreeMap<ServiceKey, ImportedService>, Vec<Conflict>) {
    let mut by_key: BTreeMap<&ServiceKey, Vec<(&PeerImports, &ExportedService)>> = BTreeMap::new();
    for peer in peers {
        if peer.version.is_none() || !lease.is_live(peer.last_heard_ms, now_ms) {
            continue;
        }
        for (key, svc) in &peer.services {
            by_key.entry(key).or_default().push((peer, svc));
        }
    }
    let mut merged = BTreeMap::new();
    let mut conflicts = Vec::new();
    for (key, exporters) in by_key {
        let mut constituents: Vec<Exporter<'_>> = exporters
            .iter()
            .map(|(peer, svc)| Exporter {
                cluster: &peer.cluster,
                exported_at_ms: svc.exported_at_ms,
                ports: &svc.ports,
            })
            .collect();
        let (ports, found) = resolve_ports(key, &mut constituents);
        conflicts.extend(found);
        let mut sources: Vec<ImportSource> = exporters
            .iter()
            .map(|(peer, svc)| ImportSource {
                cluster: peer.cluster.clone(),
                priority: peer.priority,
                ready_endpoints: svc.ready_endpoints,
                zones: svc.zones.clone(),
                exported_at_ms: svc.exported_at_ms,
                ports: svc.ports.clone(),
            })
            .collect();
        sources.sort_by(|a, b| (a.priority, &a.cluster).cmp(&(b.priority, &b.cluster)));
        merged.insert(
            key.clone(),
            ImportedService {
                key: key.clone(),
                ports: ports
                    .into_iter()
                    .map(|(name, port)| ServicePort::new(name, port))
                    .collect(),
                sources,
            },
        );
    }
    (merged, conflicts)
}
