use std::collections::BTreeSet;

use super::*;
use crate::model::{
    Endpoint, ExportedService, Lease, LocalExport, LocalService, PeerImports, ServicePort,
    merge_imports,
};

fn key(s: &str) -> ServiceKey {
    ServiceKey::parse(s).unwrap()
}

fn cluster(s: &str) -> ClusterName {
    ClusterName::parse(s).unwrap()
}

fn peer(name: &str, gateways: &[&str]) -> Peer {
    Peer {
        cluster: cluster(name),
        trust_domain: format!("{name}.example"),
        gateway_addresses: gateways.iter().map(|g| (*g).to_owned()).collect(),
        gateway_spiffe_ids: vec![format!(
            "spiffe://{name}.example/isthmus/cluster/{name}/gateway"
        )],
    }
}

fn registry() -> Registry {
    let mut reg = Registry::default();
    let echo = key("echo.default");
    let mut port = ServicePort::new("http", 8080);
    port.target_port = Some(18080);
    reg.services.insert(
        echo.clone(),
        LocalService {
            key: echo.clone(),
            ports: vec![port],
            endpoints: vec![
                Endpoint {
                    address: "127.0.0.3".parse().unwrap(),
                    ready: true,
                    zone: None,
                    weight: 2,
                },
                Endpoint {
                    address: "127.0.0.4".parse().unwrap(),
                    ready: false,
                    zone: None,
                    weight: 1,
                },
            ],
        },
    );
    reg.exports.insert(
        echo.clone(),
        LocalExport {
            key: echo,
            to: ExportTo::Peers([cluster("gcp")].into()),
            created_at_ms: 1,
        },
    );
    reg
}

#[test]
fn exports_become_terminate_routes_for_allowed_peers_only() {
    let peers = [peer("gcp", &["127.0.0.5:15443"]), peer("onprem", &[])];
    let (routes, egress) = build(
        &registry(),
        &peers,
        &BTreeMap::new(),
        "127.0.0.1".parse().unwrap(),
        &|_, _| None,
    );
    assert!(egress.is_empty());
    assert_eq!(routes.len(), 1);
    let r = &routes[0];
    assert_eq!(r.name, "echo-default-8080");
    assert_eq!(r.mode, "terminate");
    assert_eq!(r.services[0].port, 8080);
    // Only the ready endpoint, on the target port.
    assert_eq!(r.endpoints.len(), 1);
    assert_eq!(r.endpoints[0].address, "127.0.0.3:18080");
    assert_eq!(r.endpoints[0].weight, 2);
    assert_eq!(
        r.authorize.as_ref().unwrap().spiffe_ids,
        ["spiffe://gcp.example/isthmus/cluster/gcp/gateway"]
    );
}

#[test]
fn an_export_no_linked_peer_may_see_has_no_route() {
    let (routes, _) = build(
        &registry(),
        &[peer("onprem", &["127.0.0.9:15443"])],
        &BTreeMap::new(),
        "127.0.0.1".parse().unwrap(),
        &|_, _| None,
    );
    assert!(routes.is_empty());
}

fn exported(k: &str, port: u16, at: i64) -> ExportedService {
    ExportedService {
        key: key(k),
        ports: vec![ServicePort::new("http", port)],
        ready_endpoints: 1,
        total_endpoints: 1,
        zones: BTreeSet::new(),
        exported_at_ms: at,
    }
}

#[test]
fn imports_become_listeners_with_one_priority_level_per_cluster() {
    let lease = Lease {
        heartbeat_interval_ms: 1000,
        missed_allowed: 3,
    };
    let from = |name: &str, priority, port, at| {
        PeerImports::restore(
            cluster(name),
            priority,
            1,
            vec![exported("echo.default", port, at)],
            0,
        )
    };
    // edge's port definition conflicts with the older ones: it serves no gateway.
    let (imports, conflicts) = merge_imports(
        &[
            from("gcp", 0, 8080, 10),
            from("onprem", 1, 8080, 11),
            from("edge", 2, 9999, 20),
        ],
        lease,
        0,
    );
    assert_eq!(conflicts.len(), 1);
    let peers = [
        peer("gcp", &["127.0.0.5:15443", "gw.gcp.example:15443"]),
        peer("onprem", &["127.0.0.6:15443"]),
        peer("edge", &["127.0.0.7:15443"]),
    ];
    let (_, egress) = build(
        &Registry::default(),
        &peers,
        &imports,
        "127.0.0.1".parse().unwrap(),
        &|k, p| (k == &key("echo.default") && p == "http").then_some(15100),
    );
    assert_eq!(egress.len(), 1);
    let e = &egress[0];
    assert_eq!(e.listen, "127.0.0.1:15100");
    assert_eq!(e.mode, "mtls");
    let gws: Vec<(&str, u32, &str)> = e
        .gateways
        .iter()
        .map(|g| (g.address.as_str(), g.priority, g.cluster.as_str()))
        .collect();
    assert_eq!(
        gws,
        [
            ("127.0.0.5:15443", 0, "gcp"),
            ("gw.gcp.example:15443", 0, "gcp"),
            ("127.0.0.6:15443", 1, "onprem"),
        ]
    );
    assert_eq!(e.gateways[2].trust_domain, "onprem.example");
}

#[test]
fn names_stay_dns_labels_and_unique() {
    let mut names = Names::default();
    let a = names.unique("export", &key("a-b.c"), "80");
    let b = names.unique("export", &key("a.b-c"), "80");
    assert_eq!(a, "a-b-c-80");
    assert_ne!(a, b);
    let long = names.unique(
        "import",
        &key(&format!("{}.{}", "s".repeat(63), "n".repeat(63))),
        "HTTP_2",
    );
    assert!(long.len() <= 63, "{long}");
    assert!(
        long.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    );
    assert!(!long.starts_with('-') && !long.ends_with('-'));
}
