use super::*;
use crate::test_util;

fn leaf_params(id: &str, validity: Duration) -> LeafParams {
    LeafParams {
        spiffe_id: SpiffeId::parse(id).unwrap(),
        dns_names: vec![],
        validity,
        algorithm: KeyAlgorithm::EcdsaP256,
    }
}

#[test]
fn root_has_explicit_validity_and_ca_extensions() {
    let now = OffsetDateTime::now_utc();
    let root = Authority::create_root(
        &RootParams {
            trust_domain: TrustDomain::parse("mesh.example").unwrap(),
            validity: DEFAULT_ROOT_VALIDITY,
            algorithm: KeyAlgorithm::EcdsaP256,
        },
        now,
    )
    .unwrap();
    let p = root.parsed();
    assert_eq!(p.role(), cert::Role::Root);
    assert_eq!(
        p.not_after - now.unix_timestamp(),
        DEFAULT_ROOT_VALIDITY.as_secs() as i64
    );
    assert!(now.unix_timestamp() - p.not_before <= BACKDATE.as_secs() as i64);
    let ku = p.key_usage.clone().unwrap();
    assert!(ku.critical && ku.key_cert_sign && ku.crl_sign && !ku.digital_signature);
    assert_eq!(p.uris, ["spiffe://mesh.example"]);
    assert!(p.ski.is_some());
    assert!(p.subject.contains("mesh.example root CA"));
    assert_eq!(p.key_algorithm, "ECDSA P-256");
}

#[test]
fn intermediate_is_path_len_zero_and_cannot_outlive_the_root() {
    let root = test_util::root("mesh.example");
    let inter = test_util::intermediate(&root, "aws", None);
    assert_eq!(inter.parsed().path_len, Some(0));
    assert_eq!(inter.cluster(), Some("aws"));
    assert_eq!(inter.trust_domain().as_str(), "mesh.example");
    assert_eq!(inter.parsed().aki, root.parsed().ski);
    let err = root
        .create_intermediate(
            &IntermediateParams {
                cluster: "aws".into(),
                trust_domain: None,
                validity: Duration::from_secs(2 * 365 * 86_400),
                algorithm: KeyAlgorithm::EcdsaP256,
            },
            OffsetDateTime::now_utc(),
        )
        .unwrap_err();
    assert!(matches!(err, Error::OutlivesIssuer { .. }), "{err}");
    // pathLen 0: an intermediate cannot make intermediates.
    let err = inter
        .create_intermediate(
            &IntermediateParams {
                cluster: "sub".into(),
                trust_domain: None,
                validity: Duration::from_secs(3600),
                algorithm: KeyAlgorithm::EcdsaP256,
            },
            OffsetDateTime::now_utc(),
        )
        .unwrap_err();
    assert!(matches!(err, Error::PathLenZero(_)), "{err}");
}

#[test]
fn leaf_is_an_x509_svid() {
    let root = test_util::root("mesh.example");
    let inter = test_util::intermediate(&root, "aws", Some("aws.mesh.example"));
    let mut params = leaf_params(
        "spiffe://aws.mesh.example/ns/default/sa/reviews",
        DEFAULT_LEAF_VALIDITY,
    );
    params.dns_names = vec!["reviews.default.svc".into()];
    let leaf = inter
        .issue_leaf(&params, OffsetDateTime::now_utc())
        .unwrap();
    let p = ParsedCert::parse(&leaf.cert).unwrap();
    assert_eq!(p.uris, ["spiffe://aws.mesh.example/ns/default/sa/reviews"]);
    assert_eq!(p.dns_names, ["reviews.default.svc"]);
    assert!(!p.is_ca);
    let ku = p.key_usage.clone().unwrap();
    assert!(ku.critical && ku.digital_signature && !ku.key_cert_sign);
    assert_eq!(
        p.ext_key_usage.clone().unwrap(),
        ["serverAuth", "clientAuth"]
    );
    assert_eq!(
        p.not_after - p.not_before,
        (DEFAULT_LEAF_VALIDITY + BACKDATE).as_secs() as i64
    );
    assert_eq!(leaf.chain.len(), 2, "leaf + intermediate, root excluded");
    assert_eq!(leaf.chain[1], inter.credential.cert);
    assert_eq!(leaf.root, root.credential.cert);
    assert!(crate::inspect::lint(&p, OffsetDateTime::now_utc().unix_timestamp()).is_empty());

    // Another trust domain, an ID without a path and a bad DNS name are refused.
    let wrong = inter.issue_leaf(
        &leaf_params("spiffe://mesh.example/x", DEFAULT_LEAF_VALIDITY),
        OffsetDateTime::now_utc(),
    );
    assert!(matches!(wrong, Err(Error::TrustDomainMismatch { .. })));
    let no_path = inter.issue_leaf(
        &leaf_params("spiffe://aws.mesh.example", DEFAULT_LEAF_VALIDITY),
        OffsetDateTime::now_utc(),
    );
    assert!(matches!(no_path, Err(Error::Spiffe(_))));
    params.dns_names = vec!["not a name".into()];
    assert!(matches!(
        inter.issue_leaf(&params, OffsetDateTime::now_utc()),
        Err(Error::DnsName(_))
    ));
}

#[test]
fn only_the_root_binds_a_foreign_trust_domain() {
    let root = test_util::root("mesh.example");
    let inter = test_util::intermediate(&root, "aws", None);
    assert!(!inter.is_root());
    let err = root
        .create_intermediate(
            &IntermediateParams {
                cluster: "Bad_Name".into(),
                trust_domain: None,
                validity: Duration::from_secs(3600),
                algorithm: KeyAlgorithm::EcdsaP256,
            },
            OffsetDateTime::now_utc(),
        )
        .unwrap_err();
    assert!(matches!(err, Error::ClusterName(_)), "{err}");
}

#[test]
fn ed25519_keys_work_end_to_end() {
    let root = Authority::create_root(
        &RootParams {
            trust_domain: TrustDomain::parse("mesh.example").unwrap(),
            validity: Duration::from_secs(86_400 * 10),
            algorithm: KeyAlgorithm::Ed25519,
        },
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    assert_eq!(root.parsed().key_algorithm, "Ed25519");
    let leaf = root
        .issue_leaf(
            &leaf_params("spiffe://mesh.example/x", Duration::from_secs(3600)),
            OffsetDateTime::now_utc(),
        )
        .unwrap();
    let reloaded = PrivateKey::from_pem(&leaf.key.to_pem()).unwrap();
    assert_eq!(reloaded.public_spki(), leaf.key.public_spki());
}

#[test]
fn private_keys_do_not_print() {
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let pem = key.to_pem();
    let body: String = pem.lines().nth(1).unwrap().chars().take(16).collect();
    let debug = format!("{key:?}");
    assert_eq!(debug, "PrivateKey(redacted)");
    let root = test_util::root("mesh.example");
    let shown = format!("{root:?}");
    assert!(
        !shown.contains(&body) && shown.contains("redacted"),
        "{shown}"
    );
}

#[test]
fn loading_checks_key_and_role() {
    let root = test_util::root("mesh.example");
    let other = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let err = Authority::load(
        root.credential.cert.clone(),
        other,
        vec![],
        root.credential.cert.clone(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::KeyMismatch(_)), "{err}");
    let inter = test_util::intermediate(&root, "aws", None);
    let leaf = test_util::leaf(&inter, "spiffe://mesh.example/x");
    let err = Authority::load(
        leaf.cert.clone(),
        leaf.key,
        vec![],
        root.credential.cert.clone(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::NotCa(_)), "{err}");
}
