//! The gateway's TLS material and the rustls configurations built from it: the identity (cert
//! chain and key) and the trust store (bundle map) are read from the files named in `tls`, held
//! in hot-swappable `trust_bundle::tls` handles, and replaced in place on reload, so every
//! configuration built from them sees new certificates and bundles at its next handshake.
//!
//! Not here: the handshakes themselves (`proxy::terminate` on ingress, `egress` outbound).
//! Key material never leaves this module except inside rustls; errors name files, never content.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::{CertificateError, OtherError};
use rustls_pki_types::CertificateDer;
use trust_bundle::bundle::{self, BundleMap};
use trust_bundle::cert::ParsedCert;
use trust_bundle::tls::{Authorizer, IdentityHandle, NotAuthorized, TrustHandle};
use trust_bundle::{PeerIdentity, PrivateKey, TrustDomain, TrustStore, VerifyError};

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
    /// A file was read but its content is unusable (the message never quotes key material).
    #[error("{what} {path}: {problem}")]
    Invalid {
        /// Which setting.
        what: &'static str,
        /// The file.
        path: PathBuf,
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
    /// SPIFFE ID of our own certificate, for logs and the config dump.
    own_id: Arc<arc_swap::ArcSwap<String>>,
}

/// Parsed file contents, checked and ready to install.
struct Loaded {
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
    store: TrustStore,
    own_id: String,
}

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
            .field("spiffe_id", &self.0.own_id)
            .finish_non_exhaustive()
    }
}

impl Material {
    /// Reads and checks the files named in `tls`; nothing is installed yet.
    pub fn stage(tls: &config::Tls) -> Result<Staged, Error> {
        Loaded::read(tls).map(Staged)
    }

    /// New handles holding `staged`.
    pub fn new(staged: Staged) -> Result<Self, Error> {
        let Staged(loaded) = staged;
        let identity = IdentityHandle::new(loaded.chain, loaded.key)?;
        Ok(Self {
            identity,
            trust: TrustHandle::new(loaded.store),
            own_id: Arc::new(arc_swap::ArcSwap::from_pointee(loaded.own_id)),
        })
    }

    /// Puts `staged` in force: every configuration built from these handles uses it from its
    /// next handshake. Staging already proved the key matches, so this fails only if rustls
    /// changed its mind, and then nothing is replaced.
    pub fn install(&self, staged: Staged) -> Result<(), Error> {
        let Staged(loaded) = staged;
        self.identity.replace(loaded.chain, loaded.key)?;
        self.trust.store(loaded.store);
        self.own_id.store(Arc::new(loaded.own_id));
        Ok(())
    }

    /// Our SPIFFE ID.
    pub fn own_id(&self) -> String {
        self.own_id.load().as_ref().clone()
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
    pub fn server_config(
        &self,
        auth: &config::Authorization,
    ) -> Result<Arc<rustls::ServerConfig>, Error> {
        let config = trust_bundle::tls::server_config(
            self.identity.clone(),
            self.trust.clone(),
            authorizer(auth),
        )?;
        Ok(Arc::new(config))
    }

    /// The egress configuration: the remote gateway must verify and be in `trust_domain`.
    pub fn client_config(&self, trust_domain: &str) -> Result<Arc<rustls::ClientConfig>, Error> {
        let authorizer = match TrustDomain::parse(trust_domain) {
            Ok(td) => Authorizer::trust_domains([td]),
            // Config validation checks the syntax; a stricter parser refusing it allows nobody.
            Err(_) => Authorizer::from_fn(|_| Err("invalid expected trust domain".to_owned())),
        };
        let config = trust_bundle::tls::client_config(
            self.identity.clone(),
            self.trust.clone(),
            authorizer,
        )?;
        Ok(Arc::new(config))
    }
}

/// Any-of: a trust domain, a cluster (issuing intermediate's `L=`) or an exact SPIFFE ID.
fn authorizer(auth: &config::Authorization) -> Authorizer {
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

impl Loaded {
    fn read(tls: &config::Tls) -> Result<Self, Error> {
        let chain_pem = read("tls.cert_chain", &tls.cert_chain)?;
        let chain = bundle::parse_pem_certs(&chain_pem)
            .map_err(|e| invalid("tls.cert_chain", &tls.cert_chain, e))?;
        let own_id = trust_bundle::tls::peer_spiffe_id(&chain)
            .ok_or_else(|| {
                invalid(
                    "tls.cert_chain",
                    &tls.cert_chain,
                    "the leaf carries no SPIFFE ID; issue it with `trust-bundle leaf issue`",
                )
            })?
            .to_string();
        let key_pem = read("tls.private_key", &tls.private_key)?;
        // Neither the key nor rcgen's parse error text is ever shown: only the file name.
        let key = std::str::from_utf8(&key_pem)
            .ok()
            .and_then(|pem| PrivateKey::from_pem(pem).ok())
            .ok_or_else(|| {
                invalid(
                    "tls.private_key",
                    &tls.private_key,
                    "not a PKCS#8 PEM private key",
                )
            })?
            .to_pkcs8_der();
        // Prove the key matches the chain before anything is swapped.
        IdentityHandle::new(chain.clone(), key.clone()).map_err(|_| {
            invalid(
                "tls.private_key",
                &tls.private_key,
                "does not match the leaf of tls.cert_chain",
            )
        })?;
        let bundle_text = read("tls.trust_bundle", &tls.trust_bundle)?;
        let map = bundle_map(&bundle_text)
            .map_err(|problem| invalid("tls.trust_bundle", &tls.trust_bundle, problem))?;
        let store =
            TrustStore::new(&map).map_err(|e| invalid("tls.trust_bundle", &tls.trust_bundle, e))?;
        Ok(Self {
            chain,
            key,
            store,
            own_id,
        })
    }
}

/// A SPIFFE bundle map (JSON), or PEM roots grouped by the trust domain each root is bound to.
fn bundle_map(text: &[u8]) -> Result<BundleMap, String> {
    if text.trim_ascii_start().starts_with(b"{") {
        return BundleMap::from_json(text).map_err(|e| e.to_string());
    }
    let mut map = BundleMap::new();
    for der in bundle::parse_pem_certs(text).map_err(|e| e.to_string())? {
        let parsed = ParsedCert::parse(&der).map_err(|e| e.to_string())?;
        let td = trust_bundle::ca::bound_trust_domain(&parsed).map_err(|e| e.to_string())?;
        match map.get_mut(&td) {
            Some(existing) => {
                existing.add_root(der).map_err(|e| e.to_string())?;
            }
            None => {
                let bundle = bundle::X509Bundle::new([der]).map_err(|e| e.to_string())?;
                map.insert(td, bundle);
            }
        }
    }
    Ok(map)
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn invalid(what: &'static str, path: &Path, problem: impl ToString) -> Error {
    Error::Invalid {
        what,
        path: path.to_owned(),
        problem: problem.to_string(),
    }
}

/// The files whose content a reload watches, besides the config itself.
pub fn watched_files(tls: &config::Tls) -> [&Path; 3] {
    [&tls.cert_chain, &tls.private_key, &tls.trust_bundle]
}

#[cfg(test)]
mod tests;
