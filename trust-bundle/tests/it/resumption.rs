//! Session resumption cannot bypass verification: every handshake with a `tls::server_config`
//! is a full one, so a trust domain removed from the live trust store is refused at once.

use std::sync::Arc;

use rustls::HandshakeKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use trust_bundle::TrustStore;
use trust_bundle::test_util::{bundle_map, intermediate, leaf, root};
use trust_bundle::tls::{self, Authorizer, IdentityHandle, TrustHandle};

#[tokio::test]
async fn every_handshake_is_full_and_sees_the_current_trust_store() {
    let ours = root("mesh.example");
    let theirs = root("onprem.example");
    let server = leaf(
        &intermediate(&ours, "aws", None),
        "spiffe://mesh.example/ns/isthmus/sa/gw",
    );
    let client = leaf(
        &intermediate(&theirs, "onprem", None),
        "spiffe://onprem.example/ns/isthmus/sa/gw",
    );
    let federated = bundle_map(&[("mesh.example", &ours), ("onprem.example", &theirs)]);

    let server_trust = TrustHandle::new(TrustStore::new(&federated).unwrap());
    let server_cfg = Arc::new(
        tls::server_config(
            IdentityHandle::from_credential(&server).unwrap(),
            server_trust.clone(),
            Authorizer::any(),
        )
        .unwrap(),
    );
    // The client keeps rustls' default resumption on: it will try to resume.
    let mut client_cfg = tls::client_config(
        IdentityHandle::from_credential(&client).unwrap(),
        TrustHandle::new(TrustStore::new(&federated).unwrap()),
        Authorizer::any(),
    )
    .unwrap();
    client_cfg.resumption = rustls::client::Resumption::default();
    let connector = TlsConnector::from(Arc::new(client_cfg));

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(server_cfg);
    let server_task = tokio::spawn(async move {
        let mut outcomes = Vec::new();
        for _ in 0..3 {
            let (tcp, _) = listener.accept().await.unwrap();
            match acceptor.accept(tcp).await {
                Ok(mut s) => {
                    let kind = s.get_ref().1.handshake_kind();
                    let mut b = [0u8; 1];
                    let _ = s.read_exact(&mut b).await;
                    let _ = s.write_all(b"k").await;
                    let _ = s.shutdown().await;
                    outcomes.push(Ok(kind));
                }
                Err(e) => outcomes.push(Err(tls::explain_io(&e))),
            }
        }
        outcomes
    });

    let call = || async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("gw.isthmus.internal").unwrap();
        let mut s = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(b"p").await.map_err(|e| e.to_string())?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    };
    call().await.unwrap();
    call().await.unwrap();
    // Unfederate onprem while the client still holds whatever the first sessions gave it.
    server_trust.store(TrustStore::new(&bundle_map(&[("mesh.example", &ours)])).unwrap());
    assert!(
        call().await.is_err(),
        "a removed trust domain must not get back in"
    );

    let outcomes = tokio::time::timeout(std::time::Duration::from_secs(10), server_task)
        .await
        .expect("server finished within 10 s")
        .unwrap();
    assert_eq!(outcomes[0], Ok(Some(HandshakeKind::Full)));
    assert_eq!(
        outcomes[1],
        Ok(Some(HandshakeKind::Full)),
        "second handshake must not resume"
    );
    match &outcomes[2] {
        Err(e) => assert!(
            e.contains("no bundle for trust domain \"onprem.example\""),
            "{e}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
}
