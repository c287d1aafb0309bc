//! The Isthmus east-west gateway: the SNI-routing data plane at each cluster's edge.
//!
//! Sans-IO cores first ([`sni`], [`names`], [`route`]), then the tokio shell: [`app`] is the
//! composition root, [`proxy`] the ingress data path, [`egress`] the outbound one, [`tls`] the
//! gateway's certificates and bundles, `admin` the admin endpoint, `reload` hot reload from the
//! config file, [`controller`] configs from the federation controller; both go through `apply`.

pub mod api;
pub mod config;
pub mod names;
pub mod route;
pub mod sni;

pub mod app;
pub mod controller;
pub mod drain;
pub mod egress;
#[cfg(target_os = "linux")]
pub mod handover;
pub mod metrics;
pub mod proxy;
pub mod telemetry;
pub mod tls;

mod admin;
mod apply;
mod reload;
