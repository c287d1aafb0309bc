//! The stand-in against real clients: `kubectl` (a separate process, its own protocol stack)
//! and kube-rs (the client and runtime the controller uses).

mod binary;
mod client;
mod kubectl;
mod manifests;
mod support;
