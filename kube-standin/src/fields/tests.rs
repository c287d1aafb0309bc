use serde_json::json;

use super::*;

fn svc(port: u16, label: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "s", "labels": {"team": label}},
           "spec": {"ports": [{"name": "http", "port": port}]}})
}

/// Alice's apply to an empty object.
fn alice_first() -> Result<(Value, Managers), Vec<Conflict>> {
    apply(
        &json!({}),
        &Managers::new(),
        &svc(80, "a"),
        "alice",
        "",
        false,
    )
}

#[test]
fn second_manager_conflicts_unless_forced() {
    let (obj, m) = alice_first().expect("first apply");
    let err = apply(&obj, &m, &svc(81, "a"), "bob", "", false).expect_err("conflict");
    assert_eq!(
        err,
        vec![Conflict {
            manager: "alice".into(),
            field: r#".spec.ports[name="http"].port"#.into()
        }]
    );
    // The same values are shared ownership, not a conflict.
    let (_, shared) = apply(&obj, &m, &svc(80, "a"), "bob", "", false).expect("same values");
    assert_eq!(shared.len(), 2);
    let (obj, m) = apply(&obj, &m, &svc(81, "a"), "bob", "", true).expect("forced");
    assert_eq!(obj["spec"]["ports"][0]["port"], 81);
    let alice = &m[&("alice".to_owned(), Operation::Apply, String::new())];
    assert!(!alice.fields.iter().any(|p| display(p).ends_with(".port")));
}

#[test]
fn dropped_fields_are_removed_and_managed_fields_round_trip() {
    let (obj, m) = alice_first().expect("apply");
    let mut less = svc(80, "a");
    if let Some(meta) = less["metadata"].as_object_mut() {
        meta.remove("labels");
    }
    less["spec"] = json!({});
    let (obj, m) = apply(&obj, &m, &less, "alice", "", false).expect("apply less");
    assert_eq!(obj["spec"].get("ports"), None, "{obj}");
    assert_eq!(obj["metadata"].get("labels"), None, "{obj}");
    let mut written = obj.clone();
    write(&mut written, &m, "2026-01-01T00:00:00Z");
    assert_eq!(
        read(&written).keys().collect::<Vec<_>>(),
        m.keys().collect::<Vec<_>>()
    );
}

#[test]
fn updates_take_the_fields_they_change() {
    let (obj, m) = alice_first().expect("apply");
    let new = svc(82, "a");
    let m = update(&m, &obj, &new, "kubectl-edit", "");
    let editor = &m[&("kubectl-edit".to_owned(), Operation::Update, String::new())];
    assert_eq!(editor.fields.len(), 1);
    let err =
        apply(&new, &m, &svc(80, "a"), "alice", "", false).expect_err("conflict with the editor");
    assert_eq!(err[0].manager, "kubectl-edit", "");
}
