//! Calls through an egress listener: until a given cluster answers (to measure a failover), or
//! continuously on a thread (to count failures while something restarts).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::echo::call;
use crate::{Error, PATIENCE, Result};

/// Pause after a call that failed or was answered by someone else, so a dead path is not
/// hammered; short enough not to blur a gap measured in tens of milliseconds.
const RETRY: Duration = Duration::from_millis(20);

/// Calls `addr` until it answers `expected` (bounded); how long that took and how many calls
/// failed or were answered by someone else meanwhile.
pub fn call_until(addr: SocketAddr, expected: &str) -> Result<(Duration, usize)> {
    call_until_with(&addr.to_string(), expected, || call(addr))
}

/// [`call_until`] with another client (e.g. [`crate::echo::call_in`] a network namespace);
/// `target` names what it calls.
pub fn call_until_with(
    target: &str,
    expected: &str,
    mut call: impl FnMut() -> Result<String, String>,
) -> Result<(Duration, usize)> {
    let start = Instant::now();
    let mut misses = 0;
    loop {
        let last = match call() {
            Ok(body) if body == expected => return Ok((start.elapsed(), misses)),
            Ok(body) => format!("answered by {body}"),
            Err(e) => e,
        };
        misses += 1;
        if start.elapsed() > PATIENCE {
            return Err(Error::Timeout {
                what: format!(
                    "{target} answered by {expected} ({misses} calls missed, the last: {last})"
                ),
                logs: String::new(),
            });
        }
        std::thread::sleep(RETRY);
    }
}

/// Calls `addr` until calls fail (bounded): how long that took.
pub fn call_until_refused(addr: SocketAddr) -> Result<Duration> {
    let start = Instant::now();
    while let Ok(body) = call(addr) {
        if start.elapsed() > PATIENCE {
            return Err(Error::Timeout {
                what: format!("{addr} stops answering (still answered by {body})"),
                logs: String::new(),
            });
        }
        std::thread::sleep(RETRY);
    }
    Ok(start.elapsed())
}

/// What continuous calls saw.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub ok: usize,
    pub failed: usize,
    /// Why each failed call failed.
    pub errors: Vec<String>,
}

/// Calls back to back on a thread until stopped, counting answers by `expected` as successes
/// and anything else as failures.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    errors: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl Traffic {
    pub fn start(addr: SocketAddr, expected: &str) -> Self {
        let expected = expected.to_owned();
        Self::start_with(move || match call(addr) {
            Ok(body) if body == expected => Ok(()),
            other => Err(format!("{other:?}")),
        })
    }

    /// Calls with `call` (e.g. [`crate::echo::call_in`] a network namespace, with its own idea
    /// of success) back to back until stopped.
    pub fn start_with(mut call: impl FnMut() -> Result<(), String> + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, ok, errors) = (stop.clone(), ok.clone(), errors.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match call() {
                        Ok(()) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => {
                            errors
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .push(error);
                            // A dead path is not hammered while it comes back.
                            std::thread::sleep(RETRY);
                        }
                    }
                }
            })
        };
        Self {
            stop,
            ok,
            errors,
            thread: Some(thread),
        }
    }

    /// Waits until `n` more calls succeeded (bounded).
    pub fn wait_successes(&self, n: usize) -> Result<()> {
        let target = self.ok.load(Ordering::Relaxed) + n;
        let deadline = Instant::now() + PATIENCE;
        while self.ok.load(Ordering::Relaxed) < target {
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: format!("{n} more successful calls"),
                    logs: format!("\nfailed calls: {:?}", self.counts().errors),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        let errors = self
            .errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Counts {
            ok: self.ok.load(Ordering::Relaxed),
            failed: errors.len(),
            errors,
        }
    }

    /// Stops the calls; the final counts.
    pub fn stop(mut self) -> Counts {
        self.halt();
        self.counts()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // A panicked caller thread has nothing more to count.
            let _ = t.join();
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.halt();
    }
}
