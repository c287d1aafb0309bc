//! End-to-end scenarios with real processes: `trust-bundle`, `east-west-gateway` and
//! `federation-ctl` on loopback, in network namespaces, and with Envoy.

mod envoy;
mod faults;
mod federation;
mod netns;
mod operate;
mod restart;
mod rotation;
