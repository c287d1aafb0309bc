use serde_json::json;

use super::*;

fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("object parses")
}

fn objects() -> (Vec<Service>, Vec<EndpointSlice>, Vec<ExportObject>) {
    let services = vec![
        from(json!({"metadata": {"name": "echo", "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 8080, "targetPort": "web"},
                               {"name": "dns", "port": 53, "protocol": "UDP"}]}})),
        from(json!({"metadata": {"name": "solo", "namespace": "default"},
            "spec": {"ports": [{"port": 80, "targetPort": 8081}]}})),
        from(
            json!({"metadata": {"name": "derived-x", "namespace": "default",
            "labels": {LABEL_MANAGED_BY: MANAGER}}, "spec": {"ports": [{"port": 1}]}}),
        ),
    ];
    let slices = vec![
        from(
            json!({"metadata": {"name": "echo-1", "namespace": "default",
                "labels": {LABEL_SLICE_SERVICE: "echo"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 18080}],
            "endpoints": [
                {"addresses": ["10.0.0.2"], "zone": "az1", "conditions": {"ready": false}},
                {"addresses": ["10.0.0.1"]}]}),
        ),
        from(json!({"metadata": {"name": "mine", "namespace": "default",
                "labels": {LABEL_SLICE_SERVICE: "echo", LABEL_SLICE_MANAGED_BY: MANAGER}},
            "addressType": "IPv4", "endpoints": [{"addresses": ["10.9.9.9"]}]})),
    ];
    let exports = vec![
        from(json!({"metadata": {"name": "echo", "namespace": "default",
            "creationTimestamp": "2026-01-02T03:04:05Z"}, "spec": {}})),
        // No spec (as the upstream MCS CRD has none), a status it cannot read: still an export.
        from(
            json!({"metadata": {"name": "ghost", "namespace": "default"},
            "status": {"conditions": "garbage"}}),
        ),
    ];
    (services, slices, exports)
}

#[test]
fn services_slices_and_exports_become_the_registry() {
    let (services, slices, exports) = objects();
    let r = registry(&services, &slices, &exports);
    let echo = &r.services[&ServiceKey::parse("echo.default").unwrap()];
    assert_eq!(
        echo.ports,
        [model::ServicePort {
            name: "http".into(),
            port: 8080,
            target_port: Some(18080)
        }],
        "UDP is left out; the named target port comes from the slice"
    );
    let addrs: Vec<(String, bool, Option<String>)> = echo
        .endpoints
        .iter()
        .map(|e| (e.address.to_string(), e.ready, e.zone.clone()))
        .collect();
    assert_eq!(
        addrs,
        [
            ("10.0.0.1".into(), true, None),
            ("10.0.0.2".into(), false, Some("az1".into()))
        ],
        "our own slices are not endpoints; a missing ready condition means ready"
    );
    let solo = &r.services[&ServiceKey::parse("solo.default").unwrap()];
    assert_eq!(solo.ports[0].name, "tcp-80");
    assert_eq!(solo.ports[0].target_port, Some(8081));
    assert!(
        !r.services
            .contains_key(&ServiceKey::parse("derived-x.default").unwrap())
    );
    let export = &r.exports[&ServiceKey::parse("echo.default").unwrap()];
    assert_eq!(export.created_at_ms, 1_767_323_045_000);
    assert_eq!(r.exports.len(), 2);
}

#[test]
fn conditions_say_valid_or_why_not_and_change_only_when_needed() {
    let (services, slices, exports) = objects();
    let r = registry(&services, &slices, &exports);
    let now: Time = from(json!("2026-01-01T00:00:00Z"));
    let later: Time = from(json!("2026-01-01T00:01:00Z"));
    let (imports, a) = (BTreeMap::new(), ClusterName::parse("a").unwrap());
    let [valid, _] = wanted_conditions(
        &r,
        &imports,
        &a,
        &ServiceKey::parse("echo.default").unwrap(),
    );
    assert_eq!((valid.status, valid.reason), ("True", "ServiceExported"));
    let [ghost, conflict] = wanted_conditions(
        &r,
        &imports,
        &a,
        &ServiceKey::parse("ghost.default").unwrap(),
    );
    assert_eq!((ghost.status, ghost.reason), ("False", "ServiceNotFound"));
    assert!(
        ghost.message.contains("no Service ghost"),
        "{}",
        ghost.message
    );
    assert_eq!(conflict.status, "False");

    let want = wanted_conditions(
        &r,
        &imports,
        &a,
        &ServiceKey::parse("echo.default").unwrap(),
    );
    let first = conditions_update(&[], &want, now.clone()).expect("new conditions");
    assert_eq!(first.len(), 2);
    assert_eq!(conditions_update(&first, &want, later.clone()), None);
    let invalid = conditions_update(&first, &[ghost], later.clone()).expect("changed");
    assert_eq!(invalid[0].last_transition_time, later);
}

#[test]
fn an_unreadable_export_status_reads_as_no_conditions() {
    let (_, _, exports) = objects();
    assert!(exports[1].conditions().is_empty());
    let ok: ExportObject = from(json!({"metadata": {"name": "x", "namespace": "d"},
        "status": {"conditions": [{"type": "Valid", "status": "True", "reason": "R",
            "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}));
    assert_eq!(ok.conditions()[0].type_, "Valid");
}
