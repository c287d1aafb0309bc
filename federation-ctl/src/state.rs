//! The controller's state directory: what must survive a restart (even SIGKILL).
//!
//! ```text
//! <state_dir>/            mode 0700; refused when group/other-writable
//!   links/<peer>.json     LinkRecord: peer cluster, trust domain, role, bundle, addresses
//!   imports/<peer>.json   ImportsRecord: feed version, last_heard_ms, services
//!   tokens.json           TokenBook: issued peering tokens (digests only, never secrets)
//!   exports.json          ExportsRecord: CLI exports and first-seen times of file exports
//!   egress.json           egress listener ports: {"ports": [{service, port_name, port}]}
//!   peering-port.json     the peering port picked for `listen: …:0`, rebound after a restart
//!   trust.json            TrustRecord: our bundle as last sent to peers and its sequence
//!   api.sock              the local API socket (default place; mode 0600)
//!   lock                  flock(2)ed by the running controller; holds its pid
//! ```
//!
//! Every file is JSON, mode 0600, replaced atomically: written to a temporary file in the same
//! directory, synced, renamed over the old one, then the directory is synced. A crash leaves the
//! old or the new content, never a mix; stale temporary files are removed at open. A file that
//! does not parse is an error naming the file and what deleting it would cost — never silently
//! discarded.
//!
//! Calls block on `fsync`; from async code run them where blocking is acceptable (the files are
//! small) or on `spawn_blocking`.

mod lock;
mod mirror;
mod records;

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use lock::{LOCK_FILE, LockError, StateLock};
pub use mirror::{MIRRORED_RECORDS, MirrorTx, StateChange};
pub use records::{
    CliExport, EgressEntry, EgressFull, EgressPorts, ExportsRecord, ImportsRecord, LinkRecord,
    LinkRole, TrustRecord,
};

use crate::config::PortRange;
use crate::model::{ClusterName, PeerImports};
use crate::token::TokenBook;

const LINKS: &str = "links";
const IMPORTS: &str = "imports";
const TOKENS: &str = "tokens.json";
const EXPORTS: &str = "exports.json";
const EGRESS: &str = "egress.json";
const PEERING: &str = "peering-port.json";
const TRUST: &str = "trust.json";
const TMP_PREFIX: &str = ".tmp-";

/// Why the state directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state directory {}: {problem}; {fix}", path.display())]
    Dir {
        path: PathBuf,
        problem: String,
        fix: String,
    },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("state file {} is corrupt ({problem}); {fix}", path.display())]
    Corrupt {
        path: PathBuf,
        problem: String,
        fix: String,
    },
}

/// An open state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
    /// Where saved changes also go (the API mirror, when leader election is on).
    mirror: Option<MirrorTx>,
}

impl StateDir {
    /// Opens (creating with mode 0700) the state directory and removes stale temporary files.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        create_dir(path).map_err(|(path, source)| StateError::Io {
            action: "create",
            path,
            source,
        })?;
        let meta = fs::metadata(path).map_err(|source| StateError::Io {
            action: "inspect",
            path: path.to_owned(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(StateError::Dir {
                path: path.to_owned(),
                problem: "not a directory".into(),
                fix: "point state_dir at a directory (it is created if missing)".into(),
            });
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o022 != 0 {
            return Err(StateError::Dir {
                path: path.to_owned(),
                problem: format!("mode {mode:03o} lets other users change links and tokens"),
                fix: format!("run `chmod 700 {}`", path.display()),
            });
        }
        let dir = Self {
            root: path.to_owned(),
            mirror: None,
        };
        for sub in [LINKS, IMPORTS] {
            dir.ensure_subdir(sub)?;
        }
        for d in [
            dir.root.clone(),
            dir.root.join(LINKS),
            dir.root.join(IMPORTS),
        ] {
            dir.remove_stale_temps(&d)?;
        }
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The same directory, every successful save or removal also sent to `tx`.
    pub fn with_mirror(mut self, tx: MirrorTx) -> Self {
        self.mirror = Some(tx);
        self
    }

    /// Sends the mirror a change that is no file here (a link's live status); nothing
    /// without a mirror.
    pub fn report(&self, change: impl FnOnce() -> StateChange) {
        self.mirror(change);
    }

    fn mirror(&self, change: impl FnOnce() -> StateChange) {
        if let Some(tx) = &self.mirror {
            // The receiver only goes away when the process stops.
            let _ = tx.send(change());
        }
    }

    /// An existing state directory, for reading only: unlike [`Self::open`] it creates and
    /// removes nothing, so a reader (`check`) never races a running controller's writes.
    pub fn read_only(path: &Path) -> Option<Self> {
        path.is_dir().then(|| Self {
            root: path.to_owned(),
            mirror: None,
        })
    }

    // --- links ---

    /// Every saved link, by peer.
    pub fn load_links(&self) -> Result<BTreeMap<ClusterName, LinkRecord>, StateError> {
        let fix = |peer: &str| {
            format!(
                "fix it, or delete it to forget the link to {peer} (relinking then needs a new token from `federation-ctl link token`)"
            )
        };
        let mut out = BTreeMap::new();
        for (peer, path) in self.per_peer_files(LINKS)? {
            let Some(rec) = read_json::<LinkRecord>(&path, &fix(peer.as_str()))? else {
                continue;
            };
            if rec.peer != peer {
                return Err(corrupt(
                    &path,
                    format!("it holds the link to {}", rec.peer),
                    fix(peer.as_str()),
                ));
            }
            rec.bundle()
                .map_err(|e| corrupt(&path, format!("bundle_json: {e}"), fix(peer.as_str())))?;
            out.insert(peer, rec);
        }
        Ok(out)
    }

    pub fn save_link(&self, rec: &LinkRecord) -> Result<(), StateError> {
        self.write_json(&self.peer_file(LINKS, &rec.peer), rec)?;
        self.mirror(|| StateChange::Link(rec.clone()));
        Ok(())
    }

    /// Forgets a link (its imports are separate: see [`Self::remove_imports`]).
    pub fn remove_link(&self, peer: &ClusterName) -> Result<(), StateError> {
        self.remove(&self.peer_file(LINKS, peer))?;
        self.mirror(|| StateChange::LinkRemoved(peer.clone()));
        Ok(())
    }

    // --- imports ---

    /// The last imports of every peer, as saved.
    pub fn load_imports(&self) -> Result<BTreeMap<ClusterName, ImportsRecord>, StateError> {
        let fix = |peer: &str| {
            format!("delete it; the imports from {peer} come back when the link reconnects")
        };
        let mut out = BTreeMap::new();
        for (peer, path) in self.per_peer_files(IMPORTS)? {
            let Some(rec) = read_json::<ImportsRecord>(&path, &fix(peer.as_str()))? else {
                continue;
            };
            if rec.peer != peer {
                return Err(corrupt(
                    &path,
                    format!("it holds the imports of {}", rec.peer),
                    fix(peer.as_str()),
                ));
            }
            out.insert(peer, rec);
        }
        Ok(out)
    }

    /// Saves a peer's imports; a peer that never sent a snapshot has nothing to save.
    pub fn save_imports(&self, peer: &PeerImports) -> Result<(), StateError> {
        let Some(rec) = ImportsRecord::from_peer(peer) else {
            return Ok(());
        };
        self.write_json(&self.peer_file(IMPORTS, &rec.peer), &rec)?;
        self.mirror(|| StateChange::LinkStatus {
            peer: rec.peer.clone(),
            connected: true,
            last_heard_ms: Some(rec.last_heard_ms),
            feed_version: Some(rec.version),
        });
        Ok(())
    }

    pub fn remove_imports(&self, peer: &ClusterName) -> Result<(), StateError> {
        self.remove(&self.peer_file(IMPORTS, peer))
    }

    // --- tokens ---

    pub fn load_tokens(&self) -> Result<TokenBook, StateError> {
        let path = self.root.join(TOKENS);
        let fix = "delete it; tokens issued so far stop working (make new ones with `federation-ctl link token`)";
        let book: TokenBook = read_json(&path, fix)?.unwrap_or_default();
        book.check()
            .map_err(|e| corrupt(&path, e, fix.to_owned()))?;
        Ok(book)
    }

    pub fn save_tokens(&self, book: &TokenBook) -> Result<(), StateError> {
        self.save_record(TOKENS, book)
    }

    // --- exports ---

    pub fn load_exports(&self) -> Result<ExportsRecord, StateError> {
        let fix = "fix it, or delete it: that drops exports made with `federation-ctl export` and resets export ages (MCS conflict precedence)";
        Ok(read_json(&self.root.join(EXPORTS), fix)?.unwrap_or_default())
    }

    pub fn save_exports(&self, rec: &ExportsRecord) -> Result<(), StateError> {
        self.save_record(EXPORTS, rec)
    }

    // --- egress ports ---

    /// The saved egress ports under `range`, and the saved entries that no longer fit it.
    pub fn load_egress(
        &self,
        range: PortRange,
    ) -> Result<(EgressPorts, Vec<EgressEntry>), StateError> {
        let fix = "delete it; imported services then get new local ports";
        let file: records::EgressFile =
            read_json(&self.root.join(EGRESS), fix)?.unwrap_or_default();
        Ok(EgressPorts::restore(range, file.ports))
    }

    pub fn save_egress(&self, ports: &EgressPorts) -> Result<(), StateError> {
        let file = records::EgressFile {
            ports: ports.entries(),
        };
        self.save_record(EGRESS, &file)
    }

    // --- listener ---

    /// The peering port picked when the config asked for port 0, so a restart binds the same
    /// port again: peers dial the address they were given at link time.
    pub fn load_peering_port(&self) -> Result<Option<u16>, StateError> {
        let fix = "delete it; peers then need the new address (link again)";
        read_json(&self.root.join(PEERING), fix)
    }

    pub fn save_peering_port(&self, port: u16) -> Result<(), StateError> {
        self.save_record(PEERING, &port)
    }

    /// Our bundle as last announced to peers, and its sequence.
    pub fn load_trust(&self) -> Result<Option<TrustRecord>, StateError> {
        let fix = "delete it to restart the sequence; peers then take our bundle from the opening messages of their next link session";
        read_json(&self.root.join(TRUST), fix)
    }

    pub fn save_trust(&self, rec: &TrustRecord) -> Result<(), StateError> {
        self.save_record(TRUST, rec)
    }

    // --- plumbing ---

    fn peer_file(&self, sub: &str, peer: &ClusterName) -> PathBuf {
        self.root.join(sub).join(format!("{peer}.json"))
    }

    /// `<sub>/<peer>.json` files; dot files (our temporaries) are skipped.
    fn per_peer_files(&self, sub: &str) -> Result<Vec<(ClusterName, PathBuf)>, StateError> {
        let dir = self.root.join(sub);
        let mut out = Vec::new();
        for entry in read_dir(&dir)? {
            let path = entry.path();
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let peer = name
                .strip_suffix(".json")
                .and_then(|stem| ClusterName::parse(stem).ok())
                .ok_or_else(|| {
                    corrupt(
                        &path,
                        "the name is not <cluster>.json".into(),
                        format!("move it out of {}", dir.display()),
                    )
                })?;
            out.push((peer, path));
        }
        out.sort();
        Ok(out)
    }

    fn ensure_subdir(&self, sub: &str) -> Result<(), StateError> {
        let path = self.root.join(sub);
        match DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
            Err(source) => Err(StateError::Io {
                action: "create",
                path,
                source,
            }),
        }
    }

    fn remove_stale_temps(&self, dir: &Path) -> Result<(), StateError> {
        for entry in read_dir(dir)? {
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                let path = entry.path();
                fs::remove_file(&path).map_err(|source| StateError::Io {
                    action: "remove the stale temporary file",
                    path,
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// Saves one of the [`MIRRORED_RECORDS`] and mirrors its content.
    fn save_record<T: Serialize>(&self, name: &'static str, value: &T) -> Result<(), StateError> {
        let bytes = self.write_json(&self.root.join(name), value)?;
        self.mirror(|| StateChange::Record { name, json: bytes });
        Ok(())
    }

    /// The content of one of the [`MIRRORED_RECORDS`] (`None`: not saved yet).
    pub fn read_record(&self, name: &str) -> Result<Option<Vec<u8>>, StateError> {
        let path = self.record_path(name)?;
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Io {
                action: "read",
                path,
                source,
            }),
        }
    }

    /// Replaces one of the [`MIRRORED_RECORDS`] with `bytes` taken from the API (`None`: removes
    /// it), without mirroring it back. The controller's loaders check the content at start.
    pub fn restore_record(&self, name: &str, bytes: Option<&[u8]>) -> Result<(), StateError> {
        let path = self.record_path(name)?;
        match bytes {
            Some(bytes) => commit(&stage(&path, bytes)?, &path),
            None => self.remove(&path),
        }
    }

    /// Replaces the saved links with `links` taken from the API, without mirroring them back.
    pub fn restore_links(&self, links: &[LinkRecord]) -> Result<(), StateError> {
        let keep: std::collections::BTreeSet<&ClusterName> =
            links.iter().map(|l| &l.peer).collect();
        for (peer, path) in self.per_peer_files(LINKS)? {
            if !keep.contains(&peer) {
                self.remove(&path)?;
            }
        }
        for rec in links {
            self.write_json(&self.peer_file(LINKS, &rec.peer), rec)?;
        }
        Ok(())
    }

    fn record_path(&self, name: &str) -> Result<PathBuf, StateError> {
        if !MIRRORED_RECORDS.contains(&name) {
            return Err(StateError::Dir {
                path: self.root.clone(),
                problem: format!("{name:?} is not a state record"),
                fix: format!("use one of {}", MIRRORED_RECORDS.join(", ")),
            });
        }
        Ok(self.root.join(name))
    }

    /// Writes `value` as JSON, atomically; the bytes written.
    fn write_json<T: Serialize>(&self, path: &Path, value: &T) -> Result<Vec<u8>, StateError> {
        let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| StateError::Io {
            action: "serialise",
            path: path.to_owned(),
            source: io::Error::other(e),
        })?;
        bytes.push(b'\n');
        let tmp = stage(path, &bytes)?;
        commit(&tmp, path)?;
        Ok(bytes)
    }

    fn remove(&self, path: &Path) -> Result<(), StateError> {
        match fs::remove_file(path) {
            Ok(()) => sync_dir(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Io {
                action: "remove",
                path: path.to_owned(),
                source,
            }),
        }
    }
}

/// The first half of an atomic write: the new content in a synced temporary file next to
/// `path`. Until [`commit`], `path` keeps its old content.
pub(crate) fn stage(path: &Path, bytes: &[u8]) -> Result<PathBuf, StateError> {
    let dir = parent(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!("{TMP_PREFIX}{name}-{:016x}", rand::random::<u64>()));
    let io_err = |action, source| StateError::Io {
        action,
        path: tmp.clone(),
        source,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io_err("create", e))?;
    let written = f
        .write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| io_err("write", e));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map(|()| tmp)
}

/// The second half: rename over `path`, then sync the directory so the rename is durable.
pub(crate) fn commit(tmp: &Path, path: &Path) -> Result<(), StateError> {
    fs::rename(tmp, path).map_err(|source| {
        let _ = fs::remove_file(tmp);
        StateError::Io {
            action: "replace",
            path: path.to_owned(),
            source,
        }
    })?;
    sync_dir(path)
}

/// Creates the state directory (mode 0700) and its parents if missing; which one failed.
pub(crate) fn create_dir(path: &Path) -> Result<(), (PathBuf, io::Error)> {
    if path.exists() {
        return Ok(());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| (parent.to_owned(), e))?;
    }
    DirBuilder::new()
        .mode(0o700)
        .create(path)
        .or_else(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => Ok(()),
            _ => Err(e),
        })
        .map_err(|e| (path.to_owned(), e))
}

fn sync_dir(path: &Path) -> Result<(), StateError> {
    let dir = parent(path);
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StateError::Io {
            action: "sync",
            path: dir,
            source,
        })
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>, StateError> {
    let io_err = |source| StateError::Io {
        action: "list",
        path: dir.to_owned(),
        source,
    };
    fs::read_dir(dir)
        .map_err(io_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_err)
}

/// Reads a JSON file; `None` when it does not exist.
fn read_json<T: DeserializeOwned>(path: &Path, fix: &str) -> Result<Option<T>, StateError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Io {
                action: "read",
                path: path.to_owned(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| corrupt(path, e.to_string(), fix.to_owned()))
}

fn corrupt(path: &Path, problem: String, fix: String) -> StateError {
    StateError::Corrupt {
        path: path.to_owned(),
        problem,
        fix,
    }
}

#[cfg(test)]
pub(crate) mod tests;
