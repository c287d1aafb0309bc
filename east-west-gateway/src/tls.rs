//! The gateway's TLS material and the rustls configurations built from it: the identity (cert
//! chain and key) and the trust store (bundle map) are read from the files named in `tls` or
//! taken from the controller's message ([`Source`]), held in hot-swappable `trust_bundle::tls`
//! handles, and replaced in place on reload, so every configuration built from them sees new
//! certificates and bundles at its next handshake.
//!
//! Not here: the handshakes themselves (`proxy::terminate` on ingress, `egress` outbound).
//! Key material never leaves this module except inside rustls; errors name settings and files,
//! never content.

mod source;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::{CertificateError, OtherError};
use rustls_pki_types::CertificateDer;
use trust_bundle::cert::ParsedCert;
use trust_bundle::tls::{Authorizer, IdentityHandle, NotAuthorized, TrustHandle};
pub(crate) use trust_bundle::verify::Usage;
use trust_bundle::{PeerIdentity, TrustDomain, VerifyError};

use self::source::Loaded;
pub use self::source::{Inline, Own, Source, watched_files};
use crate::config;

/// Why TLS material could not be loaded or a configuration built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// `tls.cert_chain`, `tls.private_key` or `tls.trust_bundle`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// Material was read but is unusable (the message never quotes key material).
    #[error("{what} {from}: {problem}")]
    Invalid {
        /// Which setting.
        what: &'static str,
        /// The file, or "(from the controller)".
        from: String,
        /// What is wrong.
        problem: String,
    },
    /// rustls refused the configuration.
    #[error("tls configuration: {0}")]
    Config(#[from] trust_bundle::tls::Error),
}

/// The gateway's identity and trust store; cloning shares the handles.
#[derive(Debug, Clone)]
pub struct Material {
    identity: IdentityHandle,
    trust: TrustHandle,
    /// Our own certificate, for logs, the config dump and the expiry gauge.
    own: Arc<arc_swap::ArcSwap<Own>>,
    /// Bumped after each config is in force, so open connections re-check their peer.
    revision: Arc<tokio::sync::watch::Sender<u64>>,
    /// Sessions of every terminate route, for resumption (see [`Self::server_config`]).
    sessions: Arc<dyn rustls::server::StoresServerSessions>,
    /// The egress configuration of each trust domain, shared by every listener toward it, so
    /// their tickets are one pool (rustls resumes only with the configuration that saved it).
    clients: Arc<std::sync::Mutex<HashMap<String, Arc<rustls::ClientConfig>>>>,
}

/// Sessions the gateway keeps for resumption, all terminate routes together: a linked gateway
/// resumes with one of the tickets it received last, so this covers several hundred
/// concurrent new connections while bounding the memory (about 1.5 KB a session, the peer's
/// chain included).
const SESSIONS: usize = 1024;

/// Server names an egress configuration keeps tickets for (rustls keeps up to 8 per name).
const REMOTE_GATEWAYS: usize = 64;

/// Why a handshake failed: the bounded `reason` label of `tls_handshake_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// The peer's trust domain has no bundle (or an empty one).
    UnknownTrustDomain,
    /// The chain does not lead to a root of the peer's trust domain.
    UnknownIssuer,
    /// A certificate in the chain (or its root) is expired or not yet valid.
    Expired,
    /// Verified, but the identity is not allowed here.
    NotAuthorized,
    /// The issuing intermediate is bound to another trust domain.
    Binding,
    /// A resumed session whose peer, checked again, is no longer let in.
    Resumed,
    /// Anything else: protocol errors, timeouts, resets.
    Other,
}

impl FailureReason {
    /// The snake_case label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownTrustDomain => "unknown_trust_domain",
            Self::UnknownIssuer => "unknown_issuer",
            Self::Expired => "expired",
            Self::NotAuthorized => "not_authorized",
            Self::Binding => "binding",
            Self::Resumed => "resumed_refused",
            Self::Other => "other",
        }
    }

    /// Classifies the error tokio-rustls returned from a handshake.
    pub fn of(error: &std::io::Error) -> Self {
        let Some(tls) = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        else {
            return Self::Other;
        };
        match tls {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
                let inner: &(dyn std::error::Error + 'static) = inner.as_ref();
                if inner.downcast_ref::<NotAuthorized>().is_some() {
                    return Self::NotAuthorized;
                }
                match inner.downcast_ref::<VerifyError>() {
                    Some(VerifyError::UnknownTrustDomain { .. }) => Self::UnknownTrustDomain,
                    Some(VerifyError::UnknownIssuer { .. }) => Self::UnknownIssuer,
                    Some(VerifyError::Expired { .. } | VerifyError::RootExpired { .. }) => {
                        Self::Expired
                    }
                    Some(VerifyError::NotYetValid { .. }) => Self::Expired,
                    Some(VerifyError::Binding { .. }) => Self::Binding,
                    _ => Self::Other,
                }
            }
            rustls::Error::InvalidCertificate(CertificateError::BadSignature) => {
                Self::UnknownIssuer
            }
            rustls::Error::InvalidCertificate(CertificateError::Revoked) => {
                Self::UnknownTrustDomain
            }
            rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::NotValidYet,
            ) => Self::Expired,
            _ => Self::Other,
        }
    }
}

/// What the gateway learned about a verified peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    /// The peer's SPIFFE ID.
    pub spiffe_id: Option<String>,
    /// The `L=` of the peer's issuing intermediate.
    pub cluster: Option<String>,
}

impl Peer {
    /// Reads the identity from certificates a handshake has already verified.
    pub fn from_certs(certs: &[CertificateDer<'_>]) -> Self {
        let spiffe_id = trust_bundle::tls::peer_spiffe_id(certs).map(|id| id.to_string());
        // The issuer is the intermediate whose subject names the leaf's issuer.
        let cluster = certs.first().and_then(|leaf| {
            let leaf = ParsedCert::parse(leaf).ok()?;
            certs[1..]
                .iter()
                .filter_map(|c| ParsedCert::parse(c).ok())
                .find(|c| c.subject == leaf.issuer)?
                .locality
        });
        Self { spiffe_id, cluster }
    }
}

/// TLS material read and checked (key matches chain, bundle parses) but not yet in force.
pub struct Staged(Loaded);

impl std::fmt::Debug for Staged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staged")
            .field("spiffe_id", &self.0.own.spiffe_id)
            .finish_non_exhaustive()
    }
}

impl Material {
    /// Reads and checks the material of `source`; nothing is installed yet.
    pub fn stage(source: Source<'_>) -> Result<Staged, Error> {
        Loaded::read(&source).map(Staged)
    }

    /// New handles holding `staged`.
    pub fn new(staged: Staged) -> Result<Self, Error> {
        let Staged(loaded) = staged;
        let identity = IdentityHandle::new(loaded.chain, loaded.key)?;
        let trust = TrustHandle::new(loaded.store);
        Ok(Self {
            sessions: trust_bundle::tls::resume::server_store(
                trust.clone(),
                identity.clone(),
                SESSIONS,
            ),
            identity,
            trust,
            own: Arc::new(arc_swap::ArcSwap::from_pointee(loaded.own)),
            revision: Arc::new(tokio::sync::watch::Sender::new(0)),
            clients: Arc::default(),
        })
    }

    /// Puts `staged` in force: every configuration built from these handles uses it from its
    /// next handshake. Staging already proved the key matches, so this fails only if rustls
    /// changed its mind, and then nothing is replaced.
    ///
    /// The identity and the trust store are replaced only when they differ from those in
    /// force: sessions for resumption and the chains the store remembers belong to them, and a
    /// config push that changes routes or endpoints (every push, in controller mode) would
    /// otherwise start both over.
    pub fn install(&self, staged: Staged) -> Result<(), Error> {
        let Staged(loaded) = staged;
        if !self.identity.presents(&loaded.chain) {
            self.identity.replace(loaded.chain, loaded.key)?;
        }
        if !self.trust.load().accepts_as(&loaded.store) {
            self.trust.store(loaded.store);
        }
        self.own.store(Arc::new(loaded.own));
        Ok(())
    }

    /// Tells open connections that a config is in force (call after the routes are stored), so
    /// they check their peer again.
    pub(crate) fn announce(&self) {
        self.revision.send_modify(|r| *r += 1);
    }

    /// Changes at every [`Self::announce`].
    pub(crate) fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.revision.subscribe()
    }

    /// Whether a peer chain verified at handshake still verifies against the bundle map in
    /// force: a trust domain removed (an unlinked peer) or a root rotated out ends its
    /// connections. A resumed handshake, which verified no certificate, is let through only
    /// after this check of the chain its session recorded (the store remembers chains it
    /// accepted, so the check costs no signature).
    pub(crate) fn still_trusted(
        &self,
        chain: &[CertificateDer<'_>],
        usage: Usage,
    ) -> Result<PeerIdentity, String> {
        self.trust
            .load()
            .verify(chain, rustls_pki_types::UnixTime::now(), usage)
            .map_err(|e| e.to_string())
    }

    /// Our own certificate in force.
    pub fn own(&self) -> Own {
        self.own.load().as_ref().clone()
    }

    /// Trust domains in the bundle map in force.
    pub fn trust_domains(&self) -> Vec<String> {
        self.trust
            .load()
            .trust_domains()
            .map(ToString::to_string)
            .collect()
    }

    /// The ingress configuration for a terminate route: peers must verify and pass `auth`.
    /// Sessions resume while the bundle map and our certificate stay the same (all routes keep
    /// theirs in one store; rustls resumes a session only for the server name it was made
    /// for); a resumed peer is checked again, with the authorization of the route then serving
    /// its name,
    /// before any byte is forwarded.
    pub fn server_config(
        &self,
        auth: &config::Authorization,
    ) -> Result<Arc<rustls::ServerConfig>, Error> {
        let config = trust_bundle::tls::server_config_resuming(
            self.identity.clone(),
            self.trust.clone(),
            authorizer(auth),
            Arc::clone(&self.sessions),
        )?;
        Ok(Arc::new(config))
    }

    /// The egress configuration: the remote gateway must verify and be in `trust_domain`.
    /// One per trust domain for the gateway's life (the handles it holds follow every
    /// reload). Sessions resume while the bundle map and our certificate stay the same (a
    /// ticket belongs to the configuration and the server name it was issued for); a resumed
    /// remote gateway is checked again.
    pub fn client_config(&self, trust_domain: &str) -> Result<Arc<rustls::ClientConfig>, Error> {
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(config) = clients.get(trust_domain) {
            return Ok(Arc::clone(config));
        }
        let authorizer = match TrustDomain::parse(trust_domain) {
            Ok(td) => Authorizer::trust_domains([td]),
            // Config validation checks the syntax; a stricter parser refusing it allows nobody.
            Err(_) => Authorizer::from_fn(|_| Err("invalid expected trust domain".to_owned())),
        };
        let config = trust_bundle::tls::client_config_resuming(
            self.identity.clone(),
            self.trust.clone(),
            authorizer,
            REMOTE_GATEWAYS,
        )?;
        let config = Arc::new(config);
        clients.insert(trust_domain.to_owned(), Arc::clone(&config));
        Ok(config)
    }
}

/// Whether a finished handshake resumed a session (and so verified no certificate).
pub(crate) fn resumed(conn: &rustls::CommonState) -> bool {
    conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
}

/// The peer's certificates from a finished handshake, owned, to verify again later.
pub(crate) fn owned_chain(certs: Option<&[CertificateDer<'_>]>) -> Vec<CertificateDer<'static>> {
    certs
        .unwrap_or(&[])
        .iter()
        .map(|c| c.clone().into_owned())
        .collect()
}

/// Resolves at the first config announcement after which `check` fails: its reason. Never
/// resolves once the material is gone (the gateway is exiting; connections end with it).
pub(crate) async fn revoked(
    changes: &mut tokio::sync::watch::Receiver<u64>,
    mut check: impl FnMut() -> Result<(), String>,
) -> String {
    loop {
        if changes.changed().await.is_err() {
            return std::future::pending().await;
        }
        if let Err(reason) = check() {
            return reason;
        }
    }
}

/// Any-of: a trust domain, a cluster (issuing intermediate's `L=`) or an exact SPIFFE ID.
pub(crate) fn authorizer(auth: &config::Authorization) -> Authorizer {
    let auth = auth.clone();
    Authorizer::from_fn(move |peer: &PeerIdentity| {
        let td = peer.spiffe_id.trust_domain_str();
        let id = peer.spiffe_id.to_string();
        let allowed = auth.trust_domains.iter().any(|t| t == td)
            || peer
                .cluster
                .as_deref()
                .is_some_and(|c| auth.clusters.iter().any(|a| a.as_str() == c))
            || auth.spiffe_ids.contains(&id);
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "neither its trust domain {td:?}, its cluster {:?} nor its ID is allowed on this route",
                peer.cluster.as_deref().unwrap_or("")
            ))
        }
    })
}

#[cfg(test)]
mod tests;
