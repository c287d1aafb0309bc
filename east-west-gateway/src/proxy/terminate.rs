//! Terminate: finish the gateway-to-gateway mTLS handshake the peer gateway started (the peeked
//! ClientHello is replayed into rustls), verify the peer against the bundle map and authorize it
//! for the route inside the handshake, so a refused peer gets a TLS alert and never a route;
//! then connect to an endpoint and copy plaintext ([`splice::pump`]; rustls needs the bytes, so
//! this path never uses splice(2)).
//!
//! The peer is checked again after every config change: a connection whose peer no longer
//! verifies (its trust domain was removed by `unlink`, its root rotated out) or is no longer
//! authorized by the route serving its SNI (unlinked under a shared root, unexported) is closed
//! with outcome `revoked`, instead of living on with a trust that was withdrawn.
//!
//! Sessions resume (tickets from a gateway-wide store), but a resumed handshake verifies no
//! certificate: the chain its session recorded is put through the same check, and the
//! session's age vetted, before the handshake completes ([`accept`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;
use trust_bundle::tls::resume;

use super::conn::Record;
use super::splice;
use super::{Outcome, RouteState, Shared, passthrough};
use crate::config;
use crate::drain;
use crate::metrics::{Metrics, Side, SideLabel, TlsFailureLabel};
use crate::tls::{self, FailureReason, Peer};

#[allow(clippy::too_many_arguments)] // the connection, its route and the gateway-wide context
pub(super) async fn forward(
    client: &mut TcpStream,
    hello: Vec<u8>,
    route: &RouteState,
    server_config: Arc<rustls::ServerConfig>,
    shared: &Shared,
    config: &config::Config,
    record: &mut Record,
    drain: &mut drain::Watch,
) -> Outcome {
    let metrics = &shared.metrics;
    // The ClientHello is in (detection has its own deadline); the handshake waits for a slot,
    // then gets the hello's allowance from the moment the slot is granted.
    let slot = shared.handshakes.admit(Side::Ingress, metrics).await;
    let prefixed = Prefixed {
        prefix: hello,
        read: 0,
        inner: client,
    };
    let sni = record.sni.clone().unwrap_or_default();
    // Watched from before the handshake: a config put in force while it runs (after the
    // peer's chain was checked) is checked against below, before any byte moves.
    let changes = shared.tls().map(|m| m.changes());
    let resumed_allowed = |chain: &[CertificateDer<'_>]| still_allowed(shared, &sni, chain);
    let timeout = config.ingress.hello_timeout;
    let done = accept(server_config, prefixed, timeout, resumed_allowed).await;
    drop(slot);
    let (reason, text) = match done {
        Ok((tls, chain, resumed)) => {
            record.peer = Some(Box::new(Peer::from_certs(&chain)));
            let Some(mut changes) = changes else {
                // A terminate route exists only with material; nothing to re-check against.
                return proxy(tls, route, config, metrics, record, drain).await;
            };
            if resumed {
                let side = SideLabel {
                    side: Side::Ingress,
                };
                metrics.tls_sessions_resumed.get_or_create(&side).inc();
            }
            // Biased, the watch first: a change put in force during the handshake is already
            // pending there, so it is checked against before the proxy moves a byte.
            tokio::select! {
                biased;
                reason = tls::revoked(&mut changes, || still_allowed(shared, &sni, &chain)) => {
                    tracing::info!(
                        peer_spiffe_id = record.peer.as_ref().and_then(|p| p.spiffe_id.as_deref()),
                        %reason,
                        "closing a connection whose peer is no longer trusted"
                    );
                    return Outcome::Revoked;
                }
                outcome = proxy(tls, route, config, metrics, record, drain) => return outcome,
            }
        }
        Err(refused) => refused,
    };
    metrics
        .tls_handshake_failures
        .get_or_create(&TlsFailureLabel { reason })
        .inc();
    tracing::debug!(reason = reason.as_str(), error = %text, "peer refused");
    record.tls_error = Some(text.into_boxed_str());
    Outcome::TlsRefused
}

/// Whether the peer verified at handshake would be let in now: its chain verifies against the
/// bundle map in force, and the route now serving `sni` is a terminate route authorizing it (a
/// peer unlinked under a shared root keeps a valid chain but loses its routes).
fn still_allowed(shared: &Shared, sni: &str, chain: &[CertificateDer<'_>]) -> Result<(), String> {
    let Some(material) = shared.tls() else {
        return Err("no TLS material to check the peer against".to_owned());
    };
    let peer = material.still_trusted(chain, tls::Usage::Client)?;
    let snapshot = shared.load();
    match snapshot.table.lookup(sni).map(|(route, _)| &route.mode) {
        Some(config::Mode::Terminate(auth)) => tls::authorizer(auth).check(&peer),
        Some(config::Mode::Passthrough) => Err(format!("{sni} is now a passthrough route")),
        None => Err(format!("no route serves {sni} any more")),
    }
}

/// A TLS stream split into its halves for the pump.
type Halves<S> = (
    tokio::io::ReadHalf<tokio_rustls::server::TlsStream<S>>,
    tokio::io::WriteHalf<tokio_rustls::server::TlsStream<S>>,
);

/// Completes the handshake within `timeout`; returns the stream split, the peer's chain and
/// whether a session was resumed, or why the peer was refused.
///
/// A resumed handshake verifies no certificate: the session is vetted (its age) and `check`
/// passes the chain it recorded as soon as the ClientHello is in, before the handshake
/// completes, so a refused peer is issued no new ticket to come back with.
///
/// The stream's TLS state (over 1.2 KB) is split right here, so it lives once, on the heap,
/// rather than in a connection's task as well (it sat there three times over: the timeout's
/// result, the stream taken from it, and the pump's argument).
async fn accept<S>(
    server_config: Arc<rustls::ServerConfig>,
    stream: S,
    timeout: std::time::Duration,
    check: impl FnOnce(&[CertificateDer<'_>]) -> Result<(), String>,
) -> Result<(Halves<S>, Vec<CertificateDer<'static>>, bool), (FailureReason, String)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let handshake = async {
        let acceptor = rustls::server::Acceptor::default();
        let start = LazyConfigAcceptor::new(acceptor, stream)
            .await
            .map_err(|e| refusal(&e))?;
        let mut vetted = Ok(false);
        let accept = start.into_stream_with(server_config, |conn| {
            vetted = resume::vet_server_hello(conn).and_then(|resumed| {
                if resumed {
                    check(conn.peer_certificates().unwrap_or_default())?;
                }
                Ok(resumed)
            });
        });
        let vetted = vetted.map_err(|reason| (FailureReason::Resumed, reason))?;
        let tls = accept.await.map_err(|e| refusal(&e))?;
        let resumed = tls::resumed(tls.get_ref().1);
        if resumed && !vetted {
            let reason = "a session resumed after a HelloRetryRequest is not accepted";
            return Err((FailureReason::Resumed, reason.to_owned()));
        }
        Ok((tls, resumed))
    };
    match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok((tls, resumed))) => {
            let chain = tls::owned_chain(tls.get_ref().1.peer_certificates());
            Ok((tokio::io::split(tls), chain, resumed))
        }
        Ok(Err(refused)) => Err(refused),
        Err(_elapsed) => Err((FailureReason::Other, "handshake timed out".to_owned())),
    }
}

/// The failure label and text of a handshake that failed.
fn refusal(error: &io::Error) -> (FailureReason, String) {
    (
        FailureReason::of(error),
        trust_bundle::tls::explain_io(error),
    )
}

async fn proxy<S>(
    tls: Halves<S>,
    route: &RouteState,
    config: &config::Config,
    metrics: &Metrics,
    record: &mut Record,
    drain: &mut drain::Watch,
) -> Outcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some((mut upstream, counted)) =
        passthrough::open(route, &config.upstream, metrics, record).await
    else {
        return Outcome::UpstreamConnect;
    };
    let (up, down) = counted.tallies(record);
    let limits = splice::Limits::of(&config.upstream);
    splice::pump(tls, upstream.split(), up, down, limits, drain).await
}

/// A stream that first yields bytes already read from it (the peeked ClientHello).
struct Prefixed<S> {
    prefix: Vec<u8>,
    read: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(rest) = this.prefix.get(this.read..).filter(|r| !r.is_empty()) {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.read += n;
            if this.read == this.prefix.len() {
                // Replayed: free it, or every open connection keeps its hello.
                this.prefix = Vec::new();
                this.read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
