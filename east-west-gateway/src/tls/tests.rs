use rustls_pki_types::UnixTime;
use trust_bundle::test_util::{bundle_map, intermediate, leaf, root};
use trust_bundle::verify::Usage;
use trust_bundle::{TrustStore, bundle};

use super::*;
use crate::names::Label;

fn auth(trust_domains: &[&str], clusters: &[&str], ids: &[&str]) -> config::Authorization {
    config::Authorization {
        trust_domains: trust_domains.iter().map(|s| (*s).to_owned()).collect(),
        clusters: clusters
            .iter()
            .map(|c| Label::new(c).expect("label"))
            .collect(),
        spiffe_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
    }
}

#[test]
fn authorization_is_any_of_trust_domain_cluster_and_id() {
    let aws_root = root("aws.example");
    let aws = intermediate(&aws_root, "aws", None);
    let store = TrustStore::new(&bundle_map(&[("aws.example", &aws_root)])).expect("store");
    let id = "spiffe://aws.example/ns/isthmus/sa/gateway";
    let cred = leaf(&aws, id);
    let peer = store
        .verify(&cred.chain, UnixTime::now(), Usage::Client)
        .expect("verifies");
    assert_eq!(
        Peer::from_certs(&cred.chain),
        Peer {
            spiffe_id: Some(id.to_owned()),
            cluster: Some("aws".to_owned()),
        }
    );
    for allowed in [
        auth(&["aws.example"], &[], &[]),
        auth(&[], &["aws"], &[]),
        auth(&[], &[], &[id]),
        auth(&["gcp.example"], &["aws"], &[]),
    ] {
        assert_eq!(authorizer(&allowed).check(&peer), Ok(()), "{allowed:?}");
    }
    let refused = authorizer(&auth(
        &["gcp.example"],
        &["gcp"],
        &["spiffe://aws.example/x"],
    ));
    let reason = refused.check(&peer).expect_err("refused");
    assert!(reason.contains("aws.example"), "{reason}");
}

#[test]
fn pem_bundles_are_grouped_by_the_trust_domain_each_root_is_bound_to() {
    let (aws, gcp) = (root("aws.example"), root("gcp.example"));
    let pem: String = [&aws, &gcp]
        .iter()
        .map(|r| bundle::pem_cert(&r.credential.cert))
        .collect();
    let map = source::bundle_map(pem.as_bytes()).expect("pem bundle");
    let tds: Vec<String> = map.iter().map(|(td, _)| td.to_string()).collect();
    assert_eq!(tds, ["aws.example", "gcp.example"]);
    assert!(source::bundle_map(b"not pem").is_err());
}

#[test]
fn failure_reasons_are_bounded() {
    let io = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let other = |e: VerifyError| {
        io(rustls::Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(e)),
        )))
    };
    assert_eq!(
        FailureReason::of(&other(VerifyError::UnknownTrustDomain {
            trust_domain: "x".into(),
            known: String::new()
        })),
        FailureReason::UnknownTrustDomain
    );
    assert_eq!(
        FailureReason::of(&other(VerifyError::PathLen)),
        FailureReason::Other
    );
    assert_eq!(
        FailureReason::of(&io(rustls::Error::InvalidCertificate(
            CertificateError::Expired
        ))),
        FailureReason::Expired
    );
    assert_eq!(
        FailureReason::of(&std::io::Error::other("reset")),
        FailureReason::Other
    );
}

fn inline(cred: &trust_bundle::Credential, bundle: &str) -> Inline {
    Inline {
        cert_chain_pem: cred.chain.iter().map(|c| bundle::pem_cert(c)).collect(),
        private_key_pem: cred.key.to_pem(),
        bundle_map_json: bundle.to_owned(),
    }
}

#[test]
fn controller_material_is_staged_from_memory_and_errors_never_quote_the_key() {
    let aws_root = root("aws.example");
    let aws = intermediate(&aws_root, "aws", None);
    let id = "spiffe://aws.example/ns/isthmus/sa/gateway";
    let cred = leaf(&aws, id);
    let map = bundle_map(&[("aws.example", &aws_root)]).to_json();
    let good = inline(&cred, &map);
    let staged = Material::stage(Source::Memory(&good)).expect("valid material");
    let material = Material::new(staged).expect("handles");
    assert_eq!(material.own().spiffe_id, id);
    let leaf_cert = ParsedCert::parse(&cred.chain[0]).expect("leaf");
    assert_eq!(material.own().not_after, leaf_cert.not_after);
    assert_eq!(material.trust_domains(), ["aws.example"]);
    assert!(!format!("{good:?}").contains(good.private_key_pem.lines().nth(1).expect("key")));

    let error_of = |inline: &Inline| {
        Material::stage(Source::Memory(inline))
            .expect_err("refused")
            .to_string()
    };
    let garbage_key = Inline {
        private_key_pem:
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ5dGVz\n-----END PRIVATE KEY-----\n".to_owned(),
        ..good.clone()
    };
    let message = error_of(&garbage_key);
    assert_eq!(
        message,
        "identity.private_key_pem (from the controller): not a PKCS#8 PEM private key"
    );
    let other_key = Inline {
        private_key_pem: leaf(&aws, id).key.to_pem(),
        ..good.clone()
    };
    let message = error_of(&other_key);
    assert!(
        message.contains("does not match the leaf of identity.cert_chain_pem"),
        "{message}"
    );
    assert!(!message.contains(other_key.private_key_pem.lines().nth(1).expect("key")));
    let no_chain = Inline {
        cert_chain_pem: String::new(),
        ..good.clone()
    };
    let message = error_of(&no_chain);
    assert!(
        message.starts_with("identity.cert_chain_pem (from the controller): no "),
        "{message}"
    );
    let bad_bundle = Inline {
        bundle_map_json: "{ nope".to_owned(),
        ..good
    };
    assert!(error_of(&bad_bundle).starts_with("bundle_map_json (from the controller): "));
}

#[tokio::test]
async fn a_peer_stops_being_trusted_when_its_trust_domain_leaves_the_bundle_map() {
    let (ours, theirs) = (root("gcp.example"), root("aws.example"));
    let gw = leaf(&intermediate(&ours, "gcp", None), "spiffe://gcp.example/gw");
    let peer = leaf(
        &intermediate(&theirs, "aws", None),
        "spiffe://aws.example/gw",
    );
    let both = bundle_map(&[("gcp.example", &ours), ("aws.example", &theirs)]).to_json();
    let only_ours = bundle_map(&[("gcp.example", &ours)]).to_json();
    let material =
        Material::new(Material::stage(Source::Memory(&inline(&gw, &both))).expect("stage"))
            .expect("material");
    let mut changes = material.changes();
    assert!(material.still_trusted(&peer.chain, Usage::Client).is_ok());

    // The same map again (a config that changed something else): a change, still trusted.
    let same = Material::stage(Source::Memory(&inline(&gw, &both))).expect("stage");
    material.install(same).expect("install");
    material.announce();
    assert!(changes.has_changed().expect("open"));
    changes.mark_unchanged();
    assert!(material.still_trusted(&peer.chain, Usage::Client).is_ok());

    let removed = Material::stage(Source::Memory(&inline(&gw, &only_ours))).expect("stage");
    material.install(removed).expect("install");
    material.announce();
    assert!(changes.has_changed().expect("open"));
    let reason = material
        .still_trusted(&peer.chain, Usage::Client)
        .expect_err("no longer trusted");
    assert!(reason.contains("aws.example"), "{reason}");
}

#[test]
fn installing_the_material_in_force_again_keeps_the_store_and_identity_its_sessions_belong_to() {
    let (ours, theirs) = (root("gcp.example"), root("aws.example"));
    let ca = intermediate(&ours, "gcp", None);
    let gw = leaf(&ca, "spiffe://gcp.example/gw");
    let both = bundle_map(&[("gcp.example", &ours), ("aws.example", &theirs)]).to_json();
    let stage =
        |cred, bundle| Material::stage(Source::Memory(&inline(cred, bundle))).expect("stage");
    let material = Material::new(stage(&gw, &both)).expect("material");
    let (store, key) = (material.trust.load(), material.identity.current());

    // A push that changed routes or endpoints only.
    material.install(stage(&gw, &both)).expect("install");
    assert!(Arc::ptr_eq(&store, &material.trust.load()), "store kept");
    assert!(
        Arc::ptr_eq(&key, &material.identity.current()),
        "identity kept"
    );

    // A renewed certificate replaces the identity alone.
    let renewed = leaf(&ca, "spiffe://gcp.example/gw");
    material.install(stage(&renewed, &both)).expect("install");
    assert!(Arc::ptr_eq(&store, &material.trust.load()), "store kept");
    let key = material.identity.current();
    assert!(material.identity.presents(&renewed.chain));

    // A changed bundle map replaces the store alone.
    let only_ours = bundle_map(&[("gcp.example", &ours)]).to_json();
    material
        .install(stage(&renewed, &only_ours))
        .expect("install");
    assert!(
        !Arc::ptr_eq(&store, &material.trust.load()),
        "store replaced"
    );
    assert!(
        Arc::ptr_eq(&key, &material.identity.current()),
        "identity kept"
    );
}
