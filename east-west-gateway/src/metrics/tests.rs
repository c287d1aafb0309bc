use super::*;

#[test]
fn cluster_labels_are_the_configs_names_other_or_unknown() {
    let config = crate::config::parse(
        "
cluster: aws
tls: { cert_chain: a.pem, private_key: a.key, trust_bundle: b.json }
routes:
  - name: r
    hosts: [r.example]
    mode: terminate
    authorize: { clusters: [gcp] }
    endpoints: [{ address: 127.0.0.1:9 }]
egress:
  - name: e
    listen: 127.0.0.1:0
    service: { name: s, namespace: n, port: 1 }
    cluster: onprem
    trust_domain: onprem.example
    gateways: [{ address: '10.0.0.1:1' }, { address: '10.0.0.2:1', cluster: azure }]
",
    )
    .expect("valid");
    let labels = ClusterLabels::from_config(&config);
    for name in ["aws", "gcp", "onprem", "azure"] {
        assert_eq!(labels.label(Some(name)), name);
    }
    assert_eq!(labels.label(Some("mallory")), OTHER);
    assert_eq!(labels.label(Some("")), UNKNOWN);
    assert_eq!(labels.label(None), UNKNOWN);
}

#[test]
fn the_certificate_expiry_appears_once_a_certificate_is_in_force() {
    let metrics = Metrics::new();
    assert!(!metrics.encode().contains("certificate_expiry"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    metrics
        .certificate_expiry
        .set(i64::try_from(now).expect("now") + 3600);
    let text = metrics.encode();
    let line = text
        .lines()
        .find(|l| l.starts_with("federation_gateway_certificate_expiry_seconds "))
        .unwrap_or_else(|| panic!("gauge missing:\n{text}"));
    let value: i64 = line
        .rsplit(' ')
        .next()
        .expect("value")
        .parse()
        .expect("int");
    assert!((3590..=3600).contains(&value), "{line}");
    assert!(text.contains("# TYPE federation_gateway_certificate_expiry_seconds gauge"));
}
