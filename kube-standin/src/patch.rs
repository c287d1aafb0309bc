//! Patch formats: JSON merge patch (RFC 7386), the strategic merge patch kubectl sends for
//! built-in kinds (a subset: lists of objects merge by their merge key, `$patch` directives,
//! `$deleteFromPrimitiveList`), and JSON patch (RFC 6902: add, remove, replace, test).

use serde_json::{Map, Value};

/// A patch that cannot be applied, worded for the client.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PatchError(pub String);

/// RFC 7386: objects merge, `null` removes, everything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target) = target else {
        return;
    };
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// The key list elements of `items` merge on: the first of the usual merge keys that every
/// element (directives included) carries.
pub(crate) fn merge_key(items: &[Value]) -> Option<&'static str> {
    const KEYS: &[&str] = &[
        "name",
        "containerPort",
        "port",
        "mountPath",
        "devicePath",
        "ip",
        "type",
    ];
    if items.is_empty() || !items.iter().all(Value::is_object) {
        return None;
    }
    KEYS.iter().copied().find(|key| {
        items
            .iter()
            .all(|i| i.get(*key).is_some_and(|v| !v.is_null()))
    })
}

/// A strategic merge patch, as kubectl's client-side apply and `kubectl patch` send.
pub fn strategic_merge_patch(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return Ok(());
    };
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = patch.clone();
        replaced.remove("$patch");
        *target = Value::Object(replaced);
        return Ok(());
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target) = target else {
        return Ok(());
    };
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            let gone = value.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(list)) = target.get_mut(field) {
                list.retain(|v| !gone.contains(v));
            }
            continue;
        }
        if key.starts_with('$') {
            // `$setElementOrder/…`, `$retainKeys`: ordering and pruning hints we do not need.
            continue;
        }
        if value.is_null() {
            target.remove(key);
            continue;
        }
        let slot = target.entry(key.clone()).or_insert(Value::Null);
        match (slot, value) {
            (Value::Array(current), Value::Array(items)) => merge_list(current, items)?,
            (slot, value @ Value::Object(_)) => strategic_merge_patch(slot, value)?,
            (slot, value) => *slot = value.clone(),
        }
    }
    Ok(())
}

fn merge_list(current: &mut Vec<Value>, items: &[Value]) -> Result<(), PatchError> {
    let Some(key) = merge_key(items).or_else(|| merge_key(current)) else {
        *current = items.to_vec();
        return Ok(());
    };
    for item in items {
        let Some(id) = item.get(key) else {
            return Err(PatchError(format!(
                "list element {item} has no merge key {key:?}"
            )));
        };
        let at = current.iter().position(|c| c.get(key) == Some(id));
        let directive = item.get("$patch").and_then(Value::as_str);
        match (at, directive) {
            (Some(i), Some("delete")) => {
                current.remove(i);
            }
            (None, Some("delete")) => {}
            (Some(i), _) => strategic_merge_patch(&mut current[i], item)?,
            (None, _) => {
                let mut fresh = Value::Object(Map::new());
                strategic_merge_patch(&mut fresh, item)?;
                current.push(fresh);
            }
        }
    }
    Ok(())
}

fn pointer_parts(pointer: &str) -> Result<Vec<String>, PatchError> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer
        .strip_prefix('/')
        .ok_or_else(|| PatchError(format!("JSON pointer {pointer:?} must start with '/'")))?;
    Ok(rest
        .split('/')
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect())
}

/// RFC 6902 JSON patch: `add`, `remove`, `replace` and `test`.
pub fn json_patch(target: &mut Value, ops: &Value) -> Result<(), PatchError> {
    let ops = ops
        .as_array()
        .ok_or_else(|| PatchError("a JSON patch is an array of operations".into()))?;
    for op in ops {
        let path = op["path"]
            .as_str()
            .ok_or_else(|| PatchError(format!("operation {op} has no path")))?;
        let mut parts = pointer_parts(path)?;
        let verb = op["op"].as_str().unwrap_or_default();
        if verb == "test" {
            if target.pointer(path) != Some(&op["value"]) {
                return Err(PatchError(format!("test of {path} failed")));
            }
            continue;
        }
        let Some(last) = parts.pop() else {
            return Err(PatchError(format!("cannot {verb} the whole object")));
        };
        let parent_ptr: String = parts
            .iter()
            .map(|p| format!("/{}", p.replace('~', "~0").replace('/', "~1")))
            .collect();
        let parent = target
            .pointer_mut(&parent_ptr)
            .ok_or_else(|| PatchError(format!("{path}: parent does not exist")))?;
        match (verb, parent) {
            ("add" | "replace", Value::Object(map)) => {
                if verb == "replace" && !map.contains_key(&last) {
                    return Err(PatchError(format!("replace {path}: no such field")));
                }
                map.insert(last, op["value"].clone());
            }
            ("remove", Value::Object(map)) => {
                map.remove(&last)
                    .ok_or_else(|| PatchError(format!("remove {path}: no such field")))?;
            }
            (verb, Value::Array(list)) => {
                let index = if last == "-" {
                    list.len()
                } else {
                    last.parse::<usize>()
                        .map_err(|_| PatchError(format!("{path}: bad array index")))?
                };
                let in_range = index < list.len() || (verb == "add" && index == list.len());
                if !in_range {
                    return Err(PatchError(format!("{path}: index out of range")));
                }
                match verb {
                    "add" => list.insert(index, op["value"].clone()),
                    "replace" => list[index] = op["value"].clone(),
                    "remove" => {
                        list.remove(index);
                    }
                    other => return Err(PatchError(format!("unsupported op {other:?}"))),
                }
            }
            (other, _) => {
                return Err(PatchError(format!(
                    "unsupported op {other:?} at {path} (add, remove, replace, test)"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_removes_nulls_and_replaces_lists() {
        let mut t = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        merge_patch(&mut t, &json!({"a": {"b": null, "d": 3}, "l": [3]}));
        assert_eq!(t, json!({"a": {"c": 2, "d": 3}, "l": [3]}));
    }

    #[test]
    fn strategic_merges_lists_by_key_and_honours_directives() {
        let mut t = json!({"spec": {"ports": [{"name": "a", "port": 1}, {"name": "b", "port": 2}],
                                    "finalizers": ["x", "y"]}});
        let p = json!({"spec": {
            "$setElementOrder/ports": [{"name": "a"}, {"name": "c"}],
            "ports": [{"name": "a", "port": 10}, {"name": "b", "$patch": "delete"}, {"name": "c", "port": 3}],
            "$deleteFromPrimitiveList/finalizers": ["x"]}});
        strategic_merge_patch(&mut t, &p).expect("applies");
        assert_eq!(
            t,
            json!({"spec": {"ports": [{"name": "a", "port": 10}, {"name": "c", "port": 3}], "finalizers": ["y"]}})
        );
    }

    #[test]
    fn json_patch_ops() {
        let mut t = json!({"metadata": {"finalizers": ["a"]}});
        json_patch(
            &mut t,
            &json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "a"},
                    {"op": "add", "path": "/metadata/finalizers/-", "value": "b"},
                    {"op": "remove", "path": "/metadata/finalizers/0"}]),
        )
        .expect("applies");
        assert_eq!(t, json!({"metadata": {"finalizers": ["b"]}}));
        assert!(
            json_patch(
                &mut t,
                &json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "a"}])
            )
            .is_err()
        );
    }
}
