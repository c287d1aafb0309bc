//! The byte pump shared by every forwarding path (passthrough, terminate, egress): move bytes
//! both ways until both sides have closed, the connection idles out, or the drain deadline cuts
//! it.
//!
//! Half-close is preserved: EOF from one side becomes a write shutdown (FIN) toward the other,
//! and the opposite direction keeps flowing.
//!
//! Two engines, with the same semantics (half-close, idle timeout, drain deadline, byte tallies,
//! outcome):
//!
//! - [`pump`] copies through userspace with an adaptive buffer per direction (4 KiB, doubling
//!   up to `upstream.buffer_bytes`), held only while bytes flow and returned to a per-thread
//!   last-in-first-out [`pool`] while the direction waits ([`Buffer`]). Every TLS leg uses it
//!   (terminate, mTLS egress): rustls needs the bytes. It is also the default for plain legs.
//! - [`pump_tcp`] joins two plain TCP sockets (passthrough routes after the replayed
//!   ClientHello, passthrough egress). With `upstream.splice: auto` on Linux it moves bytes
//!   socket → pipe → socket with splice(2), one pipe per direction, so payload never enters
//!   userspace ([`pipe`]). A pipe starts at the kernel's default size (64 KiB) and grows ×4 up
//!   to `upstream.buffer_bytes` (F_SETPIPE_SZ) while splices fill it, like the copy buffer. A
//!   direction whose first splice the kernel refuses (EINVAL, ENOSYS, EOPNOTSUPP, EPERM: fd
//!   types or a sandbox without splice) or whose pipe cannot be created (EMFILE) falls back to
//!   copying before any byte moved, logged once per process; any byte already in its pipe is
//!   read back and written first, so nothing is lost. Copying also takes over a direction at a
//!   TCP urgent mark, which splice(2) cannot pass. Costs: 4 pipe fds per connection, a pipe
//!   created and destroyed per direction, and pipe pages count against
//!   `fs.pipe-user-pages-soft` for non-root users.
//!
//! Why copying is the default (`splice: off`): in the side-by-side benchmark (bench/README.md,
//! 2026-11-30, idle machine, three alternated pairs each) copying moved 1 MiB TLS responses at
//! 0.72–0.83× of direct against 0.56–0.69× spliced, and 1 KiB keep-alive at 0.42–0.46×
//! against 0.38–0.42×, for the same or less CPU; splice only saved CPU on one long plaintext
//! stream (0.50–0.53 against 0.58–0.61 CPU-s per GB) with no throughput gain. Pooled buffers
//! then took the 1 MiB figure from 0.48–0.53 to 0.44–0.45 CPU-s per GB: a few cache-hot
//! buffers cycle through every connection instead of a cold allocation per read.

#[cfg(target_os = "linux")]
mod pipe;
mod pool;
#[cfg(all(test, target_os = "linux"))]
mod tests;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::Outcome;
use crate::config::Splice;
use crate::drain;

/// First copy buffer per direction; grows by doubling up to `upstream.buffer_bytes`. Small, so
/// chatty connections stay cheap (16 KiB here, kept while idle, made an idle terminated
/// connection cost 72 KiB across the two gateways of an mTLS chain); a bulk transfer reaches the
/// default 32 KiB within four full reads.
const INITIAL_BUFFER_BYTES: usize = 4 * 1024;

/// Where one direction's bytes are counted: the connection's own total and a metric.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tally<'a> {
    pub(crate) total: &'a AtomicU64,
    pub(crate) counter: &'a Counter,
}

/// Limits of one pump.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Largest copy buffer, or splice pipe, per direction.
    pub(crate) buffer_bytes: usize,
    pub(crate) idle_timeout: Duration,
    /// Whether [`pump_tcp`] may splice.
    pub(crate) splice: Splice,
}

impl Limits {
    pub(crate) fn of(upstream: &crate::config::Upstream) -> Self {
        Self {
            buffer_bytes: upstream.buffer_bytes,
            idle_timeout: upstream.idle_timeout,
            splice: upstream.splice,
        }
    }
}

/// Joins two plain TCP sockets: splice(2) when `limits.splice` allows it (Linux), else
/// [`pump`]. `up` counts client → upstream bytes.
///
/// The pumps and their parts are functions returning async blocks rather than `async fn`s: an
/// `async fn` moves its arguments into locals, so a connection's task would hold each of them
/// twice, and an idle connection's memory is that task.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn stores its arguments twice"
)]
pub(crate) fn pump_tcp<'a>(
    client: &'a mut TcpStream,
    upstream: &'a mut TcpStream,
    up: Tally<'a>,
    down: Tally<'a>,
    limits: Limits,
    drain: &'a mut drain::Watch,
) -> impl Future<Output = Outcome> + Send + 'a {
    async move {
        #[cfg(target_os = "linux")]
        if limits.splice == Splice::Auto {
            let ops = &pipe::SYSTEM;
            // Boxed: its pipes' state would otherwise sit in every copying connection's task.
            return Box::pin(pipe::pump(client, upstream, up, down, limits, drain, ops))
                .await
                .outcome;
        }
        pump(client.split(), upstream.split(), up, down, limits, drain).await
    }
}

/// Copies `client` ⇄ `upstream` (each a read half and a write half) until done; `up` counts
/// client → upstream bytes.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn stores its arguments twice"
)]
pub(crate) fn pump<'a, CR, CW, UR, UW>(
    mut client: (CR, CW),
    mut upstream: (UR, UW),
    up: Tally<'a>,
    down: Tally<'a>,
    limits: Limits,
    drain: &'a mut drain::Watch,
) -> impl Future<Output = Outcome> + 'a
where
    CR: AsyncRead + Unpin + 'a,
    CW: AsyncWrite + Unpin + 'a,
    UR: AsyncRead + Unpin + 'a,
    UW: AsyncWrite + Unpin + 'a,
{
    async move {
        let clock = Clock::new();
        let up = Half::new(up, &clock);
        let down = Half::new(down, &clock);
        let buffer = limits.buffer_bytes;
        let both = std::pin::pin!(async {
            tokio::try_join!(
                up.copy(&mut client.0, &mut upstream.1, buffer),
                down.copy(&mut upstream.0, &mut client.1, buffer),
            )
        });
        match drive(both, &clock, limits.idle_timeout, drain).await {
            Ok(((), ())) => Outcome::Forwarded,
            Err(outcome) => outcome,
        }
    }
}

/// Runs both directions (`both`, joined) until both finish (`Ok`), one fails, the connection
/// idles out, or the drain deadline passes.
///
/// The directions are joined and pinned by the caller, where they were made, and borrowed here:
/// a future passed by value and then moved into `select!` is stored twice in the connection's
/// task, and an idle connection's memory is that task (the plain-TCP pump's future went from
/// 1904 to 1368 bytes in a debug build).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn stores its arguments twice"
)]
fn drive<'a, T, J>(
    both: Pin<&'a mut J>,
    clock: &'a Clock,
    idle_timeout: Duration,
    drain: &'a mut drain::Watch,
) -> impl Future<Output = Result<T, Outcome>> + 'a
where
    J: Future<Output = io::Result<T>>,
{
    async move {
        tokio::select! {
            result = both => result.map_err(|error| {
                if clock.a_direction_finished() && closed_by_peer(&error) {
                    // One direction had ended cleanly (its FIN passed on); the other then met a
                    // reset or a closed socket: how a connection ends when a client closes without
                    // reading the last bytes (a TLS close_notify, say) or a server closes both ways
                    // after its response. Nothing either side still wanted was lost.
                    tracing::debug!(%error, "reset after a half-close");
                    return Outcome::Forwarded;
                }
                tracing::debug!(%error, "forwarding failed");
                Outcome::Reset
            }),
            () = clock.idle(idle_timeout) => Err(Outcome::IdleTimeout),
            () = drain.closed() => Err(Outcome::Drained),
        }
    }
}

/// A peer's way of closing rather than a failure, once the other direction has ended.
fn closed_by_peer(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    )
}

/// When a connection last moved a byte, either way, and whether a direction has ended cleanly.
struct Clock {
    start: Instant,
    /// Milliseconds since `start`.
    last_activity: AtomicU64,
    finished: AtomicBool,
}

impl Clock {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_activity: AtomicU64::new(0),
            finished: AtomicBool::new(false),
        }
    }

    /// A direction read EOF and passed the half-close on.
    fn finish(&self) {
        self.finished.store(true, Ordering::Relaxed);
    }

    fn a_direction_finished(&self) -> bool {
        self.finished.load(Ordering::Relaxed)
    }

    fn touch(&self) {
        let millis = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity.store(millis, Ordering::Relaxed);
    }

    /// Resolves once neither direction has moved a byte for `timeout`.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn stores its arguments twice"
    )]
    fn idle(&self, timeout: Duration) -> impl Future<Output = ()> + '_ {
        async move {
            loop {
                let last = Duration::from_millis(self.last_activity.load(Ordering::Relaxed));
                let deadline = self.start + last + timeout;
                if Instant::now() >= deadline {
                    return;
                }
                tokio::time::sleep_until(deadline).await;
            }
        }
    }
}

/// Per-direction accounting.
struct Half<'a> {
    tally: Tally<'a>,
    clock: &'a Clock,
}

impl<'a> Half<'a> {
    fn new(tally: Tally<'a>, clock: &'a Clock) -> Self {
        Self { tally, clock }
    }

    /// Counts `n` bytes delivered to the writer.
    fn record(&self, n: usize) {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        self.tally.total.fetch_add(n, Ordering::Relaxed);
        self.tally.counter.inc_by(n);
        self.clock.touch();
    }

    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn stores its arguments twice"
    )]
    fn copy<'b, R, W>(
        &'b self,
        from: &'b mut R,
        to: &'b mut W,
        max_buffer: usize,
    ) -> impl Future<Output = io::Result<()>> + 'b
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        async move {
            let mut buf = Buffer::new(INITIAL_BUFFER_BYTES.min(max_buffer), max_buffer);
            loop {
                let n = buf.read(from).await?;
                if n == 0 {
                    // Propagate the half-close; if the peer is already gone the other
                    // direction reports the error.
                    let _ = to.shutdown().await;
                    self.clock.finish();
                    return Ok(());
                }
                to.write_all(buf.filled()).await?;
                // TLS writers buffer a record; push it out now (a no-op on plain TCP).
                to.flush().await?;
                self.record(n);
            }
        }
    }
}

/// One direction's copy buffer, held only while bytes flow: a read that would wait returns it
/// to the thread's [`pool`] (an idle connection keeps none), the next readiness takes one of
/// the size reached so far. Starts small and doubles while reads fill it, so chatty
/// connections stay cheap and bulk transfers reach `max` within a few reads.
struct Buffer {
    bytes: Vec<u8>,
    /// Capacity to take on the next read.
    size: usize,
    max: usize,
}

impl Buffer {
    fn new(size: usize, max: usize) -> Self {
        Self {
            bytes: Vec::new(),
            size,
            max,
        }
    }

    /// Reads once; `Ok(0)` is EOF.
    async fn read<R: AsyncRead + Unpin>(&mut self, from: &mut R) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_read(from, cx)).await
    }

    fn poll_read<R: AsyncRead + Unpin>(
        &mut self,
        from: &mut R,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<usize>> {
        use std::task::Poll;
        if self.bytes.capacity() < self.size {
            pool::give(std::mem::replace(&mut self.bytes, pool::take(self.size)));
        }
        self.bytes.clear();
        // read_buf fills the spare capacity: no zeroing of a buffer refilled every read. Its
        // future holds only the two borrows, so one is made per poll.
        let read = std::pin::pin!(from.read_buf(&mut self.bytes));
        match read.poll(cx) {
            Poll::Pending => {
                // Nothing was read and the waker is registered: give the memory back.
                pool::give(std::mem::take(&mut self.bytes));
                Poll::Pending
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Ready(Ok(n)) => {
                if n >= self.size && self.size < self.max {
                    self.size = (self.size * 2).min(self.max);
                }
                Poll::Ready(Ok(n))
            }
        }
    }

    fn filled(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        pool::give(std::mem::take(&mut self.bytes));
    }
}
