use std::collections::BTreeSet;

use super::*;
use crate::model::{ClusterName, ImportSource, ServicePort};

fn view() -> ImportsView {
    let key = ServiceKey::parse("echo.shop").unwrap();
    let source = |cluster: &str, ready, ports: &[&str]| ImportSource {
        cluster: ClusterName::parse(cluster).unwrap(),
        priority: 0,
        ready_endpoints: ready,
        zones: BTreeSet::new(),
        exported_at_ms: 0,
        ports: ports.iter().map(|p| ServicePort::new(*p, 80)).collect(),
    };
    let import = ImportedService {
        key: key.clone(),
        ports: vec![
            ServicePort::new("http", 80),
            ServicePort::new("admin", 9000),
        ],
        sources: vec![
            source("b", 2, &["http", "admin"]),
            source("c", 0, &["http"]),
        ],
    };
    ImportsView {
        imports: [(key.clone(), import)].into(),
        // `admin` has no egress port (the range was full): it is left out.
        egress: [((key, "http".to_owned()), 15100)].into(),
    }
}

#[test]
fn an_import_becomes_a_service_import_a_derived_service_and_a_slice_per_cluster() {
    let selector = [("app".to_owned(), "isthmus-gateway".to_owned())].into();
    let all = derive_all(&view(), &selector, "10.0.0.7".parse().unwrap());
    let d = &all[&ServiceKey::parse("echo.shop").unwrap()];
    let si = &d.service_import;
    assert_eq!(si["metadata"]["finalizers"], json!([FINALIZER]));
    assert_eq!(si["spec"]["type"], "ClusterSetIP");
    assert_eq!(
        si["spec"]["ports"],
        json!([{"name": "http", "protocol": "TCP", "port": 80}])
    );
    assert_eq!(
        d.service_import_status["status"]["clusters"],
        json!([{"cluster": "b"}, {"cluster": "c"}])
    );
    assert_eq!(d.service_name, "derived-echo");
    assert_eq!(
        d.service["spec"]["selector"],
        json!({"app": "isthmus-gateway"})
    );
    assert_eq!(d.service["spec"]["ports"][0]["targetPort"], 15100);
    let names: Vec<&str> = d.slices.keys().map(String::as_str).collect();
    assert_eq!(names, ["derived-echo-b", "derived-echo-c"]);
    let c = &d.slices["derived-echo-c"];
    assert_eq!(c["metadata"]["labels"][LABEL_SOURCE_CLUSTER], "c");
    assert_eq!(c["metadata"]["labels"][LABEL_SERVICE_NAME], "echo");
    assert_eq!(c["metadata"]["labels"][LABEL_SLICE_SERVICE], "derived-echo");
    assert_eq!(c["metadata"]["labels"][LABEL_SLICE_MANAGED_BY], MANAGER);
    assert_eq!(c["endpoints"][0]["addresses"], json!(["10.0.0.7"]));
    assert_eq!(
        c["endpoints"][0]["conditions"]["ready"], false,
        "c has no ready endpoint"
    );
    assert_eq!(
        c["ports"],
        json!([{"name": "http", "protocol": "TCP", "port": 15100}])
    );
    let owned = owned_by(d.service.clone(), "echo", "uid-1");
    assert_eq!(owned["metadata"]["ownerReferences"][0]["uid"], "uid-1");
    assert_eq!(
        owned["metadata"]["ownerReferences"][0]["kind"],
        "ServiceImport"
    );
}

#[test]
fn long_names_are_shortened_to_a_label_with_a_hash() {
    let long = "a".repeat(60);
    let name = object_name(&["derived", &long, "cluster"]);
    assert!(name.len() <= 63, "{name}");
    assert_ne!(name, object_name(&["derived", &long, "other"]));
    assert_eq!(object_name(&["derived", "echo"]), "derived-echo");
}
