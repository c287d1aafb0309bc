//! Certificate authorities: a root per federation, one intermediate per cluster, and the leaf
//! identities they issue. All generation goes through rcgen with explicit validity (never its
//! 1975–4096 defaults) and random serials.
//!
//! Trust-domain binding: every CA certificate carries exactly one path-less SPIFFE ID
//! (`spiffe://<trust domain>`, the SPIFFE signing-certificate form) naming the one trust domain it
//! may issue for. The verifier ([`crate::verify`]) enforces it; URI name constraints are not used
//! because rustls-webpki rejects them (RUSTSEC-2026-0098). An intermediate's cluster is recorded in
//! its subject's `L=` attribute, as Istio's certificate tooling does.

use std::fmt;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::cert::{self, ParsedCert};
use crate::spiffe::{SpiffeId, TrustDomain};

/// Default validity of a root: ten years.
pub const DEFAULT_ROOT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Default validity of a cluster intermediate: thirty days.
pub const DEFAULT_INTERMEDIATE_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);
/// Default validity of a leaf identity: twenty-four hours.
pub const DEFAULT_LEAF_VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// How far `not_before` is backdated, so peers with a slightly slow clock accept new certificates.
const BACKDATE: Duration = Duration::from_secs(300);
/// The shortest certificate issued: short enough for renewal drills (a controller's
/// `identity_validity`), long enough to be used before it expires.
const MIN_VALIDITY: Duration = Duration::from_secs(10);

/// Why a certificate could not be issued or an authority loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot read the CA certificate: {0}")]
    Cert(#[from] cert::Error),
    #[error("the private key does not belong to the certificate {0:?}")]
    KeyMismatch(String),
    #[error("{0:?} is not a CA certificate (basicConstraints cA is false)")]
    NotCa(String),
    #[error("{0:?} lacks the keyCertSign key usage, so it cannot sign certificates")]
    NoCertSign(String),
    #[error(
        "{0:?} carries no SPIFFE trust-domain ID (a URI SAN like spiffe://TD); create CAs with `trust-bundle root create` / `intermediate create`"
    )]
    Unbound(String),
    #[error("{subject:?} carries {count} SPIFFE IDs; a CA must name exactly one trust domain")]
    ManyBindings { subject: String, count: usize },
    #[error("{0:?} has pathLen 0: it can issue leaves but not intermediates; use the root")]
    PathLenZero(String),
    #[error(
        "requested validity ends {requested}, after the issuer {issuer:?} expires ({issuer_not_after}); ask for a shorter --validity or renew the issuer"
    )]
    OutlivesIssuer {
        issuer: String,
        requested: String,
        issuer_not_after: String,
    },
    #[error("the issuer {issuer:?} expired at {not_after}; renew it before issuing")]
    IssuerExpired { issuer: String, not_after: String },
    #[error(
        "{id} is in trust domain {claimed:?}, but the issuer is bound to {bound:?}; use an issuer of that trust domain"
    )]
    TrustDomainMismatch {
        id: String,
        claimed: String,
        bound: String,
    },
    #[error("a trust domain other than the root's can only be bound by the root itself")]
    ForeignTrustDomainFromIntermediate,
    #[error("invalid SPIFFE ID: {0}")]
    Spiffe(#[from] crate::spiffe::Error),
    #[error("invalid DNS name {0:?}")]
    DnsName(String),
    #[error("invalid cluster name {0:?}: use 1-63 lowercase letters, digits and '-'")]
    ClusterName(String),
    #[error("validity must be at least ten seconds")]
    ValidityTooShort,
    #[error("the private key PEM is not a PKCS#8 key this tool supports: {0}")]
    Key(String),
}

/// The signature algorithm of a generated key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KeyAlgorithm {
    #[default]
    EcdsaP256,
    Ed25519,
}

impl std::str::FromStr for KeyAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ecdsa-p256" | "p256" | "ecdsa" => Ok(Self::EcdsaP256),
            "ed25519" => Ok(Self::Ed25519),
            other => Err(format!(
                "unknown key algorithm {other:?}: use ecdsa-p256 or ed25519"
            )),
        }
    }
}

/// A private key. It deliberately implements neither `Display` nor a revealing `Debug`, so it
/// cannot end up in a log line or an error message by accident.
pub struct PrivateKey(KeyPair);

impl PrivateKey {
    pub fn generate(alg: KeyAlgorithm) -> Result<Self, Error> {
        let alg = match alg {
            KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
        };
        Ok(Self(KeyPair::generate_for(alg)?))
    }

    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        // rcgen's message can quote parser internals but never key bytes.
        KeyPair::from_pem(pem)
            .map(Self)
            .map_err(|e| Error::Key(e.to_string()))
    }

    /// PKCS#8 PEM. Callers write it with mode 0600.
    pub fn to_pem(&self) -> String {
        self.0.serialize_pem()
    }

    /// PKCS#8 DER, for building TLS configurations.
    pub fn to_pkcs8_der(&self) -> Vec<u8> {
        self.0.serialize_der()
    }

    /// DER of the public key's SubjectPublicKeyInfo.
    pub fn public_spki(&self) -> Vec<u8> {
        self.0.subject_public_key_info()
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(redacted)")
    }
}

/// A certificate, its key and what a peer needs to verify it.
#[derive(Debug)]
pub struct Credential {
    pub cert: CertificateDer<'static>,
    pub key: PrivateKey,
    /// The certificate followed by its issuing intermediates; the root is excluded.
    pub chain: Vec<CertificateDer<'static>>,
    /// The root this credential chains to.
    pub root: CertificateDer<'static>,
}

/// A CA that can issue: a root or a cluster intermediate.
#[derive(Debug)]
pub struct Authority {
    pub credential: Credential,
    parsed: ParsedCert,
    trust_domain: TrustDomain,
    cluster: Option<String>,
}

/// What to create a root with.
#[derive(Debug, Clone)]
pub struct RootParams {
    pub trust_domain: TrustDomain,
    pub validity: Duration,
    pub algorithm: KeyAlgorithm,
}

/// What to create a cluster intermediate with.
#[derive(Debug, Clone)]
pub struct IntermediateParams {
    pub cluster: String,
    /// The trust domain it may issue for; the root's when `None`.
    pub trust_domain: Option<TrustDomain>,
    pub validity: Duration,
    pub algorithm: KeyAlgorithm,
}

/// What to issue a leaf identity with.
#[derive(Debug, Clone)]
pub struct LeafParams {
    pub spiffe_id: SpiffeId,
    pub dns_names: Vec<String>,
    pub validity: Duration,
    pub algorithm: KeyAlgorithm,
}

// === impl Authority ===

impl Authority {
    /// Creates a self-signed root for `params.trust_domain`.
    pub fn create_root(params: &RootParams, now: OffsetDateTime) -> Result<Self, Error> {
        let (not_before, not_after) = window(now, params.validity, None)?;
        let key = PrivateKey::generate(params.algorithm)?;
        let mut cp = base_params(not_before, not_after)?;
        let td = &params.trust_domain;
        cp.distinguished_name = root_dn(td, &key);
        cp.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        cp.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        cp.subject_alt_names = vec![uri_san(&td.authority_id())?];
        let cert = cp.self_signed(&key.0)?.der().clone();
        Self::assemble(cert.clone(), key, vec![], cert)
    }

    /// Loads an authority from its certificate, key, issuing chain (root excluded, may be empty
    /// for a root) and root, checking that they belong together.
    pub fn load(
        cert: CertificateDer<'static>,
        key: PrivateKey,
        intermediates_above: Vec<CertificateDer<'static>>,
        root: CertificateDer<'static>,
    ) -> Result<Self, Error> {
        Self::assemble(cert, key, intermediates_above, root)
    }

    fn assemble(
        cert: CertificateDer<'static>,
        key: PrivateKey,
        above: Vec<CertificateDer<'static>>,
        root: CertificateDer<'static>,
    ) -> Result<Self, Error> {
        let parsed = ParsedCert::parse(&cert)?;
        if parsed.spki != key.public_spki() {
            return Err(Error::KeyMismatch(parsed.label()));
        }
        if !parsed.is_ca {
            return Err(Error::NotCa(parsed.label()));
        }
        if !parsed.key_usage.as_ref().is_some_and(|ku| ku.key_cert_sign) {
            return Err(Error::NoCertSign(parsed.label()));
        }
        let trust_domain = bound_trust_domain(&parsed)?;
        let cluster = parsed.locality.clone();
        let mut chain = vec![cert.clone()];
        if parsed.role() != cert::Role::Root {
            chain.extend(above);
        }
        Ok(Self {
            credential: Credential {
                cert,
                key,
                chain,
                root,
            },
            parsed,
            trust_domain,
            cluster,
        })
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    pub fn cluster(&self) -> Option<&str> {
        self.cluster.as_deref()
    }

    pub fn is_root(&self) -> bool {
        self.parsed.role() == cert::Role::Root
    }

    pub fn parsed(&self) -> &ParsedCert {
        &self.parsed
    }

    /// Issues a cluster intermediate: pathLen 0, never outliving this root.
    pub fn create_intermediate(
        &self,
        params: &IntermediateParams,
        now: OffsetDateTime,
    ) -> Result<Authority, Error> {
        validate_cluster(&params.cluster)?;
        if self.parsed.path_len == Some(0) {
            return Err(Error::PathLenZero(self.parsed.label()));
        }
        let td = match &params.trust_domain {
            Some(td) if td != &self.trust_domain && !self.is_root() => {
                return Err(Error::ForeignTrustDomainFromIntermediate);
            }
            Some(td) => td.clone(),
            None => self.trust_domain.clone(),
        };
        let (not_before, not_after) = window(now, params.validity, Some(&self.parsed))?;
        let key = PrivateKey::generate(params.algorithm)?;
        let mut cp = base_params(not_before, not_after)?;
        cp.distinguished_name = dn(&[
            (DnType::OrganizationName, "Isthmus"),
            (DnType::OrganizationalUnitName, td.as_str()),
            (DnType::LocalityName, &params.cluster),
            (
                DnType::CommonName,
                &format!("{td} intermediate CA {}", params.cluster),
            ),
        ]);
        cp.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        cp.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        cp.subject_alt_names = vec![uri_san(&td.authority_id())?];
        let cert = self.sign(&cp, &key)?;
        let above = self.credential.chain.clone();
        Authority::assemble(
            cert,
            key,
            if self.is_root() { vec![] } else { above },
            self.credential.root.clone(),
        )
    }

    /// Issues a leaf identity for a SPIFFE ID of this authority's trust domain.
    pub fn issue_leaf(
        &self,
        params: &LeafParams,
        now: OffsetDateTime,
    ) -> Result<Credential, Error> {
        if params.spiffe_id.is_authority() {
            return Err(crate::spiffe::Error::NoPath(params.spiffe_id.to_string()).into());
        }
        if params.spiffe_id.trust_domain_str() != self.trust_domain.as_str() {
            return Err(Error::TrustDomainMismatch {
                id: params.spiffe_id.to_string(),
                claimed: params.spiffe_id.trust_domain_str().to_owned(),
                bound: self.trust_domain.to_string(),
            });
        }
        self.sign_leaf(params, now)
    }

    /// Issues a leaf without checking that its ID is in this authority's trust domain: what a
    /// misused intermediate could produce, for tests of the verifier's binding check.
    #[cfg(any(test, feature = "test-util"))]
    pub fn issue_leaf_unchecked(&self, id: &str) -> Credential {
        let params = LeafParams {
            spiffe_id: SpiffeId::parse(id).expect("valid SPIFFE ID"),
            dns_names: vec![],
            validity: Duration::from_secs(3600),
            algorithm: KeyAlgorithm::EcdsaP256,
        };
        self.sign_leaf(&params, OffsetDateTime::now_utc())
            .expect("leaf")
    }

    fn sign_leaf(&self, params: &LeafParams, now: OffsetDateTime) -> Result<Credential, Error> {
        let (not_before, not_after) = window(now, params.validity, Some(&self.parsed))?;
        let key = PrivateKey::generate(params.algorithm)?;
        let mut cp = base_params(not_before, not_after)?;
        let mut attrs = vec![(DnType::OrganizationName, "Isthmus")];
        if let Some(cluster) = &self.cluster {
            attrs.push((DnType::LocalityName, cluster));
        }
        cp.distinguished_name = dn(&attrs);
        cp.is_ca = IsCa::ExplicitNoCa;
        cp.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        cp.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        cp.subject_alt_names = vec![uri_san(&params.spiffe_id)?];
        for name in &params.dns_names {
            let ia5 = name
                .as_str()
                .try_into()
                .map_err(|_| Error::DnsName(name.clone()))?;
            if rustls_pki_types::DnsName::try_from(name.as_str()).is_err() {
                return Err(Error::DnsName(name.clone()));
            }
            cp.subject_alt_names.push(SanType::DnsName(ia5));
        }
        let cert = self.sign(&cp, &key)?;
        let mut chain = vec![cert.clone()];
        if !self.is_root() {
            chain.extend(self.credential.chain.iter().cloned());
        }
        Ok(Credential {
            cert,
            key,
            chain,
            root: self.credential.root.clone(),
        })
    }

    /// Signs another root's key and subject with this root, so peers that trust only this root
    /// accept chains that end at `new_root` during a rotation.
    pub fn cross_sign(
        &self,
        new_root: &Authority,
        now: OffsetDateTime,
    ) -> Result<CertificateDer<'static>, Error> {
        let new = &new_root.parsed;
        let lifetime = Duration::from_secs(
            u64::try_from(new.not_after.min(self.parsed.not_after) - now.unix_timestamp())
                .unwrap_or(0),
        );
        let (not_before, not_after) = window(now, lifetime, Some(&self.parsed))?;
        let mut cp = base_params(not_before, not_after)?;
        // Same subject bytes as the new root, so paths through either certificate connect.
        cp.distinguished_name = root_dn(&new_root.trust_domain, &new_root.credential.key);
        cp.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        cp.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        cp.subject_alt_names = vec![uri_san(&new_root.trust_domain.authority_id())?];
        self.sign(&cp, &new_root.credential.key)
    }

    /// The same root key and name self-signed again over another window: how a root that was
    /// re-issued, or has since expired, looks in someone's bundle.
    #[cfg(test)]
    pub(crate) fn reissue_root(
        &self,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> CertificateDer<'static> {
        let mut cp = base_params(not_before, not_after).expect("params");
        cp.distinguished_name = root_dn(&self.trust_domain, &self.credential.key);
        cp.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        cp.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        cp.subject_alt_names = vec![uri_san(&self.trust_domain.authority_id()).expect("san")];
        cp.self_signed(&self.credential.key.0)
            .expect("self-signed")
            .der()
            .clone()
    }

    fn sign(
        &self,
        cp: &CertificateParams,
        subject_key: &PrivateKey,
    ) -> Result<CertificateDer<'static>, Error> {
        let issuer = Issuer::from_ca_cert_der(&self.credential.cert, &self.credential.key.0)?;
        Ok(cp.signed_by(&subject_key.0, &issuer)?.der().clone())
    }
}

/// The trust domain a CA certificate is bound to, from its single path-less SPIFFE ID.
pub fn bound_trust_domain(parsed: &ParsedCert) -> Result<TrustDomain, Error> {
    let ids: Vec<&String> = parsed
        .uris
        .iter()
        .filter(|u| u.starts_with("spiffe://"))
        .collect();
    match ids.as_slice() {
        [] => Err(Error::Unbound(parsed.label())),
        [one] => {
            let id = SpiffeId::parse(one)?;
            if !id.is_authority() {
                return Err(Error::Unbound(parsed.label()));
            }
            Ok(id.trust_domain())
        }
        many => Err(Error::ManyBindings {
            subject: parsed.label(),
            count: many.len(),
        }),
    }
}

fn validate_cluster(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::ClusterName(name.to_owned()))
    }
}

/// The validity window for a new certificate, refusing to outlive (or be issued by) an expired
/// issuer.
fn window(
    now: OffsetDateTime,
    validity: Duration,
    issuer: Option<&ParsedCert>,
) -> Result<(OffsetDateTime, OffsetDateTime), Error> {
    if validity < MIN_VALIDITY {
        return Err(Error::ValidityTooShort);
    }
    // Certificates carry whole seconds; comparing with sub-second precision would make a
    // certificate that ends exactly when its issuer does look like it outlives it.
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let validity = Duration::from_secs(validity.as_secs());
    let not_after = now + validity;
    let mut not_before = now - BACKDATE;
    if let Some(issuer) = issuer {
        let issuer_not_after = ts(issuer.not_after);
        if issuer_not_after <= now {
            return Err(Error::IssuerExpired {
                issuer: issuer.label(),
                not_after: rfc3339(issuer_not_after),
            });
        }
        if not_after > issuer_not_after {
            return Err(Error::OutlivesIssuer {
                issuer: issuer.label(),
                requested: rfc3339(not_after),
                issuer_not_after: rfc3339(issuer_not_after),
            });
        }
        not_before = not_before.max(ts(issuer.not_before));
    }
    Ok((not_before, not_after))
}

fn base_params(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, Error> {
    let mut cp = CertificateParams::default();
    cp.not_before = not_before;
    cp.not_after = not_after;
    cp.serial_number = Some(random_serial()?);
    cp.use_authority_key_identifier_extension = true;
    cp.distinguished_name = DistinguishedName::new();
    Ok(cp)
}

fn random_serial() -> Result<SerialNumber, Error> {
    let mut bytes = [0u8; 16];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| Error::Generate(rcgen::Error::RingUnspecified))?;
    // A positive INTEGER with no leading zero byte, so it always encodes as 16 bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// A root's subject names its trust domain and, through a short key hash, its generation: two
/// roots of one trust domain (a rotation) must not share a name, or path building would try the
/// wrong one and report a bad signature instead of an unknown issuer.
fn root_dn(td: &TrustDomain, key: &PrivateKey) -> DistinguishedName {
    use sha2::Digest;
    let generation = hex::encode(&sha2::Sha256::digest(key.public_spki())[..4]);
    dn(&[
        (DnType::OrganizationName, "Isthmus"),
        (DnType::OrganizationalUnitName, td.as_str()),
        (DnType::CommonName, &format!("{td} root CA {generation}")),
    ])
}

fn dn(attrs: &[(DnType, &str)]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for (ty, value) in attrs {
        dn.push(ty.clone(), *value);
    }
    dn
}

fn uri_san(id: &SpiffeId) -> Result<SanType, Error> {
    Ok(SanType::URI(id.as_str().try_into()?))
}

pub fn ts(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests;
