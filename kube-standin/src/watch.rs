//! List and watch: pages with continue tokens, and watch streams (newline-delimited JSON
//! events) with history replay, bookmarks, `sendInitialEvents`, `410 Gone` and forced
//! disconnects.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::Response;
use hyper::body::Frame;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::error::ApiError;
use crate::resource::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::server::{Body, Query, Shared, json_response};
use crate::store::{Event, EventKind, as_version, matches_type};

/// A watch with no `timeoutSeconds` ends after this long, as the API server's default.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

pub(crate) fn api_versions(addr: SocketAddr) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr.to_string()}],
    })
}

/// `/openapi/v2` in protobuf (gnostic `openapi_v2.Document`): swagger 2.0, an info block and no
/// definitions, so kubectl's client-side validation finds no schema to hold a kind against (the
/// stand-in validates on the server instead).
pub(crate) fn openapi_v2() -> Response<Body> {
    fn field(tag: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![tag, u8::try_from(bytes.len()).unwrap_or(0)];
        out.extend_from_slice(bytes);
        out
    }
    let info = [field(0x0a, b"kube-standin"), field(0x12, b"v1.33.0")].concat();
    let doc = [field(0x0a, b"2.0"), field(0x12, &info)].concat();
    let mut resp = Response::new(Full::new(Bytes::from(doc)).boxed());
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/com.github.proto-openapi.spec.v2.v1.0+protobuf"),
    );
    resp
}

pub(crate) fn selectors(query: &Query) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or_default())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or_default())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok((labels, fields))
}

/// A continue token: the resourceVersion of the first page and the last key served.
fn encode_continue(rv: u64, namespace: &str, name: &str) -> String {
    let raw = json!({"rv": rv, "ns": namespace, "name": name}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(token: &str) -> Result<(u64, String, String), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "the continue token is not one this server issued; list again without it",
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok((
        v["rv"].as_u64().ok_or_else(bad)?,
        v["ns"].as_str().ok_or_else(bad)?.to_owned(),
        v["name"].as_str().ok_or_else(bad)?.to_owned(),
    ))
}

/// `GET` on a collection.
pub(crate) fn list(
    shared: &Shared,
    rt: &ResourceType,
    namespace: Option<&str>,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let (labels, fields) = selectors(query)?;
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let store = shared.store();
    let (rv, after) = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let (rv, ns, name) = decode_continue(token)?;
            if !store.reaches(rv) {
                return Err(ApiError::gone(
                    "the continue token is too old (the history moved on); list again from the start",
                ));
            }
            (rv, Some((ns, name)))
        }
        None => (store.resource_version(), None),
    };
    let mut items: Vec<_> = store
        .list(rt, namespace, &labels, &fields)
        .into_iter()
        .filter(|(k, _)| {
            after
                .as_ref()
                .is_none_or(|(ns, name)| (&k.2, &k.3) > (ns, name))
        })
        .collect();
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let Some(limit) = limit
        && items.len() > limit
    {
        let remaining = items.len() - limit;
        items.truncate(limit);
        if let Some((k, _)) = items.last() {
            metadata["continue"] = json!(encode_continue(rv, &k.2, &k.3));
            metadata["remainingItemCount"] = json!(remaining);
        }
    }
    let items: Vec<Value> = items.into_iter().map(|(_, v)| v).collect();
    Ok(json_response(
        200,
        &json!({
            "kind": format!("{}List", rt.kind),
            "apiVersion": rt.api_version(),
            "metadata": metadata,
            "items": items,
        }),
    ))
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn bookmark(rt: &ResourceType, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line(
        "BOOKMARK",
        &json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": meta}),
    )
}

/// What a watch stream sends and when it ends.
struct Plan {
    rt: ResourceType,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    bookmarks: bool,
    initial_end: bool,
    timeout: Duration,
    start_rv: u64,
    first: Vec<Bytes>,
}

impl Plan {
    fn selects(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }

    /// The line this watch sends for `event`, if any. As on the API server, a modification
    /// that moves an object into the selection is `ADDED`, out of it `DELETED`.
    fn line(&self, event: &Event) -> Option<Bytes> {
        if !matches_type(&event.key, &self.rt, self.namespace.as_deref()) {
            return None;
        }
        let now = self.selects(&event.object);
        let kind = match (event.kind, &event.previous) {
            (EventKind::Modified, Some(previous)) => match (self.selects(previous), now) {
                (true, true) => EventKind::Modified,
                (false, true) => EventKind::Added,
                (true, false) => EventKind::Deleted,
                (false, false) => return None,
            },
            (kind, _) if now => kind,
            _ => return None,
        };
        Some(event_line(
            kind.as_str(),
            &as_version(&event.object, &self.rt),
        ))
    }
}

/// `GET ?watch=true` on a collection.
pub(crate) fn watch(
    shared: &Arc<Shared>,
    rt: &ResourceType,
    namespace: Option<&str>,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let (labels, fields) = selectors(query)?;
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(DEFAULT_WATCH_TIMEOUT, Duration::from_secs);
    let mut plan = Plan {
        rt: rt.clone(),
        namespace: namespace.map(str::to_owned),
        labels,
        fields,
        bookmarks: query.flag("allowWatchBookmarks"),
        initial_end: false,
        timeout,
        start_rv: 0,
        first: Vec::new(),
    };
    let requested = query
        .get("resourceVersion")
        .filter(|rv| !rv.is_empty() && *rv != "0");
    let send_initial = query.flag("sendInitialEvents");
    let (events, disconnect) = {
        let store = shared.store();
        let events = store.subscribe();
        plan.start_rv = store.resource_version();
        match requested {
            Some(rv) if !send_initial => {
                let rv: u64 = rv.parse().map_err(|_| {
                    ApiError::bad_request(format!(
                        "resourceVersion {rv:?} is not one this server issued"
                    ))
                })?;
                match store.history_since(rt, namespace, rv) {
                    Ok(history) => {
                        plan.start_rv = rv;
                        let lines: Vec<Bytes> =
                            history.iter().filter_map(|e| plan.line(e)).collect();
                        plan.first = lines;
                        plan.start_rv = history.last().map_or(rv.max(plan.start_rv), |e| e.rv);
                    }
                    Err(gone) => {
                        // As the API server does: a 200 stream whose one event is the error.
                        plan.first.push(event_line("ERROR", &gone.status()));
                        return Ok(stream(plan, None, None, shared));
                    }
                }
            }
            _ => {
                for (_, object) in store.list(rt, namespace, &plan.labels, &plan.fields) {
                    plan.first.push(event_line("ADDED", &object));
                }
                plan.initial_end = send_initial && plan.bookmarks;
            }
        }
        (events, shared.disconnect.subscribe())
    };
    Ok(stream(plan, Some(events), Some(disconnect), shared))
}

fn stream(
    plan: Plan,
    events: Option<broadcast::Receiver<Arc<Event>>>,
    disconnect: Option<tokio::sync::watch::Receiver<u64>>,
    shared: &Shared,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let interval = shared.bookmark_interval;
    tokio::spawn(async move {
        let _ = pump(plan, events, disconnect, interval, &tx).await;
    });
    let frames =
        tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), |b| {
            Ok::<_, std::convert::Infallible>(Frame::data(b))
        });
    let mut resp = Response::new(StreamBody::new(frames).boxed());
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Sends the stream until the timeout, a forced disconnect, a lagging receiver or the client
/// going away. `Err` only means the client is gone.
async fn pump(
    plan: Plan,
    events: Option<broadcast::Receiver<Arc<Event>>>,
    disconnect: Option<tokio::sync::watch::Receiver<u64>>,
    interval: Duration,
    tx: &mpsc::Sender<Bytes>,
) -> Result<(), mpsc::error::SendError<Bytes>> {
    for line in &plan.first {
        tx.send(line.clone()).await?;
    }
    let (Some(mut events), Some(mut disconnect)) = (events, disconnect) else {
        return Ok(());
    };
    let mut seen = plan.start_rv;
    if plan.initial_end {
        tx.send(bookmark(&plan.rt, seen, true)).await?;
    }
    let deadline = tokio::time::sleep(plan.timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        tokio::select! {
            () = &mut deadline => return Ok(()),
            _ = disconnect.changed() => return Ok(()),
            () = tx.closed() => return Ok(()),
            _ = ticker.tick(), if plan.bookmarks => tx.send(bookmark(&plan.rt, seen, false)).await?,
            event = events.recv() => match event {
                Ok(event) => {
                    if event.rv > seen {
                        seen = event.rv;
                        if let Some(line) = plan.line(&event) {
                            tx.send(line).await?;
                        }
                    }
                }
                // Too slow to keep up: end the stream; the client resumes from its last
                // resourceVersion (or relists on 410).
                Err(_) => return Ok(()),
            },
        }
    }
}
