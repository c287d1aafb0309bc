//! Writes: create, update (PUT), patch (merge, strategic, JSON, server-side apply) and delete
//! with finalizers, owner-reference garbage collection, namespace and CRD cascades.

use rand::Rng as _;
use serde_json::{Map, Value, json};

use super::{EventKind, Key, Store, key};
use crate::error::ApiError;
use crate::fields;
use crate::patch;
use crate::resource::{self, ResourceType};

/// Who writes and how.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// The field manager (`fieldManager`, else from the User-Agent).
    pub manager: String,
    /// `dryRun=All`: validate and answer, change nothing.
    pub dry_run: bool,
    /// `force=true` on an apply: take conflicting fields over.
    pub force: bool,
    /// `propagationPolicy=Orphan` on a delete: leave dependents.
    pub orphan: bool,
}

impl WriteOptions {
    /// The server's own writes.
    pub(crate) fn system() -> Self {
        Self {
            manager: "kube-standin".into(),
            dry_run: false,
            force: false,
            orphan: false,
        }
    }
}

/// The patch content types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json`
    Merge,
    /// `application/strategic-merge-patch+json`
    Strategic,
    /// `application/json-patch+json`
    Json,
    /// `application/apply-patch+yaml` (server-side apply)
    Apply,
}

impl PatchKind {
    /// The kind for a `Content-Type`, if supported.
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        match content_type.split(';').next().unwrap_or_default().trim() {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/json-patch+json" => Some(Self::Json),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object["metadata"][field].as_str().filter(|s| !s.is_empty())
}

/// The `metadata.finalizers` list is empty or absent.
fn no_finalizers(object: &Value) -> bool {
    object["metadata"]["finalizers"]
        .as_array()
        .is_none_or(Vec::is_empty)
}

/// Everything but metadata and status: what bumps `metadata.generation` when it changes.
fn spec_part(object: &Value) -> Value {
    let mut out = object.clone();
    if let Some(map) = out.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    out
}

impl Store {
    /// Checks `object` against the URL it came to and fills in apiVersion, kind and namespace.
    fn admit(
        &self,
        rt: &ResourceType,
        namespace: &str,
        object: &mut Value,
        must_exist_ns: bool,
    ) -> Result<(), ApiError> {
        let Some(map) = object.as_object_mut() else {
            return Err(ApiError::bad_request(
                "the request body must be a JSON or YAML object",
            ));
        };
        if let Some(kind) = map.get("kind").and_then(Value::as_str)
            && kind != rt.kind
        {
            return Err(ApiError::bad_request(format!(
                "the body is a {kind} but this URL serves {}: send it to the {kind} URL",
                rt.kind
            )));
        }
        if let Some(av) = map.get("apiVersion").and_then(Value::as_str) {
            let group = av.rsplit_once('/').map_or("", |(g, _)| g);
            if group != rt.group {
                return Err(ApiError::bad_request(format!(
                    "apiVersion {av:?} does not belong to group {:?} of this URL",
                    rt.group
                )));
            }
        }
        map.insert("apiVersion".into(), json!(rt.api_version()));
        map.insert("kind".into(), json!(rt.kind));
        let meta = map
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        let Some(meta) = meta.as_object_mut() else {
            return Err(ApiError::bad_request("metadata must be an object"));
        };
        if rt.namespaced {
            match meta.get("namespace").and_then(Value::as_str) {
                Some(ns) if !ns.is_empty() && ns != namespace => {
                    return Err(ApiError::bad_request(format!(
                        "the namespace of the object ({ns}) does not match the namespace on the request ({namespace})"
                    )));
                }
                _ => {}
            }
            meta.insert("namespace".into(), json!(namespace));
            if must_exist_ns && !self.objects.contains_key(&namespace_key(namespace)) {
                return Err(ApiError::not_found("namespaces", namespace));
            }
        } else {
            meta.remove("namespace");
        }
        Ok(())
    }

    /// `POST` to a collection.
    pub fn create(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        mut object: Value,
        opts: &WriteOptions,
        now: &str,
    ) -> Result<Value, ApiError> {
        self.admit(rt, namespace, &mut object, true)?;
        let managers = fields::update(
            &fields::Managers::new(),
            &json!({}),
            &object,
            &opts.manager,
            "",
        );
        self.insert_new(rt, namespace, object, managers, opts, now)
    }

    fn insert_new(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        mut object: Value,
        managers: fields::Managers,
        opts: &WriteOptions,
        now: &str,
    ) -> Result<Value, ApiError> {
        if meta_str(&object, "name").is_none() {
            let Some(prefix) = meta_str(&object, "generateName").map(str::to_owned) else {
                return Err(ApiError::invalid(format!(
                    "{} needs metadata.name (or metadata.generateName)",
                    rt.kind
                )));
            };
            let suffix: String = (0..5)
                .map(|_| {
                    char::from(b"bcdfghjklmnpqrstvwxz2456789"[rand::rng().random_range(0..27)])
                })
                .collect();
            object["metadata"]["name"] = json!(format!("{prefix}{suffix}"));
        }
        let name = meta_str(&object, "name").unwrap_or_default().to_owned();
        if !valid_name(&name) {
            return Err(ApiError::invalid(format!(
                "metadata.name {name:?} is invalid: lowercase letters, digits, '-' and '.', starting and ending alphanumeric, at most 253 characters"
            )));
        }
        let key = key(rt, namespace, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(&rt.plural, &name));
        }
        let uid = new_uid();
        let meta = &mut object["metadata"];
        meta["uid"] = json!(uid);
        meta["creationTimestamp"] = json!(now);
        meta["generation"] = json!(1);
        if let Some(m) = meta.as_object_mut() {
            m.remove("deletionTimestamp");
            m.remove("resourceVersion");
        }
        if rt.status_subresource
            && rt.crd.is_some()
            && let Some(m) = object.as_object_mut()
        {
            m.remove("status");
        }
        self.defaults(rt, &mut object, now)?;
        fields::write(&mut object, &managers, now);
        if opts.dry_run {
            return Ok(object);
        }
        if rt.crd.is_none() && rt.plural == "customresourcedefinitions" {
            self.register_crd(&object)?;
        }
        Ok(self.commit(key, EventKind::Added, object))
    }

    /// Server-side defaults and validation of the kinds that have them.
    fn defaults(
        &mut self,
        rt: &ResourceType,
        object: &mut Value,
        now: &str,
    ) -> Result<(), ApiError> {
        match (rt.group.as_str(), rt.plural.as_str()) {
            ("", "services") => {
                if !object["spec"].is_null() && !object["spec"].is_object() {
                    return Err(ApiError::invalid("spec of a Service must be an object"));
                }
                let spec = &mut object["spec"];
                if spec["type"].is_null() {
                    spec["type"] = json!("ClusterIP");
                }
                if spec["sessionAffinity"].is_null() {
                    spec["sessionAffinity"] = json!("None");
                }
                if spec["clusterIP"].is_null() && spec["type"] != "ExternalName" {
                    let ip = self.allocate_cluster_ip();
                    spec["clusterIP"] = json!(ip);
                    spec["clusterIPs"] = json!([ip]);
                }
                for (i, port) in spec["ports"]
                    .as_array_mut()
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    let Some(port) = port.as_object_mut() else {
                        return Err(ApiError::invalid(format!(
                            "spec.ports[{i}] must be an object with port (and name, protocol, targetPort)"
                        )));
                    };
                    port.entry("protocol").or_insert_with(|| json!("TCP"));
                    let number = port.get("port").cloned().unwrap_or(Value::Null);
                    port.entry("targetPort").or_insert(number);
                }
                if object["status"].is_null() {
                    object["status"] = json!({"loadBalancer": {}});
                }
            }
            ("", "namespaces") => object["status"] = json!({"phase": "Active"}),
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                resource::from_crd(object).map_err(ApiError::invalid)?;
                object["status"] = resource::crd_status(object, now);
            }
            _ => {}
        }
        Ok(())
    }

    /// `PUT` to an object (`status`: to its `/status` subresource).
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        mut object: Value,
        status: bool,
        opts: &WriteOptions,
        now: &str,
    ) -> Result<Value, ApiError> {
        self.admit(rt, namespace, &mut object, false)?;
        let old = self.current(rt, namespace, name)?;
        check_name(&object, name)?;
        check_precondition(rt, &object, &old, name)?;
        self.replace(rt, namespace, name, old, object, status, None, opts, now)
    }

    /// `PATCH` to an object.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        kind: PatchKind,
        body: &Value,
        status: bool,
        opts: &WriteOptions,
        now: &str,
    ) -> Result<Value, ApiError> {
        let subresource = if status { "status" } else { "" };
        if kind == PatchKind::Apply {
            let mut applied = body.clone();
            self.admit(rt, namespace, &mut applied, true)?;
            check_name(&applied, name)?;
            if meta_str(&applied, "name").is_none() {
                applied["metadata"]["name"] = json!(name);
            }
            restrict(rt, &mut applied, status);
            let (old, managers) = match self.objects.get(&key(rt, namespace, name)) {
                Some(old) => (old.clone(), fields::read(old)),
                None if status => return Err(ApiError::not_found(&rt.plural, name)),
                None => (json!({}), fields::Managers::new()),
            };
            if !old["metadata"].is_null() {
                check_precondition(rt, &applied, &old, name)?;
            }
            let (new, managers) = fields::apply(
                &old,
                &managers,
                &applied,
                &opts.manager,
                subresource,
                opts.force,
            )
            .map_err(|conflicts| apply_conflict(rt, name, &conflicts))?;
            if old["metadata"].is_null() {
                return self.insert_new(rt, namespace, new, managers, opts, now);
            }
            return self.replace(
                rt,
                namespace,
                name,
                old,
                new,
                status,
                Some(managers),
                opts,
                now,
            );
        }
        let old = self.current(rt, namespace, name)?;
        let mut new = old.clone();
        match kind {
            PatchKind::Merge => patch::merge_patch(&mut new, body),
            PatchKind::Strategic => patch::strategic_merge_patch(&mut new, body)
                .map_err(|e| ApiError::bad_request(e.0))?,
            PatchKind::Json | PatchKind::Apply => {
                patch::json_patch(&mut new, body).map_err(|e| ApiError::invalid(e.0))?;
            }
        }
        self.admit(rt, namespace, &mut new, false)?;
        check_name(&new, name)?;
        if kind != PatchKind::Json {
            // A resourceVersion in a merge patch is a precondition, as on the API server.
            check_precondition(rt, body, &old, name)?;
        }
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        self.replace(rt, namespace, name, old, new, status, None, opts, now)
    }

    fn current(&self, rt: &ResourceType, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&key(rt, namespace, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&rt.plural, name))
    }

    /// The common end of update and patch: server fields kept, status split, generation,
    /// managed fields, then committed (or removed, when the last finalizer of an object being
    /// deleted went away).
    #[allow(clippy::too_many_arguments)]
    fn replace(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        old: Value,
        mut new: Value,
        status: bool,
        managers: Option<fields::Managers>,
        opts: &WriteOptions,
        now: &str,
    ) -> Result<Value, ApiError> {
        if status {
            let mut only_status = old.clone();
            only_status["status"] = new["status"].clone();
            new = only_status;
        } else if rt.status_subresource {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match old["metadata"].get(field) {
                Some(v) => new["metadata"][field] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(field);
                    }
                }
            }
        }
        if spec_part(&old) != spec_part(&new) {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
            new["metadata"]["generation"] = json!(generation + 1);
        }
        let subresource = if status { "status" } else { "" };
        let managers = managers.unwrap_or_else(|| {
            fields::update(&fields::read(&old), &old, &new, &opts.manager, subresource)
        });
        fields::write(&mut new, &managers, now);
        if rt.plural == "customresourcedefinitions" && rt.crd.is_none() {
            resource::from_crd(&new).map_err(ApiError::invalid)?;
            new["status"] = resource::crd_status(&new, now);
        }
        let key = key(rt, namespace, name);
        let unchanged = {
            let mut a = old.clone();
            let mut b = new.clone();
            for v in [&mut a, &mut b] {
                if let Some(m) = v["metadata"].as_object_mut() {
                    m.remove("managedFields");
                    m.remove("resourceVersion");
                }
            }
            a == b
        };
        if opts.dry_run || unchanged {
            // A no-op write does not bump the resourceVersion, as on the API server.
            return Ok(if unchanged { old } else { new });
        }
        if rt.plural == "customresourcedefinitions" && rt.crd.is_none() {
            self.register_crd(&new)?;
        }
        let deleting = !new["metadata"]["deletionTimestamp"].is_null();
        if deleting && no_finalizers(&new) {
            return Ok(self.remove_cascading(key, new, false, now));
        }
        Ok(self.commit(key, EventKind::Modified, new))
    }

    /// `DELETE` of one object.
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        precondition_rv: Option<&str>,
        opts: &WriteOptions,
        now: &str,
    ) -> Result<Value, ApiError> {
        let old = self.current(rt, namespace, name)?;
        if let Some(rv) = precondition_rv
            && meta_str(&old, "resourceVersion") != Some(rv)
        {
            return Err(ApiError::conflict(
                &rt.plural,
                name,
                "the resourceVersion in the precondition does not match the object's",
            ));
        }
        if opts.dry_run {
            return Ok(old);
        }
        let key = key(rt, namespace, name);
        if !no_finalizers(&old) {
            if !old["metadata"]["deletionTimestamp"].is_null() {
                return Ok(old);
            }
            let mut marked = old;
            marked["metadata"]["deletionTimestamp"] = json!(now);
            marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            return Ok(self.commit(key, EventKind::Modified, marked));
        }
        Ok(self.remove_cascading(key, old, opts.orphan, now))
    }

    /// Removes an object, then what depended on it: a namespace's objects, a CRD's objects and
    /// kinds, and (unless orphaned) objects whose every owner is gone. Dependents with
    /// finalizers are marked for deletion instead.
    fn remove_cascading(&mut self, key: Key, object: Value, orphan: bool, now: &str) -> Value {
        let removed = self.commit(key, EventKind::Deleted, object);
        let mut queue = vec![removed.clone()];
        while let Some(gone) = queue.pop() {
            let mut dependents: Vec<Key> = Vec::new();
            if gone["kind"] == "Namespace" {
                let ns = meta_str(&gone, "name").unwrap_or_default();
                dependents.extend(self.objects.keys().filter(|k| k.2 == ns).cloned());
            }
            if gone["kind"] == "CustomResourceDefinition" {
                let name = meta_str(&gone, "name").unwrap_or_default().to_owned();
                self.types
                    .retain(|t| t.crd.as_deref() != Some(name.as_str()));
                let (plural, group) = name.split_once('.').unwrap_or_default();
                dependents.extend(
                    self.objects
                        .keys()
                        .filter(|k| k.0 == group && k.1 == plural)
                        .cloned(),
                );
            }
            if !orphan && let Some(uid) = meta_str(&gone, "uid") {
                dependents.extend(self.orphans_of(uid));
            }
            for key in dependents {
                let Some(dependent) = self.objects.get(&key).cloned() else {
                    continue;
                };
                if no_finalizers(&dependent) {
                    queue.push(self.commit(key, EventKind::Deleted, dependent));
                } else if dependent["metadata"]["deletionTimestamp"].is_null() {
                    let mut marked = dependent;
                    marked["metadata"]["deletionTimestamp"] = json!(now);
                    self.commit(key, EventKind::Modified, marked);
                }
            }
        }
        removed
    }

    /// Objects that name `uid` as an owner and have no other owner still present.
    fn orphans_of(&self, uid: &str) -> Vec<Key> {
        let live: std::collections::BTreeSet<&str> = self
            .objects
            .values()
            .filter_map(|o| meta_str(o, "uid"))
            .collect();
        self.objects
            .iter()
            .filter(|(_, o)| {
                let owners = o["metadata"]["ownerReferences"].as_array();
                let uids: Vec<&str> = owners
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r["uid"].as_str())
                    .collect();
                uids.contains(&uid) && uids.iter().all(|u| !live.contains(u))
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn register_crd(&mut self, crd: &Value) -> Result<(), ApiError> {
        let types = resource::from_crd(crd).map_err(ApiError::invalid)?;
        let name = meta_str(crd, "name").unwrap_or_default().to_owned();
        if let Some(clash) = self.types.iter().find(|t| {
            t.crd.as_deref() != Some(name.as_str())
                && types
                    .iter()
                    .any(|n| n.group == t.group && n.plural == t.plural)
        }) {
            return Err(ApiError::invalid(format!(
                "{}.{} is already served",
                clash.plural, clash.group
            )));
        }
        self.types
            .retain(|t| t.crd.as_deref() != Some(name.as_str()));
        self.types.extend(types);
        Ok(())
    }
}

fn namespace_key(namespace: &str) -> Key {
    (
        String::new(),
        "namespaces".into(),
        String::new(),
        namespace.to_owned(),
    )
}

fn check_name(object: &Value, name: &str) -> Result<(), ApiError> {
    match meta_str(object, "name") {
        Some(n) if n != name => Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        ))),
        _ => Ok(()),
    }
}

/// Optimistic concurrency: a resourceVersion in the body must be the object's current one.
fn check_precondition(
    rt: &ResourceType,
    body: &Value,
    old: &Value,
    name: &str,
) -> Result<(), ApiError> {
    match meta_str(body, "resourceVersion") {
        Some(rv) if Some(rv) != meta_str(old, "resourceVersion") => Err(ApiError::conflict(
            &rt.plural,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )),
        _ => Ok(()),
    }
}

/// What an apply may set: not status on the main resource of a kind with a status
/// subresource, only status on `/status`.
fn restrict(rt: &ResourceType, applied: &mut Value, status: bool) {
    let Some(map) = applied.as_object_mut() else {
        return;
    };
    if status {
        map.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"));
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.retain(|k, _| matches!(k.as_str(), "name" | "namespace"));
        }
    } else if rt.status_subresource {
        map.remove("status");
    }
    if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
}

fn apply_conflict(rt: &ResourceType, name: &str, conflicts: &[fields::Conflict]) -> ApiError {
    let list: Vec<String> = conflicts
        .iter()
        .map(|c| format!("conflict with {:?}: {}", c.manager, c.field))
        .collect();
    let mut error = ApiError::conflict(
        &rt.plural,
        name,
        &format!(
            "Apply failed with {} conflict(s): {}; re-apply with force (kubectl --force-conflicts) to take them over, or stop setting them",
            conflicts.len(),
            list.join(", ")
        ),
    );
    error.details = Some(json!({
        "name": name,
        "kind": rt.plural,
        "causes": conflicts.iter().map(|c| json!({
            "type": "FieldManagerConflict",
            "message": format!("conflict with {:?}", c.manager),
            "field": c.field,
        })).collect::<Vec<_>>(),
    }));
    error
}

fn new_uid() -> String {
    let b: [u8; 16] = rand::rng().random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}
