use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

fn key(s: &str) -> ServiceKey {
    ServiceKey::parse(s).unwrap()
}

fn cluster(s: &str) -> ClusterName {
    ClusterName::parse(s).unwrap()
}

fn exported(k: &str, ports: &[(&str, u16)], ready: u32, at: i64) -> ExportedService {
    ExportedService {
        key: key(k),
        ports: ports
            .iter()
            .map(|(n, p)| ServicePort::new(*n, *p))
            .collect(),
        ready_endpoints: ready,
        total_endpoints: ready,
        zones: BTreeSet::new(),
        exported_at_ms: at,
    }
}

const LEASE: Lease = Lease {
    heartbeat_interval_ms: 1000,
    missed_allowed: 3,
};

#[test]
fn names_are_rfc1123_labels() {
    assert!(ClusterName::parse("aws-east").is_ok());
    for bad in ["", "AWS", "-a", "a-", "a_b", &"a".repeat(64)] {
        assert!(ClusterName::parse(bad).is_err(), "{bad:?}");
    }
    let k = key("reviews.default");
    assert_eq!((k.name(), k.namespace()), ("reviews", "default"));
    assert_eq!(k.to_string(), "reviews.default");
    assert!(ServiceKey::parse("reviews").is_err());
    assert!(ServiceKey::parse("a.b.c").is_err());
}

#[test]
fn exports_are_filtered_per_peer() {
    let mut reg = Registry::default();
    for (name, to) in [
        ("a.default", ExportTo::All),
        ("b.default", ExportTo::Peers([cluster("gcp")].into())),
        ("missing.default", ExportTo::All),
    ] {
        reg.exports.insert(
            key(name),
            LocalExport {
                key: key(name),
                to,
                created_at_ms: 1,
            },
        );
    }
    for name in ["a.default", "b.default"] {
        reg.services.insert(
            key(name),
            LocalService {
                key: key(name),
                ports: vec![ServicePort {
                    name: "http".into(),
                    port: 8080,
                    target_port: Some(18080),
                }],
                endpoints: vec![
                    Endpoint {
                        address: "10.0.0.1".parse().unwrap(),
                        ready: true,
                        zone: Some("z1".into()),
                        weight: 1,
                    },
                    Endpoint {
                        address: "10.0.0.2".parse().unwrap(),
                        ready: false,
                        zone: None,
                        weight: 1,
                    },
                ],
            },
        );
    }
    let to_aws = reg.exports_for(&cluster("aws"));
    assert_eq!(
        to_aws.keys().cloned().collect::<Vec<_>>(),
        [key("a.default")]
    );
    let a = &to_aws[&key("a.default")];
    assert_eq!((a.ready_endpoints, a.total_endpoints), (1, 2));
    assert_eq!(a.zones, BTreeSet::from(["z1".to_owned()]));
    // The target port stays home: peers see only the name and the service port.
    assert_eq!(a.ports, [ServicePort::new("http", 8080)]);
    assert_eq!(reg.exports_for(&cluster("gcp")).len(), 2);
}

#[test]
fn gaps_are_detected_and_snapshots_recover() {
    let mut feed = ExportFeed::new();
    let mut peer = PeerImports::new(cluster("b"), 0);
    let mut current = BTreeMap::new();
    assert_eq!(
        peer.apply(
            &FeedUpdate::Delta {
                from: 0,
                to: 1,
                upserts: vec![],
                removals: vec![]
            },
            0
        ),
        Err(FeedError::NoSnapshot)
    );
    peer.apply(&feed.snapshot(&current), 0).unwrap();
    current.insert(key("a.x"), exported("a.x", &[("http", 80)], 1, 1));
    let lost = feed.update(&current).unwrap();
    current.insert(key("b.x"), exported("b.x", &[("http", 80)], 1, 1));
    let next = feed.update(&current).unwrap();
    let _ = lost; // dropped on the wire
    assert!(matches!(peer.apply(&next, 1), Err(FeedError::Gap { .. })));
    peer.apply(&feed.snapshot(&current), 2).unwrap();
    assert_eq!(peer.services(), &current);
    assert!(feed.update(&current).is_none(), "nothing changed");
}

#[test]
fn lease_expiry_withdraws_imports() {
    let mut b = PeerImports::new(cluster("b"), 0);
    let mut feed = ExportFeed::new();
    let current = BTreeMap::from([(key("a.x"), exported("a.x", &[("http", 80)], 2, 5))]);
    b.apply(&feed.snapshot(&current), 1_000).unwrap();
    let (m, _) = merge_imports(std::slice::from_ref(&b), LEASE, 1_000 + 4_000);
    assert_eq!(m.len(), 1, "within interval × (missed + 1)");
    let (m, _) = merge_imports(std::slice::from_ref(&b), LEASE, 1_000 + 4_001);
    assert!(m.is_empty(), "withdrawn after the lease");
    b.heard(6_000);
    let (m, _) = merge_imports(&[b], LEASE, 6_500);
    assert_eq!(m.len(), 1, "returns when the peer is heard again");
}

#[test]
fn merge_orders_sources_and_resolves_conflicts_oldest_first() {
    let mut b = PeerImports::new(cluster("b"), 0);
    let mut c = PeerImports::new(cluster("c"), 1);
    b.apply(
        &FeedUpdate::Snapshot {
            version: 1,
            services: vec![exported("r.d", &[("http", 9080), ("grpc", 9090)], 2, 200)],
        },
        0,
    )
    .unwrap();
    c.apply(
        &FeedUpdate::Snapshot {
            version: 1,
            services: vec![exported("r.d", &[("http", 8080), ("admin", 9901)], 1, 100)],
        },
        0,
    )
    .unwrap();
    let (m, conflicts) = merge_imports(&[b, c], LEASE, 10);
    let r = &m[&key("r.d")];
    assert_eq!(
        r.sources
            .iter()
            .map(|s| s.cluster.as_str())
            .collect::<Vec<_>>(),
        ["b", "c"],
        "priority order"
    );
    let ports: Vec<(&str, u16)> = r.ports.iter().map(|p| (p.name.as_str(), p.port)).collect();
    assert_eq!(
        ports,
        [("admin", 9901), ("grpc", 9090), ("http", 8080)],
        "union; c exported first so its http wins"
    );
    assert_eq!(conflicts.len(), 1);
    assert_eq!(
        (conflicts[0].winner.as_str(), conflicts[0].loser.as_str()),
        ("c", "b")
    );
}

fn arb_exports() -> impl Strategy<Value = BTreeMap<ServiceKey, ExportedService>> {
    proptest::collection::btree_map(
        (0..6usize).prop_map(|i| key(&format!("s{i}.ns"))),
        (1u16..4, 0u32..3, 0i64..5),
        0..6,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(k, (port, ready, at))| {
                let s = exported(&k.to_string(), &[("p", port)], ready, at);
                (k, s)
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn feed_reproduces_the_sender(states in proptest::collection::vec(arb_exports(), 1..8)) {
        let mut feed = ExportFeed::new();
        let mut peer = PeerImports::new(cluster("b"), 0);
        peer.apply(&feed.snapshot(&states[0]), 0).unwrap();
        for s in &states[1..] {
            if let Some(u) = feed.update(s) {
                peer.apply(&u, 0).unwrap();
            }
            prop_assert_eq!(peer.services(), s);
        }
    }

    #[test]
    fn merge_is_independent_of_peer_order(a in arb_exports(), b in arb_exports(), c in arb_exports(), pa in 0u32..2, pb in 0u32..2) {
        let peers: Vec<PeerImports> = [("a", a, pa), ("b", b, pb), ("c", c, 0)]
            .into_iter()
            .map(|(n, s, p)| {
                let mut peer = PeerImports::new(cluster(n), p);
                peer.apply(&FeedUpdate::Snapshot { version: 1, services: s.into_values().collect() }, 0).unwrap();
                peer
            })
            .collect();
        let forward = merge_imports(&peers, LEASE, 0);
        let mut reversed = peers.clone();
        reversed.reverse();
        prop_assert_eq!(merge_imports(&reversed, LEASE, 0), forward);
    }
}

#[test]
fn target_port_is_optional_and_omitted_when_unset() {
    let p: ServicePort = serde_json::from_str(r#"{"name":"http","port":80}"#).unwrap();
    assert_eq!(p, ServicePort::new("http", 80));
    assert_eq!(p.target(), 80);
    assert_eq!(
        serde_json::to_string(&p).unwrap(),
        r#"{"name":"http","port":80}"#
    );
    let p: ServicePort =
        serde_json::from_str(r#"{"name":"http","port":80,"target_port":8080}"#).unwrap();
    assert_eq!(p.target(), 8080);
}
