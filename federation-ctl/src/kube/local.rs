//! Sans IO: what the API server holds about local services (Services, EndpointSlices,
//! ServiceExports) → the federation [`model::Registry`], and the `Valid` / `Conflict` conditions
//! each ServiceExport should carry.
//!
//! Ports are TCP only (the gateways carry TCP). A Service port's endpoints listen on the port
//! its EndpointSlices give under the same name, else on a numeric `targetPort`, else on the
//! port itself. An endpoint without a `ready` condition is ready, as Kubernetes defines it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::mcs::{CONDITION_VALID, ServiceExport, ServiceExportStatus};
use crate::model::{
    self, ClusterName, Endpoint, ExportTo, ImportedService, LocalExport, LocalService, ServiceKey,
};

/// The label naming an EndpointSlice's Service.
pub const LABEL_SLICE_SERVICE: &str = "kubernetes.io/service-name";
/// The label naming who manages an EndpointSlice.
pub const LABEL_SLICE_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// The label naming who manages an object (on derived Services and ServiceImports).
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The field manager and the `managed-by` value of everything the controller writes.
pub const MANAGER: &str = "isthmus-controller";

/// A ServiceExport as the registry reads it: metadata and status only, so an object without
/// `spec` (the upstream MCS CRD has none) or with a status it cannot read is still an export
/// rather than an error that stalls the whole watch.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct ExportObject {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub status: Option<serde_json::Value>,
}

impl ExportObject {
    /// The conditions it carries; none when its status is unreadable (they are rewritten).
    pub fn conditions(&self) -> Vec<Condition> {
        self.status
            .clone()
            .and_then(|s| serde_json::from_value::<ServiceExportStatus>(s).ok())
            .map(|s| s.conditions)
            .unwrap_or_default()
    }
}

impl kube::Resource for ExportObject {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(dt: &()) -> std::borrow::Cow<'_, str> {
        ServiceExport::kind(dt)
    }
    fn group(dt: &()) -> std::borrow::Cow<'_, str> {
        ServiceExport::group(dt)
    }
    fn version(dt: &()) -> std::borrow::Cow<'_, str> {
        ServiceExport::version(dt)
    }
    fn plural(dt: &()) -> std::borrow::Cow<'_, str> {
        ServiceExport::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Builds the registry from the objects read. Objects the controller wrote itself (derived
/// Services and EndpointSlices) are not local services.
pub fn registry(
    services: &[Service],
    slices: &[EndpointSlice],
    exports: &[ExportObject],
) -> model::Registry {
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        let labels = slice.metadata.labels.as_ref();
        let label = |k: &str| labels.and_then(|l| l.get(k));
        if label(LABEL_SLICE_MANAGED_BY).map(String::as_str) == Some(MANAGER) {
            continue;
        }
        let (Some(ns), Some(svc)) = (&slice.metadata.namespace, label(LABEL_SLICE_SERVICE)) else {
            continue;
        };
        by_service
            .entry((ns.clone(), svc.clone()))
            .or_default()
            .push(slice);
    }
    let mut out = model::Registry::default();
    for svc in services {
        let managed = svc
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_MANAGED_BY))
            .is_some_and(|v| v == MANAGER);
        let Some(key) = key_of(&svc.metadata) else {
            continue;
        };
        if managed {
            continue;
        }
        let slices = by_service
            .get(&(key.namespace().to_owned(), key.name().to_owned()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        out.services.insert(
            key.clone(),
            LocalService {
                key,
                ports: ports(svc, slices),
                endpoints: endpoints(slices),
            },
        );
    }
    for export in exports {
        let Some(key) = key_of(&export.metadata) else {
            continue;
        };
        if export.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let created_at_ms = export
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| t.0.as_millisecond());
        out.exports.insert(
            key.clone(),
            LocalExport {
                key,
                to: ExportTo::All,
                created_at_ms,
            },
        );
    }
    out
}

/// `name.namespace` of an object, when both are valid names.
pub fn key_of(meta: &ObjectMeta) -> Option<ServiceKey> {
    ServiceKey::new(meta.name.as_deref()?, meta.namespace.as_deref()?).ok()
}

/// The name a Service port goes by in the federation: its own, or `tcp-<port>` when a
/// single-port Service leaves it unnamed.
pub fn port_name(name: Option<&str>, port: i32) -> String {
    match name {
        Some(n) if !n.is_empty() => n.to_owned(),
        _ => format!("tcp-{port}"),
    }
}

fn is_tcp(protocol: Option<&String>) -> bool {
    protocol.is_none_or(|p| p == "TCP")
}

fn ports(svc: &Service, slices: &[&EndpointSlice]) -> Vec<model::ServicePort> {
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in spec.ports.iter().flatten() {
        let Ok(port) = u16::try_from(p.port) else {
            continue;
        };
        if port == 0 || !is_tcp(p.protocol.as_ref()) {
            continue;
        }
        let from_slices = slices
            .iter()
            .flat_map(|s| s.ports.iter().flatten())
            .find(|sp| {
                sp.name.as_deref().unwrap_or_default() == p.name.as_deref().unwrap_or_default()
                    && is_tcp(sp.protocol.as_ref())
            })
            .and_then(|sp| sp.port)
            .and_then(|n| u16::try_from(n).ok());
        let numeric = match &p.target_port {
            Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
            _ => None,
        };
        let target = from_slices.or(numeric).filter(|t| *t != 0 && *t != port);
        out.push(model::ServicePort {
            name: port_name(p.name.as_deref(), p.port),
            port,
            target_port: target,
        });
    }
    out
}

fn endpoints(slices: &[&EndpointSlice]) -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> = Vec::new();
    for slice in slices {
        if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
            continue;
        }
        for ep in &slice.endpoints {
            let Some(address) = ep.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else {
                continue;
            };
            if out.iter().any(|e| e.address == address) {
                continue;
            }
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            out.push(Endpoint {
                address,
                ready,
                zone: ep.zone.clone(),
                weight: 1,
            });
        }
    }
    out.sort_by_key(|e| e.address);
    out
}

/// One condition as the controller wants it: type, status, reason, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub type_: &'static str,
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
}

/// The `Valid` and `Conflict` conditions the export of `key` should carry given `registry` and
/// the services imported from peers (see [`super::conflict`]); `cluster` is this cluster.
pub fn wanted_conditions(
    registry: &model::Registry,
    imports: &BTreeMap<ServiceKey, ImportedService>,
    cluster: &ClusterName,
    key: &ServiceKey,
) -> [Want; 2] {
    let valid = match registry.services.get(key) {
        None => Want {
            type_: CONDITION_VALID,
            status: "False",
            reason: "ServiceNotFound",
            message: format!(
                "no Service {} in namespace {}; create it or delete this ServiceExport",
                key.name(),
                key.namespace()
            ),
        },
        Some(svc) if svc.ports.is_empty() => Want {
            type_: CONDITION_VALID,
            status: "False",
            reason: "NoServicePorts",
            message: "the Service has no TCP port; give it at least one".to_owned(),
        },
        Some(_) => Want {
            type_: CONDITION_VALID,
            status: "True",
            reason: "ServiceExported",
            message: "the Service is exported to every linked cluster".to_owned(),
        },
    };
    [
        valid,
        super::conflict::wanted(registry, imports, cluster, key),
    ]
}

/// The conditions to write when `current` does not already say what `want` does; `None` when
/// nothing changed (so a status write never loops through its own watch event). A condition
/// whose status is unchanged keeps its transition time.
pub fn conditions_update(
    current: &[Condition],
    want: &[Want],
    now: Time,
) -> Option<Vec<Condition>> {
    let mut changed = false;
    let next: Vec<Condition> = want
        .iter()
        .map(|w| {
            let old = current.iter().find(|c| c.type_ == w.type_);
            let same = old.is_some_and(|c| {
                c.status == w.status && c.reason == w.reason && c.message == w.message
            });
            changed |= !same;
            let last_transition_time = match old {
                Some(c) if c.status == w.status => c.last_transition_time.clone(),
                _ => now.clone(),
            };
            Condition {
                type_: w.type_.to_owned(),
                status: w.status.to_owned(),
                reason: w.reason.to_owned(),
                message: w.message.clone(),
                last_transition_time,
                observed_generation: None,
            }
        })
        .collect();
    changed.then_some(next)
}

#[cfg(test)]
#[path = "local_tests.rs"]
mod tests;
