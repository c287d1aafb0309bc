//! Test backends (a TLS HTTP server with its own CA, tagged echo servers) and TLS clients.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::{PATIENCE, rt};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS server answering every HTTP request with `body`, behind a fresh test CA.
pub(crate) struct TlsBackend {
    pub(crate) addr: SocketAddr,
    pub(crate) ca: CertificateDer<'static>,
    /// The CA as a PEM file, for curl and openssl.
    pub(crate) ca_pem: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsBackend {
    pub(crate) fn start(dns_names: &[&str], body: &'static str) -> Self {
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("test ca for {body}"));
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
        let names: Vec<String> = dns_names.iter().map(|n| (*n).to_owned()).collect();
        let leaf = rcgen::CertificateParams::new(names)
            .expect("leaf params")
            .signed_by(&leaf_key, &issuer)
            .expect("leaf cert");

        let dir = tempfile::tempdir().expect("tempdir");
        let ca_pem = dir.path().join("ca.pem");
        std::fs::write(&ca_pem, ca_cert.pem()).expect("write ca");
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
            )
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = listen();
        let addr = listener.local_addr().expect("addr");
        rt().spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Self {
            addr,
            ca: ca_cert.der().clone(),
            ca_pem,
            _dir: dir,
        }
    }
}

/// A plain TCP server that writes `tag` on connect, then echoes until EOF and half-closes.
pub(crate) struct EchoBackend {
    pub(crate) addr: SocketAddr,
}

impl EchoBackend {
    pub(crate) fn start(tag: &'static str) -> Self {
        let listener = listen();
        let addr = listener.local_addr().expect("addr");
        rt().spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if tcp.write_all(tag.as_bytes()).await.is_err() {
                        return;
                    }
                    let (mut r, mut w) = tcp.split();
                    if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                        let _ = w.shutdown().await;
                    }
                });
            }
        });
        Self { addr }
    }
}

/// A loopback listener with a deep accept queue, so bursts from the gateway are not dropped.
fn listen() -> TcpListener {
    let _guard = rt().enter();
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind backend");
    socket.listen(4096).expect("listen")
}

fn client_config(roots: &[CertificateDer<'static>]) -> rustls::ClientConfig {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).expect("root");
    }
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(store)
        .with_no_client_auth()
}

/// The first flight of a real rustls client: a ClientHello, with or without SNI.
pub(crate) fn client_hello(sni: Option<&str>) -> Vec<u8> {
    let mut config = client_config(&[]);
    config.enable_sni = sni.is_some();
    let name = ServerName::try_from(sni.unwrap_or("no-sni.example").to_owned()).expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut out = Vec::new();
    conn.write_tls(&mut out).expect("hello");
    out
}

/// Does a TLS handshake through `gateway` for `sni`, verifying against `ca`, sends an HTTP
/// request and returns the response. `dribble` paces the first bytes one per write.
pub(crate) fn https_get(
    gateway: SocketAddr,
    sni: &str,
    ca: &CertificateDer<'static>,
    dribble: bool,
) -> String {
    let config = Arc::new(client_config(std::slice::from_ref(ca)));
    let name = ServerName::try_from(sni.to_owned()).expect("server name");
    let conn = rustls::ClientConnection::new(config, name).expect("client");
    let tcp = TcpStream::connect(gateway).expect("connect gateway");
    tcp.set_nodelay(true).expect("nodelay");
    tcp.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let io = Dribble {
        tcp,
        remaining: if dribble { usize::MAX } else { 0 },
    };
    let mut tls = rustls::StreamOwned::new(conn, io);
    write!(tls, "GET / HTTP/1.1\r\nhost: {sni}\r\n\r\n").expect("send request through TLS");
    // Only the ClientHello is dribbled; the rest of the session goes at full speed.
    tls.sock.remaining = 0;
    let mut response = String::new();
    match tls.read_to_string(&mut response) {
        Ok(_) => {}
        // The backend may close without close_notify after its response.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => panic!("reading response: {e}"),
    }
    response
}

/// A TCP stream that, while `remaining > 0`, writes one byte per call with a short pause, so the
/// gateway sees the ClientHello arrive in many segments.
struct Dribble {
    tcp: TcpStream,
    remaining: usize,
}

impl Read for Dribble {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.tcp.read(buf)
    }
}

impl Write for Dribble {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return self.tcp.write(buf);
        }
        // Pacing, not synchronisation: the test passes whatever the gateway's read sizes are.
        std::thread::sleep(Duration::from_micros(500));
        self.remaining -= 1;
        self.tcp.write(&buf[..1])
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.tcp.flush()
    }
}
