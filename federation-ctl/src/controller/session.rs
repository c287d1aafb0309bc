//! One link session, the same on both sides: announce ourselves, send a snapshot of what the
//! peer may see, then heartbeats and deltas; apply what the peer sends.
//!
//! Resync is always by snapshot: a new session starts with one, and a receiver that finds a gap
//! in the delta versions asks for one. Deltas are never guessed across a gap.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use super::{LinkState, Session, Shared, convert, now_ms};
use crate::api::peering as pb;
use crate::config::HostPort;
use crate::model::{ClusterName, ExportFeed, FeedError, FeedUpdate};

/// How long a session whose link was removed waits for the peer to take the `Unlinked` message.
const UNLINK_FLUSH: Duration = Duration::from_secs(2);

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionEnd {
    #[error("{0} is not linked")]
    NotLinked(ClusterName),
    #[error("the peer closed the stream")]
    Closed,
    #[error("stream error: {0}")]
    Stream(String),
    #[error("a newer session replaced this one")]
    Replaced,
    #[error("the peer removed the link: {0}")]
    Unlinked(String),
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// Registers a new session for `peer` and queues the opening messages. Any older session of
/// the link is replaced (its queue closes, so its stream ends).
pub(crate) fn open(
    shared: &Shared,
    peer: &ClusterName,
) -> Result<(u64, mpsc::Receiver<pb::LinkMessage>), SessionEnd> {
    let (tx, rx) = mpsc::channel(super::LINK_QUEUE);
    let id = shared.next_session_id();
    // Built together, so the bundle in `info` and the one in the update are the same.
    let (info, bundle_update) = {
        let announced = shared.announced.lock().unwrap_or_else(|e| e.into_inner());
        let ca = shared.ca.load();
        (
            shared.our_info(),
            super::trust::update_message(&announced, &ca),
        )
    };
    let mut core = shared.lock();
    let registry = core.registry.clone();
    let link = core
        .links
        .get_mut(peer)
        .ok_or_else(|| SessionEnd::NotLinked(peer.clone()))?;
    let mut feed = ExportFeed::new();
    let snapshot = feed.snapshot(&registry.exports_for(peer));
    let opening = [
        pb::link_message::Kind::Hello(pb::Hello {
            cluster: shared.cfg.cluster.to_string(),
            have_version: link.imports.version().unwrap_or(0),
        }),
        pb::link_message::Kind::Info(info),
        convert::update_to_pb(&snapshot),
    ];
    // The queue is new and far larger than four messages.
    for msg in opening.into_iter().map(convert::message) {
        let _ = tx.try_send(msg);
    }
    let _ = tx.try_send(bundle_update);
    link.session = Some(Session { id, tx, feed });
    link.state = LinkState::Connected;
    link.last_error.clear();
    Ok((id, rx))
}

/// Runs a registered session until the stream ends; then marks the link disconnected (unless
/// a newer session took over).
pub(crate) async fn run(
    shared: Arc<Shared>,
    peer: ClusterName,
    id: u64,
    inbound: tonic::Streaming<pb::LinkMessage>,
) -> SessionEnd {
    tracing::info!(%peer, session = id, "link session up");
    let heartbeats = tokio::spawn(heartbeat(shared.clone(), peer.clone(), id));
    let end = receive(&shared, &peer, id, inbound).await;
    heartbeats.abort();
    if let SessionEnd::Unlinked(reason) = &end {
        shared.remove_link(&peer, &format!("unlinked by the peer: {reason}"));
    } else {
        let mut core = shared.lock();
        if let Some(link) = core.links.get_mut(&peer)
            && link.session.as_ref().is_some_and(|s| s.id == id)
        {
            link.session = None;
            link.state = LinkState::Disconnected;
            link.last_error = end.to_string();
        }
    }
    tracing::info!(%peer, session = id, reason = %end, "link session down");
    end
}

async fn heartbeat(shared: Arc<Shared>, peer: ClusterName, id: u64) {
    let mut interval = tokio::time::interval(shared.cfg.lease.heartbeat_interval);
    loop {
        interval.tick().await;
        let tx = match current_tx(&shared, &peer, id) {
            Some(tx) => tx,
            None => return,
        };
        let msg = convert::message(pb::link_message::Kind::Heartbeat(pb::Heartbeat {
            sent_at_ms: now_ms(),
        }));
        // A full queue means the peer is not reading; the stream's own end will follow.
        if tx.try_send(msg).is_err() && tx.is_closed() {
            return;
        }
    }
}

fn current_tx(
    shared: &Shared,
    peer: &ClusterName,
    id: u64,
) -> Option<mpsc::Sender<pb::LinkMessage>> {
    let core = shared.lock();
    let session = core.links.get(peer)?.session.as_ref()?;
    (session.id == id).then(|| session.tx.clone())
}

async fn receive(
    shared: &Arc<Shared>,
    peer: &ClusterName,
    id: u64,
    mut inbound: tonic::Streaming<pb::LinkMessage>,
) -> SessionEnd {
    // A silent stream (peer frozen, path black-holed) ends after a lease's worth of time, so
    // the dialer redials instead of waiting on a dead connection.
    let silence = shared.cfg.lease.heartbeat_interval
        * (shared.cfg.lease.missed_heartbeats.saturating_add(1))
        + Duration::from_secs(1);
    loop {
        let next = match tokio::time::timeout(silence, inbound.next()).await {
            Ok(next) => next,
            Err(_) => return SessionEnd::Stream(format!("nothing heard for {silence:?}")),
        };
        let msg = match next {
            None => return SessionEnd::Closed,
            Some(Err(status)) => return SessionEnd::Stream(status.message().to_owned()),
            Some(Ok(msg)) => msg,
        };
        if current_tx(shared, peer, id).is_none() {
            if shared.lock().links.contains_key(peer) {
                return SessionEnd::Replaced;
            }
            // Removed while up: the `Unlinked` queued for the peer must leave before the stream
            // is dropped (dropping it resets the stream, queued messages and all). The peer
            // closes once it has it; a peer that does not is given up on.
            let drain = async { while let Some(Ok(_)) = inbound.next().await {} };
            let _ = tokio::time::timeout(UNLINK_FLUSH, drain).await;
            return SessionEnd::NotLinked(peer.clone());
        }
        let Some(kind) = msg.kind else {
            continue;
        };
        match handle(shared, peer, id, kind) {
            Ok(()) => {}
            Err(end) => return end,
        }
    }
}

fn handle(
    shared: &Shared,
    peer: &ClusterName,
    id: u64,
    kind: pb::link_message::Kind,
) -> Result<(), SessionEnd> {
    use pb::link_message::Kind;
    let now = now_ms();
    match kind {
        Kind::Hello(hello) => {
            if hello.cluster != peer.as_str() {
                return Err(SessionEnd::Protocol(format!(
                    "peer says it is {:?}, but this link is with {peer}",
                    hello.cluster
                )));
            }
            touch(shared, peer, now);
        }
        Kind::Heartbeat(hb) => {
            touch(shared, peer, now);
            super::report::heartbeat(shared, peer, hb.sent_at_ms, now);
        }
        Kind::Snapshot(s) => {
            let update =
                convert::snapshot_from_pb(s).map_err(|e| SessionEnd::Protocol(e.to_string()))?;
            apply(shared, peer, id, &update, now)?;
        }
        Kind::Delta(d) => {
            let update =
                convert::delta_from_pb(d).map_err(|e| SessionEnd::Protocol(e.to_string()))?;
            apply(shared, peer, id, &update, now)?;
        }
        Kind::Resync(r) => {
            tracing::info!(%peer, reason = %r.reason, "peer asked for a snapshot");
            let mut core = shared.lock();
            let registry = core.registry.clone();
            if let Some(session) = core.links.get_mut(peer).and_then(|l| l.session.as_mut()) {
                let snapshot = session.feed.snapshot(&registry.exports_for(peer));
                let _ = session
                    .tx
                    .try_send(convert::message(convert::update_to_pb(&snapshot)));
            }
        }
        Kind::Info(info) => update_info(shared, peer, info)?,
        Kind::Unlinked(u) => return Err(SessionEnd::Unlinked(u.reason)),
        Kind::TrustBundle(update) => super::trust::apply_peer_update(shared, peer, update)?,
    }
    Ok(())
}

fn touch(shared: &Shared, peer: &ClusterName, now: i64) {
    if let Some(link) = shared.lock().links.get_mut(peer) {
        link.imports.heard(now);
    }
}

fn apply(
    shared: &Shared,
    peer: &ClusterName,
    id: u64,
    update: &FeedUpdate,
    now: i64,
) -> Result<(), SessionEnd> {
    let record = {
        let mut core = shared.lock();
        let Some(link) = core.links.get_mut(peer) else {
            return Err(SessionEnd::NotLinked(peer.clone()));
        };
        match link.imports.apply(update, now) {
            Ok(()) => link.imports.clone(),
            Err(e @ (FeedError::Gap { .. } | FeedError::NoSnapshot)) => {
                tracing::info!(%peer, error = %e, "asking the peer for a snapshot");
                if let Some(session) = link.session.as_ref().filter(|s| s.id == id) {
                    let _ = session
                        .tx
                        .try_send(convert::message(pb::link_message::Kind::Resync(
                            pb::ResyncRequest {
                                reason: e.to_string(),
                            },
                        )));
                }
                return Ok(());
            }
        }
    };
    // Persisted before anything else sees it, so a restart resumes from what was applied.
    if let Err(error) = shared.state.save_imports(&record) {
        tracing::error!(%peer, %error, "cannot persist imports; they will be re-sent after a restart");
    }
    shared.changed.notify_one();
    Ok(())
}

fn update_info(shared: &Shared, peer: &ClusterName, info: pb::PeerInfo) -> Result<(), SessionEnd> {
    let protocol = |e: String| SessionEnd::Protocol(e);
    if info.cluster != peer.as_str() {
        return Err(protocol(format!(
            "peer info names {:?}, but this link is with {peer}",
            info.cluster
        )));
    }
    let peering: Vec<HostPort> = parse_all(&info.peering_addresses).map_err(protocol)?;
    let gateways: Vec<HostPort> = parse_all(&info.gateway_addresses).map_err(protocol)?;
    let ids = convert::parse_gateway_ids(&info.gateway_spiffe_ids, &info.trust_domain)
        .map_err(protocol)?;
    let record = {
        let mut core = shared.lock();
        let Some(link) = core.links.get_mut(peer) else {
            return Err(SessionEnd::NotLinked(peer.clone()));
        };
        if info.trust_domain != link.record.trust_domain.as_str() {
            return Err(protocol(format!(
                "peer now claims trust domain {:?}; this link was made with {}",
                info.trust_domain, link.record.trust_domain
            )));
        }
        let mut record = link.record.clone();
        record.peering_addresses = peering;
        record.gateway_addresses = gateways;
        record.gateway_spiffe_ids = ids;
        if !info.bundle_json.is_empty() {
            trust_bundle::X509Bundle::from_spiffe_json(info.bundle_json.as_bytes())
                .map_err(|e| protocol(format!("peer bundle: {e}")))?;
            if record.bundle_json != info.bundle_json {
                // A new session is a resync: the peer's bundle changed while we were apart,
                // and its sequence may have too; the update that follows sets it.
                record.bundle_json = info.bundle_json;
                record.bundle_sequence = 0;
            }
        }
        if record == link.record {
            return Ok(());
        }
        link.record = record.clone();
        record
    };
    if let Err(error) = shared.state.save_link(&record) {
        tracing::error!(%peer, %error, "cannot persist the peer's new info");
    }
    if let Err(error) = shared.refresh_trust() {
        tracing::error!(%peer, %error, "peer bundle update not applied");
    }
    tracing::info!(%peer, gateways = record.gateway_addresses.len(), "peer info updated");
    shared.changed.notify_one();
    Ok(())
}

fn parse_all(addrs: &[String]) -> Result<Vec<HostPort>, String> {
    addrs
        .iter()
        .map(|a| HostPort::parse(a).map_err(|e| format!("address {a:?}: {e}")))
        .collect()
}
