//! Live trust material: a root rotation without a restart.
//!
//! The watcher polls the CA directory and the trust bundle file. A change is taken only once
//! the files read the same twice in a row (a `trust-bundle rotate` step writes several files)
//! and only if it passes every check a start would make, plus one: a leaf issued from the new
//! intermediate must verify against the new bundle. A change that fails is logged once, with
//! the reason, and the material in force stays. A change that passes replaces the CA, issues
//! the controller's and the gateway's leaves from it, refreshes the trust store, republishes
//! the gateways' config (identity and bundle map), and, if our bundle changed, announces it to
//! every connected peer as a `TrustBundleUpdate` with the next sequence.
//!
//! On the receiving side a peer's update is taken only for the trust domain the link was made
//! with, and only with a sequence above the last one applied; it is recorded in the link's
//! state file, then the trust store and the gateways' bundle map follow.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::UnixTime;
use trust_bundle::verify::Usage;
use trust_bundle::{TrustStore, X509Bundle};

use super::session::SessionEnd;
use super::{Shared, convert};
use crate::api::peering as pb;
use crate::identity::{self, CaFiles, ClusterCa, IdentityError, Role};
use crate::model::ClusterName;
use crate::state::{LinkRecord, StateDir, StateError, TrustRecord};

/// How often the CA directory and the bundle file are read.
const POLL: Duration = Duration::from_millis(250);

/// Why new trust material was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TrustError {
    #[error(transparent)]
    Load(#[from] IdentityError),
    #[error(
        "a leaf issued from the new intermediate does not verify against the new bundle ({0}); the bundle must hold the root the intermediate chains to (`trust-bundle rotate prepare` before `rotate activate`)"
    )]
    Chain(String),
}

/// The raw material as last read: compared whole, so any edit is seen.
#[derive(Clone, PartialEq, Eq)]
struct Files {
    ca: CaFiles,
    bundle: Option<Vec<u8>>,
}

/// Our announced bundle at start: the stored record, or a new sequence if the bundle changed
/// while the controller was down.
pub(crate) fn announced_at_start(
    state: &StateDir,
    ca: &ClusterCa,
) -> Result<TrustRecord, StateError> {
    let bundle_json = ca.bundle().to_spiffe_json();
    let stored = state.load_trust()?;
    match stored {
        Some(rec) if rec.bundle_json == bundle_json => Ok(rec),
        other => {
            let rec = TrustRecord {
                sequence: other.map_or(0, |r| r.sequence) + 1,
                bundle_json,
            };
            state.save_trust(&rec)?;
            Ok(rec)
        }
    }
}

/// The update that tells a peer our current bundle.
pub(crate) fn update_message(announced: &TrustRecord, ca: &ClusterCa) -> pb::LinkMessage {
    convert::message(pb::link_message::Kind::TrustBundle(pb::TrustBundleUpdate {
        trust_domain: ca.trust_domain().to_string(),
        bundle_json: announced.bundle_json.clone(),
        sequence: announced.sequence,
    }))
}

/// Polls the CA directory and bundle file, applying each settled, valid change.
pub(crate) async fn watch(shared: Arc<Shared>) {
    let cfg = &shared.cfg;
    // What is in force, what was last seen, and what was last refused (logged once).
    let mut applied = read(&cfg.ca, cfg.trust_bundle.as_deref()).ok();
    let mut seen = applied.clone();
    let mut refused: Option<Files> = None;
    let mut unreadable = false;
    let mut interval = tokio::time::interval(POLL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let files = match read(&cfg.ca, cfg.trust_bundle.as_deref()) {
            Ok(files) => files,
            Err(error) => {
                // Mid-rename or being replaced: read again next tick; say so once if it lasts.
                if seen.take().is_none() && !unreadable {
                    tracing::warn!(%error, "trust material unreadable; the material in force stays");
                    unreadable = true;
                }
                continue;
            }
        };
        unreadable = false;
        let settled = seen.as_ref() == Some(&files);
        seen = Some(files.clone());
        if !settled || applied.as_ref() == Some(&files) || refused.as_ref() == Some(&files) {
            continue;
        }
        match stage(&shared, files.clone()) {
            Ok(ca) => {
                commit(&shared, ca);
                applied = Some(files);
                refused = None;
            }
            Err(error) => {
                tracing::error!(ca = %cfg.ca.display(), %error, "new trust material refused; the material in force stays");
                refused = Some(files);
            }
        }
    }
}

fn read(dir: &Path, bundle: Option<&Path>) -> Result<Files, IdentityError> {
    Ok(Files {
        ca: identity::read_ca_dir(dir)?,
        bundle: bundle.map(identity::read_bundle_file).transpose()?,
    })
}

/// Every check of a start, then a leaf from the new intermediate verified against the new
/// bundle: what peers will do with the leaves we are about to hand out.
fn stage(shared: &Shared, files: Files) -> Result<ClusterCa, TrustError> {
    let cfg = &shared.cfg;
    let bundle = cfg.trust_bundle.as_deref().zip(files.bundle.as_deref());
    let ca = ClusterCa::from_files(
        &cfg.ca,
        files.ca,
        &cfg.cluster,
        cfg.trust_domain.as_ref(),
        bundle,
    )?;
    let now = SystemTime::now();
    let probe = ca.issue(Role::Gateway, Duration::from_secs(300), now)?;
    let store = TrustStore::new(&ca.bundle_map()).map_err(|e| TrustError::Chain(e.to_string()))?;
    let unix = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default());
    store
        .verify(&probe.credential.chain, unix, Usage::Server)
        .map_err(|e| TrustError::Chain(e.to_string()))?;
    Ok(ca)
}

/// Puts a staged CA in force and tells everyone who needs to know.
fn commit(shared: &Shared, ca: ClusterCa) {
    let intermediate_changed = {
        let current = shared.ca.load();
        current.intermediate_der() != ca.intermediate_der()
    };
    let bundle_json = ca.bundle().to_spiffe_json();
    let roots = ca.bundle().roots().len();
    let announce = {
        let mut announced = shared.announced.lock().unwrap_or_else(|e| e.into_inner());
        shared.ca.store(Arc::new(ca));
        if announced.bundle_json == bundle_json {
            None
        } else {
            announced.sequence += 1;
            announced.bundle_json = bundle_json;
            if let Err(error) = shared.state.save_trust(&announced) {
                tracing::error!(%error, "cannot record the announced bundle; peers get it anyway");
            }
            Some(announced.clone())
        }
    };
    tracing::info!(
        intermediate_changed,
        bundle_changed = announce.is_some(),
        roots,
        "new trust material in force"
    );
    if shared.cfg.trust_bundle.is_none() && announce.is_some() {
        // The bundle is then the CA directory's root.pem alone: the old root left with no
        // overlap, and peers still presenting chains to it are refused from now on.
        tracing::warn!(
            "our bundle changed to the CA directory's new root with no overlap; set `trust_bundle:` to a bundle file and rotate with `trust-bundle rotate prepare` first"
        );
    }
    if intermediate_changed {
        let now = SystemTime::now();
        for role in [Role::Controller, Role::Gateway] {
            if let Err(error) = shared.reissue(role, now) {
                tracing::error!(?role, %error, "cannot issue an identity from the new intermediate; the old one stays until renewal");
            }
        }
        shared.identities_changed.notify_one();
    }
    if let Err(error) = shared.refresh_trust() {
        tracing::error!(%error, "trust store not refreshed after the trust material changed");
    }
    if let Some(announced) = announce {
        let ca = shared.ca.load();
        let msg = update_message(&announced, &ca);
        let mut core = shared.lock();
        let mut peers = 0;
        core.send_to_sessions(|_, _| {
            peers += 1;
            Some(msg.clone())
        });
        tracing::info!(
            sequence = announced.sequence,
            peers,
            "trust bundle announced to connected peers"
        );
    }
    shared.changed.notify_one();
}

/// Why a peer's `TrustBundleUpdate` is not taken.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    #[error(
        "it is for trust domain {got}, but the link was made with {linked}; a peer may update only its own trust domain"
    )]
    ForeignTrustDomain { got: String, linked: String },
    #[error("sequence {got} is not above {have}, the last one applied")]
    Stale { got: u64, have: u64 },
    #[error("not a SPIFFE bundle: {0}")]
    Invalid(String),
    #[error("it holds no root")]
    Empty,
}

/// Decides on a peer's update against what we hold from that peer: the record to keep, or why
/// not. No IO.
pub(crate) fn check_update(
    record: &LinkRecord,
    update: &pb::TrustBundleUpdate,
) -> Result<LinkRecord, Refused> {
    if update.trust_domain != record.trust_domain.as_str() {
        return Err(Refused::ForeignTrustDomain {
            got: update.trust_domain.clone(),
            linked: record.trust_domain.to_string(),
        });
    }
    if update.sequence <= record.bundle_sequence {
        return Err(Refused::Stale {
            got: update.sequence,
            have: record.bundle_sequence,
        });
    }
    let bundle = X509Bundle::from_spiffe_json(update.bundle_json.as_bytes())
        .map_err(|e| Refused::Invalid(e.to_string()))?;
    if bundle.is_empty() {
        return Err(Refused::Empty);
    }
    let mut next = record.clone();
    next.bundle_json = update.bundle_json.clone();
    next.bundle_sequence = update.sequence;
    Ok(next)
}

/// A peer's `TrustBundleUpdate`: recorded and put in force, or refused with a log line (the
/// session goes on).
pub(crate) fn apply_peer_update(
    shared: &Shared,
    peer: &ClusterName,
    update: pb::TrustBundleUpdate,
) -> Result<(), SessionEnd> {
    let record = {
        let mut core = shared.lock();
        let Some(link) = core.links.get_mut(peer) else {
            return Err(SessionEnd::NotLinked(peer.clone()));
        };
        match check_update(&link.record, &update) {
            Ok(record) => {
                link.record = record.clone();
                record
            }
            Err(refused @ Refused::Stale { .. }) => {
                tracing::debug!(%peer, reason = %refused, "trust bundle update ignored");
                return Ok(());
            }
            Err(refused) => {
                tracing::warn!(%peer, sequence = update.sequence, reason = %refused, "trust bundle update refused");
                return Ok(());
            }
        }
    };
    tracing::info!(%peer, sequence = record.bundle_sequence, "peer trust bundle updated");
    // Recorded before it takes effect, so a restart resumes from what was applied.
    if let Err(error) = shared.state.save_link(&record) {
        tracing::error!(%peer, %error, "cannot persist the peer's new bundle");
    }
    if let Err(error) = shared.refresh_trust() {
        tracing::error!(%peer, %error, "peer bundle update not applied to the trust store");
    }
    shared.changed.notify_one();
    Ok(())
}

#[cfg(test)]
mod tests;
