//! Process-level tests: the real `east-west-gateway` binary on ephemeral loopback ports, driven
//! by real clients (curl, openssl, rustls) against real backends.

mod support;

mod cli;
mod controller;
mod egress;
mod hostile;
mod lifecycle;
mod load;
mod metrics;
mod mtls;
mod passthrough;
mod reconcile;
mod splice;
