//! `ClusterLink` (`isthmus.dev/v1alpha1`): one link with a peer cluster, kept in the API so any
//! controller replica can take over. Credentials live in a Secret the link refers to, never in
//! the resource itself.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Isthmus's API group.
pub const GROUP: &str = "isthmus.dev";

/// A link with a peer cluster.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "isthmus.dev",
    version = "v1alpha1",
    kind = "ClusterLink",
    namespaced,
    status = "ClusterLinkStatus",
    shortname = "clink",
    printcolumn = r#"{"name":"Peer","type":"string","jsonPath":".spec.peer"}"#,
    printcolumn = r#"{"name":"Trust domain","type":"string","jsonPath":".spec.trustDomain"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterLinkSpec {
    /// The peer cluster's name.
    pub peer: String,
    /// The peer's SPIFFE trust domain.
    pub trust_domain: String,
    /// Which side redeemed the peering token.
    pub role: LinkRole,
    /// The peer controller's peering addresses (`host:port`), dialed in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peering_addresses: Vec<String>,
    /// The peer's gateway addresses (`host:port`, IP or hostname).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateway_addresses: Vec<String>,
    /// The peer's gateway SPIFFE IDs, authorized on the routes exported to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateway_ids: Vec<String>,
    /// The Secret (same namespace) holding the peer's trust bundle.
    pub bundle_ref: SecretKeyRef,
    /// The sequence of the last trust-bundle update applied from the peer (0: none yet).
    #[serde(default)]
    pub bundle_sequence: u64,
    /// When the link was made (milliseconds since the Unix epoch).
    #[serde(default)]
    pub linked_at_ms: i64,
}

/// Which side of the link this cluster is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum LinkRole {
    /// This cluster issued the token; the peer dials it.
    Acceptor,
    /// This cluster redeemed the token and dials the peer.
    Joiner,
}

/// A key of a Secret in the link's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretKeyRef {
    /// The Secret's name.
    pub name: String,
    /// The key within the Secret's data.
    pub key: String,
}

/// What the controller observes about a link.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterLinkStatus {
    /// `Pending`, `Connected` or `Disconnected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<LinkState>,
    /// When the peer was last heard (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<String>,
    /// The peer's export feed version last applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed_version: Option<u64>,
    /// Conditions (`Connected`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The state of a link's session.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum LinkState {
    /// Recorded, never connected yet.
    Pending,
    /// A session is up.
    Connected,
    /// The session is down; the joiner redials.
    Disconnected,
}
