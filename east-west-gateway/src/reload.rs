//! Hot reload: on SIGHUP, or when polling sees the content of the config file or of the TLS
//! files it names (certificate chain, key, trust bundle) change, parse and validate everything
//! and hand it to [`Applier`]: new certificate and bundle into the shared TLS handles, a new
//! routing snapshot, egress listeners reconciled. New connections use the new routes, trust and
//! egress settings; open connections keep what they started with, except terminated ones whose
//! peer the new config no longer trusts or authorizes, which are closed (`proxy::terminate`). An invalid file (config,
//! certificate, key or bundle) is logged, counted and reported on stdout, and everything in
//! force stays.
//!
//! The ingress and admin addresses are bound once at startup; a reload that changes them
//! applies everything else and warns that they need a restart.

use std::path::PathBuf;

use sha2::{Digest, Sha256};
use tokio::signal::unix::Signal;

use crate::apply::{self, Applied, Applier};
use crate::config;
use crate::metrics::ResultLabel;
use crate::proxy::Shared;
use crate::{telemetry, tls};

/// Why a reload was rejected.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The file could not be read or is not a valid config.
    #[error(transparent)]
    Config(#[from] config::Error),
    /// The config is valid but its material or runtime state is not.
    #[error(transparent)]
    Apply(#[from] apply::Error),
}

/// What started a reload attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Signal,
    Poll,
}

/// The hash polling compares against: the file as it is while the gateway starts, read before
/// it reports ready. Reading it later, inside the spawned task, would race with a change made
/// right after ready and silently adopt the new text as the baseline.
/// The TLS files the config names are part of the hash, so a rotated certificate or bundle
/// triggers a reload like a config edit.
pub(crate) fn baseline(path: &std::path::Path, tls: Option<&config::Tls>) -> Option<Hash> {
    std::fs::read(path).ok().map(|text| fingerprint(&text, tls))
}

/// The digest type of [`baseline`].
pub(crate) type Hash = sha2::digest::Output<Sha256>;

/// Watches `path` and SIGHUP until aborted.
pub(crate) async fn run(
    path: PathBuf,
    baseline: Option<Hash>,
    mut applier: Applier,
    mut hangup: Signal,
) {
    let shared = applier.shared().clone();
    let mut last_hash = baseline;
    loop {
        let interval = shared.load().config.watch_interval;
        let trigger = tokio::select! {
            _ = hangup.recv() => Trigger::Signal,
            () = sleep_or_forever(interval) => Trigger::Poll,
        };
        let text = match tokio::fs::read(&path).await {
            Ok(text) => text,
            Err(source) => {
                // Report a vanished file once, not on every poll.
                if trigger == Trigger::Signal || last_hash.is_some() {
                    let error = config::Error::Read {
                        path: path.clone(),
                        source,
                    };
                    reject(&shared, &error.into());
                }
                last_hash = None;
                continue;
            }
        };
        let hash = fingerprint(&text, shared.load().config.tls.as_ref());
        if trigger == Trigger::Poll && last_hash == Some(hash) {
            continue;
        }
        last_hash = Some(hash);
        match apply(&mut applier, &String::from_utf8_lossy(&text)).await {
            Ok(applied) => {
                shared
                    .metrics
                    .reloads
                    .get_or_create(&ResultLabel { result: "applied" })
                    .inc();
                tracing::info!(
                    generation = applied.generation,
                    ?trigger,
                    egress_errors = applied.egress.failed.len(),
                    "config reloaded"
                );
                let mut event = serde_json::Map::new();
                event.insert("event".into(), "reload".into());
                event.insert("result".into(), "applied".into());
                event.extend(applied.event_fields());
                telemetry::event(&event.into());
            }
            Err(error) => reject(&shared, &error),
        }
    }
}

/// Hash of the config text and of the TLS files `tls` names (a missing file hashes as empty).
/// The files are small PEM and JSON; reading them inline keeps the poll simple.
fn fingerprint(text: &[u8], tls: Option<&config::Tls>) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(text);
    let files = match tls {
        Some(config::Tls::Files(files)) => Some(files),
        _ => None,
    };
    for file in files.map(tls::watched_files).into_iter().flatten() {
        let content = std::fs::read(file).unwrap_or_default();
        hasher.update(Sha256::digest(&content));
    }
    hasher.finalize()
}

async fn apply(applier: &mut Applier, text: &str) -> Result<Applied, Error> {
    let config = config::parse(text)?;
    let current = applier.shared().load();
    if config.ingress.listen != current.config.ingress.listen
        || config.admin.listen != current.config.admin.listen
    {
        tracing::warn!("ingress or admin address changed; it applies after a restart");
    }
    if config.limits != current.config.limits {
        tracing::warn!(
            max_concurrent_handshakes = config.limits.max_concurrent_handshakes,
            "limits.max_concurrent_handshakes changed; it applies after a restart"
        );
    }
    Ok(applier.apply(config, None).await?)
}

fn reject(shared: &Shared, error: &Error) {
    shared
        .metrics
        .reloads
        .get_or_create(&ResultLabel { result: "rejected" })
        .inc();
    tracing::error!(%error, "config rejected; keeping the config in force");
    telemetry::event(&serde_json::json!({
        "event": "reload", "result": "rejected", "error": error.to_string(),
    }));
}

async fn sleep_or_forever(interval: Option<std::time::Duration>) {
    match interval {
        Some(interval) => tokio::time::sleep(interval).await,
        None => std::future::pending().await,
    }
}
