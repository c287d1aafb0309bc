//! One controller per state directory: an exclusive `flock(2)` on `<state_dir>/lock`, held for
//! the life of the process. Two controllers on one directory would both write links, tokens
//! and imports, and spend each other's tokens; the second one exits instead, naming the first.
//!
//! The lock belongs to the open file, so the kernel releases it when the process dies, even by
//! SIGKILL: no stale lock survives a crash. The file holds the holder's pid, for the message.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

/// The lock file's name inside the state directory.
pub const LOCK_FILE: &str = "lock";

/// Why the state directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "state directory {} is in use by another controller ({holder}); stop it, or give this controller its own state_dir",
        dir.display()
    )]
    Held { dir: PathBuf, holder: String },
    #[error("cannot lock the state directory: cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// The held lock; released when dropped (or when the process exits).
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Locks `dir` (created with mode 0700 if missing), or says who holds it.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let io_err = |action, path: &Path| {
            let path = path.to_owned();
            move |source| LockError::Io {
                action,
                path,
                source,
            }
        };
        super::create_dir(dir).map_err(|(path, source)| LockError::Io {
            action: "create",
            path,
            source,
        })?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("open", &path))?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut pid = String::new();
                // The holder wrote its pid right after locking; an empty file means it is
                // between the two, or could not write (a full disk).
                let _ = file.read_to_string(&mut pid);
                let holder = match pid.trim() {
                    "" => "its pid is not recorded".to_owned(),
                    pid => format!("pid {pid}"),
                };
                return Err(LockError::Held {
                    dir: dir.to_owned(),
                    holder,
                });
            }
            Err(errno) => return Err(io_err("flock", &path)(errno.into())),
        }
        // Informational only: a full disk must not stop a controller that holds the lock.
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        if let Err(error) = written {
            tracing::warn!(path = %path.display(), %error, "cannot record our pid in the lock file");
        }
        Ok(Self { _file: file })
    }
}
