//! The state directory mirrored into the Kubernetes API, so a replica with an empty state
//! directory can take over from a leader that died:
//!
//! - one `ClusterLink` per link (named after the peer), its trust bundle in the Secret
//!   `isthmus-link-<peer>` (key `bundle.json`), its status (`Connected`, last heard, feed
//!   version) from the imports the peer sends;
//! - the Secret `isthmus-controller-state` (type Opaque) holding the other records exactly as
//!   they are on disk, one key per file: `tokens.json` (digests only), `exports.json`,
//!   `egress.json`, `peering-port.json`, `trust.json`.
//!
//! Every write is a server-side apply with the field manager `isthmus-controller`. A single
//! writer task applies changes in order, coalescing bursts and retrying what failed; a change
//! not yet applied when the leader dies is lost, as a write to a local disk that never reached
//! it would be. [`hydrate`] runs on acquiring leadership, before the controller starts: the API
//! wins over whatever a stale local directory holds; an API with nothing yet is seeded from the
//! local directory. Secret contents are never logged.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

use super::link::{self, ClusterLink, ClusterLinkSpec, SecretKeyRef};
use crate::model::ClusterName;
use crate::state::{LinkRecord, LinkRole, MIRRORED_RECORDS, StateChange, StateDir, StateError};

/// The Secret holding the records other than links.
pub const STATE_SECRET: &str = "isthmus-controller-state";
/// The field manager of every write.
pub const FIELD_MANAGER: &str = "isthmus-controller";
/// The label marking what the controller manages.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "isthmus-controller");
/// The key of a link's trust bundle in its Secret.
pub const BUNDLE_KEY: &str = "bundle.json";
/// How long a failed write waits before it is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// Why the mirror could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("cannot {action} {what} in namespace {namespace}: {source}")]
    Api {
        action: &'static str,
        what: String,
        namespace: String,
        source: kube::Error,
    },
    #[error(
        "{what} in namespace {namespace} is not a valid link ({problem}); fix or delete it (the link is then made again with a new token)"
    )]
    Invalid {
        what: String,
        namespace: String,
        problem: String,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

/// The name of the Secret holding `peer`'s trust bundle.
pub fn bundle_secret_name(peer: &ClusterName) -> String {
    format!("isthmus-link-{peer}")
}

/// A link as a `ClusterLink` and the data of its bundle Secret.
pub fn link_resource(rec: &LinkRecord) -> ClusterLink {
    let strings = |v: &[crate::config::HostPort]| v.iter().map(ToString::to_string).collect();
    let mut cl = ClusterLink::new(
        rec.peer.as_str(),
        ClusterLinkSpec {
            peer: rec.peer.to_string(),
            trust_domain: rec.trust_domain.as_str().to_owned(),
            role: match rec.role {
                LinkRole::Acceptor => link::LinkRole::Acceptor,
                LinkRole::Joiner => link::LinkRole::Joiner,
            },
            peering_addresses: strings(&rec.peering_addresses),
            gateway_addresses: strings(&rec.gateway_addresses),
            gateway_ids: rec
                .gateway_spiffe_ids
                .iter()
                .map(|id| id.as_str().to_owned())
                .collect(),
            bundle_ref: SecretKeyRef {
                name: bundle_secret_name(&rec.peer),
                key: BUNDLE_KEY.to_owned(),
            },
            bundle_sequence: rec.bundle_sequence,
            linked_at_ms: rec.linked_at_ms,
        },
    );
    cl.metadata.labels = Some(managed_labels());
    cl
}

/// The link a `ClusterLink` and its bundle describe, checked as the state directory checks it.
pub fn link_record(spec: &ClusterLinkSpec, bundle_json: &str) -> Result<LinkRecord, String> {
    // The state directory's own format parses and checks every field.
    let value = json!({
        "peer": spec.peer,
        "trust_domain": spec.trust_domain,
        "role": match spec.role {
            link::LinkRole::Acceptor => "acceptor",
            link::LinkRole::Joiner => "joiner",
        },
        "bundle_json": bundle_json,
        "peering_addresses": spec.peering_addresses,
        "gateway_addresses": spec.gateway_addresses,
        "gateway_spiffe_ids": spec.gateway_ids,
        "linked_at_ms": spec.linked_at_ms,
        "bundle_sequence": spec.bundle_sequence,
    });
    let rec: LinkRecord = serde_json::from_value(value).map_err(|e| e.to_string())?;
    rec.bundle().map_err(|e| format!("bundle: {e}"))?;
    Ok(rec)
}

fn managed_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())])
}

fn secret(name: &str, data: BTreeMap<String, ByteString>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(managed_labels()),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The API side of the mirror, in one namespace.
#[derive(Clone)]
pub struct Mirror {
    links: Api<ClusterLink>,
    secrets: Api<Secret>,
    namespace: String,
}

impl Mirror {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            links: Api::namespaced(client.clone(), namespace),
            secrets: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
        }
    }

    fn api_error(
        &self,
        action: &'static str,
        what: String,
    ) -> impl FnOnce(kube::Error) -> MirrorError {
        let namespace = self.namespace.clone();
        move |source| MirrorError::Api {
            action,
            what,
            namespace,
            source,
        }
    }

    /// Makes the local state directory what the API holds (see the module docs). Returns the
    /// state records as the API now holds them, for the writer to start from, and whether the
    /// API was empty and is being seeded from the local directory.
    pub async fn hydrate(&self, state: &StateDir) -> Result<Hydrated, MirrorError> {
        let stored = self
            .secrets
            .get_opt(STATE_SECRET)
            .await
            .map_err(self.api_error("read", format!("Secret {STATE_SECRET}")))?;
        let managed = ListParams::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
        let resources = self
            .links
            .list(&managed)
            .await
            .map_err(self.api_error("list", "ClusterLinks".into()))?;
        if stored.is_none() && resources.items.is_empty() {
            return Ok(Hydrated::Seed);
        }
        let data = stored.and_then(|s| s.data).unwrap_or_default();
        let mut records = BTreeMap::new();
        for name in MIRRORED_RECORDS {
            let bytes = data.get(name).map(|b| b.0.as_slice());
            state.restore_record(name, bytes)?;
            if let Some(bytes) = bytes {
                records.insert(name, bytes.to_vec());
            }
        }
        let mut links = Vec::new();
        for cl in resources.items {
            let what = format!("ClusterLink {}", kube::ResourceExt::name_any(&cl));
            let invalid = |problem: String| MirrorError::Invalid {
                what: what.clone(),
                namespace: self.namespace.clone(),
                problem,
            };
            let bundle_ref = &cl.spec.bundle_ref;
            let bundle = self
                .secrets
                .get_opt(&bundle_ref.name)
                .await
                .map_err(self.api_error("read", format!("Secret {}", bundle_ref.name)))?
                .and_then(|s| s.data)
                .and_then(|mut d| d.remove(&bundle_ref.key))
                .ok_or_else(|| {
                    invalid(format!(
                        "its bundle Secret {} has no key {}",
                        bundle_ref.name, bundle_ref.key
                    ))
                })?;
            let bundle = String::from_utf8(bundle.0)
                .map_err(|_| invalid("its bundle is not UTF-8".into()))?;
            links.push(link_record(&cl.spec, &bundle).map_err(invalid)?);
        }
        state.restore_links(&links)?;
        tracing::info!(
            namespace = %self.namespace,
            links = links.len(),
            records = records.len(),
            "state directory restored from the API"
        );
        Ok(Hydrated::Restored { records })
    }

    async fn apply_records(
        &self,
        records: &BTreeMap<&'static str, Vec<u8>>,
    ) -> Result<(), MirrorError> {
        let data = records
            .iter()
            .map(|(k, v)| ((*k).to_owned(), ByteString(v.clone())))
            .collect();
        self.apply_secret(STATE_SECRET, data).await
    }

    async fn apply_secret(
        &self,
        name: &str,
        data: BTreeMap<String, ByteString>,
    ) -> Result<(), MirrorError> {
        self.secrets
            .patch(name, &apply_params(), &Patch::Apply(&secret(name, data)))
            .await
            .map_err(self.api_error("apply", format!("Secret {name}")))?;
        Ok(())
    }

    async fn apply_link(&self, rec: &LinkRecord) -> Result<(), MirrorError> {
        // The bundle first: a ClusterLink is never visible without the bundle it refers to.
        let data = BTreeMap::from([(
            BUNDLE_KEY.to_owned(),
            ByteString(rec.bundle_json.clone().into_bytes()),
        )]);
        self.apply_secret(&bundle_secret_name(&rec.peer), data)
            .await?;
        self.links
            .patch(
                rec.peer.as_str(),
                &apply_params(),
                &Patch::Apply(&link_resource(rec)),
            )
            .await
            .map_err(self.api_error("apply", format!("ClusterLink {}", rec.peer)))?;
        Ok(())
    }

    async fn delete_link(&self, peer: &ClusterName) -> Result<(), MirrorError> {
        gone(self.links.delete(peer.as_str(), &Default::default()).await)
            .map_err(self.api_error("delete", format!("ClusterLink {peer}")))?;
        let name = bundle_secret_name(peer);
        gone(self.secrets.delete(&name, &Default::default()).await)
            .map_err(self.api_error("delete", format!("Secret {name}")))
    }

    async fn apply_status(
        &self,
        peer: &ClusterName,
        status: &LinkStatus,
    ) -> Result<(), MirrorError> {
        let heard = status
            .last_heard_ms
            .and_then(|ms| k8s_openapi::jiff::Timestamp::from_millisecond(ms).ok())
            .map(|t| t.to_string());
        let status = json!({
            "apiVersion": format!("{}/v1alpha1", link::GROUP),
            "kind": "ClusterLink",
            "status": {
                "state": if status.connected { "Connected" } else { "Disconnected" },
                "lastHeartbeat": heard,
                "feedVersion": status.feed_version,
            },
        });
        self.links
            .patch_status(peer.as_str(), &apply_params(), &Patch::Apply(&status))
            .await
            .map_err(self.api_error("apply the status of", format!("ClusterLink {peer}")))?;
        Ok(())
    }
}

/// A delete's outcome, an object already gone being a success.
fn gone<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// What [`Mirror::hydrate`] found.
#[derive(Debug)]
pub enum Hydrated {
    /// The API holds nothing yet: push the local directory up ([`seed`]).
    Seed,
    /// The local directory now holds what the API holds; these are its records.
    Restored {
        records: BTreeMap<&'static str, Vec<u8>>,
    },
}

/// The local directory's content as changes, for an API that holds nothing yet.
pub fn seed(state: &StateDir) -> Result<Vec<StateChange>, StateError> {
    let mut changes: Vec<StateChange> = state
        .load_links()?
        .into_values()
        .map(StateChange::Link)
        .collect();
    for name in MIRRORED_RECORDS {
        if let Some(json) = state.read_record(name)? {
            changes.push(StateChange::Record { name, json });
        }
    }
    Ok(changes)
}

/// A link's status as written into its `ClusterLink`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LinkStatus {
    connected: bool,
    last_heard_ms: Option<i64>,
    feed_version: Option<u64>,
}

impl LinkStatus {
    /// Whether `self` is worth writing over `applied`: the state or feed changed, or the last
    /// heartbeat moved on by [`HEARTBEAT_REFRESH_MS`] (every heartbeat would be a write a
    /// second per link).
    fn differs_from(&self, applied: &LinkStatus) -> bool {
        let moved = match (self.last_heard_ms, applied.last_heard_ms) {
            (Some(a), Some(b)) => a.saturating_sub(b) >= HEARTBEAT_REFRESH_MS,
            (a, b) => a != b,
        };
        self.connected != applied.connected || self.feed_version != applied.feed_version || moved
    }
}

/// How stale `lastHeartbeat` may get before a status is written for it alone.
const HEARTBEAT_REFRESH_MS: i64 = 30_000;

/// What is still to be written, and the statuses written.
#[derive(Default)]
struct Pending {
    records: bool,
    /// `None`: delete.
    links: BTreeMap<ClusterName, Option<LinkRecord>>,
    status: BTreeMap<ClusterName, LinkStatus>,
    applied_status: BTreeMap<ClusterName, LinkStatus>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        !self.records && self.links.is_empty() && self.status.is_empty()
    }
}

/// Applies changes in order until the sender goes; `records` is what the API holds now.
pub async fn run_writer(
    mirror: Mirror,
    mut rx: UnboundedReceiver<StateChange>,
    mut records: BTreeMap<&'static str, Vec<u8>>,
) {
    let mut pending = Pending::default();
    loop {
        // With writes pending, wake up to retry them even when nothing changes.
        let next = if pending.is_empty() {
            rx.recv().await
        } else {
            tokio::time::timeout(RETRY, rx.recv()).await.unwrap_or(None)
        };
        if next.is_none() && rx.is_closed() {
            // The state directory is gone: the process is stopping.
            return;
        }
        let mut changes: Vec<StateChange> = next.into_iter().collect();
        while let Ok(change) = rx.try_recv() {
            changes.push(change);
        }
        for change in changes {
            match change {
                StateChange::Record { name, json } => {
                    if records.get(name) != Some(&json) {
                        records.insert(name, json);
                        pending.records = true;
                    }
                }
                StateChange::Link(rec) => {
                    pending.links.insert(rec.peer.clone(), Some(rec));
                }
                StateChange::LinkRemoved(peer) => {
                    pending.status.remove(&peer);
                    pending.applied_status.remove(&peer);
                    pending.links.insert(peer, None);
                }
                StateChange::LinkStatus {
                    peer,
                    connected,
                    last_heard_ms,
                    feed_version,
                } => {
                    let status = LinkStatus {
                        connected,
                        last_heard_ms,
                        feed_version,
                    };
                    if pending
                        .applied_status
                        .get(&peer)
                        .is_none_or(|applied| status.differs_from(applied))
                    {
                        pending.status.insert(peer, status);
                    }
                }
            }
        }
        flush(&mirror, &records, &mut pending).await;
    }
}

/// Writes what is pending; what fails stays pending.
async fn flush(mirror: &Mirror, records: &BTreeMap<&'static str, Vec<u8>>, pending: &mut Pending) {
    let report = |e: MirrorError| tracing::warn!(error = %e, "state not yet mirrored into the API; retrying");
    if pending.records {
        match mirror.apply_records(records).await {
            Ok(()) => pending.records = false,
            Err(e) => report(e),
        }
    }
    let links = std::mem::take(&mut pending.links);
    for (peer, rec) in links {
        let done = match &rec {
            Some(rec) => mirror.apply_link(rec).await,
            None => mirror.delete_link(&peer).await,
        };
        if let Err(e) = done {
            report(e);
            pending.links.insert(peer, rec);
        }
    }
    let statuses = std::mem::take(&mut pending.status);
    for (peer, status) in statuses {
        // A status waits for its link to be written first.
        if pending.links.contains_key(&peer) {
            pending.status.insert(peer, status);
            continue;
        }
        match mirror.apply_status(&peer, &status).await {
            Ok(()) => {
                pending.applied_status.insert(peer, status);
            }
            Err(e) => {
                report(e);
                pending.status.insert(peer, status);
            }
        }
    }
}

#[cfg(test)]
mod tests;
