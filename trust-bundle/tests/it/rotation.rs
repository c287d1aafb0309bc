//! Staged root rotation over real handshakes: during the overlap both generations connect;
//! after the old root is retired from the bundle, its leaves are refused.

use time::OffsetDateTime;
use trust_bundle::ca::Authority;
use trust_bundle::test_util::{intermediate, leaf, root};
use trust_bundle::tls::Authorizer;
use trust_bundle::{BundleMap, TrustDomain, X509Bundle};

use crate::handshake::handshake;

#[tokio::test]
async fn overlap_then_retire() {
    let td = TrustDomain::parse("mesh.example").unwrap();
    let old_root = root("mesh.example");
    let old_aws = intermediate(&old_root, "aws", None);
    let old_leaf = leaf(&old_aws, "spiffe://mesh.example/ns/isthmus/sa/gateway-aws");

    // prepare: the new root joins the bundle; the sequence goes up.
    let new_root: Authority = root("mesh.example");
    let mut bundle = X509Bundle::new([old_root.credential.cert.clone()]).unwrap();
    let seq_before = bundle.sequence;
    assert!(bundle.add_root(new_root.credential.cert.clone()).unwrap());
    assert_eq!(bundle.sequence, seq_before + 1);
    let mut overlap = BundleMap::new();
    overlap.insert(td.clone(), bundle.clone());

    // activate: gcp's intermediate is re-issued under the new root.
    let new_gcp = intermediate(&new_root, "gcp", None);
    let new_leaf = leaf(&new_gcp, "spiffe://mesh.example/ns/isthmus/sa/gateway-gcp");
    handshake(&old_leaf, &overlap, &new_leaf, &overlap, Authorizer::any())
        .await
        .expect("old-root server and new-root client during the overlap");
    handshake(&new_leaf, &overlap, &old_leaf, &overlap, Authorizer::any())
        .await
        .expect("new-root server and old-root client during the overlap");

    // A peer that has not received the new bundle yet still accepts the new chain when it is
    // presented with the cross-signed certificate.
    let cross = old_root
        .cross_sign(&new_root, OffsetDateTime::now_utc())
        .unwrap();
    let mut via_cross = leaf(&new_gcp, "spiffe://mesh.example/ns/isthmus/sa/gateway-gcp");
    via_cross.chain.push(cross);
    let mut old_only = BundleMap::new();
    old_only.insert(
        td.clone(),
        X509Bundle::new([old_root.credential.cert.clone()]).unwrap(),
    );
    handshake(
        &old_leaf,
        &old_only,
        &via_cross,
        &overlap,
        Authorizer::any(),
    )
    .await
    .expect("cross-signed chain verifies against the old root alone");

    // retire: the old root leaves the bundle; its leaves are refused.
    let fp = trust_bundle::cert::ParsedCert::parse(&old_root.credential.cert)
        .unwrap()
        .fingerprint();
    assert_eq!(bundle.remove_root(&fp), 1);
    let mut retired = BundleMap::new();
    retired.insert(td, bundle);
    let err = handshake(&new_leaf, &retired, &old_leaf, &retired, Authorizer::any())
        .await
        .unwrap_err();
    assert!(err.contains("unknown issuer"), "unexpected error: {err}");
    let new_leaf2 = leaf(&new_gcp, "spiffe://mesh.example/ns/isthmus/sa/gateway-gcp2");
    handshake(&new_leaf, &retired, &new_leaf2, &retired, Authorizer::any())
        .await
        .expect("new-root leaves keep working after retire");
}
