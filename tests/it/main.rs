//! Cross-crate end-to-end scenarios.
