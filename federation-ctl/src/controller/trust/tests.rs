use trust_bundle::{SpiffeId, TrustDomain, X509Bundle};

use super::*;
use crate::config::HostPort;
use crate::model::ClusterName;
use crate::state::LinkRole;

fn bundle(td: &str) -> String {
    let root = trust_bundle::test_util::root(td);
    X509Bundle::new([root.credential.cert.clone()])
        .unwrap()
        .to_spiffe_json()
}

fn record(sequence: u64) -> LinkRecord {
    LinkRecord {
        peer: ClusterName::parse("gcp").unwrap(),
        trust_domain: TrustDomain::parse("gcp.example").unwrap(),
        role: LinkRole::Acceptor,
        bundle_json: bundle("gcp.example"),
        peering_addresses: vec![HostPort::parse("127.0.0.1:15050").unwrap()],
        gateway_addresses: vec![HostPort::parse("127.0.0.1:15443").unwrap()],
        gateway_spiffe_ids: vec![
            SpiffeId::parse("spiffe://gcp.example/isthmus/cluster/gcp/gateway").unwrap(),
        ],
        linked_at_ms: 1,
        bundle_sequence: sequence,
    }
}

fn update(td: &str, bundle_json: String, sequence: u64) -> pb::TrustBundleUpdate {
    pb::TrustBundleUpdate {
        trust_domain: td.into(),
        bundle_json,
        sequence,
    }
}

#[test]
fn a_newer_bundle_for_the_links_trust_domain_is_taken_with_its_sequence() {
    let new = bundle("gcp.example");
    let next = check_update(&record(2), &update("gcp.example", new.clone(), 3)).unwrap();
    assert_eq!(next.bundle_json, new);
    assert_eq!(next.bundle_sequence, 3);
    // Everything else about the link is kept.
    assert_eq!(next.gateway_addresses, record(2).gateway_addresses);
}

#[test]
fn a_bundle_for_another_trust_domain_is_refused() {
    let refused = check_update(
        &record(0),
        &update("mesh.example", bundle("mesh.example"), 9),
    )
    .unwrap_err();
    assert_eq!(
        refused,
        Refused::ForeignTrustDomain {
            got: "mesh.example".into(),
            linked: "gcp.example".into()
        }
    );
    assert!(refused.to_string().contains("only its own trust domain"));
}

#[test]
fn stale_or_replayed_sequences_are_ignored() {
    for sequence in [1, 5] {
        assert_eq!(
            check_update(
                &record(5),
                &update("gcp.example", bundle("gcp.example"), sequence)
            ),
            Err(Refused::Stale {
                got: sequence,
                have: 5
            })
        );
    }
}

#[test]
fn garbage_and_empty_bundles_are_refused() {
    assert!(matches!(
        check_update(&record(0), &update("gcp.example", "{not json".into(), 1)),
        Err(Refused::Invalid(_))
    ));
    let empty = r#"{"keys":[],"spiffe_sequence":1}"#.to_owned();
    assert!(matches!(
        check_update(&record(0), &update("gcp.example", empty, 1)),
        Err(Refused::Empty | Refused::Invalid(_))
    ));
}
