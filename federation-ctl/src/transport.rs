//! gRPC transports: tonic over our own rustls configurations (so peers are verified by the
//! SPIFFE verifiers of trust-bundle, with bundles that change at run time), and tonic over Unix
//! sockets for the local API.
//!
//! tonic's built-in TLS takes fixed root stores; the peering port needs a trust store that grows
//! with every link and optional client authentication for token redemption, so the handshake
//! is done here and tonic gets the finished stream.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};

/// How long a peer may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a dial may take before the next address is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The name our clients send in SNI. Controllers are identified by SPIFFE ID, not by name.
const PEERING_SERVER_NAME: &str = "controller.isthmus.internal";

/// Why a dial failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no address to dial")]
    NoAddress,
    #[error("cannot reach {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("gRPC channel: {0}")]
    Channel(#[from] tonic::transport::Error),
}

/// What a server handler knows about the connection a call came on.
#[derive(Debug, Clone)]
pub struct PeerConn {
    pub remote: SocketAddr,
    /// The client's verified certificate chain, leaf first; empty for an anonymous client.
    pub chain: Arc<Vec<CertificateDer<'static>>>,
}

/// A server-side TLS connection handed to tonic.
pub struct TlsConn {
    io: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerConn,
}

impl Connected for TlsConn {
    type ConnectInfo = PeerConn;

    fn connect_info(&self) -> PeerConn {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Accepts TCP connections and completes TLS handshakes off the accept loop, so one slow or
/// hostile client never delays the others. Failed handshakes are logged with the verifier's
/// reason and dropped.
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> ReceiverStream<io::Result<TlsConn>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(conn) => conn,
                Err(error) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(%error, "peering accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        let reason = trust_bundle::tls::explain_io(&e);
                        tracing::info!(%remote, %reason, "peering handshake refused");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(%remote, "peering handshake timed out");
                        return;
                    }
                };
                let chain = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
                    .unwrap_or_default();
                let info = PeerConn {
                    remote,
                    chain: Arc::new(chain),
                };
                let _ = tx.send(Ok(TlsConn { io: tls, info })).await;
            });
        }
    });
    ReceiverStream::new(rx)
}

/// A lazily connecting gRPC channel to a peer controller over TLS: every (re)connect tries
/// `addrs` in order (host names resolved each time) and handshakes with `config`.
pub fn tls_channel(
    addrs: Vec<String>,
    config: Arc<rustls::ClientConfig>,
) -> Result<Channel, Error> {
    if addrs.is_empty() {
        return Err(Error::NoAddress);
    }
    let addrs = Arc::new(addrs);
    let connector = TlsConnector::from(config);
    let endpoint = Endpoint::from_static("http://controller.isthmus.internal")
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10));
    Ok(endpoint.connect_with_connector_lazy(tower::service_fn(
        move |_: tonic::codegen::http::Uri| {
            let addrs = addrs.clone();
            let connector = connector.clone();
            async move { dial(&addrs, &connector).await.map(TokioIo::new) }
        },
    )))
}

async fn dial(
    addrs: &[String],
    connector: &TlsConnector,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut last = io::Error::other("no address to dial");
    for addr in addrs {
        let attempt = async {
            let tcp = TcpStream::connect(addr.as_str()).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(PEERING_SERVER_NAME).map_err(io::Error::other)?;
            connector
                .connect(name, tcp)
                .await
                .map_err(|e| io::Error::new(e.kind(), trust_bundle::tls::explain_io(&e)))
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Ok(Ok(tls)) => return Ok(tls),
            Ok(Err(e)) => last = io::Error::new(e.kind(), format!("{addr}: {e}")),
            Err(_) => last = io::Error::new(io::ErrorKind::TimedOut, format!("{addr}: timed out")),
        }
    }
    Err(last)
}

/// Connects once over TLS and returns a channel, so the caller learns at once whether the peer
/// is reachable and trusted (used by `link join`).
pub async fn tls_connect(
    addrs: Vec<String>,
    config: Arc<rustls::ClientConfig>,
) -> Result<Channel, Error> {
    let first = addrs.first().cloned().ok_or(Error::NoAddress)?;
    let connector = TlsConnector::from(config);
    let tls = dial(&addrs, &connector).await.map_err(|e| Error::Connect {
        addr: first,
        reason: e.to_string(),
    })?;
    let mut once = Some(tls);
    Ok(Endpoint::from_static("http://controller.isthmus.internal")
        .connect_with_connector(tower::service_fn(move |_: tonic::codegen::http::Uri| {
            let tls = once.take();
            async move {
                tls.map(TokioIo::new)
                    .ok_or_else(|| io::Error::other("the one-shot connection was already used"))
            }
        }))
        .await?)
}

/// A gRPC channel to a Unix socket (the controller's local API).
pub async fn unix_channel(path: &Path) -> Result<Channel, Error> {
    let path: PathBuf = path.to_owned();
    let shown = path.display().to_string();
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: tonic::codegen::http::Uri| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
        .map_err(|e| Error::Connect {
            addr: shown,
            reason: source_chain(&e),
        })
}

/// An error and its causes on one line: tonic's transport errors hide the useful part.
pub fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let s = inner.to_string();
        if !text.contains(&s) {
            text = format!("{text}: {s}");
        }
        cur = inner.source();
    }
    text
}
