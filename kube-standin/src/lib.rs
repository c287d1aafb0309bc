//! An in-repo Kubernetes API server for tests and demos: no real API server can be installed on
//! the machines Isthmus is tested on, and a fake that answers fixed replies would drift from the
//! protocol. This one speaks the real protocol to real clients (`kubectl`, kube-rs) over HTTPS
//! with a bearer token:
//!
//! - discovery (`/api`, `/apis`, `/api/v1`, `/apis/<group>[/<version>]`, `/version`,
//!   `/openapi/v2` as an empty protobuf document so client-side validation finds no schema);
//! - list (label and field selectors, `limit`/`continue`) and watch (`resourceVersion`,
//!   bookmarks, `sendInitialEvents`, `410 Gone` past a bounded history);
//! - get, create, update (optimistic concurrency: `409 Conflict`), merge, strategic and JSON
//!   patches, server-side apply with field managers and conflicts, `/status` subresources;
//! - delete with finalizers (`deletionTimestamp`, removal when the last one goes), owner
//!   reference garbage collection, namespace and CRD cascades;
//! - built-in kinds ([`resource`]) and the kinds CustomResourceDefinitions register.
//!
//! [`store`] is the sans-IO core; [`server`] the HTTPS shell; [`StandIn`] runs one in-process.

pub mod error;
pub mod fields;
pub mod patch;
pub mod resource;
pub mod selector;
pub mod server;
pub mod store;
pub mod tls;
mod watch;

pub use server::{Options, StandIn, StartError};

/// Now, as the API server writes timestamps (RFC 3339, seconds, UTC).
pub(crate) fn now() -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_default()
}
