//! Where a controller reads its cluster's services and exports: the [`Registry`] trait, so the
//! Kubernetes registry can plug in beside the embedded [`FileRegistry`].
//!
//! The registry file (`registry: { file: ... }` in the controller config):
//!
//! ```yaml
//! services:
//!   - name: echo
//!     namespace: default
//!     ports: [{ name: http, port: 8080, target_port: 18080 }]   # target_port: the endpoints'
//!                                                               # port (default = port); local only
//!     endpoints:
//!       - { address: 127.0.0.3, zone: az1, weight: 1, ready: true }  # zone, weight (1), ready (true) optional
//! exports:
//!   - { service: echo.default }                 # to every linked cluster
//!   - { service: other.default, to: [gcp] }     # to named peers
//! ```
//!
//! An invalid edit is rejected with an error naming the file, the field and the fix, and the
//! last good registry stays in force (see [`Registry::status`]). Exports made with
//! `federation-ctl export` live in the state directory and merge with the file's; an export
//! declared in the file is changed or removed only in the file. Every export keeps its creation
//! time across restarts, since MCS oldest-export-wins conflict resolution depends on it.

mod file;
mod parse;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;

pub use file::{FileRegistry, MAX_REGISTRY_BYTES};
pub use parse::{FileDoc, parse};

use crate::model::{self, ExportTo, LocalExport, ServiceKey};
use crate::state::{CliExport, ExportsRecord, StateError};

/// A boxed future, so `Registry` stays usable as `dyn Registry`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A source of local services and exports.
pub trait Registry: Send + Sync {
    /// The current registry; every accepted change is published here.
    fn watch(&self) -> watch::Receiver<Arc<model::Registry>>;

    /// Health for status output: what it reads and the last rejected edit, if any.
    fn status(&self) -> RegistryStatus;

    /// Where an export was made, for `federation-ctl services`.
    fn export_origin(&self, key: &ServiceKey) -> Option<ExportOrigin>;

    /// Exports `key` (made from the CLI). Re-exporting changes `to` but keeps the creation time.
    fn export(&self, key: ServiceKey, to: ExportTo) -> BoxFuture<'_, Result<(), RegistryError>>;

    /// Removes an export made from the CLI.
    fn unexport<'a>(&'a self, key: &'a ServiceKey) -> BoxFuture<'a, Result<(), RegistryError>>;
}

/// Where an export comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportOrigin {
    /// Declared in the registry (the file's `exports:`, or a `ServiceExport`).
    Registry,
    /// Made with `federation-ctl export`.
    Cli,
}

/// What status output shows about the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryStatus {
    /// E.g. `file /etc/isthmus/registry.yaml`.
    pub source: String,
    /// When the registry in force was loaded (Unix ms).
    pub loaded_at_ms: i64,
    pub services: usize,
    pub exports: usize,
    /// The last rejected edit, until an edit is accepted.
    pub last_error: Option<RegistryProblem>,
}

/// A rejected edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryProblem {
    pub message: String,
    pub at_ms: i64,
}

/// Why a registry edit or an export request was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "registry file {} does not exist; create it (`services: []` is an empty registry) or fix `registry.file`",
        file.display()
    )]
    Missing { file: PathBuf },
    #[error(
        "registry file {} was deleted; keeping the last good registry until it is back",
        file.display()
    )]
    Deleted { file: PathBuf },
    #[error("cannot read registry file {}: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("registry file {} is larger than {max} bytes; is it the right file?", file.display())]
    TooLarge { file: PathBuf, max: usize },
    #[error("{}: not a valid registry: {message}", file.display())]
    Yaml { file: PathBuf, message: String },
    #[error("{}: {field}: {problem}; {fix}", file.display())]
    Invalid {
        file: PathBuf,
        field: String,
        problem: String,
        fix: String,
    },
    #[error(
        "service {key} is not in the registry {}; declare it under `services:` first",
        file.display()
    )]
    UnknownService { key: ServiceKey, file: PathBuf },
    #[error("export of {key} names no peer; name at least one, or omit --to to export to all")]
    NoPeers { key: ServiceKey },
    #[error(
        "{key} is exported in {}; change its entry there instead",
        file.display()
    )]
    ExportedInFile { key: ServiceKey, file: PathBuf },
    #[error(
        "{key} is exported in {}; remove it from {} to unexport it",
        file.display(), file.display()
    )]
    UnexportFromFile { key: ServiceKey, file: PathBuf },
    #[error("{key} is not exported")]
    NotExported { key: ServiceKey },
    #[error("{action}: {message}")]
    Kubernetes { action: String, message: String },
    #[error("cannot save exports: {0}")]
    State(#[from] StateError),
}

/// Merges the registry's declared exports with the CLI's, sans IO. File exports get their
/// creation time from when they were first seen (kept in `state`); an export made from the CLI
/// and then declared in the file keeps its CLI creation time and becomes the file's (so removing
/// it from the file unexports it). Returns the registry and the updated state.
pub fn merge(
    doc: &FileDoc,
    state: &ExportsRecord,
    now_ms: i64,
) -> (model::Registry, ExportsRecord) {
    let mut next = ExportsRecord::default();
    let mut exports = std::collections::BTreeMap::new();
    for (key, to) in &doc.exports {
        let created_at_ms = state
            .first_seen_ms
            .get(key)
            .or_else(|| state.cli.get(key).map(|c| &c.created_at_ms))
            .copied()
            .unwrap_or(now_ms);
        next.first_seen_ms.insert(key.clone(), created_at_ms);
        exports.insert(
            key.clone(),
            LocalExport {
                key: key.clone(),
                to: to.clone(),
                created_at_ms,
            },
        );
    }
    for (key, cli) in &state.cli {
        if doc.exports.contains_key(key) {
            continue;
        }
        next.cli.insert(key.clone(), cli.clone());
        exports.insert(
            key.clone(),
            LocalExport {
                key: key.clone(),
                to: cli.export_to(),
                created_at_ms: cli.created_at_ms,
            },
        );
    }
    let registry = model::Registry {
        services: doc.services.clone(),
        exports,
    };
    (registry, next)
}

/// `state` with a CLI export of `key` added or changed; the creation time of an existing one
/// is kept.
pub(crate) fn with_cli_export(
    state: &ExportsRecord,
    key: &ServiceKey,
    to: &ExportTo,
    now_ms: i64,
) -> ExportsRecord {
    let mut next = state.clone();
    let created = state
        .cli
        .get(key)
        .map(|c| c.created_at_ms)
        .unwrap_or(now_ms);
    next.cli.insert(key.clone(), CliExport::new(to, created));
    next
}

#[cfg(test)]
mod tests;
