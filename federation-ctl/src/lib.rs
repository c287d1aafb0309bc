//! The Isthmus federation controller and the operator CLI.
//!
//! Sans-IO cores:
//! - [`model`]: services, exports, the versioned export feed a link carries, and leased imports
//!   merged across clusters;
//! - [`gateway_config`]: what the gateways run, derived from the model;
//! - [`token`]: single-use peering tokens; [`config`]: the controller's YAML;
//! - [`kube`]: the Kubernetes custom resources (MCS `ServiceExport`/`ServiceImport`,
//!   `ClusterLink`) and their generated CRDs.
//!
//! IO shells: [`registry`] (where local services come from), [`state`] (the state directory),
//! [`identity`] (leaves from the cluster's intermediate), [`transport`] (tonic over our TLS and
//! Unix sockets), [`controller`] (the composition), and [`cli`] (the binary's verbs).

pub mod api;
pub mod cli;
pub mod config;
pub mod controller;
pub mod diagnose;
pub mod dns;
pub mod gateway_config;
pub mod identity;
#[cfg(feature = "kubernetes")]
pub mod kube;
pub mod model;
pub mod registry;
pub mod state;
pub mod token;
pub mod transport;
