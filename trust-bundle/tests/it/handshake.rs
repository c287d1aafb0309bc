//! Mutual TLS over real sockets with tokio-rustls and the SPIFFE verifiers.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use trust_bundle::ca::Credential;
use trust_bundle::test_util::{bundle_map, intermediate, leaf, root};
use trust_bundle::tls::{self, Authorizer, IdentityHandle, TrustHandle};
use trust_bundle::{BundleMap, TrustStore};

/// Runs one mutual-TLS exchange; returns the server's view of the client identity, or the first
/// error either side saw (as text).
pub(crate) async fn handshake(
    server: &Credential,
    server_trust: &BundleMap,
    client: &Credential,
    client_trust: &BundleMap,
    server_authz: Authorizer,
) -> Result<String, String> {
    let server_cfg = tls::server_config(
        IdentityHandle::from_credential(server).unwrap(),
        TrustHandle::new(TrustStore::new(server_trust).unwrap()),
        server_authz,
    )
    .unwrap();
    let client_cfg = tls::client_config(
        IdentityHandle::from_credential(client).unwrap(),
        TrustHandle::new(TrustStore::new(client_trust).unwrap()),
        Authorizer::any(),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(server_cfg));
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = acceptor
            .accept(tcp)
            .await
            .map_err(|e| format!("server: {}", tls::explain_io(&e)))?;
        let peer = tls::peer_spiffe_id(tls.get_ref().1.peer_certificates().unwrap_or_default())
            .map(|id| id.to_string())
            .unwrap_or_default();
        let suite = tls.get_ref().1.negotiated_cipher_suite().map(|s| s.suite());
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf)
            .await
            .map_err(|e| format!("server read: {e}"))?;
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.ok();
        Ok::<_, String>((peer, suite))
    });
    let connector = TlsConnector::from(Arc::new(client_cfg));
    let client_result = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = rustls_pki_types::ServerName::try_from("gateway.isthmus.internal").unwrap();
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("client: {}", tls::explain_io(&e)))?;
        tls.write_all(b"ping")
            .await
            .map_err(|e| format!("client write: {e}"))?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf)
            .await
            .map_err(|e| format!("client read: {e}"))?;
        assert_eq!(&buf, b"pong");
        Ok::<_, String>(())
    }
    .await;
    let server_result = tokio::time::timeout(std::time::Duration::from_secs(10), server_task)
        .await
        .expect("server task did not finish within 10 s")
        .unwrap();
    // Whichever side refused has the precise reason; the other sees only the alert.
    match (server_result, client_result) {
        (Ok((peer, suite)), Ok(())) => {
            // Both ends prefer it (`tls::provider`): SHA-256 runs on CPU instructions.
            assert_eq!(suite, Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
            Ok(peer)
        }
        (Err(s), Err(c)) => Err(format!("{s} | {c}")),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

#[tokio::test]
async fn leaves_of_two_cluster_intermediates_of_one_root_handshake() {
    let root = root("mesh.example");
    let aws = intermediate(&root, "aws", None);
    let gcp = intermediate(&root, "gcp", None);
    let a = leaf(&aws, "spiffe://mesh.example/ns/isthmus/sa/gateway-aws");
    let g = leaf(&gcp, "spiffe://mesh.example/ns/isthmus/sa/gateway-gcp");
    let map = bundle_map(&[("mesh.example", &root)]);
    let peer = handshake(&a, &map, &g, &map, Authorizer::any())
        .await
        .unwrap();
    assert_eq!(peer, "spiffe://mesh.example/ns/isthmus/sa/gateway-gcp");
}

#[tokio::test]
async fn foreign_root_is_refused_until_its_bundle_is_added() {
    let root = root("mesh.example");
    let aws = intermediate(&root, "aws", None);
    let a = leaf(&aws, "spiffe://mesh.example/ns/isthmus/sa/gateway-aws");
    let foreign_root = trust_bundle::test_util::root("onprem.example");
    let onprem = intermediate(&foreign_root, "onprem", None);
    let o = leaf(&onprem, "spiffe://onprem.example/ns/isthmus/sa/gateway");

    let ours = bundle_map(&[("mesh.example", &root)]);
    let theirs = bundle_map(&[("onprem.example", &foreign_root)]);
    // The onprem client already federates with us, but we do not yet trust onprem.
    let both = BundleMap::merge([&ours, &theirs]);
    let err = handshake(&a, &ours, &o, &both, Authorizer::any())
        .await
        .unwrap_err();
    assert!(
        err.contains(
            "server: peer certificate refused: no bundle for trust domain \"onprem.example\""
        ),
        "unexpected error: {err}"
    );
    // Neither side trusts the other: each refuses with its own reason.
    let err = handshake(&a, &ours, &o, &theirs, Authorizer::any())
        .await
        .unwrap_err();
    assert!(
        err.contains("no bundle for trust domain \"mesh.example\""),
        "unexpected error: {err}"
    );

    // Federate: each side adds the other's bundle, kept under its own trust domain.
    let peer = handshake(&a, &both, &o, &both, Authorizer::any())
        .await
        .unwrap();
    assert_eq!(peer, "spiffe://onprem.example/ns/isthmus/sa/gateway");
}

#[tokio::test]
async fn a_root_listed_under_another_trust_domain_does_not_vouch_for_it() {
    // The foreign root's certificate is in the map, but under the wrong trust domain: a leaf
    // claiming onprem.example must not verify against mesh.example's anchors.
    let root = root("mesh.example");
    let aws = intermediate(&root, "aws", None);
    let a = leaf(&aws, "spiffe://mesh.example/ns/isthmus/sa/gateway-aws");
    let foreign_root = trust_bundle::test_util::root("onprem.example");
    let onprem = intermediate(&foreign_root, "onprem", None);
    let o = leaf(&onprem, "spiffe://onprem.example/ns/isthmus/sa/gateway");
    let pooled = bundle_map(&[("mesh.example", &root), ("mesh.example", &foreign_root)]);
    let err = handshake(&a, &pooled, &o, &pooled, Authorizer::any())
        .await
        .unwrap_err();
    assert!(
        err.contains("no bundle for trust domain"),
        "unexpected error: {err}"
    );
}

#[tokio::test]
async fn leaf_claiming_a_trust_domain_its_intermediate_is_not_bound_to_is_refused() {
    // One shared root anchors two trust domains; the gcp intermediate is bound to
    // gcp.mesh.example. A leaf it signs claiming aws.mesh.example chains to a trusted root, so
    // only the binding check stands between it and impersonating aws.
    let root = root("mesh.example");
    let aws = intermediate(&root, "aws", Some("aws.mesh.example"));
    let gcp = intermediate(&root, "gcp", Some("gcp.mesh.example"));
    let a = leaf(&aws, "spiffe://aws.mesh.example/ns/isthmus/sa/gateway");
    let forged = trust_bundle::test_util::forge_leaf(
        &gcp,
        "spiffe://aws.mesh.example/ns/isthmus/sa/gateway",
    );
    let map = bundle_map(&[("aws.mesh.example", &root), ("gcp.mesh.example", &root)]);
    let err = handshake(&a, &map, &forged, &map, Authorizer::any())
        .await
        .unwrap_err();
    assert!(
        err.contains("trust-domain binding") && err.contains("gcp.mesh.example"),
        "unexpected error: {err}"
    );
    // The honest gcp leaf passes.
    let g = leaf(&gcp, "spiffe://gcp.mesh.example/ns/isthmus/sa/gateway");
    handshake(&a, &map, &g, &map, Authorizer::any())
        .await
        .unwrap();
}

#[tokio::test]
async fn authorizer_refusal_ends_the_handshake() {
    let root = root("mesh.example");
    let aws = intermediate(&root, "aws", None);
    let a = leaf(&aws, "spiffe://mesh.example/ns/isthmus/sa/gateway-aws");
    let b = leaf(&aws, "spiffe://mesh.example/ns/default/sa/intruder");
    let map = bundle_map(&[("mesh.example", &root)]);
    let only_gateways = Authorizer::from_fn(|peer| {
        if peer.spiffe_id.path().starts_with("/ns/isthmus/") {
            Ok(())
        } else {
            Err("only Isthmus gateways may connect".into())
        }
    });
    let err = handshake(&a, &map, &b, &map, only_gateways)
        .await
        .unwrap_err();
    assert!(err.contains("not authorized"), "unexpected error: {err}");
}

/// One handshake against a server with optional client authentication; returns the client
/// SPIFFE ID the server saw ("" for an anonymous client) or the error.
async fn optional_auth_handshake(
    server: &Credential,
    server_trust: &BundleMap,
    client: Option<&Credential>,
    client_trust: &BundleMap,
) -> Result<String, String> {
    let server_cfg = tls::server_config_client_auth_optional(
        IdentityHandle::from_credential(server).unwrap(),
        TrustHandle::new(TrustStore::new(server_trust).unwrap()),
        Authorizer::any(),
    )
    .unwrap();
    let client_trust = TrustHandle::new(TrustStore::new(client_trust).unwrap());
    let client_cfg = match client {
        Some(c) => tls::client_config(
            IdentityHandle::from_credential(c).unwrap(),
            client_trust,
            Authorizer::any(),
        ),
        None => tls::client_config_server_auth_only(client_trust, Authorizer::any()),
    }
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(server_cfg));
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = acceptor
            .accept(tcp)
            .await
            .map_err(|e| format!("server: {}", tls::explain_io(&e)))?;
        let peer = tls::peer_spiffe_id(tls.get_ref().1.peer_certificates().unwrap_or_default())
            .map(|id| id.to_string())
            .unwrap_or_default();
        tls.write_all(b"ok").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.ok();
        Ok::<_, String>(peer)
    });
    let connector = TlsConnector::from(Arc::new(client_cfg));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("controller.isthmus.internal").unwrap();
    let client_result = match connector.connect(name, tcp).await {
        Ok(mut tls) => {
            let mut buf = [0u8; 2];
            tls.read_exact(&mut buf)
                .await
                .map(drop)
                .map_err(|e| format!("client read: {e}"))
        }
        Err(e) => Err(format!("client: {}", tls::explain_io(&e))),
    };
    let server_result = tokio::time::timeout(std::time::Duration::from_secs(10), server_task)
        .await
        .expect("server task did not finish within 10 s")
        .unwrap();
    match (server_result, client_result) {
        (Ok(peer), Ok(())) => Ok(peer),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

#[tokio::test]
async fn optional_client_auth_admits_anonymous_clients_and_still_verifies_presented_ones() {
    let root_a = root("a.example");
    let root_b = root("b.example");
    let server = leaf(
        &intermediate(&root_a, "a", None),
        "spiffe://a.example/isthmus/cluster/a/controller",
    );
    let known = leaf(
        &intermediate(&root_a, "a2", None),
        "spiffe://a.example/isthmus/cluster/a2/controller",
    );
    let stranger = leaf(
        &intermediate(&root_b, "b", None),
        "spiffe://b.example/isthmus/cluster/b/controller",
    );
    let map_a = bundle_map(&[("a.example", &root_a)]);

    let anonymous = optional_auth_handshake(&server, &map_a, None, &map_a).await;
    assert_eq!(anonymous, Ok(String::new()));
    let verified = optional_auth_handshake(&server, &map_a, Some(&known), &map_a).await;
    assert_eq!(
        verified,
        Ok("spiffe://a.example/isthmus/cluster/a2/controller".to_owned())
    );
    // A certificate that is presented must verify: optional is not "anything goes".
    let refused = optional_auth_handshake(&server, &map_a, Some(&stranger), &map_a).await;
    let err = refused.expect_err("a foreign-root client certificate must be refused");
    assert!(err.contains("b.example"), "{err}");
}
