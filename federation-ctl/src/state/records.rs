//! The typed records of the state directory, and the egress port allocator. Sans IO: `StateDir`
//! reads and writes them. Field names are the on-disk format: add fields with serde defaults,
//! never rename.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use trust_bundle::{SpiffeId, TrustDomain, X509Bundle};

use crate::config::{HostPort, PortRange};
use crate::model::{ClusterName, ExportTo, ExportedService, PeerImports, ServiceKey};

/// Which side of a link this cluster is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkRole {
    /// We redeemed the peer's token and dial it.
    Joiner,
    /// We issued the token; the peer dials us.
    Acceptor,
}

/// A link to one peer (`links/<peer>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkRecord {
    pub peer: ClusterName,
    #[serde(with = "serde_td")]
    pub trust_domain: TrustDomain,
    pub role: LinkRole,
    /// The peer's SPIFFE bundle (JWKS JSON), as last received.
    pub bundle_json: String,
    pub peering_addresses: Vec<HostPort>,
    pub gateway_addresses: Vec<HostPort>,
    #[serde(with = "serde_ids")]
    pub gateway_spiffe_ids: Vec<SpiffeId>,
    pub linked_at_ms: i64,
    /// The sequence of the last `TrustBundleUpdate` applied from the peer (0: none yet).
    #[serde(default)]
    pub bundle_sequence: u64,
}

/// Our trust domain's bundle as last announced to peers (`trust.json`): its sequence goes up by
/// one each time the bundle changes, across restarts, so peers can refuse stale updates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustRecord {
    pub sequence: u64,
    /// SPIFFE bundle (JWKS JSON).
    pub bundle_json: String,
}

/// The last imports heard from one peer (`imports/<peer>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportsRecord {
    pub peer: ClusterName,
    /// The export-feed version these services are at.
    pub version: u64,
    pub last_heard_ms: i64,
    pub services: Vec<ExportedService>,
}

/// Exports made with the CLI, and when file-declared exports were first seen (`exports.json`).
/// Both feed MCS oldest-export-wins precedence, so both survive restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportsRecord {
    #[serde(default)]
    pub cli: BTreeMap<ServiceKey, CliExport>,
    #[serde(default)]
    pub first_seen_ms: BTreeMap<ServiceKey, i64>,
}

/// One `federation-ctl export`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliExport {
    /// `None`: every linked cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<BTreeSet<ClusterName>>,
    pub created_at_ms: i64,
}

/// One egress listener port (`egress.json`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressEntry {
    pub service: ServiceKey,
    pub port_name: String,
    pub port: u16,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EgressFile {
    pub(super) ports: Vec<EgressEntry>,
}

/// Local ports for the gateway's egress listeners, one per imported (service, port name), the
/// lowest free port of the range first. Kept in the state directory so a listener keeps its port
/// across restarts and local clients keep working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressPorts {
    range: PortRange,
    by_key: BTreeMap<(ServiceKey, String), u16>,
    used: BTreeSet<u16>,
}

/// Every port of the range is taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no free egress port for {service} port {port_name}: all {size} ports of {range} are in use; widen gateways.egress.ports"
)]
pub struct EgressFull {
    pub service: ServiceKey,
    pub port_name: String,
    pub range: PortRange,
    pub size: usize,
}

// === impl LinkRecord ===

impl LinkRecord {
    /// The peer's bundle, parsed.
    pub fn bundle(&self) -> Result<X509Bundle, trust_bundle::bundle::Error> {
        X509Bundle::from_spiffe_json(self.bundle_json.as_bytes())
    }
}

// === impl ImportsRecord ===

impl ImportsRecord {
    /// What to persist for `peer`; `None` before its first snapshot (nothing to keep).
    pub fn from_peer(peer: &PeerImports) -> Option<Self> {
        Some(Self {
            peer: peer.cluster.clone(),
            version: peer.version()?,
            last_heard_ms: peer.last_heard_ms,
            services: peer.services().values().cloned().collect(),
        })
    }

    /// The peer's imports as they were, under their old lease time (so a restart neither extends
    /// nor cuts a lease).
    pub fn into_peer(self, priority: u32) -> PeerImports {
        PeerImports::restore(
            self.peer,
            priority,
            self.version,
            self.services,
            self.last_heard_ms,
        )
    }
}

// === impl CliExport ===

impl CliExport {
    pub fn export_to(&self) -> ExportTo {
        match &self.to {
            None => ExportTo::All,
            Some(peers) => ExportTo::Peers(peers.clone()),
        }
    }

    pub fn new(to: &ExportTo, created_at_ms: i64) -> Self {
        Self {
            to: match to {
                ExportTo::All => None,
                ExportTo::Peers(p) => Some(p.clone()),
            },
            created_at_ms,
        }
    }
}

// === impl EgressPorts ===

impl EgressPorts {
    pub fn new(range: PortRange) -> Self {
        Self {
            range,
            by_key: BTreeMap::new(),
            used: BTreeSet::new(),
        }
    }

    /// Rebuilds the allocator from saved entries. Entries outside `range` (it was changed) or
    /// reusing a port already taken are returned instead of kept; they get new ports on demand.
    pub fn restore(range: PortRange, entries: Vec<EgressEntry>) -> (Self, Vec<EgressEntry>) {
        let mut ports = Self::new(range);
        let mut dropped = Vec::new();
        for e in entries {
            let key = (e.service.clone(), e.port_name.clone());
            if !range.contains(e.port)
                || ports.used.contains(&e.port)
                || ports.by_key.contains_key(&key)
            {
                dropped.push(e);
                continue;
            }
            ports.used.insert(e.port);
            ports.by_key.insert(key, e.port);
        }
        (ports, dropped)
    }

    pub fn range(&self) -> PortRange {
        self.range
    }

    pub fn get(&self, service: &ServiceKey, port_name: &str) -> Option<u16> {
        self.by_key
            .get(&(service.clone(), port_name.to_owned()))
            .copied()
    }

    /// The port of (`service`, `port_name`): the one it has, or the lowest free one.
    pub fn allocate(&mut self, service: &ServiceKey, port_name: &str) -> Result<u16, EgressFull> {
        if let Some(port) = self.get(service, port_name) {
            return Ok(port);
        }
        let free = (self.range.first..=self.range.last).find(|p| !self.used.contains(p));
        let Some(port) = free else {
            return Err(EgressFull {
                service: service.clone(),
                port_name: port_name.to_owned(),
                range: self.range,
                size: self.range.len(),
            });
        };
        self.used.insert(port);
        self.by_key
            .insert((service.clone(), port_name.to_owned()), port);
        Ok(port)
    }

    /// Frees the port of (`service`, `port_name`), if it had one.
    pub fn release(&mut self, service: &ServiceKey, port_name: &str) -> Option<u16> {
        let port = self
            .by_key
            .remove(&(service.clone(), port_name.to_owned()))?;
        self.used.remove(&port);
        Some(port)
    }

    /// Keeps only the allocations `keep` accepts; returns the freed entries.
    pub fn retain(&mut self, mut keep: impl FnMut(&ServiceKey, &str) -> bool) -> Vec<EgressEntry> {
        let gone: Vec<EgressEntry> = self
            .by_key
            .iter()
            .filter(|((s, n), _)| !keep(s, n))
            .map(|((s, n), p)| EgressEntry {
                service: s.clone(),
                port_name: n.clone(),
                port: *p,
            })
            .collect();
        for e in &gone {
            self.release(&e.service, &e.port_name);
        }
        gone
    }

    pub fn entries(&self) -> Vec<EgressEntry> {
        self.by_key
            .iter()
            .map(|((s, n), p)| EgressEntry {
                service: s.clone(),
                port_name: n.clone(),
                port: *p,
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// `TrustDomain` as a string.
mod serde_td {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use trust_bundle::TrustDomain;

    pub(super) fn serialize<S: Serializer>(td: &TrustDomain, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(td.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TrustDomain, D::Error> {
        TrustDomain::parse(&String::deserialize(d)?).map_err(D::Error::custom)
    }
}

/// `Vec<SpiffeId>` as strings.
mod serde_ids {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use trust_bundle::SpiffeId;

    pub(super) fn serialize<S: Serializer>(ids: &[SpiffeId], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(ids.iter().map(SpiffeId::as_str))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SpiffeId>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| SpiffeId::parse(s).map_err(D::Error::custom))
            .collect()
    }
}
