//! Field ownership for server-side apply: which manager owns which fields, kept in the object's
//! `metadata.managedFields` in Kubernetes' `FieldsV1` form.
//!
//! A subset of the real semantics: a field path is a chain of map keys and, for lists of objects
//! with a merge key (`name`, `port`, …), that key's value; other lists are atomic. An apply
//! conflicts where it sets a field another manager owns to a different value, unless forced
//! (then the field changes hands); fields the applier owned and no longer sets are removed;
//! updates (PUT, merge and strategic patches) take the fields they change from everyone else.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::patch::merge_key;

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Seg {
    /// A map key.
    Field(String),
    /// The element of a keyed list whose merge key (first) has the value (second, as JSON).
    Key(String, String),
}

/// A path from the object's root to an owned leaf.
pub type Path = Vec<Seg>;
/// The leaves one manager owns.
pub type FieldSet = BTreeSet<Path>;

/// Whether the operation that last wrote a manager's fields was an apply or an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Apply => "Apply",
            Self::Update => "Update",
        }
    }
}

/// Who owns fields: the manager, its operation, and the subresource (`""` or `"status"`).
pub type Owner = (String, Operation, String);
/// Every manager's fields.
pub type Managers = BTreeMap<Owner, Entry>;

/// What a manager owns, and with which API version and when it last wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub api_version: String,
    pub time: String,
    pub fields: FieldSet,
}

/// Top-level and metadata fields that are the server's, never anyone's to own.
fn ignored(path: &[Seg]) -> bool {
    let field = |i: usize| match path.get(i) {
        Some(Seg::Field(f)) => Some(f.as_str()),
        _ => None,
    };
    match (field(0), field(1)) {
        (Some("apiVersion" | "kind"), _) => true,
        (Some("metadata"), Some(f)) => !matches!(
            f,
            "labels" | "annotations" | "finalizers" | "ownerReferences"
        ),
        _ => false,
    }
}

/// The leaf paths `value` sets (server-owned fields left out).
pub fn leaves(value: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    collect(value, &mut Vec::new(), &mut out);
    out.retain(|p| !ignored(p));
    out
}

fn collect(value: &Value, prefix: &mut Path, out: &mut FieldSet) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                prefix.push(Seg::Field(k.clone()));
                collect(v, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => match merge_key(items) {
            Some(key) => {
                for item in items {
                    prefix.push(Seg::Key(key.to_owned(), item[key].to_string()));
                    collect(item, prefix, out);
                    prefix.pop();
                }
            }
            None => {
                out.insert(prefix.clone());
            }
        },
        _ if prefix.is_empty() => {}
        _ => {
            out.insert(prefix.clone());
        }
    }
}

/// Whether a keyed list element's merge key `k` has the value `v` (as JSON).
fn key_matches(item: &Value, k: &str, v: &str) -> bool {
    item.get(k)
        .and_then(|x| serde_json::to_string(x).ok())
        .is_some_and(|x| x == v)
}

/// The value at `path`, if present.
pub fn get<'a>(value: &'a Value, path: &[Seg]) -> Option<&'a Value> {
    path.iter().try_fold(value, |at, seg| match seg {
        Seg::Field(f) => at.get(f),
        Seg::Key(k, v) => at.as_array()?.iter().find(|item| key_matches(item, k, v)),
    })
}

/// Whether `path` ends at the merge key of a keyed list element.
fn is_merge_key(path: &[Seg]) -> bool {
    match path {
        [.., Seg::Key(k, _), Seg::Field(f)] => k == f,
        _ => false,
    }
}

/// Removes the field at `path`, then parents left empty. The merge key of a keyed element goes
/// only with the element, once nothing else is left in it.
pub fn remove(value: &mut Value, path: &[Seg]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    if is_merge_key(path) {
        let bare = get(value, parent)
            .and_then(Value::as_object)
            .is_some_and(|m| m.len() <= 1);
        if bare {
            remove(value, parent);
        }
        return;
    }
    let Some(container) = get_mut(value, parent) else {
        return;
    };
    match (container, last) {
        (Value::Object(map), Seg::Field(f)) => {
            map.remove(f);
        }
        (Value::Array(items), Seg::Key(k, v)) => {
            items.retain(|item| !key_matches(item, k, v));
        }
        _ => return,
    }
    let emptied = get(value, parent).is_some_and(|p| match p {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    });
    if emptied && parent.len() > 1 {
        remove(value, parent);
    }
}

fn get_mut<'a>(value: &'a mut Value, path: &[Seg]) -> Option<&'a mut Value> {
    path.iter().try_fold(value, |at, seg| match seg {
        Seg::Field(f) => at.get_mut(f),
        Seg::Key(k, v) => at
            .as_array_mut()?
            .iter_mut()
            .find(|item| key_matches(item, k, v)),
    })
}

/// Whether two paths touch: equal, or one inside the other.
fn related(a: &[Seg], b: &[Seg]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Merges an applied configuration into `target`: maps and keyed lists merge, the rest
/// replaces.
pub fn merge_applied(target: &mut Value, applied: &Value) {
    match (target, applied) {
        (Value::Object(t), Value::Object(a)) => {
            for (k, v) in a {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_applied(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (Value::Array(t), Value::Array(a)) if merge_key(a).is_some() => {
            let key = merge_key(a).unwrap_or("name");
            for item in a {
                match t.iter_mut().find(|c| c.get(key) == item.get(key)) {
                    Some(slot) => merge_applied(slot, item),
                    None => t.push(item.clone()),
                }
            }
        }
        (target, applied) => *target = applied.clone(),
    }
}

/// A field another manager owns with a different value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub manager: String,
    pub field: String,
}

/// `.spec.ports[name="http"].port`, as the API server words a path.
pub fn display(path: &[Seg]) -> String {
    path.iter()
        .map(|s| match s {
            Seg::Field(f) => format!(".{f}"),
            Seg::Key(k, v) => format!("[{k}={v}]"),
        })
        .collect()
}

/// Server-side apply of `applied` by `manager` onto `current`: the new object and managers, or
/// the conflicts (none when `force`, which takes the fields over).
pub fn apply(
    current: &Value,
    managers: &Managers,
    applied: &Value,
    manager: &str,
    subresource: &str,
    force: bool,
) -> Result<(Value, Managers), Vec<Conflict>> {
    let fa = leaves(applied);
    let me = (manager.to_owned(), Operation::Apply, subresource.to_owned());
    let mut managers = managers.clone();
    let mut conflicts = Vec::new();
    for (owner, entry) in &mut managers {
        if *owner == me {
            continue;
        }
        let name = &owner.0;
        let mut lost = Vec::new();
        for owned in &entry.fields {
            for mine in fa.iter().filter(|p| related(p, owned)) {
                let at = if mine.len() <= owned.len() {
                    mine
                } else {
                    owned
                };
                if get(current, at) != get(applied, at) {
                    if name != manager {
                        conflicts.push(Conflict {
                            manager: name.clone(),
                            field: display(at),
                        });
                    }
                    lost.push(owned.clone());
                } else if name == manager {
                    // The same manager's earlier updates become part of its apply.
                    lost.push(owned.clone());
                }
            }
        }
        if force || name == manager {
            for path in lost {
                entry.fields.remove(&path);
            }
        }
    }
    if !force && !conflicts.is_empty() {
        conflicts.dedup();
        return Err(conflicts);
    }
    let mut object = current.clone();
    let previous = managers
        .get(&me)
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    // Merge keys last: an element is found by its key until its other fields are gone.
    let mut gone: Vec<&Path> = previous.difference(&fa).collect();
    gone.sort_by_key(|p| is_merge_key(p));
    for gone in gone {
        let owned_elsewhere = managers
            .iter()
            .any(|(k, e)| *k != me && e.fields.iter().any(|p| related(p, gone)));
        if !owned_elsewhere {
            remove(&mut object, gone);
        }
    }
    merge_applied(&mut object, applied);
    managers.retain(|_, e| !e.fields.is_empty());
    managers.insert(
        me,
        Entry {
            api_version: applied["apiVersion"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            time: String::new(),
            fields: fa,
        },
    );
    Ok((object, managers))
}

/// An update by `manager` from `old` to `new`: it takes every changed field.
pub fn update(
    managers: &Managers,
    old: &Value,
    new: &Value,
    manager: &str,
    subresource: &str,
) -> Managers {
    let (before, after) = (leaves(old), leaves(new));
    let changed: FieldSet = after
        .iter()
        .filter(|p| get(old, p) != get(new, p))
        .chain(before.difference(&after))
        .cloned()
        .collect();
    let mut managers = managers.clone();
    for entry in managers.values_mut() {
        entry
            .fields
            .retain(|p| !changed.iter().any(|c| related(c, p)));
    }
    let me = managers
        .entry((
            manager.to_owned(),
            Operation::Update,
            subresource.to_owned(),
        ))
        .or_insert_with(|| Entry {
            api_version: new["apiVersion"].as_str().unwrap_or_default().to_owned(),
            time: String::new(),
            fields: FieldSet::new(),
        });
    me.time = String::new();
    me.fields
        .extend(changed.into_iter().filter(|p| get(new, p).is_some()));
    managers.retain(|_, e| !e.fields.is_empty());
    managers
}

/// Reads `metadata.managedFields`.
pub fn read(object: &Value) -> Managers {
    let mut out = Managers::new();
    for entry in object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let op = match entry["operation"].as_str() {
            Some("Apply") => Operation::Apply,
            _ => Operation::Update,
        };
        let mut fields = FieldSet::new();
        decode(&entry["fieldsV1"], &mut Vec::new(), &mut fields);
        out.insert(
            (
                entry["manager"].as_str().unwrap_or_default().to_owned(),
                op,
                entry["subresource"].as_str().unwrap_or_default().to_owned(),
            ),
            Entry {
                api_version: entry["apiVersion"].as_str().unwrap_or_default().to_owned(),
                time: entry["time"].as_str().unwrap_or_default().to_owned(),
                fields,
            },
        );
    }
    out
}

fn decode(node: &Value, prefix: &mut Path, out: &mut FieldSet) {
    let Some(map) = node.as_object() else { return };
    let children: Vec<_> = map.iter().filter(|(k, _)| *k != ".").collect();
    if children.is_empty() && !prefix.is_empty() {
        out.insert(prefix.clone());
        return;
    }
    for (k, v) in children {
        let seg = if let Some(f) = k.strip_prefix("f:") {
            Seg::Field(f.to_owned())
        } else if let Some(key) = k.strip_prefix("k:") {
            let Ok(Value::Object(key)) = serde_json::from_str::<Value>(key) else {
                continue;
            };
            let Some((name, value)) = key.into_iter().next() else {
                continue;
            };
            Seg::Key(name, value.to_string())
        } else {
            continue;
        };
        prefix.push(seg);
        decode(v, prefix, out);
        prefix.pop();
    }
}

/// Writes `managers` into `metadata.managedFields`, stamping entries written now with `now`.
pub fn write(object: &mut Value, managers: &Managers, now: &str) {
    let entries: Vec<Value> = managers
        .iter()
        .map(|((name, op, subresource), entry)| {
            let mut tree = Map::new();
            for path in &entry.fields {
                encode(&mut tree, path);
            }
            let time = if entry.time.is_empty() {
                now
            } else {
                &entry.time
            };
            let mut out = json!({
                "manager": name,
                "operation": op.as_str(),
                "apiVersion": entry.api_version,
                "time": time,
                "fieldsType": "FieldsV1",
                "fieldsV1": tree,
            });
            if !subresource.is_empty() {
                out["subresource"] = json!(subresource);
            }
            out
        })
        .collect();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("managedFields".into(), Value::Array(entries));
    }
}

fn encode(node: &mut Map<String, Value>, path: &[Seg]) {
    let Some((seg, rest)) = path.split_first() else {
        return;
    };
    let key = match seg {
        Seg::Field(f) => format!("f:{f}"),
        Seg::Key(k, v) => {
            let value: Value = serde_json::from_str(v).unwrap_or(Value::Null);
            format!("k:{}", json!({ k: value }))
        }
    };
    let child = node.entry(key).or_insert_with(|| json!({}));
    if let Value::Object(map) = child {
        if matches!(seg, Seg::Key(..)) {
            map.insert(".".into(), json!({}));
        }
        encode(map, rest);
    }
}

#[cfg(test)]
mod tests;
