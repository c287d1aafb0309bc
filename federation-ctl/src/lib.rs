//! The Isthmus federation controller and the operator CLI.
//!
//! - [`model`]: the federation model, sans IO: services, exports, the versioned export feed a
//!   link carries, and leased imports merged across clusters.

pub mod api;
pub mod config;
pub mod gateway_config;
pub mod identity;
pub mod model;
pub mod registry;
pub mod state;
pub mod token;
pub mod transport;
