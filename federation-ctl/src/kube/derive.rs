//! Sans IO: the objects an import becomes in the importing cluster, as server-side apply
//! patches (KEP-1645):
//!
//! - a `ServiceImport` named like the service, with the merged ports, type `ClusterSetIP`, the
//!   exporting clusters in its status, and the finalizer [`FINALIZER`];
//! - a derived Service `derived-<name>` selecting the local gateway pods, each port targeting
//!   the egress listener the controller allocated for it;
//! - one EndpointSlice per exporting cluster for the derived Service, its endpoint the egress
//!   address, labelled with the source cluster and the import.
//!
//! The derived Service and the EndpointSlices name the ServiceImport as their owner, so the
//! API server's garbage collector removes them with it; the finalizer keeps the ServiceImport
//! until the controller has deleted them itself (nothing is left when no collector runs).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::local::{LABEL_MANAGED_BY, LABEL_SLICE_MANAGED_BY, LABEL_SLICE_SERVICE, MANAGER};
use super::mcs::{LABEL_SERVICE_NAME, LABEL_SOURCE_CLUSTER};
use crate::controller::ImportsView;
use crate::model::{ImportedService, ServiceKey};

/// The finalizer on ServiceImports: removed once the derived objects are deleted.
pub const FINALIZER: &str = "isthmus.dev/cleanup";
/// The MCS API version of ServiceImports.
pub const MCS_API_VERSION: &str = "multicluster.x-k8s.io/v1alpha1";

/// Everything one import becomes.
#[derive(Debug, Clone, PartialEq)]
pub struct Derived {
    pub key: ServiceKey,
    pub service_import: Value,
    pub service_import_status: Value,
    pub service_name: String,
    /// The derived Service, without its owner reference (it needs the ServiceImport's UID).
    pub service: Value,
    /// EndpointSlice name → object, without owner references.
    pub slices: BTreeMap<String, Value>,
}

/// The derived objects of every import in `view`.
pub fn derive_all(
    view: &ImportsView,
    selector: &BTreeMap<String, String>,
    egress_address: IpAddr,
) -> BTreeMap<ServiceKey, Derived> {
    view.imports
        .values()
        .map(|i| (i.key.clone(), derive(i, view, selector, egress_address)))
        .collect()
}

/// A DNS label made of `parts` joined by '-', shortened with a hash suffix past 63 bytes.
pub fn object_name(parts: &[&str]) -> String {
    let full = parts.join("-");
    if full.len() <= 63 {
        return full;
    }
    let hash = hex::encode(&Sha256::digest(full.as_bytes())[..5]);
    let keep = full[..52].trim_end_matches('-');
    format!("{keep}-{hash}")
}

/// The derived Service's name for the import `key`.
pub fn service_name(key: &ServiceKey) -> String {
    object_name(&["derived", key.name()])
}

fn derive(
    import: &ImportedService,
    view: &ImportsView,
    selector: &BTreeMap<String, String>,
    egress_address: IpAddr,
) -> Derived {
    let key = &import.key;
    let (name, namespace) = (key.name(), key.namespace());
    let egress = |port: &str| view.egress.get(&(key.clone(), port.to_owned())).copied();
    // Only ports with an egress listener: a port without one would lead nowhere.
    let ports: Vec<(&str, u16, u16)> = import
        .ports
        .iter()
        .filter_map(|p| Some((p.name.as_str(), p.port, egress(&p.name)?)))
        .collect();
    let managed = json!({LABEL_MANAGED_BY: MANAGER, LABEL_SERVICE_NAME: name});
    let service_import = json!({
        "apiVersion": MCS_API_VERSION,
        "kind": "ServiceImport",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": managed,
            "finalizers": [FINALIZER],
        },
        "spec": {
            "type": "ClusterSetIP",
            "ports": ports.iter().map(|(n, port, _)| json!({"name": n, "protocol": "TCP", "port": port})).collect::<Vec<_>>(),
        },
    });
    let service_import_status = json!({
        "apiVersion": MCS_API_VERSION,
        "kind": "ServiceImport",
        "metadata": {"name": name, "namespace": namespace},
        "status": {
            "clusters": import.sources.iter().map(|s| json!({"cluster": s.cluster.as_str()})).collect::<Vec<_>>(),
        },
    });
    let service_name = service_name(key);
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": service_name, "namespace": namespace, "labels": managed},
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": ports.iter().map(|(n, port, egress)| json!({
                "name": n, "protocol": "TCP", "port": port, "targetPort": egress,
            })).collect::<Vec<_>>(),
        },
    });
    let address_type = if egress_address.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    };
    let slices = import
        .sources
        .iter()
        .map(|source| {
            let slice_name = object_name(&[&service_name, source.cluster.as_str()]);
            let served: Vec<Value> = ports
                .iter()
                .filter(|(n, _, _)| source.ports.iter().any(|p| p.name == *n))
                .map(|(n, _, egress)| json!({"name": n, "protocol": "TCP", "port": egress}))
                .collect();
            let slice = json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": slice_name,
                    "namespace": namespace,
                    "labels": {
                        LABEL_SOURCE_CLUSTER: source.cluster.as_str(),
                        LABEL_SERVICE_NAME: name,
                        LABEL_SLICE_SERVICE: service_name,
                        LABEL_SLICE_MANAGED_BY: MANAGER,
                    },
                },
                "addressType": address_type,
                "endpoints": [{
                    "addresses": [egress_address.to_string()],
                    "conditions": {"ready": source.ready_endpoints > 0},
                }],
                "ports": served,
            });
            (slice_name, slice)
        })
        .collect();
    Derived {
        key: key.clone(),
        service_import,
        service_import_status,
        service_name,
        service,
        slices,
    }
}

/// `object` with an owner reference to the ServiceImport `name` (UID `uid`).
pub fn owned_by(mut object: Value, name: &str, uid: &str) -> Value {
    object["metadata"]["ownerReferences"] = json!([{
        "apiVersion": MCS_API_VERSION,
        "kind": "ServiceImport",
        "name": name,
        "uid": uid,
        "controller": true,
        "blockOwnerDeletion": true,
    }]);
    object
}

#[cfg(test)]
#[path = "derive_tests.rs"]
mod tests;
