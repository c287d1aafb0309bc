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
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
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
        let _ = stream.set_nodelay(true);
        let span = tracing::info_span!("conn", peer = %peer);
        tokio::spawn(conn::handle(stream, peer, shared.clone(), drain.clone()).instrument(span));
    }
}
