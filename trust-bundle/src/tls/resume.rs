//! TLS 1.3 session resumption scoped to one trust store.
//!
//! A resumed handshake skips certificate verification, so the sessions a configuration keeps
//! are dropped, all of them, the first time they are used after the trust store was replaced: a
//! trust domain removed from the bundle map cannot resume its way back in. Within one store a
//! server session lives at most [`MAX_AGE`]; a caller must still check a resumed peer against
//! its own policy (expiry, authorization that changed without a new configuration), as the
//! gateway does with the chain the session recorded.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use rustls::NamedGroup;
use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue,
};
use rustls::server::{ServerSessionMemoryCache, StoresServerSessions};
use rustls_pki_types::ServerName;

use super::TrustHandle;
use crate::verify::TrustStore;

/// How long a server keeps a session for resumption.
pub const MAX_AGE: Duration = Duration::from_secs(600);

/// Sessions of type `T` for the trust store in force, started over when it is replaced.
pub(super) struct Scoped<T> {
    trust: TrustHandle,
    size: usize,
    make: fn(usize) -> Arc<T>,
    /// The store the sessions were made under (a `Weak` keeps its allocation, so a new store
    /// can never compare equal to a dropped one); made at first use, as rustls' caches
    /// allocate their full size up front.
    current: Mutex<Option<(Weak<TrustStore>, Arc<T>)>>,
}

impl<T> Scoped<T> {
    pub(super) fn new(trust: TrustHandle, size: usize, make: fn(usize) -> Arc<T>) -> Self {
        Self {
            trust,
            size,
            make,
            current: Mutex::new(None),
        }
    }

    fn sessions(&self) -> Arc<T> {
        let live = Arc::downgrade(&self.trust.load());
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        match &*current {
            Some((made_under, sessions)) if Weak::ptr_eq(made_under, &live) => Arc::clone(sessions),
            _ => {
                let sessions = (self.make)(self.size);
                *current = Some((live, Arc::clone(&sessions)));
                sessions
            }
        }
    }
}

/// A server session store for [`super::server_config_resuming`]: up to `size` sessions, each at
/// most [`MAX_AGE`] and only while `trust` holds the store it was made under. Configurations
/// built on one `trust` may share it.
pub fn server_store(trust: TrustHandle, size: usize) -> Arc<dyn StoresServerSessions> {
    Arc::new(Scoped::new(trust, size, server_sessions))
}

impl<T> fmt::Debug for Scoped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scoped").field("size", &self.size).finish()
    }
}

/// When the process started, so a stored session can carry its age in eight bytes.
fn now_secs() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs()
}

fn server_sessions(size: usize) -> Arc<ServerSessionMemoryCache> {
    ServerSessionMemoryCache::new(size)
}

pub(super) fn client_sessions(size: usize) -> Arc<ClientSessionMemoryCache> {
    Arc::new(ClientSessionMemoryCache::new(size))
}

impl StoresServerSessions for Scoped<ServerSessionMemoryCache> {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        let mut stamped = now_secs().to_be_bytes().to_vec();
        stamped.extend_from_slice(&value);
        self.sessions().put(key, stamped)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        fresh(self.sessions().get(key)?)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        fresh(self.sessions().take(key)?)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

/// The session without its stamp, if younger than [`MAX_AGE`].
fn fresh(stamped: Vec<u8>) -> Option<Vec<u8>> {
    let (stamp, value) = stamped.split_first_chunk::<8>()?;
    let age = now_secs().saturating_sub(u64::from_be_bytes(*stamp));
    (age <= MAX_AGE.as_secs()).then(|| value.to_vec())
}

impl ClientSessionStore for Scoped<ClientSessionMemoryCache> {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.sessions().set_kx_hint(server_name, group);
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.sessions().kx_hint(server_name)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.sessions().set_tls12_session(server_name, value);
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.sessions().tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.sessions().remove_tls12_session(server_name);
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        self.sessions().insert_tls13_ticket(server_name, value);
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        self.sessions().take_tls13_ticket(server_name)
    }
}
