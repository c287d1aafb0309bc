//! Session resumption cannot bypass verification: with a `tls::server_config` every handshake
//! is a full one, so a trust domain removed from the live trust store is refused at once; with
//! the `*_resuming` builders a session resumes only under the trust store it was made under.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::HandshakeKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::{LazyConfigAcceptor, TlsConnector};
use trust_bundle::TrustStore;
use trust_bundle::ca::Credential;
use trust_bundle::test_util::{bundle_map, intermediate, leaf, root};
use trust_bundle::tls::{self, Authorizer, IdentityHandle, TrustHandle};
use trust_bundle::{BundleMap, ca::Authority};

/// What the server saw of a handshake: its kind and the length of the client's chain.
type Seen = Result<(Option<HandshakeKind>, usize), String>;

/// Two meshes with their own roots, federated: a server in one, a client in the other.
struct Meshes {
    ours: Authority,
    server: Credential,
    client: Credential,
    federated: BundleMap,
}

fn meshes() -> Meshes {
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
    Meshes {
        ours,
        server,
        client,
        federated,
    }
}

/// Accepts `n` connections, one byte each way; each is vetted as the gateway does
/// (`resume::vet_server_hello`), without which no session is ever found again.
async fn serve(config: rustls::ServerConfig, n: usize) -> (SocketAddr, JoinHandle<Vec<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Arc::new(config);
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..n {
            let (tcp, _) = listener.accept().await.unwrap();
            let accepted = async {
                let acceptor = rustls::server::Acceptor::default();
                let start = LazyConfigAcceptor::new(acceptor, tcp).await?;
                let mut vetted = Ok(false);
                let accept = start.into_stream_with(Arc::clone(&config), |conn| {
                    vetted = tls::resume::vet_server_hello(conn);
                });
                vetted.map_err(std::io::Error::other)?;
                accept.await
            };
            match accepted.await {
                Ok(mut s) => {
                    let kind = s.get_ref().1.handshake_kind();
                    let chain = s.get_ref().1.peer_certificates().map_or(0, <[_]>::len);
                    let mut b = [0u8; 1];
                    let _ = s.read_exact(&mut b).await;
                    let _ = s.write_all(b"k").await;
                    let _ = s.shutdown().await;
                    seen.push(Ok((kind, chain)));
                }
                Err(e) => seen.push(Err(tls::explain_io(&e))),
            }
        }
        seen
    });
    (addr, task)
}

/// One exchange; the client's view of the handshake's kind.
async fn call(connector: &TlsConnector, addr: SocketAddr) -> Result<Option<HandshakeKind>, String> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("gw.isthmus.internal").unwrap();
    let mut s = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(b"p").await.map_err(|e| e.to_string())?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.map_err(|e| e.to_string())?;
    // Read to the end: the session ticket, sent after the handshake, is taken in on the way.
    let _ = s.read(&mut b).await;
    Ok(s.get_ref().1.handshake_kind())
}

async fn finished(task: JoinHandle<Vec<Seen>>) -> Vec<Seen> {
    tokio::time::timeout(std::time::Duration::from_secs(10), task)
        .await
        .expect("server finished within 10 s")
        .unwrap()
}

#[tokio::test]
async fn every_handshake_is_full_and_sees_the_current_trust_store() {
    let m = meshes();
    let server_trust = TrustHandle::new(TrustStore::new(&m.federated).unwrap());
    let server_cfg = tls::server_config(
        IdentityHandle::from_credential(&m.server).unwrap(),
        server_trust.clone(),
        Authorizer::any(),
    )
    .unwrap();
    // The client keeps rustls' default resumption on: it will try to resume.
    let mut client_cfg = tls::client_config(
        IdentityHandle::from_credential(&m.client).unwrap(),
        TrustHandle::new(TrustStore::new(&m.federated).unwrap()),
        Authorizer::any(),
    )
    .unwrap();
    client_cfg.resumption = rustls::client::Resumption::default();
    let connector = TlsConnector::from(Arc::new(client_cfg));
    let (addr, server_task) = serve(server_cfg, 3).await;

    call(&connector, addr).await.unwrap();
    call(&connector, addr).await.unwrap();
    // Unfederate onprem while the client still holds whatever the first sessions gave it.
    server_trust.store(TrustStore::new(&bundle_map(&[("mesh.example", &m.ours)])).unwrap());
    assert!(
        call(&connector, addr).await.is_err(),
        "a removed trust domain must not get back in"
    );

    let outcomes = finished(server_task).await;
    assert_eq!(outcomes[0], Ok((Some(HandshakeKind::Full), 2)));
    assert_eq!(
        outcomes[1],
        Ok((Some(HandshakeKind::Full), 2)),
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

#[tokio::test]
async fn a_resuming_config_resumes_under_one_trust_store_and_never_across_a_change() {
    let m = meshes();
    let server_trust = TrustHandle::new(TrustStore::new(&m.federated).unwrap());
    let client_trust = TrustHandle::new(TrustStore::new(&m.federated).unwrap());
    let server_identity = IdentityHandle::from_credential(&m.server).unwrap();
    let server_cfg = tls::server_config_resuming(
        server_identity.clone(),
        server_trust.clone(),
        Authorizer::any(),
        tls::resume::server_store(server_trust.clone(), server_identity, 16),
    )
    .unwrap();
    let client_cfg = tls::client_config_resuming(
        IdentityHandle::from_credential(&m.client).unwrap(),
        client_trust.clone(),
        Authorizer::any(),
        16,
    )
    .unwrap();
    let connector = TlsConnector::from(Arc::new(client_cfg));
    let (addr, server_task) = serve(server_cfg, 6).await;

    let full = Ok(Some(HandshakeKind::Full));
    let resumed = Ok(Some(HandshakeKind::Resumed));
    assert_eq!(call(&connector, addr).await, full);
    assert_eq!(
        call(&connector, addr).await,
        resumed,
        "same stores: resumed"
    );
    // The server's store replaced by an equal one: its sessions start over.
    server_trust.store(TrustStore::new(&m.federated).unwrap());
    assert_eq!(call(&connector, addr).await, full, "new server store: full");
    assert_eq!(call(&connector, addr).await, resumed);
    // The client's store replaced: its tickets start over.
    client_trust.store(TrustStore::new(&m.federated).unwrap());
    assert_eq!(call(&connector, addr).await, full, "new client store: full");
    // Unfederated while the client holds a fresh ticket: a full handshake, refused.
    server_trust.store(TrustStore::new(&bundle_map(&[("mesh.example", &m.ours)])).unwrap());
    assert!(call(&connector, addr).await.is_err());

    let seen = finished(server_task).await;
    // A resumed session still names the client's chain, for the caller to check again.
    assert_eq!(seen[1], Ok((Some(HandshakeKind::Resumed), 2)));
    match &seen[5] {
        Err(e) => assert!(e.contains("no bundle for trust domain"), "{e}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}
