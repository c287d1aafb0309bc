//! The byte pump shared by every forwarding path (passthrough, terminate, egress): copy both
//! ways until both sides have closed, the connection idles out, or the drain deadline cuts it.
//!
//! Half-close is preserved: EOF from one side becomes a write shutdown (FIN) toward the other,
//! and the opposite direction keeps flowing.
//!
//! This is a userspace copy with an adaptive buffer per direction (16 KiB, doubling up to
//! `upstream.buffer_bytes`). Measured on the 2-core dev machine, one bulk stream with a Python
//! load generator: 16 KiB fixed ≈ 6 Gb/s, 64 KiB ≈ 8 Gb/s, 256 KiB ≈ 10 Gb/s, adaptive up to
//! 256 KiB ≈ 8–9 Gb/s (direct ≈ 13–20; runs vary ±20%).
//! splice(2) needs unsafe code or another crate and HAProxy gained only 10–15% from it on this
//! machine kind's loopback (see the performance notes), so it waits for a benchmark to justify it.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::Outcome;
use crate::drain;

/// First copy buffer per direction; grows by doubling up to `upstream.buffer_bytes`.
const INITIAL_BUFFER_BYTES: usize = 16 * 1024;

/// Where one direction's bytes are counted: the connection's own total and a metric.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tally<'a> {
    pub(crate) total: &'a AtomicU64,
    pub(crate) counter: &'a Counter,
}

/// Limits of one pump.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) buffer_bytes: usize,
    pub(crate) idle_timeout: Duration,
}

/// Copies `client` ⇄ `upstream` until done; `up` counts client → upstream bytes.
#[allow(clippy::too_many_arguments)] // two streams, two tallies, limits, drain: all distinct
pub(crate) async fn pump<CR, CW, UR, UW>(
    (mut client_read, mut client_write): (CR, CW),
    (mut upstream_read, mut upstream_write): (UR, UW),
    up: Tally<'_>,
    down: Tally<'_>,
    limits: Limits,
    drain: &mut drain::Watch,
) -> Outcome
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    UR: AsyncRead + Unpin,
    UW: AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last_activity = AtomicU64::new(0);
    let up = Half {
        tally: up,
        last_activity: &last_activity,
        start,
    };
    let down = Half {
        tally: down,
        last_activity: &last_activity,
        start,
    };
    let buffer = limits.buffer_bytes;
    let both = async {
        tokio::try_join!(
            up.copy(&mut client_read, &mut upstream_write, buffer),
            down.copy(&mut upstream_read, &mut client_write, buffer),
        )
    };
    tokio::select! {
        result = both => match result {
            Ok(_) => Outcome::Forwarded,
            Err(error) => {
                tracing::debug!(%error, "forwarding failed");
                Outcome::Reset
            }
        },
        () = idle(&last_activity, start, limits.idle_timeout) => Outcome::IdleTimeout,
        () = drain.closed() => Outcome::Drained,
    }
}

/// Per-direction accounting.
struct Half<'a> {
    tally: Tally<'a>,
    last_activity: &'a AtomicU64,
    start: Instant,
}

impl Half<'_> {
    async fn copy<R, W>(&self, from: &mut R, to: &mut W, max_buffer: usize) -> io::Result<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        // Start small and grow while reads fill the buffer: idle and chatty connections stay
        // cheap, bulk transfers reach the configured size within a few reads.
        let mut buf = vec![0u8; INITIAL_BUFFER_BYTES.min(max_buffer)];
        loop {
            let n = from.read(&mut buf).await?;
            if n == 0 {
                // Propagate the half-close; if the peer is already gone the other direction
                // reports the error.
                let _ = to.shutdown().await;
                return Ok(());
            }
            if n == buf.len() && buf.len() < max_buffer {
                let grown = (buf.len() * 2).min(max_buffer);
                buf.resize(grown, 0);
            }
            to.write_all(&buf[..n]).await?;
            // TLS writers buffer a record; push it out now (a no-op on plain TCP).
            to.flush().await?;
            let n = u64::try_from(n).unwrap_or(u64::MAX);
            self.tally.total.fetch_add(n, Ordering::Relaxed);
            self.tally.counter.inc_by(n);
            self.last_activity
                .store(millis_since(self.start), Ordering::Relaxed);
        }
    }
}

/// Resolves once neither direction has moved a byte for `timeout`.
async fn idle(last_activity: &AtomicU64, start: Instant, timeout: Duration) {
    loop {
        let last = Duration::from_millis(last_activity.load(Ordering::Relaxed));
        let deadline = start + last + timeout;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

fn millis_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}
