//! Harness for cross-crate end-to-end scenarios that start real processes.
