//! The bound on TLS handshakes in progress (`limits.max_concurrent_handshakes`), shared by
//! terminate ingress and mTLS egress since both spend the same CPU.
//!
//! Without it, a burst of thousands of connections starts thousands of handshakes at once; they
//! share the cores, each progresses slowly, and they all miss their deadline together. With it,
//! admitted handshakes finish at full speed and the rest wait in FIFO order (tokio's semaphore is
//! fair). A waiting connection costs its socket and a small task; the gateway-wide connection
//! limit bounds how many wait. The handshake's own timeout starts once a slot is granted, so
//! waiting is never counted against the peer; how long a caller is willing to wait is the
//! caller's deadline (its connect or handshake timeout), as with a kernel accept queue.

use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::metrics::{Metrics, Side, SideLabel};

/// The handshake slots of one gateway.
#[derive(Debug)]
pub(crate) struct Handshakes {
    slots: Arc<Semaphore>,
}

/// A granted slot: held until the handshake ends, counted in `tls_handshakes_in_progress`.
#[derive(Debug)]
pub(crate) struct Slot {
    _permit: Option<OwnedSemaphorePermit>,
    in_progress: Gauge,
}

/// Counts a waiting connection in `tls_handshakes_queued` until it stops waiting, however it
/// stops (granted, or the connection's task dropped).
struct Queued(Gauge);

impl Handshakes {
    /// `limit` slots (validated positive).
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limit.min(Semaphore::MAX_PERMITS))),
        }
    }

    /// Waits for a slot.
    pub(crate) async fn admit(&self, side: Side, metrics: &Metrics) -> Slot {
        let label = SideLabel { side };
        let started = Instant::now();
        let queued = Queued(metrics.handshakes_queued.get_or_create_owned(&label));
        queued.0.inc();
        // The semaphore is never closed; should it be, the handshake goes ahead unbounded
        // rather than failing a connection.
        let permit = self.slots.clone().acquire_owned().await.ok();
        drop(queued);
        metrics
            .handshake_queue_wait
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
        let in_progress = metrics.handshakes_in_progress.get_or_create_owned(&label);
        in_progress.inc();
        Slot {
            _permit: permit,
            in_progress,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.in_progress.dec();
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Yields until `cond` holds; the spawned tasks run on this (current-thread) runtime.
    async fn until(what: &str, cond: impl Fn() -> bool) {
        for _ in 0..10_000 {
            if cond() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("{what} never happened");
    }

    #[tokio::test]
    async fn slots_past_the_limit_wait_in_order_and_are_counted() {
        let metrics = Arc::new(Metrics::new());
        let handshakes = Arc::new(Handshakes::new(2));
        let label = SideLabel {
            side: Side::Ingress,
        };
        let in_progress = metrics.handshakes_in_progress.get_or_create_owned(&label);
        let queued = metrics.handshakes_queued.get_or_create_owned(&label);
        let first = handshakes.admit(Side::Ingress, &metrics).await;
        let _second = handshakes.admit(Side::Ingress, &metrics).await;
        assert_eq!(in_progress.get(), 2);

        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut waiters = Vec::new();
        for i in 0..3 {
            let (handshakes, metrics, tx) = (handshakes.clone(), metrics.clone(), tx.clone());
            waiters.push(tokio::spawn(async move {
                let _slot = handshakes.admit(Side::Ingress, &metrics).await;
                let _ = tx.send(i);
                std::future::pending::<()>().await;
            }));
            // Each waiter queues before the next is spawned, so FIFO order is spawn order.
            until("a waiter queueing", || queued.get() == i + 1).await;
        }
        assert!(rx.try_recv().is_err(), "nobody is admitted past the limit");
        drop(first);
        assert_eq!(
            rx.recv().await,
            Some(0),
            "the first waiter gets the freed slot"
        );
        until("the admitted waiter leaving the queue", || {
            queued.get() == 2
        })
        .await;
        assert!(rx.try_recv().is_err(), "one freed slot admits one waiter");
        assert_eq!(in_progress.get(), 2);
        // A waiter that goes away (its connection closed) leaves the queue and takes no slot.
        waiters[2].abort();
        until("the aborted waiter leaving the queue", || queued.get() == 1).await;
        waiters[0].abort();
        assert_eq!(
            rx.recv().await,
            Some(1),
            "a slot freed by an ended handshake is reused"
        );
        assert_eq!(queued.get(), 0);
    }
}
