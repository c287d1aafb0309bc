//! What the state directory sends its mirror (the Kubernetes API, when leader election is on)
//! after each successful save or removal, so a standby replica can take over from the API.

use super::{EGRESS, EXPORTS, LinkRecord, PEERING, TOKENS, TRUST};
use crate::model::ClusterName;

/// The root-level records mirrored as they are on disk: the token book (digests only),
/// exports, egress ports, the peering port and the trust record. Imports are not: a new leader
/// hears them again from its peers.
pub const MIRRORED_RECORDS: [&str; 5] = [TOKENS, EXPORTS, EGRESS, PEERING, TRUST];

/// Sends changes to the mirror's writer.
pub type MirrorTx = tokio::sync::mpsc::UnboundedSender<StateChange>;

/// One saved change.
#[derive(Debug, Clone)]
pub enum StateChange {
    Link(LinkRecord),
    LinkRemoved(ClusterName),
    /// How a link is doing, for its `ClusterLink` status: sent when a peer's export feed is
    /// applied (its imports saved) and periodically by the running controller.
    LinkStatus {
        peer: ClusterName,
        connected: bool,
        /// When the peer was last heard (Unix ms); `None`: never.
        last_heard_ms: Option<i64>,
        feed_version: Option<u64>,
    },
    /// One of [`MIRRORED_RECORDS`] was saved with this content.
    Record {
        name: &'static str,
        json: Vec<u8>,
    },
}
