//! What a cluster's gateways should run, derived from the federation state. Pure: the
//! controller calls [`build`] after every change and streams the result when it differs.
//!
//! - Every local export that at least one linked peer may see becomes one `terminate` route per
//!   port: the peer gateway's mutual TLS ends at our gateway, which authorizes the exact SPIFFE
//!   IDs of the allowed peers' gateways and forwards plain TCP to the ready endpoints.
//! - Every merged import becomes one egress listener per port: plain TCP in, mutual TLS out to
//!   the exporting clusters' gateways, one priority level per cluster in preference order, so
//!   calls fail over from one cluster to the next.
//!
//! Names given to routes and listeners are DNS labels derived from the service (they appear in
//! metrics and logs), hashed when too long or ambiguous.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, SocketAddr};

use east_west_gateway::api;
use sha2::{Digest, Sha256};

use crate::model::{ClusterName, ExportTo, ImportedService, Registry, ServiceKey};

/// A linked peer as the gateway config needs it.
#[derive(Debug, Clone)]
pub struct Peer {
    pub cluster: ClusterName,
    pub trust_domain: String,
    /// Public ingress addresses of the peer's gateways.
    pub gateway_addresses: Vec<String>,
    /// SPIFFE IDs the peer's gateways present.
    pub gateway_spiffe_ids: Vec<String>,
}

/// The egress port an import's port was given, if any.
pub type PortFor<'a> = dyn Fn(&ServiceKey, &str) -> Option<u16> + 'a;

/// Routes for local exports and egress listeners for imports.
pub fn build(
    registry: &Registry,
    peers: &[Peer],
    imports: &BTreeMap<ServiceKey, ImportedService>,
    egress_address: IpAddr,
    port_for: &PortFor<'_>,
) -> (Vec<api::Route>, Vec<api::Egress>) {
    (
        routes(registry, peers),
        egress(peers, imports, egress_address, port_for),
    )
}

fn routes(registry: &Registry, peers: &[Peer]) -> Vec<api::Route> {
    let mut names = Names::default();
    let mut routes = Vec::new();
    for export in registry.exports.values() {
        let Some(service) = registry.services.get(&export.key) else {
            continue;
        };
        let allowed: BTreeSet<String> = peers
            .iter()
            .filter(|p| match &export.to {
                ExportTo::All => true,
                ExportTo::Peers(to) => to.contains(&p.cluster),
            })
            .flat_map(|p| p.gateway_spiffe_ids.iter().cloned())
            .collect();
        if allowed.is_empty() {
            // Nobody may call it yet; a route without authorized peers would refuse everyone.
            continue;
        }
        for port in &service.ports {
            let endpoints = service
                .endpoints
                .iter()
                .filter(|e| e.ready)
                .map(|e| api::Endpoint {
                    address: SocketAddr::new(e.address, port.target()).to_string(),
                    weight: e.weight,
                })
                .collect();
            routes.push(api::Route {
                name: names.unique("export", &export.key, &port.port.to_string()),
                hosts: Vec::new(),
                services: vec![service_ref(&export.key, port.port)],
                mode: "terminate".to_owned(),
                authorize: Some(api::Authorize {
                    spiffe_ids: allowed.iter().cloned().collect(),
                    ..Default::default()
                }),
                endpoints,
            });
        }
    }
    routes
}

fn egress(
    peers: &[Peer],
    imports: &BTreeMap<ServiceKey, ImportedService>,
    egress_address: IpAddr,
    port_for: &PortFor<'_>,
) -> Vec<api::Egress> {
    let mut names = Names::default();
    let mut listeners = Vec::new();
    for import in imports.values() {
        for port in &import.ports {
            let Some(local_port) = port_for(&import.key, &port.name) else {
                continue;
            };
            let mut gateways = Vec::new();
            // Sources come sorted by preference; each cluster is one priority level. A source
            // whose definition of this port lost a conflict is left out: its gateway would be
            // asked for a port number it does not serve.
            let serving = import.sources.iter().filter(|s| {
                s.ports
                    .iter()
                    .any(|p| p.name == port.name && p.port == port.port)
            });
            for (level, source) in serving.enumerate() {
                let Some(peer) = peers.iter().find(|p| p.cluster == source.cluster) else {
                    continue;
                };
                for address in &peer.gateway_addresses {
                    gateways.push(api::RemoteGateway {
                        address: address.clone(),
                        priority: u32::try_from(level).unwrap_or(u32::MAX),
                        weight: 1,
                        cluster: peer.cluster.to_string(),
                        trust_domain: peer.trust_domain.clone(),
                        sni: String::new(),
                    });
                }
            }
            if gateways.is_empty() {
                continue;
            }
            listeners.push(api::Egress {
                name: names.unique("import", &import.key, &port.name),
                listen: SocketAddr::new(egress_address, local_port).to_string(),
                mode: "mtls".to_owned(),
                service: Some(service_ref(&import.key, port.port)),
                gateways,
            });
        }
    }
    listeners
}

fn service_ref(key: &ServiceKey, port: u16) -> api::ServiceRef {
    api::ServiceRef {
        name: key.name().to_owned(),
        namespace: key.namespace().to_owned(),
        port: u32::from(port),
    }
}

/// Readable, unique DNS-label names.
#[derive(Default)]
struct Names(HashSet<String>);

impl Names {
    fn unique(&mut self, kind: &str, key: &ServiceKey, port: &str) -> String {
        let port: String = port
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        let readable = format!("{}-{}-{port}", key.name(), key.namespace());
        let name = if readable.len() <= 63 && !self.0.contains(&readable) {
            readable
        } else {
            // Hyphens make `a-b.c` and `a.b-c` read alike, and labels stop at 63 characters.
            let digest = Sha256::digest(format!("{kind}/{key}/{port}"));
            let mut head: String = readable.chars().take(54).collect();
            while head.ends_with('-') {
                head.pop();
            }
            format!("{head}-{}", &hex::encode(digest)[..8])
        };
        self.0.insert(name.clone());
        name
    }
}

#[cfg(test)]
mod tests;
