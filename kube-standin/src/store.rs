//! The object store: every object as untyped JSON, one resourceVersion counter, a bounded event
//! history for watches, and the registry of served kinds (built-in plus CRDs).
//!
//! Sans-IO: no sockets, no clock (callers pass `now`); watchers get events from a broadcast
//! channel. Writes are in [`write`].

mod write;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

pub use write::{PatchKind, WriteOptions};

use crate::error::ApiError;
use crate::resource::{self, ResourceType};
use crate::selector::{FieldSelector, LabelSelector};

/// Where an object lives: (group, plural, namespace or "", name). Versions share storage.
pub type Key = (String, String, String, String);

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change, at one resourceVersion.
#[derive(Debug, Clone)]
pub struct Event {
    pub rv: u64,
    pub key: Key,
    pub kind: EventKind,
    pub object: Value,
    /// The object before a modification: a watch with a selector turns a change into or out
    /// of the selection into `ADDED` or `DELETED`.
    pub previous: Option<Value>,
}

/// The namespaces that exist from the start, as in a new cluster.
const INITIAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// The state of one API server.
#[derive(Debug)]
pub struct Store {
    types: Vec<ResourceType>,
    objects: BTreeMap<Key, Value>,
    rv: u64,
    history: VecDeque<Arc<Event>>,
    history_cap: usize,
    /// The oldest resourceVersion a watch can resume from: every event after it is still in
    /// the history.
    compacted: u64,
    events: broadcast::Sender<Arc<Event>>,
    next_ip: u32,
}

impl Store {
    /// A store with the built-in kinds, the initial namespaces and room for `history_cap`
    /// events of watch history.
    pub fn new(history_cap: usize, now: &str) -> Self {
        let (events, _) = broadcast::channel(4096);
        let mut store = Self {
            types: resource::builtin(),
            objects: BTreeMap::new(),
            rv: 0,
            history: VecDeque::new(),
            history_cap: history_cap.max(1),
            compacted: 0,
            events,
            next_ip: 1,
        };
        let ns = store.find("", "v1", "namespaces").cloned();
        for name in INITIAL_NAMESPACES {
            if let Some(ns) = &ns {
                let object =
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
                // Cannot fail: fresh names of a built-in kind.
                let _ = store.create(ns, "", object, &WriteOptions::system(), now);
            }
        }
        store.compact();
        store
    }

    /// Every served kind.
    pub fn types(&self) -> &[ResourceType] {
        &self.types
    }

    /// The kind served at `group/version` under `plural`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
    }

    /// The latest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// New events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// Drops the whole event history, as etcd compaction does: the resourceVersion moves on by
    /// one (a write elsewhere, as far as any watcher can tell), and a watch from any
    /// resourceVersion issued before gets `410 Gone` and must relist.
    pub fn compact(&mut self) {
        self.history.clear();
        self.rv += 1;
        self.compacted = self.rv;
    }

    /// Events after `rv` for `rt` (and `namespace`, if given), or `410 Gone` when the history
    /// no longer reaches back that far.
    pub fn history_since(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        rv: u64,
    ) -> Result<Vec<Arc<Event>>, ApiError> {
        if rv < self.compacted {
            return Err(ApiError::gone(format!(
                "too old resource version: {rv} ({})",
                self.compacted
            )));
        }
        Ok(self
            .history
            .iter()
            .filter(|e| e.rv > rv && matches_type(&e.key, rt, namespace))
            .cloned()
            .collect())
    }

    /// Whether `rv` is still within the history (a list continue token can use it).
    pub fn reaches(&self, rv: u64) -> bool {
        rv >= self.compacted
    }

    /// Objects of `rt` in `namespace` (all when `None`) matching both selectors, in key order.
    pub fn list(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Vec<(Key, Value)> {
        self.objects
            .iter()
            .filter(|(k, v)| {
                matches_type(k, rt, namespace) && labels.matches(v) && fields.matches(v)
            })
            .map(|(k, v)| (k.clone(), as_version(v, rt)))
            .collect()
    }

    /// One object.
    pub fn get(&self, rt: &ResourceType, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&key(rt, namespace, name))
            .map(|v| as_version(v, rt))
            .ok_or_else(|| ApiError::not_found(&rt.plural, name))
    }

    /// Records a change: bumps the resourceVersion, stores or removes the object, appends to
    /// the history and tells the watchers. Returns the object as stored.
    fn commit(&mut self, key: Key, kind: EventKind, mut object: Value) -> Value {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let previous = match kind {
            EventKind::Deleted => {
                self.objects.remove(&key);
                None
            }
            EventKind::Added => self.objects.insert(key.clone(), object.clone()).and(None),
            EventKind::Modified => self.objects.insert(key.clone(), object.clone()),
        };
        let event = Arc::new(Event {
            rv: self.rv,
            key,
            kind,
            object: object.clone(),
            previous,
        });
        self.history.push_back(event.clone());
        while self.history.len() > self.history_cap {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(event);
        object
    }

    fn allocate_cluster_ip(&mut self) -> String {
        let n = self.next_ip;
        self.next_ip += 1;
        format!("10.96.{}.{}", (n >> 8) & 0xff, n & 0xff)
    }
}

/// The storage key of `name` in `namespace` (ignored for cluster-scoped kinds).
pub fn key(rt: &ResourceType, namespace: &str, name: &str) -> Key {
    let ns = if rt.namespaced { namespace } else { "" };
    (
        rt.group.clone(),
        rt.plural.clone(),
        ns.to_owned(),
        name.to_owned(),
    )
}

/// Whether an object stored under `key` is of `rt`, in `namespace` when one is given.
pub fn matches_type(key: &Key, rt: &ResourceType, namespace: Option<&str>) -> bool {
    key.0 == rt.group && key.1 == rt.plural && namespace.is_none_or(|ns| key.2 == ns)
}

/// `object` as served at `rt`'s version (no conversion beyond the apiVersion field).
pub fn as_version(object: &Value, rt: &ResourceType) -> Value {
    let mut out = object.clone();
    out["apiVersion"] = json!(rt.api_version());
    out["kind"] = json!(rt.kind);
    out
}

#[cfg(test)]
mod tests;
