//! Isthmus trust: a shared root of trust across clusters and meshes.
//!
//! - [`ca`]: roots, per-cluster intermediates bound to one trust domain, leaf identities;
//! - [`bundle`]: SPIFFE bundles (JWKS and PEM) and bundle maps keyed by trust domain;
//! - [`verify`]: chain verification by trust domain with precise reasons;
//! - [`tls`]: rustls verifiers with an authorizer callback, resumption off;
//! - [`rotate`]: staged root rotation and the issuance ledger behind it;
//! - [`inspect`]: certificate facts and SPIFFE X509-SVID lint findings.
//!
//! The library does no IO and no async; the `trust-bundle` binary is its thin IO shell.

pub mod bundle;
pub mod ca;
pub mod cert;
pub mod inspect;
pub mod rotate;
pub mod spiffe;
pub mod tls;
pub mod verify;

#[cfg(any(test, feature = "test-util"))]
pub mod test_util;

pub use bundle::{BundleMap, X509Bundle};
pub use ca::{Authority, Credential, KeyAlgorithm, PrivateKey};
pub use spiffe::{SpiffeId, TrustDomain};
pub use verify::{PeerIdentity, TrustStore, VerifyError};
