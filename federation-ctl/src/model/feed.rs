//! The export feed a link carries: a snapshot when a stream (re)starts, then versioned deltas.
//! A receiver that sees a delta which does not start at its version has missed something and
//! asks for a new snapshot; it never guesses.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ExportedService, ServiceKey};

/// One message of the feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FeedUpdate {
    /// The whole export set at `version`; replaces what the receiver had.
    Snapshot {
        version: u64,
        services: Vec<ExportedService>,
    },
    /// Changes from `from` to `to`.
    Delta {
        from: u64,
        to: u64,
        upserts: Vec<ExportedService>,
        removals: Vec<ServiceKey>,
    },
}

/// Why a receiver could not apply an update.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    #[error("delta from version {got} does not follow version {have}; a snapshot is needed")]
    Gap { have: u64, got: u64 },
    #[error("delta received before any snapshot")]
    NoSnapshot,
}

/// The sending side for one peer: remembers what the peer was last told.
#[derive(Debug, Clone, Default)]
pub struct ExportFeed {
    version: u64,
    sent: BTreeMap<ServiceKey, ExportedService>,
}

impl ExportFeed {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// A full snapshot of `current`, as sent when a stream starts or the peer asks to resync.
    pub fn snapshot(&mut self, current: &BTreeMap<ServiceKey, ExportedService>) -> FeedUpdate {
        self.version += 1;
        self.sent = current.clone();
        FeedUpdate::Snapshot {
            version: self.version,
            services: current.values().cloned().collect(),
        }
    }

    /// The delta from what was last sent to `current`, or `None` when nothing changed.
    pub fn update(
        &mut self,
        current: &BTreeMap<ServiceKey, ExportedService>,
    ) -> Option<FeedUpdate> {
        let upserts: Vec<ExportedService> = current
            .iter()
            .filter(|(k, v)| self.sent.get(*k) != Some(*v))
            .map(|(_, v)| v.clone())
            .collect();
        let removals: Vec<ServiceKey> = self
            .sent
            .keys()
            .filter(|k| !current.contains_key(*k))
            .cloned()
            .collect();
        if upserts.is_empty() && removals.is_empty() {
            return None;
        }
        let from = self.version;
        self.version += 1;
        self.sent = current.clone();
        Some(FeedUpdate::Delta {
            from,
            to: self.version,
            upserts,
            removals,
        })
    }
}

/// Applies `update` to a receiver's view; `version` is `None` before the first snapshot.
pub(crate) fn apply(
    version: &mut Option<u64>,
    services: &mut BTreeMap<ServiceKey, ExportedService>,
    update: &FeedUpdate,
) -> Result<(), FeedError> {
    match update {
        FeedUpdate::Snapshot {
            version: v,
            services: all,
        } => {
            *services = all.iter().map(|s| (s.key.clone(), s.clone())).collect();
            *version = Some(*v);
            Ok(())
        }
        FeedUpdate::Delta {
            from,
            to,
            upserts,
            removals,
        } => {
            let have = version.ok_or(FeedError::NoSnapshot)?;
            if *from != have {
                return Err(FeedError::Gap { have, got: *from });
            }
            for key in removals {
                services.remove(key);
            }
            for s in upserts {
                services.insert(s.key.clone(), s.clone());
            }
            *version = Some(*to);
            Ok(())
        }
    }
}
