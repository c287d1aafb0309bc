//! Graceful drain: a [`Trigger`] held by the app and [`Watch`]es held by every accept loop and
//! connection.
//!
//! Draining has two phases: *stop* (accept loops return, connections keep going) and, when the
//! deadline passes, *close* (connections still open are cut). The drain completes when every
//! `Watch` has been dropped.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// Starts a drain; owned by the composition root.
#[derive(Debug)]
pub struct Trigger {
    stop: watch::Sender<bool>,
    close: watch::Sender<bool>,
    done: mpsc::Receiver<()>,
    alive: mpsc::Sender<()>,
}

/// Observes a drain; clone one into every task that must finish before exit.
#[derive(Debug, Clone)]
pub struct Watch {
    stop: watch::Receiver<bool>,
    close: watch::Receiver<bool>,
    // Never sent on: the channel closes when the last Watch drops, which ends the drain.
    _alive: mpsc::Sender<()>,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every task finished before the deadline.
    Gracefully,
    /// The deadline passed and remaining connections were told to close.
    AtDeadline,
}

/// Creates a trigger and its first watch.
pub fn channel() -> (Trigger, Watch) {
    let (stop, stop_rx) = watch::channel(false);
    let (close, close_rx) = watch::channel(false);
    let (alive, done) = mpsc::channel(1);
    let watch = Watch {
        stop: stop_rx,
        close: close_rx,
        _alive: alive.clone(),
    };
    (
        Trigger {
            stop,
            close,
            done,
            alive,
        },
        watch,
    )
}

impl Trigger {
    /// Stops accepting, waits up to `deadline` for tasks to finish, then closes the rest and
    /// waits up to `grace` more for them to record their outcome.
    pub async fn drain(self, deadline: Duration, grace: Duration) -> Drained {
        let Self {
            stop,
            close,
            mut done,
            alive,
        } = self;
        drop(alive);
        let _ = stop.send(true);
        if tokio::time::timeout(deadline, done.recv()).await.is_ok() {
            return Drained::Gracefully;
        }
        let _ = close.send(true);
        let _ = tokio::time::timeout(grace, done.recv()).await;
        Drained::AtDeadline
    }

    /// A new watch; for tasks spawned after startup.
    pub fn watch(&self) -> Watch {
        Watch {
            stop: self.stop.subscribe(),
            close: self.close.subscribe(),
            _alive: self.alive.clone(),
        }
    }
}

impl Watch {
    /// Resolves once draining has started (stop accepting).
    pub async fn stopped(&mut self) {
        let _ = self.stop.wait_for(|s| *s).await;
    }

    /// Resolves once the drain deadline has passed (close now).
    pub async fn closed(&mut self) {
        let _ = self.close.wait_for(|c| *c).await;
    }

    /// Whether draining has started.
    pub fn is_stopping(&self) -> bool {
        *self.stop.borrow()
    }
}

#[cfg(test)]
mod tests;
