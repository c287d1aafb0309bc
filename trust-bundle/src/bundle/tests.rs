use std::sync::OnceLock;

use proptest::prelude::*;

use super::*;
use crate::test_util;

/// A pool of distinct roots, generated once: key generation is too slow to do per case.
fn roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        (0..6)
            .map(|i| {
                test_util::root(&format!("td{}.example", i % 3))
                    .credential
                    .cert
                    .clone()
            })
            .collect()
    })
}

fn bundle_of(indices: &[usize], sequence: u64) -> X509Bundle {
    let mut b = X509Bundle::new(indices.iter().map(|&i| roots()[i].clone())).unwrap();
    b.sequence = sequence;
    b
}

fn subset() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(0..6usize, 0..6)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn spiffe_json_round_trips(idx in subset(), seq in 0u64..1000, hint in proptest::option::of(1u64..100_000)) {
        let mut b = bundle_of(&idx, seq);
        b.refresh_hint = hint;
        let back = X509Bundle::from_spiffe_json(b.to_spiffe_json().as_bytes()).unwrap();
        prop_assert_eq!(back, b);
    }

    #[test]
    fn pem_round_trips(idx in proptest::collection::vec(0..6usize, 1..6)) {
        let b = bundle_of(&idx, 1);
        let back = X509Bundle::from_pem(b.to_pem().as_bytes()).unwrap();
        prop_assert_eq!(back.roots(), b.roots());
    }

    #[test]
    fn bundle_map_round_trips(a in subset(), b in subset()) {
        let mut map = BundleMap::new();
        map.insert(TrustDomain::parse("a.example").unwrap(), bundle_of(&a, 3));
        map.insert(TrustDomain::parse("b.example").unwrap(), bundle_of(&b, 7));
        prop_assert_eq!(BundleMap::from_json(map.to_json().as_bytes()).unwrap(), map);
    }

    #[test]
    fn merge_is_idempotent(idx in subset(), seq in 0u64..100) {
        let b = bundle_of(&idx, seq);
        prop_assert_eq!(X509Bundle::merge([&b, &b]).unwrap(), b.clone());
        prop_assert_eq!(X509Bundle::merge([&b]).unwrap(), b);
    }

    #[test]
    fn merge_is_order_independent(a in subset(), b in subset(), c in subset(), sa in 0u64..5, sb in 0u64..5) {
        let (a, b, c) = (bundle_of(&a, sa), bundle_of(&b, sb), bundle_of(&c, 1));
        let abc = X509Bundle::merge([&a, &b, &c]).unwrap();
        prop_assert_eq!(&X509Bundle::merge([&c, &a, &b]).unwrap(), &abc);
        prop_assert_eq!(&X509Bundle::merge([&b, &c, &a]).unwrap(), &abc);
        // The union of keys, each once.
        let mut keys: Vec<Vec<u8>> = [&a, &b, &c].iter().flat_map(|x| x.roots().iter().map(|r| r.to_vec())).collect();
        keys.sort();
        keys.dedup();
        prop_assert_eq!(abc.roots().len(), keys.len());
    }

    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = X509Bundle::from_spiffe_json(&bytes);
        let _ = BundleMap::from_json(&bytes);
        let _ = X509Bundle::from_pem(&bytes);
    }
}

#[test]
fn merge_bumps_the_sequence_only_when_keys_change() {
    let a = bundle_of(&[0], 4);
    let b = bundle_of(&[0, 1], 2);
    let m = X509Bundle::merge([&a, &b]).unwrap();
    assert_eq!(m.sequence, 5, "new union: highest sequence + 1");
    let same = X509Bundle::merge([&m, &a]).unwrap();
    assert_eq!(same.sequence, 5, "nothing new");
}

#[test]
fn duplicate_json_keys_are_rejected_at_any_depth() {
    let one = bundle_of(&[0], 1).to_spiffe_json();
    let map = format!(r#"{{"trust_domains": {{"a.example": {one}, "a.example": {one}}}}}"#);
    let err = BundleMap::from_json(map.as_bytes()).unwrap_err();
    assert!(
        err.to_string().contains("duplicate key \"a.example\""),
        "{err}"
    );
    let dup_seq = r#"{"keys": [], "spiffe_sequence": 1, "spiffe_sequence": 2}"#;
    let err = X509Bundle::from_spiffe_json(dup_seq.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("duplicate key"), "{err}");
    let nested = r#"{"keys": [{"use": "x509-svid", "use": "jwt-svid"}]}"#;
    assert!(X509Bundle::from_spiffe_json(nested.as_bytes()).is_err());
    let deep = "[".repeat(200) + &"]".repeat(200);
    assert!(X509Bundle::from_spiffe_json(deep.as_bytes()).is_err());
}

#[test]
fn spiffe_bundle_semantics() {
    // Keys of other uses, and keys without x5c, are ignored; an empty key set means revoked.
    let json = r#"{"keys": [{"use": "jwt-svid", "kty": "EC", "kid": "k"}, {"use": "x509-svid"}], "spiffe_sequence": 9}"#;
    let b = X509Bundle::from_spiffe_json(json.as_bytes()).unwrap();
    assert!(b.is_empty());
    assert_eq!(b.sequence, 9);
    // A leaf is not a root.
    let root = test_util::root("mesh.example");
    let leaf = test_util::leaf(
        &test_util::intermediate(&root, "aws", None),
        "spiffe://mesh.example/x",
    );
    let err = X509Bundle::new([leaf.cert.clone()]).unwrap_err();
    assert!(matches!(err, Error::NotCa { .. }), "{err}");
    // Bad base64 in x5c names the key.
    let err = X509Bundle::from_spiffe_json(br#"{"keys": [{"use": "x509-svid", "x5c": ["!!"]}]}"#)
        .unwrap_err();
    assert_eq!(err, Error::Base64 { index: 0 });
    assert_eq!(
        X509Bundle::from_pem(b"nothing here").unwrap_err(),
        Error::NoCertificates
    );
}

#[test]
fn dedupes_by_public_key() {
    let r = roots()[0].clone();
    let b = X509Bundle::new([r.clone(), r.clone()]).unwrap();
    assert_eq!(b.roots().len(), 1);
    let mut b = b;
    assert!(!b.add_root(r).unwrap(), "same key again is not new");
    assert_eq!(b.sequence, 1);
}
