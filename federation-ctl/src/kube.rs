//! Kubernetes custom resources, as Rust types from which the CustomResourceDefinitions are
//! generated (`federation-ctl crds`):
//!
//! - [`mcs`]: the Multi-Cluster Services API (KEP-1645), `multicluster.x-k8s.io/v1alpha1`
//!   `ServiceExport` and `ServiceImport`;
//! - [`link`]: our `isthmus.dev/v1alpha1` `ClusterLink`, a link and its peer's state kept in the
//!   API so any controller replica can take over.
//!
//! And the `kubernetes` registry: [`registry`] reads local Services, EndpointSlices and
//! ServiceExports ([`local`] converts them; [`conflict`] finds port clashes with the peers'
//! exports of the same services), [`imports`] writes each import as a ServiceImport,
//! a derived Service and EndpointSlices ([`derive`] says what they are).
//!
//! And leader election among controller replicas: [`lease`] (sans IO) and [`elector`] (the
//! Lease client), with [`state`], the mirror of the state directory in the API that lets a
//! standby take over.

pub mod conflict;
pub mod derive;
pub mod elector;
pub mod imports;
pub mod lease;
pub mod link;
pub mod local;
pub mod mcs;
pub mod registry;
pub mod state;

use ::kube::CustomResourceExt as _;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

pub use link::{ClusterLink, ClusterLinkSpec, ClusterLinkStatus};
pub use mcs::{ServiceExport, ServiceExportStatus, ServiceImport, ServiceImportSpec};

/// Every CustomResourceDefinition Isthmus installs, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        spec_optional(ServiceExport::crd()),
        ServiceImport::crd(),
        ClusterLink::crd(),
    ]
}

/// A KEP-1645 `ServiceExport` has no spec, and the upstream examples write none; the derive
/// marks `spec` required, which a real API server would enforce, so drop it from `required`.
fn spec_optional(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        let schema = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut());
        if let Some(schema) = schema {
            let mut required = schema.required.take().unwrap_or_default();
            required.retain(|field| field != "spec");
            // An empty `required` is invalid in OpenAPI v3 (minItems 1): leave it out.
            schema.required = (!required.is_empty()).then_some(required);
        }
    }
    crd
}

/// The CRDs as a multi-document YAML stream, what `federation-ctl crds` prints.
pub fn crds_yaml() -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
