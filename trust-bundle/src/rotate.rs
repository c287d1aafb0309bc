//! Staged root rotation, Consul- and SPIRE-style, in three steps:
//!
//! 1. **prepare**: create the new root, add it to the bundle next to the old one (the sequence
//!    goes up), and optionally cross-sign it with the old root so peers that have not yet
//!    received the new bundle still accept chains ending at it;
//! 2. **activate**: issue intermediates (and through them leaves) under the new root;
//! 3. **retire**: drop the old root from the bundle, refused while anything it issued may still
//!    be valid.
//!
//! What "may still be valid" means comes from the issuance [`Ledger`] each CA keeps: every
//! certificate it signed with its expiry. Leaves never outlive their issuer, so a root's ledger
//! of intermediates bounds everything below it.

use serde::{Deserialize, Serialize};

use crate::ca::{rfc3339, ts};
use crate::verify::human_secs;

/// Why a ledger could not be read, or a retirement is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("malformed issuance ledger: {0}")]
    Json(String),
    #[error(
        "{count} certificate(s) issued under this root are valid until {until} ({left} from now); retire after that, or pass --force to cut them off"
    )]
    StillValid {
        count: usize,
        until: String,
        left: String,
    },
}

/// One certificate a CA signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub serial: String,
    pub role: String,
    pub subject: String,
    pub not_after: i64,
}

/// Every certificate a CA signed, kept beside its key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ledger {
    pub issued: Vec<LedgerEntry>,
}

impl Ledger {
    pub fn from_json(input: &[u8]) -> Result<Self, Error> {
        serde_json::from_slice(input).map_err(|e| Error::Json(e.to_string()))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn record(&mut self, entry: LedgerEntry) {
        self.issued.push(entry);
    }

    /// Refuses retirement while any recorded certificate is unexpired at `now`.
    pub fn check_retire(&self, now: i64) -> Result<(), Error> {
        let live: Vec<&LedgerEntry> = self.issued.iter().filter(|e| e.not_after > now).collect();
        match live.iter().map(|e| e.not_after).max() {
            None => Ok(()),
            Some(until) => Err(Error::StillValid {
                count: live.len(),
                until: rfc3339(ts(until)),
                left: human_secs(until - now),
            }),
        }
    }
}
