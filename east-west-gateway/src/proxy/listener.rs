//! The ingress accept loop. It stops accepting when the drain starts; each connection runs in
//! its own task under a `conn` span and holds a drain watch until it ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tracing::Instrument;

use super::{Shared, conn};
use crate::drain;

/// Pause after a failed accept (e.g. EMFILE) so a full fd table does not spin a core.
pub(crate) const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// Accept queue length: bursts of new connections wait in the kernel instead of being dropped
/// (tokio's default is 1024; the kernel caps it at net.core.somaxconn).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listening socket (every listener of the gateway is made here).
pub(crate) fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }?;
    // Restarts must not wait out TIME_WAIT on the listening port.
    socket.set_reuseaddr(true)?;
    // Accepted sockets inherit it on Linux: one setsockopt per listener, not per connection.
    socket.set_nodelay(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Readies an accepted connection: small writes (a TLS record, one request) go out at once.
/// On Linux it came from a listener made by [`bind`] or [`adopt`] and has inherited this.
pub(crate) fn on_accept(stream: &tokio::net::TcpStream) {
    #[cfg(not(target_os = "linux"))]
    let _ = stream.set_nodelay(true);
    #[cfg(target_os = "linux")]
    let _ = stream;
}

/// A listening socket handed over by the instance before us, set as [`bind`] sets its own
/// (that instance may be of an older version). The socket serves even if that fails.
#[cfg(target_os = "linux")]
pub(crate) fn adopt(listener: std::net::TcpListener) -> std::io::Result<TcpListener> {
    if let Err(error) = rustix::net::sockopt::set_tcp_nodelay(&listener, true) {
        tracing::warn!(%error, "cannot set TCP_NODELAY on the handed-over listener; small writes may be delayed");
    }
    TcpListener::from_std(listener)
}

/// Accepts on `listener` until the drain starts.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, mut drain: drain::Watch) {
    loop {
        let accepted = tokio::select! {
            () = drain.stopped() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        on_accept(&stream);
        let span = tracing::info_span!("conn", peer = %peer);
        tokio::spawn(conn::handle(stream, peer, shared.clone(), drain.clone()).instrument(span));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn accept_one(listener: &TcpListener) -> tokio::net::TcpStream {
        let address = listener.local_addr().expect("address");
        let (incoming, _client) =
            tokio::join!(listener.accept(), tokio::net::TcpStream::connect(address));
        let (stream, _) = incoming.expect("accept");
        on_accept(&stream);
        stream
    }

    #[tokio::test]
    async fn accepted_connections_send_small_writes_at_once() {
        let bound = bind("127.0.0.1:0".parse().unwrap()).expect("bind");
        assert!(accept_one(&bound).await.nodelay().expect("nodelay"));
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_handed_over_listener_is_set_as_ours_are() {
        let plain = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        plain.set_nonblocking(true).expect("nonblocking");
        let adopted = adopt(plain).expect("adopt");
        assert!(accept_one(&adopted).await.nodelay().expect("nodelay"));
    }
}
