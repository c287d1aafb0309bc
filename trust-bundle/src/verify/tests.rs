use std::time::Duration;

use time::OffsetDateTime;

use super::*;
use crate::bundle::BundleMap;
use crate::ca::{IntermediateParams, KeyAlgorithm, LeafParams};
use crate::test_util::{bundle_map, intermediate, leaf, root};

fn at(t: OffsetDateTime) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(t.unix_timestamp() as u64))
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// A store whose bundle for `td` holds `root` alone (a root certificate made by a test).
fn store_of(td: &str, root: CertificateDer<'static>) -> TrustStore {
    let mut map = BundleMap::new();
    map.insert(
        TrustDomain::parse(td).unwrap(),
        crate::bundle::X509Bundle::new([root]).unwrap(),
    );
    TrustStore::new(&map).unwrap()
}

#[test]
fn verifies_and_reports_identity() {
    let root = root("mesh.example");
    let aws = intermediate(&root, "aws", None);
    let l = leaf(&aws, "spiffe://mesh.example/ns/a/sa/b");
    let store = TrustStore::new(&bundle_map(&[("mesh.example", &root)])).unwrap();
    let peer = store.verify(&l.chain, at(now()), Usage::Client).unwrap();
    assert_eq!(peer.spiffe_id.as_str(), "spiffe://mesh.example/ns/a/sa/b");
    assert_eq!(peer.cluster.as_deref(), Some("aws"));
    assert_eq!(peer.root_fingerprint, root.parsed().fingerprint());
    store.verify(&l.chain, at(now()), Usage::Server).unwrap();
}

#[test]
fn expiry_and_not_yet_valid_say_by_how_much() {
    let root = root("mesh.example");
    let aws = intermediate(&root, "aws", None);
    let l = leaf(&aws, "spiffe://mesh.example/x");
    let store = TrustStore::new(&bundle_map(&[("mesh.example", &root)])).unwrap();
    let later = now() + time::Duration::days(3) + time::Duration::hours(2);
    match store.verify(&l.chain, at(later), Usage::Client) {
        Err(VerifyError::Expired {
            role: "leaf", ago, ..
        }) => assert!(
            ago.starts_with("2d 2h") || ago.starts_with("2d 1h"),
            "{ago}"
        ),
        other => panic!("{other:?}"),
    }
    let earlier = now() - time::Duration::hours(1);
    match store.verify(&l.chain, at(earlier), Usage::Client) {
        Err(VerifyError::NotYetValid {
            role: "leaf", wait, ..
        }) => assert!(wait.starts_with("55m") || wait.starts_with("54m"), "{wait}"),
        other => panic!("{other:?}"),
    }
    // An intermediate that expired before its leaf is named as the intermediate.
    let short = root
        .create_intermediate(
            &IntermediateParams {
                cluster: "gcp".into(),
                trust_domain: None,
                validity: Duration::from_secs(7200),
                algorithm: KeyAlgorithm::EcdsaP256,
            },
            now(),
        )
        .unwrap();
    let l = short
        .issue_leaf(
            &LeafParams {
                spiffe_id: SpiffeId::parse("spiffe://mesh.example/x").unwrap(),
                dns_names: vec![],
                validity: Duration::from_secs(3600),
                algorithm: KeyAlgorithm::EcdsaP256,
            },
            now(),
        )
        .unwrap();
    match store.verify(
        &l.chain,
        at(now() + time::Duration::hours(3)),
        Usage::Client,
    ) {
        Err(VerifyError::Expired { role: "leaf", .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn expired_root_is_reported_even_though_webpki_does_not_check_anchors() {
    // The bundle holds an expired certificate for the root key; webpki accepts the anchor by
    // name and key alone, so only our own check notices.
    let root = root("mesh.example");
    let l = leaf(&intermediate(&root, "aws", None), "spiffe://mesh.example/x");
    let expired = root.reissue_root(
        now() - time::Duration::days(3),
        now() - time::Duration::days(1),
    );
    match store_of("mesh.example", expired).verify(&l.chain, at(now()), Usage::Client) {
        Err(VerifyError::RootExpired { ago, .. }) => {
            assert!(ago.starts_with("1d") || ago.starts_with("23h"), "{ago}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn refusals_are_precise() {
    let root = root("mesh.example");
    let aws = intermediate(&root, "aws", None);
    let l = leaf(&aws, "spiffe://mesh.example/x");
    let map = bundle_map(&[("mesh.example", &root)]);
    let store = TrustStore::new(&map).unwrap();

    assert_eq!(
        store.verify(&[], at(now()), Usage::Client),
        Err(VerifyError::EmptyChain)
    );
    // A CA certificate presented as the leaf.
    let err = store
        .verify(
            std::slice::from_ref(&aws.credential.cert),
            at(now()),
            Usage::Client,
        )
        .unwrap_err();
    assert!(matches!(err, VerifyError::BadSpiffeId(..)), "{err}");
    // An intermediate that is not a CA: a leaf placed where the issuer goes.
    let other = leaf(&aws, "spiffe://mesh.example/y");
    let err = store
        .verify(
            &[l.cert.clone(), other.cert.clone()],
            at(now()),
            Usage::Client,
        )
        .unwrap_err();
    assert!(matches!(err, VerifyError::NotACa(_)), "{err}");
    // Unknown trust domain lists what is known.
    let empty = TrustStore::new(&BundleMap::new()).unwrap();
    let err = empty
        .verify(&l.chain, at(now()), Usage::Client)
        .unwrap_err();
    assert!(err.to_string().contains("known: none"), "{err}");
    // A revoked (empty) bundle.
    let mut revoked = map.clone();
    let td = TrustDomain::parse("mesh.example").unwrap();
    let fp = root.parsed().fingerprint();
    revoked.get_mut(&td).unwrap().remove_root(&fp);
    let err = TrustStore::new(&revoked)
        .unwrap()
        .verify(&l.chain, at(now()), Usage::Client)
        .unwrap_err();
    assert_eq!(err, VerifyError::RevokedTrustDomain("mesh.example".into()));
    // Garbage.
    let err = store
        .verify(
            &[CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01])],
            at(now()),
            Usage::Client,
        )
        .unwrap_err();
    assert!(
        matches!(err, VerifyError::Malformed { position: 0, .. }),
        "{err}"
    );
}

#[test]
fn binding_policy_if_present_accepts_unbound_but_not_mismatched() {
    let root = root("mesh.example");
    let gcp = intermediate(&root, "gcp", Some("gcp.mesh.example"));
    let forged = gcp.issue_leaf_unchecked("spiffe://aws.mesh.example/x");
    let mut map = bundle_map(&[("aws.mesh.example", &root)]);
    let td = TrustDomain::parse("aws.mesh.example").unwrap();
    map.get_mut(&td).unwrap().binding = BindingPolicy::IfPresent;
    let err = TrustStore::new(&map)
        .unwrap()
        .verify(&forged.chain, at(now()), Usage::Client)
        .unwrap_err();
    assert!(matches!(err, VerifyError::Binding { .. }), "{err}");
}

#[test]
fn human_durations() {
    assert_eq!(human_secs(0), "0s");
    assert_eq!(human_secs(59), "59s");
    assert_eq!(human_secs(3 * 86_400 + 4 * 3600 + 5), "3d 4h");
    assert_eq!(human_secs(-125), "2m 5s");
}

#[test]
fn an_accepted_chain_is_remembered_only_while_every_certificate_of_it_is_valid() {
    let root = root("mesh.example");
    let l = leaf(&intermediate(&root, "aws", None), "spiffe://mesh.example/x");
    let store = TrustStore::new(&bundle_map(&[("mesh.example", &root)])).unwrap();
    let first = store.verify(&l.chain, at(now()), Usage::Client).unwrap();
    assert_eq!(store.remembered(), 1);
    assert_eq!(
        store.verify(&l.chain, at(now()), Usage::Client).unwrap(),
        first
    );
    assert_eq!(
        store.remembered(),
        1,
        "a returning chain is not added twice"
    );
    // Outside the span the chain is verified afresh, with the precise refusal.
    let later = now() + time::Duration::days(2);
    assert!(matches!(
        store.verify(&l.chain, at(later), Usage::Client),
        Err(VerifyError::Expired { role: "leaf", .. })
    ));
    let earlier = now() - time::Duration::hours(1);
    assert!(matches!(
        store.verify(&l.chain, at(earlier), Usage::Client),
        Err(VerifyError::NotYetValid { role: "leaf", .. })
    ));
    // The other usage is its own entry.
    store.verify(&l.chain, at(now()), Usage::Server).unwrap();
    assert_eq!(store.remembered(), 2);
}

#[test]
fn a_remembered_chain_is_refused_once_its_root_expires() {
    let root = root("mesh.example");
    let l = leaf(&intermediate(&root, "aws", None), "spiffe://mesh.example/x");
    // The bundle's certificate for the root key expires in an hour; the leaf lives a day.
    let short = root.reissue_root(
        now() - time::Duration::days(1),
        now() + time::Duration::hours(1),
    );
    let store = store_of("mesh.example", short);
    store.verify(&l.chain, at(now()), Usage::Client).unwrap();
    assert_eq!(store.remembered(), 1);
    assert!(matches!(
        store.verify(
            &l.chain,
            at(now() + time::Duration::hours(2)),
            Usage::Client
        ),
        Err(VerifyError::RootExpired { .. })
    ));
}

#[test]
fn refusals_are_not_remembered_and_a_new_store_starts_empty() {
    let root = root("mesh.example");
    let other = self::root("other.example");
    let l = leaf(&intermediate(&root, "aws", None), "spiffe://mesh.example/x");
    let stranger = leaf(
        &intermediate(&other, "gcp", None),
        "spiffe://other.example/x",
    );
    let store = TrustStore::new(&bundle_map(&[("mesh.example", &root)])).unwrap();
    store
        .verify(&stranger.chain, at(now()), Usage::Client)
        .unwrap_err();
    assert_eq!(store.remembered(), 0);
    store.verify(&l.chain, at(now()), Usage::Client).unwrap();
    // A bundle change compiles a new store: what the old one accepted counts for nothing.
    let rotated = TrustStore::new(&bundle_map(&[("mesh.example", &other)])).unwrap();
    assert_eq!(rotated.remembered(), 0);
    assert!(rotated.verify(&l.chain, at(now()), Usage::Client).is_err());
}

#[test]
fn the_memory_is_bounded() {
    let root = root("mesh.example");
    let aws = intermediate(&root, "aws", None);
    let store = TrustStore::new(&bundle_map(&[("mesh.example", &root)])).unwrap();
    for i in 0..=Memo::CAPACITY {
        let l = leaf(&aws, &format!("spiffe://mesh.example/w{i}"));
        store.verify(&l.chain, at(now()), Usage::Client).unwrap();
        assert!(store.remembered() <= Memo::CAPACITY);
    }
    assert_eq!(store.remembered(), 1, "full, it starts over");
}

#[test]
fn stores_accept_alike_only_with_the_same_roots_and_binding_per_trust_domain() {
    let (a, b) = (root("a.example"), root("b.example"));
    let store = |entries: &[(&str, &crate::ca::Authority)]| TrustStore::new(&bundle_map(entries));
    let both = store(&[("a.example", &a), ("b.example", &b)]).unwrap();
    assert!(both.accepts_as(&store(&[("b.example", &b), ("a.example", &a)]).unwrap()));
    assert!(!both.accepts_as(&store(&[("a.example", &a)]).unwrap()));
    assert!(!both.accepts_as(&store(&[("a.example", &a), ("b.example", &a)]).unwrap()));
    let rotated = store(&[
        ("a.example", &a),
        ("a.example", &root("a.example")),
        ("b.example", &b),
    ]);
    assert!(!both.accepts_as(&rotated.unwrap()));
    let td = TrustDomain::parse("a.example").unwrap();
    // What a controller push carries besides the roots changes nothing verification reads.
    let mut resent = bundle_map(&[("a.example", &a), ("b.example", &b)]);
    let bundle = resent.get_mut(&td).unwrap();
    bundle.sequence += 7;
    bundle.refresh_hint = Some(300);
    assert!(both.accepts_as(&TrustStore::new(&resent).unwrap()));
    let mut loose = bundle_map(&[("a.example", &a), ("b.example", &b)]);
    loose.get_mut(&td).unwrap().binding = BindingPolicy::IfPresent;
    assert!(!both.accepts_as(&TrustStore::new(&loose).unwrap()));
}
