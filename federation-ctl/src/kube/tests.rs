use super::*;

#[test]
fn crds_name_their_groups_kinds_and_scopes() {
    let names: Vec<_> = crds()
        .into_iter()
        .map(|crd| (crd.metadata.name.unwrap_or_default(), crd.spec.scope))
        .collect();
    assert_eq!(
        names,
        [
            (
                "serviceexports.multicluster.x-k8s.io".to_owned(),
                "Namespaced".to_owned()
            ),
            (
                "serviceimports.multicluster.x-k8s.io".to_owned(),
                "Namespaced".to_owned()
            ),
            (
                "clusterlinks.isthmus.dev".to_owned(),
                "Namespaced".to_owned()
            ),
        ]
    );
}

#[test]
fn crds_yaml_is_a_stream_of_three_documents_with_status_subresources() {
    let yaml = crds_yaml().expect("serializes");
    let docs: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("each document parses"))
        .collect();
    assert_eq!(docs.len(), 3);
    for doc in &docs {
        assert_eq!(doc["kind"], "CustomResourceDefinition");
        let version = &doc["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert!(version["subresources"]["status"].is_object(), "{doc}");
    }
    let import = &docs[1]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(
        import["properties"]["type"]["enum"],
        serde_json::json!(["ClusterSetIP", "Headless"])
    );
}

#[test]
fn a_service_export_needs_no_spec() {
    let yaml = crds_yaml().expect("serializes");
    let export: serde_json::Value = serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("each document parses"))
        .next()
        .expect("a first document");
    let schema = &export["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let required = schema["required"].as_array().cloned().unwrap_or_default();
    assert!(!required.iter().any(|f| f == "spec"), "{schema}");
}
