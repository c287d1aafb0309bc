//! End-to-end scenarios with real processes: `trust-bundle`, `east-west-gateway` and
//! `federation-ctl` on loopback, in network namespaces, and with Envoy.

mod clock;
mod envoy;
mod faults;
mod federation;
mod hostile;
mod hostile_dns;
mod kube_leader;
mod kubernetes;
mod load;
mod netns;
mod operate;
mod probe;
mod restart;
mod rotation;
mod security;
mod world;
