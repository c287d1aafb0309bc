use serde_json::json;

use super::*;

const NOW: &str = "2026-01-01T00:00:00Z";

fn store() -> (Store, ResourceType) {
    let s = Store::new(4, NOW);
    let rt = s.find("", "v1", "configmaps").cloned().expect("configmaps");
    (s, rt)
}

fn opts(manager: &str) -> WriteOptions {
    WriteOptions {
        manager: manager.into(),
        dry_run: false,
        force: false,
        orphan: false,
    }
}

fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "1"}})
}

#[test]
fn update_with_a_stale_resource_version_conflicts() {
    let (mut s, rt) = store();
    let created = s
        .create(&rt, "default", cm("x"), &opts("t"), NOW)
        .expect("create");
    let mut stale = created.clone();
    stale["data"]["a"] = json!("2");
    s.update(&rt, "default", "x", stale.clone(), false, &opts("t"), NOW)
        .expect("first update");
    let err = s
        .update(&rt, "default", "x", stale, false, &opts("t"), NOW)
        .expect_err("stale");
    assert_eq!(err.code, 409, "{err}");
}

#[test]
fn create_needs_the_namespace_and_refuses_duplicates() {
    let (mut s, rt) = store();
    assert_eq!(
        s.create(&rt, "nope", cm("x"), &opts("t"), NOW)
            .expect_err("no ns")
            .code,
        404
    );
    s.create(&rt, "default", cm("x"), &opts("t"), NOW)
        .expect("create");
    assert_eq!(
        s.create(&rt, "default", cm("x"), &opts("t"), NOW)
            .expect_err("dup")
            .code,
        409
    );
    let mut bad = cm("Bad_Name");
    bad["metadata"]["name"] = json!("Bad_Name");
    assert_eq!(
        s.create(&rt, "default", bad, &opts("t"), NOW)
            .expect_err("name")
            .code,
        422
    );
}

#[test]
fn finalizers_hold_deletion_until_removed() {
    let (mut s, rt) = store();
    let mut obj = cm("x");
    obj["metadata"]["finalizers"] = json!(["isthmus.dev/cleanup"]);
    s.create(&rt, "default", obj, &opts("t"), NOW)
        .expect("create");
    let marked = s
        .delete(&rt, "default", "x", None, &opts("t"), NOW)
        .expect("delete");
    assert_eq!(marked["metadata"]["deletionTimestamp"], NOW);
    assert!(s.get(&rt, "default", "x").is_ok());
    let patch = json!({"metadata": {"finalizers": null}});
    s.patch(
        &rt,
        "default",
        "x",
        PatchKind::Merge,
        &patch,
        false,
        &opts("t"),
        NOW,
    )
    .expect("patch");
    assert_eq!(s.get(&rt, "default", "x").expect_err("gone").code, 404);
}

#[test]
fn owner_references_cascade_and_history_is_bounded() {
    let (mut s, rt) = store();
    let owner = s
        .create(&rt, "default", cm("owner"), &opts("t"), NOW)
        .expect("owner");
    let mut dep = cm("dep");
    dep["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}]);
    s.create(&rt, "default", dep, &opts("t"), NOW)
        .expect("dependent");
    let rv_before = s.resource_version();
    s.delete(&rt, "default", "owner", None, &opts("t"), NOW)
        .expect("delete");
    assert_eq!(
        s.get(&rt, "default", "dep").expect_err("collected").code,
        404
    );
    let events = s.history_since(&rt, None, rv_before).expect("in history");
    assert_eq!(
        events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [EventKind::Deleted, EventKind::Deleted]
    );
    for i in 0..5 {
        s.create(&rt, "default", cm(&format!("n{i}")), &opts("t"), NOW)
            .expect("create");
    }
    assert_eq!(
        s.history_since(&rt, None, rv_before)
            .expect_err("compacted")
            .code,
        410
    );
}

#[test]
fn crds_register_and_unregister_kinds() {
    let mut s = Store::new(100, NOW);
    let crds = s
        .find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        .cloned()
        .expect("crds");
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"kind": "Widget", "plural": "widgets"},
                 "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}}}]}});
    let created = s.create(&crds, "", crd, &opts("t"), NOW).expect("crd");
    assert_eq!(created["status"]["conditions"][1]["type"], "Established");
    let widgets = s
        .find("example.com", "v1", "widgets")
        .cloned()
        .expect("served");
    s.create(
        &widgets,
        "default",
        json!({"metadata": {"name": "w"}, "status": {"x": 1}}),
        &opts("t"),
        NOW,
    )
    .expect("widget");
    assert!(
        s.get(&widgets, "default", "w")
            .expect("get")
            .get("status")
            .is_none()
    );
    s.delete(&crds, "", "widgets.example.com", None, &opts("t"), NOW)
        .expect("delete crd");
    assert!(s.find("example.com", "v1", "widgets").is_none());
    assert_eq!(s.get(&widgets, "default", "w").expect_err("gone").code, 404);
}

#[test]
fn malformed_bodies_are_refused_not_panicked_on() {
    let (mut s, _) = store();
    let svc = s.find("", "v1", "services").cloned().expect("services");
    for body in [
        json!({"metadata": {"name": "a"}, "spec": 5}),
        json!({"metadata": {"name": "a"}, "spec": {"ports": [7]}}),
        json!({"metadata": "a"}),
        json!([1, 2]),
        json!("text"),
    ] {
        let err = s
            .create(&svc, "default", body.clone(), &opts("t"), NOW)
            .expect_err("refused");
        assert!(matches!(err.code, 400 | 422), "{body}: {err}");
    }
    s.create(
        &svc,
        "default",
        json!({"metadata": {"name": "ok"}}),
        &opts("t"),
        NOW,
    )
    .expect("create");
    for (kind, patch) in [
        (PatchKind::Merge, json!("text")),
        (PatchKind::Strategic, json!({"metadata": 3})),
        (
            PatchKind::Json,
            json!([{"op": "replace", "path": "/metadata", "value": 1}]),
        ),
        (PatchKind::Apply, json!({"spec": {"ports": "x"}})),
    ] {
        let result = s.patch(&svc, "default", "ok", kind, &patch, false, &opts("t"), NOW);
        assert!(result.is_err() || kind == PatchKind::Apply, "{patch}");
    }
}

fn arbitrary_json() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-z$/.]{0,6}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            Just("metadata".to_owned()),
            Just("spec".to_owned()),
            Just("status".to_owned()),
            Just("name".to_owned()),
            Just("ports".to_owned()),
            Just("finalizers".to_owned()),
            Just("$patch".to_owned()),
            "[a-z]{1,4}",
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map(key, inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest::proptest! {
    /// Whatever a client sends, the store answers (an object or an error) and never panics.
    #[test]
    fn writes_never_panic(body in arbitrary_json(), patch in arbitrary_json()) {
        let (mut s, _) = store();
        let svc = s.find("", "v1", "services").cloned().expect("services");
        let _ = s.create(&svc, "default", body.clone(), &opts("t"), NOW);
        s.create(&svc, "default", json!({"metadata": {"name": "p"}}), &opts("t"), NOW).expect("create");
        for kind in [PatchKind::Merge, PatchKind::Strategic, PatchKind::Json, PatchKind::Apply] {
            let _ = s.patch(&svc, "default", "p", kind, &patch, false, &opts("m"), NOW);
            let _ = s.patch(&svc, "default", "p", kind, &body, true, &opts("m"), NOW);
        }
        let _ = s.update(&svc, "default", "p", body, false, &opts("t"), NOW);
    }
}
