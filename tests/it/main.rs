//! End-to-end scenarios with real processes: `trust-bundle`, `east-west-gateway` and
//! `federation-ctl` on loopback.

mod federation;
mod hostile;
mod load;
mod probe;
mod security;
mod world;
