//! Graceful drain: a [`Trigger`] held by the app and [`Watch`]es held by every accept loop and
//! connection.
//!
//! Draining has two phases: *stop* (accept loops return, connections keep going) and, when the
//! deadline passes, *close* (connections still open are cut). The drain completes when every
//! `Watch` has been dropped.
//!
//! A listener removed on reload drains on its own: its accept loop and connections hold a
//! [`Watch::scoped`] watch that obeys both the gateway's drain and the listener's, and keeps both
//! waiting until it is dropped.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// Time given to connections cut at a drain deadline to record their outcome.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Starts a drain; owned by the composition root (or by one listener, for its own drain).
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
    own: Signals,
    /// The drain of one listener, which this watch also obeys.
    scope: Option<Signals>,
}

#[derive(Debug, Clone)]
struct Signals {
    stop: watch::Receiver<bool>,
    close: watch::Receiver<bool>,
    // Never sent on: the channel closes when the last Watch drops, which ends the drain.
    _alive: mpsc::Sender<()>,
}

/// Makes watches for tasks started after startup (egress listeners added on reload) without
/// itself keeping the drain from completing.
#[derive(Debug, Clone)]
pub struct Spawner {
    stop: watch::Receiver<bool>,
    close: watch::Receiver<bool>,
    alive: mpsc::WeakSender<()>,
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
        own: Signals {
            stop: stop_rx,
            close: close_rx,
            _alive: alive.clone(),
        },
        scope: None,
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

    /// A spawner of watches for tasks started later.
    pub fn spawner(&self) -> Spawner {
        Spawner {
            stop: self.stop.subscribe(),
            close: self.close.subscribe(),
            alive: self.alive.downgrade(),
        }
    }
}

impl Spawner {
    /// A new watch, or `None` once draining has started (nothing new should start then).
    pub fn watch(&self) -> Option<Watch> {
        if *self.stop.borrow() {
            return None;
        }
        Some(Watch {
            own: Signals {
                stop: self.stop.clone(),
                close: self.close.clone(),
                _alive: self.alive.upgrade()?,
            },
            scope: None,
        })
    }
}

impl Watch {
    /// A watch that stops and closes with this drain or with `scope`'s, whichever comes first,
    /// and holds both drains open until dropped. A scope whose trigger is dropped without
    /// draining never signals: only an explicit drain stops a listener.
    pub fn scoped(&self, scope: &Watch) -> Watch {
        Watch {
            own: self.own.clone(),
            scope: Some(scope.own.clone()),
        }
    }

    /// Resolves once draining has started (stop accepting).
    pub async fn stopped(&mut self) {
        let Self { own, scope } = self;
        match scope {
            None => wait(&mut own.stop, false).await,
            Some(scope) => tokio::select! {
                () = wait(&mut own.stop, false) => {}
                () = wait(&mut scope.stop, true) => {}
            },
        }
    }

    /// Resolves once the drain deadline has passed (close now).
    pub async fn closed(&mut self) {
        let Self { own, scope } = self;
        match scope {
            None => wait(&mut own.close, false).await,
            // Boxed: every connection holds this future while it waits, and the two waits
            // inline would double it for the unscoped (ingress) watches too.
            Some(scope) => {
                Box::pin(async {
                    tokio::select! {
                        () = wait(&mut own.close, false) => {}
                        () = wait(&mut scope.close, true) => {}
                    }
                })
                .await;
            }
        }
    }

    /// Whether draining has started.
    pub fn is_stopping(&self) -> bool {
        *self.own.stop.borrow() || self.scope.as_ref().is_some_and(|s| *s.stop.borrow())
    }
}

/// Resolves when the flag becomes true, or when its sender is dropped unless `hold_on_drop`.
async fn wait(flag: &mut watch::Receiver<bool>, hold_on_drop: bool) {
    if flag.wait_for(|set| *set).await.is_err() && hold_on_drop {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests;
