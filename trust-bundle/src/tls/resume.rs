//! TLS 1.3 session resumption scoped to one trust store and one identity.
//!
//! A resumed handshake skips certificate verification. So the sessions a configuration keeps
//! are dropped, all of them, the first time the store is used after the trust store or our
//! own certificate was replaced (a session saved by a handshake that was already under way
//! then may still land in the new store); a server session is made by a full handshake only,
//! used once, and waits at most [`MAX_AGE`] ([`vet_server_hello`]). None of this replaces the
//! caller's check of a resumed peer against its own policy (trust, expiry, authorization), as
//! the gateway makes with the chain the session recorded.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use rustls::NamedGroup;
use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue,
};
use rustls::server::{ServerSessionMemoryCache, StoresServerSessions};
use rustls_pki_types::ServerName;

use rustls::sign::CertifiedKey;

use super::{IdentityHandle, TrustHandle};
use crate::verify::TrustStore;

/// How long a server keeps a session waiting to be used.
pub const MAX_AGE: Duration = Duration::from_secs(600);

/// How long after a full handshake its sessions still resume: a backstop, as sessions are
/// issued by full handshakes only and wait at most [`MAX_AGE`].
pub const MAX_LIFETIME: Duration = Duration::from_secs(3600);

/// Vets a server connection right after its ClientHello was taken in (tokio-rustls'
/// `into_stream_with`), before the handshake completes, so a refusal issues no ticket. A full
/// handshake's tickets carry its time; a resumed handshake issues none (the store refuses
/// sessions without a time), so a session is used once and its chain is the one verified by
/// the full handshake that made it; a resumed session older than [`MAX_LIFETIME`] is refused.
/// `Ok(true)`: a session is resumed, and its chain (`peer_certificates`) must now be checked.
///
/// A connection that answered with a HelloRetryRequest chooses its session (if any) only at
/// the next hello: it issues no ticket, and a caller must refuse a resumption it did not vet
/// here.
pub fn vet_server_hello(conn: &mut rustls::ServerConnection) -> Result<bool, String> {
    vet_at(conn, now_secs())
}

fn vet_at(conn: &mut rustls::ServerConnection, now: u64) -> Result<bool, String> {
    match conn.handshake_kind() {
        Some(rustls::HandshakeKind::Full) => {
            conn.set_resumption_data(&now.to_be_bytes());
            Ok(false)
        }
        Some(rustls::HandshakeKind::Resumed) => {
            let origin = conn
                .received_resumption_data()
                .and_then(|d| d.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or("the session was not made by a vetted full handshake")?;
            if !within_lifetime(origin, now) {
                return Err(format!(
                    "the session descends from a full handshake over {} s ago; a full one is due",
                    MAX_LIFETIME.as_secs()
                ));
            }
            // No time for the tickets this handshake would issue: the store keeps none of them,
            // so every session comes from a full handshake, where the peer's chain was
            // verified as it is now (a renewal would carry the old chain on, past a rotation).
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Sessions of type `T` for the trust store and identity in force, started over when either is
/// replaced: a session's chains are the ones its full handshake saw, so after a renewal of our
/// certificate, tickets a peer holds would be checked against our old one, and ours would
/// present our old one to the peer (refused once it expires, rather than falling back to a
/// full handshake).
pub(super) struct Scoped<T> {
    trust: TrustHandle,
    identity: IdentityHandle,
    size: usize,
    make: fn(usize) -> Arc<T>,
    /// Seconds on a monotonic clock (a parameter so tests can move it).
    clock: fn() -> u64,
    /// What the sessions were made under (a `Weak` keeps its allocation, so a new store or
    /// identity can never compare equal to a dropped one); made at first use, as rustls'
    /// caches allocate their full size up front.
    current: Mutex<Option<(Scope, Arc<T>)>>,
}

/// The trust store and identity a set of sessions belongs to.
struct Scope {
    trust: Weak<TrustStore>,
    identity: Weak<CertifiedKey>,
}

impl Scope {
    fn holds(&self, live: &Scope) -> bool {
        Weak::ptr_eq(&self.trust, &live.trust) && Weak::ptr_eq(&self.identity, &live.identity)
    }
}

impl<T> Scoped<T> {
    pub(super) fn new(
        trust: TrustHandle,
        identity: IdentityHandle,
        size: usize,
        make: fn(usize) -> Arc<T>,
    ) -> Self {
        Self {
            trust,
            identity,
            size,
            make,
            clock: now_secs,
            current: Mutex::new(None),
        }
    }

    fn sessions(&self) -> Arc<T> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        // Read under the lock, so a caller that saw the scope before a replacement cannot put
        // a set for it back after one made for the new scope.
        let live = Scope {
            trust: Arc::downgrade(&self.trust.load()),
            identity: Arc::downgrade(&self.identity.current()),
        };
        match &*current {
            Some((made_under, sessions)) if made_under.holds(&live) => Arc::clone(sessions),
            _ => {
                let sessions = (self.make)(self.size);
                *current = Some((live, Arc::clone(&sessions)));
                sessions
            }
        }
    }
}

/// A server session store for [`super::server_config_resuming`]: up to `size` sessions, each
/// waiting at most [`MAX_AGE`] and only while `trust` and `identity` hold the store and the
/// certificate it was made under. A session past [`MAX_LIFETIME`] since its full handshake, or
/// made by none that [`vet_server_hello`] saw, is not found, so rustls falls back to a full
/// handshake. Configurations built on one `trust` and `identity` may share it.
pub fn server_store(
    trust: TrustHandle,
    identity: IdentityHandle,
    size: usize,
) -> Arc<dyn StoresServerSessions> {
    Arc::new(Scoped::new(trust, identity, size, server_sessions))
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
        // Only sessions of a vetted full handshake; refusing the rest issues no ticket.
        session_origin(&value).is_some() && self.sessions().put(key, stamp(&value, (self.clock)()))
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        usable(&self.sessions().get(key)?, (self.clock)())
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        usable(&self.sessions().take(key)?, (self.clock)())
    }

    fn can_cache(&self) -> bool {
        true
    }
}

/// A session prefixed with when it was stored.
fn stamp(value: &[u8], now: u64) -> Vec<u8> {
    let mut stamped = now.to_be_bytes().to_vec();
    stamped.extend_from_slice(value);
    stamped
}

/// The session without its stamp, if at most [`MAX_AGE`] old at `now`.
fn fresh(stamped: &[u8], now: u64) -> Option<Vec<u8>> {
    let (stamp, value) = stamped.split_first_chunk::<8>()?;
    let age = now.saturating_sub(u64::from_be_bytes(*stamp));
    (age <= MAX_AGE.as_secs()).then(|| value.to_vec())
}

/// A stored session rustls may resume at `now`: [`fresh`], and within [`MAX_LIFETIME`] of the
/// full handshake it descends from. Refusing here rather than after the ClientHello makes the
/// peer's next handshake a full one instead of a failed connection.
fn usable(stamped: &[u8], now: u64) -> Option<Vec<u8>> {
    let value = fresh(stamped, now)?;
    within_lifetime(session_origin(&value)?, now).then_some(value)
}

/// Whether a session whose full handshake was at `origin` may still resume at `now`.
fn within_lifetime(origin: u64, now: u64) -> bool {
    now.saturating_sub(origin) <= MAX_LIFETIME.as_secs()
}

/// The full-handshake time [`vet_server_hello`] put in a session's resumption data, read from
/// the end of rustls' encoding of a server session: the data (a u16 length, then our 8 bytes),
/// the creation time (u64) and the age offset (u32). A test pins this layout; a session whose
/// tail does not match has no origin and is not resumed.
fn session_origin(value: &[u8]) -> Option<u64> {
    let tail = &value[value.len().checked_sub(22)?..];
    let (len, rest) = tail.split_first_chunk::<2>()?;
    let (origin, _) = rest.split_first_chunk::<8>()?;
    (u16::from_be_bytes(*len) == 8).then(|| u64::from_be_bytes(*origin))
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use rustls::{ClientConnection, Connection, HandshakeKind, ServerConnection};

    use super::*;
    use crate::test_util::{bundle_map, intermediate, leaf, root};
    use crate::tls::{Authorizer, IdentityHandle};

    /// Moves what `from` has to send into `to`; whether there was anything.
    fn shuttle(from: &mut Connection, to: &mut Connection) -> bool {
        let mut sent = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut sent).expect("write");
        }
        let mut rest = &sent[..];
        while !rest.is_empty() {
            to.read_tls(&mut rest).expect("read");
            to.process_new_packets().expect("process");
        }
        !sent.is_empty()
    }

    /// One handshake in memory, vetted at `now`; then the server's tickets reach the client.
    fn handshake(
        client: &Arc<rustls::ClientConfig>,
        server: &Arc<rustls::ServerConfig>,
        now: u64,
    ) -> Result<Option<HandshakeKind>, String> {
        let name = ServerName::try_from("gw.isthmus.internal").expect("name");
        let mut c = Connection::Client(ClientConnection::new(Arc::clone(client), name).unwrap());
        let mut s = Connection::Server(ServerConnection::new(Arc::clone(server)).unwrap());
        shuttle(&mut c, &mut s);
        let Connection::Server(conn) = &mut s else {
            unreachable!()
        };
        vet_at(conn, now)?;
        while shuttle(&mut s, &mut c) | shuttle(&mut c, &mut s) {}
        Ok(s.handshake_kind())
    }

    /// A mesh of one root: its trust handle, the server's identity and a resuming server
    /// config keeping sessions in `store` (made on those handles).
    fn resuming_server(
        store: impl FnOnce(TrustHandle, IdentityHandle) -> Arc<dyn StoresServerSessions>,
    ) -> (
        crate::ca::Authority,
        TrustHandle,
        IdentityHandle,
        Arc<rustls::ServerConfig>,
    ) {
        let ours = root("mesh.example");
        let server_leaf = leaf(&intermediate(&ours, "aws", None), "spiffe://mesh.example/s");
        let trust = TrustHandle::new(
            TrustStore::new(&bundle_map(&[("mesh.example", &ours)])).expect("store"),
        );
        let identity = IdentityHandle::from_credential(&server_leaf).unwrap();
        let server = super::super::server_config_resuming(
            identity.clone(),
            trust.clone(),
            Authorizer::any(),
            store(trust.clone(), identity.clone()),
        )
        .unwrap();
        (ours, trust, identity, Arc::new(server))
    }

    /// A resuming client of the mesh under `ours`, on `trust`.
    fn resuming_client(
        ours: &crate::ca::Authority,
        trust: &TrustHandle,
    ) -> (IdentityHandle, Arc<rustls::ClientConfig>) {
        let client_leaf = leaf(&intermediate(ours, "gcp", None), "spiffe://mesh.example/c");
        let identity = IdentityHandle::from_credential(&client_leaf).unwrap();
        let client = super::super::client_config_resuming(
            identity.clone(),
            trust.clone(),
            Authorizer::any(),
            8,
        )
        .unwrap();
        (identity, Arc::new(client))
    }

    /// The clock of the store in
    /// [`a_session_comes_from_a_full_handshake_and_is_used_once_within_max_age`].
    static CLOCK: AtomicU64 = AtomicU64::new(0);

    fn test_clock() -> u64 {
        CLOCK.load(Ordering::Relaxed)
    }

    #[test]
    fn a_session_comes_from_a_full_handshake_and_is_used_once_within_max_age() {
        let (ours, trust, _, server) = resuming_server(|trust, identity| {
            let mut store = Scoped::new(trust, identity, 8, server_sessions);
            store.clock = test_clock;
            Arc::new(store)
        });
        let (_, client) = resuming_client(&ours, &trust);
        let at = |t: u64| {
            CLOCK.store(t, Ordering::Relaxed);
            handshake(&client, &server, t)
        };
        let full = Ok(Some(HandshakeKind::Full));
        let resumed = Ok(Some(HandshakeKind::Resumed));
        let t0 = 1_000_000;
        // Two tickets per full handshake, none per resumed one: a chain verified in a full
        // handshake is carried by at most two resumptions.
        assert_eq!(at(t0), full);
        assert_eq!(at(t0 + 10), resumed);
        assert_eq!(at(t0 + 20), resumed);
        assert_eq!(at(t0 + 30), full);
        assert_eq!(at(t0 + 40), resumed);
        // A session left waiting past MAX_AGE is not found: a full handshake, not a failure.
        let idle = t0 + 40 + MAX_AGE.as_secs() + 1;
        assert_eq!(at(idle), full);
        // Should a session past MAX_LIFETIME get past the store, the vetting refuses it before
        // the handshake completes.
        CLOCK.store(idle + 10, Ordering::Relaxed);
        let past = handshake(&client, &server, idle + MAX_LIFETIME.as_secs() + 1);
        assert!(
            past.as_ref()
                .is_err_and(|e| e.contains("a full one is due")),
            "{past:?}"
        );
    }

    fn server_store_of(
        size: usize,
    ) -> impl FnOnce(TrustHandle, IdentityHandle) -> Arc<dyn StoresServerSessions> {
        move |trust, identity| server_store(trust, identity, size)
    }

    #[test]
    fn sessions_start_over_when_the_trust_store_or_either_side_s_identity_is_replaced() {
        let (ours, trust, server_identity, server) = resuming_server(server_store_of(8));
        let (client_identity, client) = resuming_client(&ours, &trust);
        let kind = |expected| {
            let now = now_secs();
            assert_eq!(handshake(&client, &server, now), Ok(Some(expected)));
        };
        let renew = |identity: &IdentityHandle, cluster, id| {
            let renewed = leaf(&intermediate(&ours, cluster, None), id);
            identity
                .replace(renewed.chain.clone(), renewed.key.to_pkcs8_der())
                .unwrap();
        };
        kind(HandshakeKind::Full);
        kind(HandshakeKind::Resumed);
        // The server renews: its sessions, which the client's tickets name, are gone.
        renew(&server_identity, "aws", "spiffe://mesh.example/s");
        kind(HandshakeKind::Full);
        kind(HandshakeKind::Resumed);
        // The client renews: it offers none of the tickets its old certificate earned.
        renew(&client_identity, "gcp", "spiffe://mesh.example/c");
        kind(HandshakeKind::Full);
        kind(HandshakeKind::Resumed);
        // A store equal to the one in force, but replaced: both sides start over.
        trust.store(TrustStore::new(&bundle_map(&[("mesh.example", &ours)])).expect("store"));
        kind(HandshakeKind::Full);
        kind(HandshakeKind::Resumed);
    }

    #[test]
    fn a_resuming_server_speaks_tls_1_3_only() {
        let (_, trust, _, server) = resuming_server(server_store_of(8));
        let verifier = Arc::new(super::super::SpiffeVerifier::new(trust, Authorizer::any()));
        let tls12 = rustls::ClientConfig::builder_with_provider(super::super::provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        let name = ServerName::try_from("gw.isthmus.internal").expect("name");
        let mut c = ClientConnection::new(Arc::new(tls12), name).unwrap();
        let mut s = ServerConnection::new(server).unwrap();
        let mut hello = Vec::new();
        c.write_tls(&mut hello).unwrap();
        s.read_tls(&mut &hello[..]).unwrap();
        let refused = s.process_new_packets().map(drop);
        assert!(
            matches!(refused, Err(rustls::Error::PeerIncompatible(_))),
            "{refused:?}"
        );
    }

    #[test]
    fn a_server_session_is_refused_once_older_than_max_age() {
        let stored = stamp(b"session", 1000);
        let max = MAX_AGE.as_secs();
        assert_eq!(fresh(&stored, 1000).as_deref(), Some(&b"session"[..]));
        assert_eq!(fresh(&stored, 1000 + max).as_deref(), Some(&b"session"[..]));
        assert_eq!(fresh(&stored, 1000 + max + 1), None);
        assert_eq!(fresh(b"short", 1000), None, "no stamp: no session");
    }
}
