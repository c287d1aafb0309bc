//! Terminate: finish the gateway-to-gateway mTLS handshake the peer gateway started (the peeked
//! ClientHello is replayed into rustls), verify the peer against the bundle map and authorize it
//! for the route inside the handshake, so a refused peer gets a TLS alert and never a route;
//! then connect to an endpoint and copy plaintext ([`splice::pump`]; rustls needs the bytes, so
//! this path never uses splice(2)).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::conn::Record;
use super::splice::{self, Tally};
use super::{Outcome, RouteState, passthrough};
use crate::config;
use crate::drain;
use crate::metrics::{Metrics, TlsFailureLabel};
use crate::tls::{FailureReason, Peer};

#[allow(clippy::too_many_arguments)] // the connection, its route and the gateway-wide context
pub(super) async fn forward(
    client: &mut TcpStream,
    hello: Vec<u8>,
    route: &RouteState,
    server_config: Arc<rustls::ServerConfig>,
    config: &config::Config,
    metrics: &Metrics,
    record: &mut Record,
    drain: &mut drain::Watch,
) -> Outcome {
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config);
    let handshake = acceptor.accept(Prefixed {
        prefix: hello,
        read: 0,
        inner: client,
    });
    // The ClientHello already arrived; the rest of the handshake gets the same allowance.
    let (reason, text) = match tokio::time::timeout(config.ingress.hello_timeout, handshake).await {
        Ok(Ok(tls)) => {
            let peer = Peer::from_certs(tls.get_ref().1.peer_certificates().unwrap_or(&[]));
            record.peer = Some(peer);
            return proxy(tls, route, config, metrics, record, drain).await;
        }
        Ok(Err(error)) => (
            FailureReason::of(&error),
            trust_bundle::tls::explain_io(&error),
        ),
        Err(_elapsed) => (FailureReason::Other, "handshake timed out".to_owned()),
    };
    metrics
        .tls_handshake_failures
        .get_or_create(&TlsFailureLabel { reason })
        .inc();
    tracing::debug!(reason = reason.as_str(), error = %text, "peer refused");
    record.tls_error = Some(text);
    Outcome::TlsRefused
}

async fn proxy<S>(
    tls: tokio_rustls::server::TlsStream<S>,
    route: &RouteState,
    config: &config::Config,
    metrics: &Metrics,
    record: &mut Record,
    drain: &mut drain::Watch,
) -> Outcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let label = Metrics::route(Some(route.name.as_str()));
    let Some((mut upstream, index)) =
        passthrough::connect(route, &config.upstream, metrics, &label).await
    else {
        return Outcome::UpstreamConnect;
    };
    record.dst = route.balancer.address(index);
    let _active = route.balancer.acquire(index);
    let received = metrics.received_bytes.get_or_create_owned(&label);
    let sent = metrics.sent_bytes.get_or_create_owned(&label);
    splice::pump(
        tokio::io::split(tls),
        upstream.split(),
        Tally {
            total: &record.received,
            counter: &received,
        },
        Tally {
            total: &record.sent,
            counter: &sent,
        },
        splice::Limits::of(&config.upstream),
        drain,
    )
    .await
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
