//! The file registry: a YAML file polled every `watch_interval` (and re-read at once on
//! [`FileRegistry::refresh`]), plus the CLI exports in the state directory.
//!
//! Change detection hashes the content on every poll rather than trusting mtime and length: an
//! edit within the same second that keeps the length would otherwise be missed. Registry files
//! are small, so reading them is cheap.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tokio::sync::{Notify, watch};

use super::{
    BoxFuture, ExportOrigin, FileDoc, Registry, RegistryError, RegistryProblem, RegistryStatus,
    merge, parse, with_cli_export,
};
use crate::model::{self, ExportTo, ServiceKey};
use crate::state::{ExportsRecord, StateDir};

/// Registry files larger than this are refused.
pub const MAX_REGISTRY_BYTES: usize = 16 << 20;

type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// A watched registry file. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct FileRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    watch_interval: Duration,
    state: StateDir,
    clock: Clock,
    tx: watch::Sender<Arc<model::Registry>>,
    poke: Notify,
    shared: Mutex<Shared>,
}

struct Shared {
    /// The last good file.
    doc: FileDoc,
    /// Hash of the last content read (good or not): unchanged content is not parsed again.
    seen: Option<[u8; 32]>,
    exports: ExportsRecord,
    loaded_at_ms: i64,
    last_error: Option<RegistryProblem>,
}

impl FileRegistry {
    /// Loads the file (which must exist and be valid) and the CLI exports from `state`.
    pub fn open(
        path: &Path,
        watch_interval: Duration,
        state: StateDir,
    ) -> Result<Self, RegistryError> {
        Self::open_with_clock(path, watch_interval, state, Arc::new(system_now_ms))
    }

    /// [`Self::open`] with a clock (Unix ms) for creation times, for tests.
    pub fn open_with_clock(
        path: &Path,
        watch_interval: Duration,
        state: StateDir,
        clock: Arc<dyn Fn() -> i64 + Send + Sync>,
    ) -> Result<Self, RegistryError> {
        let bytes = match read(path)? {
            Some(b) => b,
            None => {
                return Err(RegistryError::Missing {
                    file: path.to_owned(),
                });
            }
        };
        let doc = parse(&String::from_utf8_lossy(&bytes), path)?;
        let saved = state.load_exports()?;
        let now = clock();
        let (registry, exports) = merge(&doc, &saved, now);
        if exports != saved {
            state.save_exports(&exports)?;
        }
        let (tx, _) = watch::channel(Arc::new(registry));
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                watch_interval,
                state,
                clock,
                tx,
                poke: Notify::new(),
                shared: Mutex::new(Shared {
                    doc,
                    seen: Some(Sha256::digest(&bytes).into()),
                    exports,
                    loaded_at_ms: now,
                    last_error: None,
                }),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Re-reads the file now. `Ok(true)` when the published registry changed; an error is also
    /// recorded in [`Registry::status`] and leaves the last good registry in force.
    pub fn reload(&self) -> Result<bool, RegistryError> {
        let result = self.try_reload();
        if let Err(e) = &result {
            let message = e.to_string();
            let mut shared = self.lock();
            // The same problem seen again on the next poll keeps its first time and is logged once.
            if shared.last_error.as_ref().map(|p| &p.message) != Some(&message) {
                tracing::warn!(file = %self.inner.path.display(), error = %message, "registry edit rejected; keeping the last good registry");
                shared.last_error = Some(RegistryProblem {
                    message,
                    at_ms: (self.inner.clock)(),
                });
            }
        }
        result
    }

    fn try_reload(&self) -> Result<bool, RegistryError> {
        let path = &self.inner.path;
        let read = read(path);
        let mut shared = self.lock();
        let bytes = match read {
            Ok(Some(b)) => b,
            Ok(None) => {
                shared.seen = None;
                return Err(RegistryError::Deleted { file: path.clone() });
            }
            Err(e) => {
                shared.seen = None;
                return Err(e);
            }
        };
        let hash: [u8; 32] = Sha256::digest(&bytes).into();
        if shared.seen == Some(hash) {
            return Ok(false);
        }
        shared.seen = Some(hash);
        let doc = parse(&String::from_utf8_lossy(&bytes), path)?;
        let now = (self.inner.clock)();
        let (registry, exports) = merge(&doc, &shared.exports, now);
        if exports != shared.exports {
            if let Err(e) = self.inner.state.save_exports(&exports) {
                // Not applied: try again on the next poll.
                shared.seen = None;
                return Err(e.into());
            }
            shared.exports = exports;
        }
        shared.doc = doc;
        shared.loaded_at_ms = now;
        shared.last_error = None;
        Ok(self.publish(registry))
    }

    /// Asks the watcher ([`Self::run`]) to re-read the file at once.
    pub fn refresh(&self) {
        self.inner.poke.notify_one();
    }

    /// Polls the file every `watch_interval` and on [`Self::refresh`], until the task is dropped.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(self.inner.watch_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.inner.poke.notified() => {}
            }
            let this = self.clone();
            // File reads and the state fsync block; keep them off the async workers.
            let _ = tokio::task::spawn_blocking(move || this.reload()).await;
        }
    }

    fn export_now(&self, key: ServiceKey, to: ExportTo) -> Result<(), RegistryError> {
        if matches!(&to, ExportTo::Peers(p) if p.is_empty()) {
            return Err(RegistryError::NoPeers { key });
        }
        let mut shared = self.lock();
        let file = self.inner.path.clone();
        if shared.doc.exports.contains_key(&key) {
            return Err(RegistryError::ExportedInFile { key, file });
        }
        if !shared.doc.services.contains_key(&key) {
            return Err(RegistryError::UnknownService { key, file });
        }
        let now = (self.inner.clock)();
        let next = with_cli_export(&shared.exports, &key, &to, now);
        self.save_and_publish(&mut shared, next, now)
    }

    fn unexport_now(&self, key: &ServiceKey) -> Result<(), RegistryError> {
        let mut shared = self.lock();
        if shared.doc.exports.contains_key(key) {
            return Err(RegistryError::UnexportFromFile {
                key: key.clone(),
                file: self.inner.path.clone(),
            });
        }
        if !shared.exports.cli.contains_key(key) {
            return Err(RegistryError::NotExported { key: key.clone() });
        }
        let mut next = shared.exports.clone();
        next.cli.remove(key);
        let now = (self.inner.clock)();
        self.save_and_publish(&mut shared, next, now)
    }

    fn save_and_publish(
        &self,
        shared: &mut Shared,
        next: ExportsRecord,
        now: i64,
    ) -> Result<(), RegistryError> {
        self.inner.state.save_exports(&next)?;
        let (registry, merged) = merge(&shared.doc, &next, now);
        shared.exports = merged;
        self.publish(registry);
        Ok(())
    }

    fn publish(&self, registry: model::Registry) -> bool {
        self.inner.tx.send_if_modified(|current| {
            if **current == registry {
                false
            } else {
                *current = Arc::new(registry);
                true
            }
        })
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock cannot leave `Shared` half-updated (fields are replaced
        // whole), so a poisoned lock is still usable.
        self.inner
            .shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Registry for FileRegistry {
    fn watch(&self) -> watch::Receiver<Arc<model::Registry>> {
        self.inner.tx.subscribe()
    }

    fn status(&self) -> RegistryStatus {
        let shared = self.lock();
        let current = self.inner.tx.borrow();
        RegistryStatus {
            source: format!("file {}", self.inner.path.display()),
            loaded_at_ms: shared.loaded_at_ms,
            services: current.services.len(),
            exports: current.exports.len(),
            last_error: shared.last_error.clone(),
        }
    }

    fn export_origin(&self, key: &ServiceKey) -> Option<ExportOrigin> {
        let shared = self.lock();
        if shared.doc.exports.contains_key(key) {
            Some(ExportOrigin::Registry)
        } else if shared.exports.cli.contains_key(key) {
            Some(ExportOrigin::Cli)
        } else {
            None
        }
    }

    fn export(&self, key: ServiceKey, to: ExportTo) -> BoxFuture<'_, Result<(), RegistryError>> {
        // One small fsync'd write: cheap enough to do inline.
        Box::pin(async move { self.export_now(key, to) })
    }

    fn unexport<'a>(&'a self, key: &'a ServiceKey) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(async move { self.unexport_now(key) })
    }
}

impl std::fmt::Debug for FileRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileRegistry")
            .field("path", &self.inner.path)
            .field("watch_interval", &self.inner.watch_interval)
            .finish_non_exhaustive()
    }
}

/// The file's bytes; `None` when it does not exist.
fn read(path: &Path) -> Result<Option<Vec<u8>>, RegistryError> {
    match std::fs::read(path) {
        Ok(b) if b.len() > MAX_REGISTRY_BYTES => Err(RegistryError::TooLarge {
            file: path.to_owned(),
            max: MAX_REGISTRY_BYTES,
        }),
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RegistryError::Read {
            file: path.to_owned(),
            source,
        }),
    }
}

fn system_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
