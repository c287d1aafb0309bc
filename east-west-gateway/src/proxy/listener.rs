//! The ingress accept loop. It stops accepting when the drain starts; each connection runs in
//! its own task under a `conn` span and holds a drain watch until it ends.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::Instrument;

use super::{Shared, conn};
use crate::drain;

/// Pause after a failed accept (e.g. EMFILE) so a full fd table does not spin a core.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

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
