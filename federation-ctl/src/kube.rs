//! Kubernetes custom resources, as Rust types from which the CustomResourceDefinitions are
//! generated (`federation-ctl crds`):
//!
//! - [`mcs`]: the Multi-Cluster Services API (KEP-1645), `multicluster.x-k8s.io/v1alpha1`
//!   `ServiceExport` and `ServiceImport`;
//! - [`link`]: our `isthmus.dev/v1alpha1` `ClusterLink`, a link and its peer's state kept in the
//!   API so any controller replica can take over.
//!
//! And leader election among controller replicas: [`lease`] (sans IO) and [`elector`] (the
//! Lease client), with [`state`], the mirror of the state directory in the API that lets a
//! standby take over.

pub mod elector;
pub mod lease;
pub mod link;
pub mod mcs;
pub mod state;

use ::kube::CustomResourceExt as _;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

pub use link::{ClusterLink, ClusterLinkSpec, ClusterLinkStatus};
pub use mcs::{ServiceExport, ServiceExportStatus, ServiceImport, ServiceImportSpec};

/// Every CustomResourceDefinition Isthmus installs, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        ServiceExport::crd(),
        ServiceImport::crd(),
        ClusterLink::crd(),
    ]
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
