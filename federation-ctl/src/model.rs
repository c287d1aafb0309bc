//! The federation model: what a cluster exports, what a link carries, and what a cluster imports.
//! No IO, no clocks (time is a parameter), no kube or tonic types: the controller's IO shells and
//! the Kubernetes registry both drive this model.

mod feed;
mod imports;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use feed::{ExportFeed, FeedError, FeedUpdate};
pub use imports::{
    Conflict, Exporter, ImportSource, ImportedService, Lease, PeerImports, merge_imports,
    resolve_ports,
};

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "{what} {value:?} must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit"
    )]
    Label { what: &'static str, value: String },
    #[error("service {0:?} must be written NAME.NAMESPACE, e.g. reviews.default")]
    ServiceKey(String),
}

/// A cluster's unique name, an RFC 1123 label (`aws-east`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClusterName(String);

/// `name.namespace`: the identity of a service across the clusterset (namespace sameness).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceKey {
    name: String,
    namespace: String,
}

/// A named service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    /// The port the endpoints listen on when it differs from `port`. Local only: it never
    /// travels over a link (see [`Registry::exports_for`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u16>,
}

/// One endpoint of a local service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub address: IpAddr,
    pub ready: bool,
    pub zone: Option<String>,
    pub weight: u32,
}

/// A service in this cluster's registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalService {
    pub key: ServiceKey,
    pub ports: Vec<ServicePort>,
    pub endpoints: Vec<Endpoint>,
}

/// Who an export is visible to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExportTo {
    All,
    Peers(BTreeSet<ClusterName>),
}

/// A local service made visible to linked clusters (MCS `ServiceExport`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalExport {
    pub key: ServiceKey,
    pub to: ExportTo,
    /// When the export was created (Unix ms): the MCS conflict-resolution precedence.
    pub created_at_ms: i64,
}

/// What a link carries about one exported service. Endpoints themselves stay home: importers
/// reach them through the exporter's gateways, so only counts and zones travel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedService {
    pub key: ServiceKey,
    pub ports: Vec<ServicePort>,
    pub ready_endpoints: u32,
    pub total_endpoints: u32,
    pub zones: BTreeSet<String>,
    pub exported_at_ms: i64,
}

/// The registry's view of the local cluster: services and exports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    pub services: BTreeMap<ServiceKey, LocalService>,
    pub exports: BTreeMap<ServiceKey, LocalExport>,
}

// === impl ClusterName ===

impl ClusterName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        check_label("cluster name", s)?;
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ClusterName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Self::parse(&s)
    }
}

impl From<ClusterName> for String {
    fn from(c: ClusterName) -> String {
        c.0
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterName({})", self.0)
    }
}

// === impl ServiceKey ===

impl ServiceKey {
    pub fn new(name: &str, namespace: &str) -> Result<Self, NameError> {
        check_label("service name", name)?;
        check_label("namespace", namespace)?;
        Ok(Self {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        })
    }

    /// Parses `name.namespace`.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let (name, namespace) = s
            .split_once('.')
            .ok_or_else(|| NameError::ServiceKey(s.to_owned()))?;
        Self::new(name, namespace)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

impl TryFrom<String> for ServiceKey {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Self::parse(&s)
    }
}

impl From<ServiceKey> for String {
    fn from(k: ServiceKey) -> String {
        k.to_string()
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.name, self.namespace)
    }
}

impl fmt::Debug for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServiceKey({self})")
    }
}

fn check_label(what: &'static str, s: &str) -> Result<(), NameError> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(NameError::Label {
            what,
            value: s.to_owned(),
        })
    }
}

// === impl ServicePort ===

impl ServicePort {
    /// A port whose endpoints listen on the same number.
    pub fn new(name: impl Into<String>, port: u16) -> Self {
        Self {
            name: name.into(),
            port,
            target_port: None,
        }
    }

    /// The port the endpoints listen on.
    pub fn target(&self) -> u16 {
        self.target_port.unwrap_or(self.port)
    }
}

// === impl Registry ===

impl Registry {
    /// What `peer` may see: the exports addressed to it whose service exists locally.
    pub fn exports_for(&self, peer: &ClusterName) -> BTreeMap<ServiceKey, ExportedService> {
        self.exports
            .values()
            .filter(|e| match &e.to {
                ExportTo::All => true,
                ExportTo::Peers(peers) => peers.contains(peer),
            })
            .filter_map(|e| {
                let svc = self.services.get(&e.key)?;
                Some((
                    e.key.clone(),
                    ExportedService {
                        key: e.key.clone(),
                        // Target ports are this cluster's business; peers see name and port.
                        ports: svc
                            .ports
                            .iter()
                            .map(|p| ServicePort::new(p.name.clone(), p.port))
                            .collect(),
                        ready_endpoints: count(svc.endpoints.iter().filter(|ep| ep.ready)),
                        total_endpoints: count(svc.endpoints.iter()),
                        zones: svc
                            .endpoints
                            .iter()
                            .filter_map(|ep| ep.zone.clone())
                            .collect(),
                        exported_at_ms: e.created_at_ms,
                    },
                ))
            })
            .collect()
    }
}

fn count<T>(iter: impl Iterator<Item = T>) -> u32 {
    u32::try_from(iter.count()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
