//! rustls integration: client and server certificate verifiers built on [`TrustStore`], an
//! authorizer callback on the verified SPIFFE identity, hot-swappable trust and identity, and
//! configuration builders with TLS session resumption turned off, or scoped to the trust store.
//!
//! Resumption is off by default because a resumed session skips certificate verification: a
//! peer whose trust domain was removed from the bundle map, or whose SPIFFE ID is no longer
//! authorized, could otherwise resume its way back in. The `*_resuming` builders are for a
//! caller that checks every resumed peer again itself ([`resume`] says what they guarantee).

pub mod resume;

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};

use crate::ca::Credential;
use crate::spiffe::{SpiffeId, TrustDomain};
use crate::verify::{PeerIdentity, TrustStore, Usage, VerifyError};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("the private key is not usable for TLS: {0}")]
    Key(String),
}

/// The process-wide crypto provider: aws-lc-rs, preferring TLS_AES_128_GCM_SHA256.
///
/// That is the order BoringSSL and Go use. rustls puts AES-256 with SHA-384 first, whose key
/// schedule and transcript hash run in software where SHA-256 has CPU instructions, and whose
/// bulk cipher takes 14 rounds to 10. Every suite stays enabled; a server follows the client's
/// order, so two Isthmus peers agree on this one.
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(provider)
}

/// A trust store that can be replaced while connections are being verified; each handshake uses
/// the store current when it starts.
#[derive(Clone, Default)]
pub struct TrustHandle(Arc<ArcSwap<TrustStore>>);

impl TrustHandle {
    pub fn new(store: TrustStore) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(store)))
    }
    pub fn load(&self) -> Arc<TrustStore> {
        self.0.load_full()
    }
    pub fn store(&self, store: TrustStore) {
        self.0.store(Arc::new(store));
    }
}

impl fmt::Debug for TrustHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TrustHandle")
            .field(&self.load().trust_domains().collect::<Vec<_>>())
            .finish()
    }
}

/// Our certificate and key, replaceable without rebuilding TLS configurations.
#[derive(Clone)]
pub struct IdentityHandle(Arc<ArcSwap<CertifiedKey>>);

impl IdentityHandle {
    pub fn new(chain: Vec<CertificateDer<'static>>, pkcs8_key: Vec<u8>) -> Result<Self, Error> {
        Ok(Self(Arc::new(ArcSwap::from_pointee(certified_key(
            chain, pkcs8_key,
        )?))))
    }

    pub fn from_credential(cred: &Credential) -> Result<Self, Error> {
        Self::new(cred.chain.clone(), cred.key.to_pkcs8_der())
    }

    pub fn replace(
        &self,
        chain: Vec<CertificateDer<'static>>,
        pkcs8_key: Vec<u8>,
    ) -> Result<(), Error> {
        self.0.store(Arc::new(certified_key(chain, pkcs8_key)?));
        Ok(())
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.0.load_full()
    }

    /// Whether `chain` is the chain in force (a key matching it is then the key in force).
    pub fn presents(&self, chain: &[CertificateDer<'_>]) -> bool {
        self.0.load().cert.as_slice() == chain
    }
}

impl fmt::Debug for IdentityHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdentityHandle(redacted)")
    }
}

impl ResolvesServerCert for IdentityHandle {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl rustls::client::ResolvesClientCert for IdentityHandle {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    pkcs8_key: Vec<u8>,
) -> Result<CertifiedKey, Error> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8_key));
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| Error::Key(e.to_string()))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| Error::Key(e.to_string()))?;
    Ok(ck)
}

/// Decides whether a verified peer may proceed. Runs inside the handshake, after the chain has
/// been verified, so a refusal becomes a TLS alert.
#[derive(Clone)]
pub struct Authorizer(Arc<AuthorizeFn>);

/// The authorizer's callback: `Err` carries the reason for the refusal.
pub type AuthorizeFn = dyn Fn(&PeerIdentity) -> Result<(), String> + Send + Sync;

impl Authorizer {
    /// Any identity the trust store verifies.
    pub fn any() -> Self {
        Self::from_fn(|_| Ok(()))
    }

    pub fn from_fn(
        f: impl Fn(&PeerIdentity) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new(f))
    }

    /// Identities in one of these trust domains.
    pub fn trust_domains(tds: impl IntoIterator<Item = TrustDomain>) -> Self {
        let tds: Vec<TrustDomain> = tds.into_iter().collect();
        Self::from_fn(move |peer| {
            if tds
                .iter()
                .any(|td| td.as_str() == peer.spiffe_id.trust_domain_str())
            {
                Ok(())
            } else {
                Err(format!(
                    "trust domain {} is not allowed",
                    peer.spiffe_id.trust_domain_str()
                ))
            }
        })
    }

    /// Exactly these identities.
    pub fn exact(ids: impl IntoIterator<Item = SpiffeId>) -> Self {
        let ids: Vec<SpiffeId> = ids.into_iter().collect();
        Self::from_fn(move |peer| {
            if ids.contains(&peer.spiffe_id) {
                Ok(())
            } else {
                Err(format!(
                    "{} is not in the allowed identities",
                    peer.spiffe_id
                ))
            }
        })
    }

    pub fn check(&self, peer: &PeerIdentity) -> Result<(), String> {
        (self.0)(peer)
    }
}

impl fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Authorizer")
    }
}

/// A refusal by the [`Authorizer`], carried inside the rustls error.
#[derive(Debug, thiserror::Error)]
#[error("peer {id} is not authorized: {reason}")]
pub struct NotAuthorized {
    pub id: String,
    pub reason: String,
}

/// Verifies peers' certificates against a [`TrustHandle`] and authorizes them; one type serves
/// both sides of the handshake.
#[derive(Debug, Clone)]
pub struct SpiffeVerifier {
    trust: TrustHandle,
    authorizer: Authorizer,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SpiffeVerifier {
    pub fn new(trust: TrustHandle, authorizer: Authorizer) -> Self {
        Self {
            trust,
            authorizer,
            algorithms: provider().signature_verification_algorithms,
        }
    }

    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: Usage,
    ) -> Result<PeerIdentity, rustls::Error> {
        let mut chain = Vec::with_capacity(1 + intermediates.len());
        chain.push(end_entity.clone());
        chain.extend(intermediates.iter().cloned());
        let peer = self
            .trust
            .load()
            .verify(&chain, now, usage)
            .map_err(|e| rustls::Error::InvalidCertificate(certificate_error(e)))?;
        self.authorizer.check(&peer).map_err(|reason| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                NotAuthorized {
                    id: peer.spiffe_id.to_string(),
                    reason,
                },
            ))))
        })?;
        Ok(peer)
    }
}

fn certificate_error(e: VerifyError) -> CertificateError {
    match e {
        // These map to specific alerts; the rest travel as `Other` with our precise text.
        VerifyError::BadSignature => CertificateError::BadSignature,
        VerifyError::RevokedTrustDomain(_) => CertificateError::Revoked,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    }
}

impl ServerCertVerifier for SpiffeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The server name is routing information (SNI); identity is the SPIFFE ID, authorized
        // by the callback.
        self.verify(end_entity, intermediates, now, Usage::Server)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for SpiffeVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates, now, Usage::Client)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A mutual-TLS server configuration: our identity, client certificates required and verified
/// by SPIFFE trust domain, resumption off.
pub fn server_config(
    identity: IdentityHandle,
    trust: TrustHandle,
    authorizer: Authorizer,
) -> Result<rustls::ServerConfig, Error> {
    let verifier = Arc::new(SpiffeVerifier::new(trust, authorizer));
    server_config_with(identity, verifier, rustls::DEFAULT_VERSIONS)
}

fn server_config_with(
    identity: IdentityHandle,
    verifier: Arc<dyn ClientCertVerifier>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<rustls::ServerConfig, Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(identity));
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// [`server_config`] for TLS 1.3 only (no TLS 1.2 session, reusable by design, is ever kept),
/// resuming sessions kept in `sessions` ([`resume::server_store`] on the same `trust` and
/// `identity`), two tickets per full handshake and none per resumed one. A resumed handshake
/// verifies no certificate: the caller vets each connection with [`resume::vet_server_hello`]
/// and checks a resumed session's client chain (`peer_certificates`) against its policy before
/// trusting it.
pub fn server_config_resuming(
    identity: IdentityHandle,
    trust: TrustHandle,
    authorizer: Authorizer,
    sessions: Arc<dyn rustls::server::StoresServerSessions>,
) -> Result<rustls::ServerConfig, Error> {
    let verifier = Arc::new(SpiffeVerifier::new(trust, authorizer));
    let mut config = server_config_with(identity, verifier, &[&rustls::version::TLS13])?;
    config.session_storage = sessions;
    config.send_tls13_tickets = 2;
    Ok(config)
}

/// A server configuration that asks for a client certificate but does not require one: a
/// client that presents one is verified and authorized exactly as by [`server_config`]; one that
/// presents none gets through the handshake unauthenticated, so the application must check.
///
/// For endpoints that admit strangers on a separate proof, such as redeeming a peering token,
/// beside mutually authenticated calls on the same port.
pub fn server_config_client_auth_optional(
    identity: IdentityHandle,
    trust: TrustHandle,
    authorizer: Authorizer,
) -> Result<rustls::ServerConfig, Error> {
    let verifier = Arc::new(OptionalClientAuth(SpiffeVerifier::new(trust, authorizer)));
    server_config_with(identity, verifier, rustls::DEFAULT_VERSIONS)
}

/// A client configuration that verifies and authorizes the server but presents no identity.
pub fn client_config_server_auth_only(
    trust: TrustHandle,
    authorizer: Authorizer,
) -> Result<rustls::ClientConfig, Error> {
    client_config_with(trust, authorizer, None)
}

/// [`SpiffeVerifier`] with client authentication offered but not mandatory.
#[derive(Debug)]
struct OptionalClientAuth(SpiffeVerifier);

impl ClientCertVerifier for OptionalClientAuth {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        ClientCertVerifier::verify_tls12_signature(&self.0, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        ClientCertVerifier::verify_tls13_signature(&self.0, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        ClientCertVerifier::supported_verify_schemes(&self.0)
    }
}

/// A mutual-TLS client configuration: our identity, the server verified by SPIFFE trust domain
/// and authorized, resumption off.
pub fn client_config(
    identity: IdentityHandle,
    trust: TrustHandle,
    authorizer: Authorizer,
) -> Result<rustls::ClientConfig, Error> {
    client_config_with(trust, authorizer, Some(identity))
}

/// [`client_config`] that resumes TLS 1.3 sessions with up to `servers` server names, only
/// while `trust` and `identity` hold what the session was made under (TLS 1.2 never resumes).
/// A resumed
/// handshake verifies no certificate: the caller checks the session's server chain
/// (`peer_certificates`) against its policy before trusting it.
pub fn client_config_resuming(
    identity: IdentityHandle,
    trust: TrustHandle,
    authorizer: Authorizer,
    servers: usize,
) -> Result<rustls::ClientConfig, Error> {
    let mut config = client_config_with(trust.clone(), authorizer, Some(identity.clone()))?;
    let store = Arc::new(resume::Scoped::new(
        trust,
        identity,
        servers,
        resume::client_sessions,
    ));
    config.resumption = rustls::client::Resumption::store(store)
        .tls12_resumption(rustls::client::Tls12Resumption::Disabled);
    Ok(config)
}

fn client_config_with(
    trust: TrustHandle,
    authorizer: Authorizer,
    identity: Option<IdentityHandle>,
) -> Result<rustls::ClientConfig, Error> {
    let verifier = Arc::new(SpiffeVerifier::new(trust, authorizer));
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        Some(identity) => builder.with_client_cert_resolver(Arc::new(identity)),
        None => builder.with_no_client_auth(),
    };
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// A one-line explanation of a failed handshake: our verifier's precise reason when it refused
/// the peer, otherwise rustls' own words.
pub fn explain(err: &rustls::Error) -> String {
    if let rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) = err {
        let inner: &(dyn std::error::Error + 'static) = inner.as_ref();
        if let Some(e) = inner.downcast_ref::<VerifyError>() {
            return format!("peer certificate refused: {e}");
        }
        if let Some(e) = inner.downcast_ref::<NotAuthorized>() {
            return e.to_string();
        }
    }
    err.to_string()
}

/// [`explain`] for the `io::Error` that tokio-rustls returns.
pub fn explain_io(err: &std::io::Error) -> String {
    match err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(tls) => explain(tls),
        None => err.to_string(),
    }
}

/// The SPIFFE ID in a peer's leaf certificate, after a handshake these verifiers accepted.
pub fn peer_spiffe_id(peer_certs: &[CertificateDer<'_>]) -> Option<SpiffeId> {
    let leaf = crate::cert::ParsedCert::parse(peer_certs.first()?).ok()?;
    crate::verify::leaf_identity(&leaf).ok()
}
