use super::*;
use crate::state::tests::link;

#[test]
fn a_link_round_trips_through_its_cluster_link_and_bundle() {
    let rec = LinkRecord {
        bundle_sequence: 7,
        ..link("gcp")
    };
    let cl = link_resource(&rec);
    assert_eq!(kube::ResourceExt::name_any(&cl), "gcp");
    assert_eq!(cl.spec.bundle_ref.name, "isthmus-link-gcp");
    assert_eq!(
        cl.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(MANAGED_BY.0))
            .map(String::as_str),
        Some(MANAGED_BY.1)
    );
    // The spec carries no secret and no bundle: only a reference to its Secret.
    let spec = serde_json::to_string(&cl.spec).unwrap();
    assert!(!spec.contains("BEGIN") && !spec.contains("x5c"), "{spec}");
    assert_eq!(link_record(&cl.spec, &rec.bundle_json), Ok(rec));
}

#[test]
fn a_cluster_link_that_does_not_check_out_is_refused_with_the_field() {
    let rec = link("gcp");
    let mut cl = link_resource(&rec);
    cl.spec.trust_domain = "Not A Domain".into();
    let err = link_record(&cl.spec, &rec.bundle_json).unwrap_err();
    assert!(err.contains("trust"), "{err}");
    let cl = link_resource(&rec);
    let err = link_record(&cl.spec, "{}").unwrap_err();
    assert!(err.starts_with("bundle"), "{err}");
}

#[test]
fn seeding_sends_every_local_link_and_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(tmp.path()).unwrap();
    dir.save_link(&link("gcp")).unwrap();
    dir.save_peering_port(15050).unwrap();
    let changes = seed(&dir).unwrap();
    assert!(matches!(&changes[0], StateChange::Link(r) if r.peer.as_str() == "gcp"));
    assert!(matches!(
        &changes[1],
        StateChange::Record {
            name: "peering-port.json",
            ..
        }
    ));
    assert_eq!(changes.len(), 2);
}

#[test]
fn a_link_status_is_rewritten_on_change_and_for_heartbeats_only_every_30_s() {
    let applied = LinkStatus {
        connected: true,
        last_heard_ms: Some(1_000),
        feed_version: Some(3),
    };
    let with = |f: fn(&mut LinkStatus)| {
        let mut s = applied;
        f(&mut s);
        s.differs_from(&applied)
    };
    assert!(!with(|_| {}));
    assert!(!with(|s| s.last_heard_ms = Some(30_999)));
    assert!(with(|s| s.last_heard_ms = Some(31_000)));
    assert!(with(|s| s.connected = false));
    assert!(with(|s| s.feed_version = Some(4)));
    assert!(with(|s| s.last_heard_ms = None));
}
