//! Chain verification by trust domain: anchors are picked by the trust domain of the leaf's
//! SPIFFE ID, the path is built by rustls-webpki, and Isthmus policy is layered on top:
//! SPIFFE X509-SVID leaf rules, key usage (which webpki ignores), the trust-domain binding of
//! intermediates (see [`crate::ca`]) and root expiry (which webpki does not check on anchors).
//!
//! Every refusal is a [`VerifyError`] that says exactly what was wrong and, where it helps, by
//! how much.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Mutex, PoisonError};

use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use crate::bundle::{BindingPolicy, BundleMap};
use crate::cert::{ParsedCert, Role};
use crate::spiffe::{SpiffeId, TrustDomain};

/// Which side of a TLS handshake the verified certificate belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A server certificate (we are the client).
    Server,
    /// A client certificate (we are the server).
    Client,
}

/// What a successful verification proves about the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub spiffe_id: SpiffeId,
    /// The cluster of the issuing intermediate, when it records one.
    pub cluster: Option<String>,
    /// When the leaf expires (Unix seconds).
    pub not_after: i64,
    /// SHA-256 of the root the chain ended at.
    pub root_fingerprint: String,
}

/// Why a chain was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the chain is empty: expected the leaf certificate followed by its intermediates")]
    EmptyChain,
    #[error("certificate {position} of the chain is unreadable: {reason}")]
    Malformed { position: usize, reason: String },
    #[error("leaf {0:?} has no SPIFFE ID (no URI SAN)")]
    NoSpiffeId(String),
    #[error("leaf {subject:?} has {count} URI SANs; an X509-SVID must have exactly one")]
    ManyUris { subject: String, count: usize },
    #[error("leaf URI SAN {0:?} is not a valid workload SPIFFE ID: {1}")]
    BadSpiffeId(String, crate::spiffe::Error),
    #[error("leaf {0:?} is a CA certificate; an X509-SVID leaf must have cA=false")]
    LeafIsCa(String),
    #[error("leaf {subject:?} key usage: {problem}")]
    LeafKeyUsage {
        subject: String,
        problem: &'static str,
    },
    #[error("{role} {subject:?} expired {ago} ago (notAfter {not_after})")]
    Expired {
        role: &'static str,
        subject: String,
        not_after: String,
        ago: String,
    },
    #[error(
        "{role} {subject:?} is not valid for another {wait} (notBefore {not_before}); check the clocks"
    )]
    NotYetValid {
        role: &'static str,
        subject: String,
        not_before: String,
        wait: String,
    },
    #[error(
        "no bundle for trust domain {trust_domain:?} (known: {known}); add that trust domain's bundle to the bundle map"
    )]
    UnknownTrustDomain { trust_domain: String, known: String },
    #[error("the bundle of trust domain {0:?} has no keys: every identity in it is revoked")]
    RevokedTrustDomain(String),
    #[error(
        "unknown issuer: the chain does not lead to any root of trust domain {trust_domain:?} (topmost issuer {issuer:?}); was it issued under another root?"
    )]
    UnknownIssuer {
        trust_domain: String,
        issuer: String,
    },
    #[error("{0:?} signs another certificate but is not a CA (basicConstraints cA=false)")]
    NotACa(String),
    #[error("intermediate {0:?} lacks the keyCertSign key usage")]
    NoCertSign(String),
    #[error("the chain is longer than an issuer's pathLen constraint allows")]
    PathLen,
    #[error("the leaf lacks the extended key usage {0}")]
    Eku(&'static str),
    #[error(
        "a signature in the chain does not verify against its issuer's key: it was signed by a different CA with the same name"
    )]
    BadSignature,
    #[error(
        "trust-domain binding: intermediate {issuer:?} is bound to {bound}, but the leaf claims trust domain {claimed:?}"
    )]
    Binding {
        issuer: String,
        bound: String,
        claimed: String,
    },
    #[error("root {subject:?} of trust domain {trust_domain:?} expired {ago} ago; rotate the root")]
    RootExpired {
        subject: String,
        trust_domain: String,
        ago: String,
    },
    #[error("peer is {got}, but {expected} was expected")]
    WrongId { expected: String, got: String },
    #[error("path validation failed: {0}")]
    Other(String),
}

/// A bundle map compiled for verification. Build once per bundle change, not per handshake.
#[derive(Debug, Default)]
pub struct TrustStore {
    domains: BTreeMap<TrustDomain, Anchors>,
    /// Chains this store has accepted; it dies with the store, so a bundle change starts empty.
    memo: Memo,
}

#[derive(Debug)]
struct Anchors {
    anchors: Vec<TrustAnchor<'static>>,
    roots: Vec<ParsedCert>,
    binding: BindingPolicy,
}

impl TrustStore {
    /// Compiles `map`. Roots webpki cannot use as anchors are reported, not skipped.
    pub fn new(map: &BundleMap) -> Result<Self, VerifyError> {
        let mut domains = BTreeMap::new();
        for (td, bundle) in map.iter() {
            let mut anchors = Vec::new();
            let mut roots = Vec::new();
            for (position, der) in bundle.roots().iter().enumerate() {
                let anchor =
                    webpki::anchor_from_trusted_cert(der).map_err(|e| VerifyError::Malformed {
                        position,
                        reason: format!("root of {td} is not a usable trust anchor: {e}"),
                    })?;
                anchors.push(anchor.to_owned());
                roots.push(ParsedCert::parse(der).map_err(|e| VerifyError::Malformed {
                    position,
                    reason: e.to_string(),
                })?);
            }
            domains.insert(
                td.clone(),
                Anchors {
                    anchors,
                    roots,
                    binding: bundle.binding,
                },
            );
        }
        Ok(Self {
            domains,
            memo: Memo::default(),
        })
    }

    pub fn trust_domains(&self) -> impl Iterator<Item = &TrustDomain> {
        self.domains.keys()
    }

    /// Whether `other` was compiled from the same roots under the same binding policies, per
    /// trust domain, so it accepts exactly the chains this one does: a reload that leaves the
    /// bundle map as it was can keep this store, with what it remembers and the sessions
    /// scoped to it.
    pub fn accepts_as(&self, other: &TrustStore) -> bool {
        self.domains.len() == other.domains.len()
            && self
                .domains
                .iter()
                .zip(&other.domains)
                .all(|((td, a), (other_td, b))| {
                    td == other_td
                        && a.binding == b.binding
                        && a.roots.len() == b.roots.len()
                        && a.roots.iter().zip(&b.roots).all(|(x, y)| x.der == y.der)
                })
    }

    /// Verifies `chain` (leaf first, then intermediates) at `now` and returns the peer's
    /// identity.
    ///
    /// A chain this store accepted before is not path-validated again while `now` lies where
    /// every certificate of it and its root are valid: the answer is a function of the chain,
    /// the store, the usage and the time alone, and the signatures are what a handshake with a
    /// returning peer would otherwise check again. Refusals are never remembered.
    pub fn verify(
        &self,
        chain: &[CertificateDer<'_>],
        now: UnixTime,
        usage: Usage,
    ) -> Result<PeerIdentity, VerifyError> {
        let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let key = Memo::key(chain, usage);
        if let Some(peer) = self.memo.get(&key, now_secs) {
            return Ok(peer);
        }
        let (peer, valid) = self.verify_path(chain, now, usage)?;
        self.memo.insert(key, &peer, valid);
        Ok(peer)
    }

    /// How many accepted chains are remembered.
    pub fn remembered(&self) -> usize {
        self.memo.len()
    }

    /// The full verification; with the identity, the span of Unix seconds in which every
    /// certificate of the chain and the root it ended at are valid.
    fn verify_path(
        &self,
        chain: &[CertificateDer<'_>],
        now: UnixTime,
        usage: Usage,
    ) -> Result<(PeerIdentity, (i64, i64)), VerifyError> {
        let (leaf_der, intermediates) = chain.split_first().ok_or(VerifyError::EmptyChain)?;
        let parsed: Vec<ParsedCert> = chain
            .iter()
            .enumerate()
            .map(|(position, der)| {
                ParsedCert::parse(der).map_err(|e| VerifyError::Malformed {
                    position,
                    reason: e.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        let leaf = &parsed[0];
        let spiffe_id = leaf_identity(leaf)?;
        let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        for (i, cert) in parsed.iter().enumerate() {
            check_validity(if i == 0 { "leaf" } else { "intermediate" }, cert, now_secs)?;
            if i > 0 {
                if !cert.is_ca {
                    return Err(VerifyError::NotACa(cert.label()));
                }
                if cert.key_usage.as_ref().is_some_and(|ku| !ku.key_cert_sign) {
                    return Err(VerifyError::NoCertSign(cert.label()));
                }
            }
        }

        let td = spiffe_id.trust_domain();
        let domain = self
            .domains
            .get(&td)
            .ok_or_else(|| VerifyError::UnknownTrustDomain {
                trust_domain: td.to_string(),
                known: self.known(),
            })?;
        if domain.anchors.is_empty() {
            return Err(VerifyError::RevokedTrustDomain(td.to_string()));
        }

        let ee = EndEntityCert::try_from(leaf_der).map_err(|e| VerifyError::Malformed {
            position: 0,
            reason: e.to_string(),
        })?;
        let eku = match usage {
            Usage::Server => KeyUsage::server_auth(),
            Usage::Client => KeyUsage::client_auth(),
        };
        let binding_failure = RefCell::new(None);
        let check_binding = |path: &webpki::VerifiedPath<'_>| {
            let Some(issuer) = path.intermediate_certificates().next() else {
                return Ok(()); // issued by the root itself, which the bundle map already scopes
            };
            let failure = binding_problem(issuer, &parsed, &td, domain.binding);
            let Some(failure) = failure else {
                return Ok(());
            };
            *binding_failure.borrow_mut() = Some(failure);
            Err(webpki::Error::UnknownIssuer)
        };
        let path = ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &domain.anchors,
            intermediates,
            now,
            eku,
            None,
            Some(&check_binding),
        );
        let path = match path {
            Ok(path) => path,
            Err(e) => {
                if let Some(failure) = binding_failure.into_inner() {
                    return Err(failure);
                }
                return Err(map_webpki(e, &td, leaf, parsed.last().unwrap_or(leaf)));
            }
        };

        let anchor_spki = path.anchor().subject_public_key_info.as_ref();
        let root = domain
            .anchors
            .iter()
            .zip(&domain.roots)
            .find(|(a, _)| a.subject_public_key_info.as_ref() == anchor_spki)
            .map(|(_, r)| r);
        let valid_from = parsed
            .iter()
            .map(|c| c.not_before)
            .max()
            .unwrap_or(i64::MAX);
        let mut valid_until = parsed.iter().map(|c| c.not_after).min().unwrap_or(i64::MIN);
        let root_fingerprint = match root {
            Some(root) => {
                if root.not_after < now_secs {
                    return Err(VerifyError::RootExpired {
                        subject: root.label(),
                        trust_domain: td.to_string(),
                        ago: human_secs(now_secs - root.not_after),
                    });
                }
                valid_until = valid_until.min(root.not_after);
                root.fingerprint()
            }
            None => String::new(),
        };
        let cluster = path
            .intermediate_certificates()
            .next()
            .and_then(|issuer| {
                parsed
                    .iter()
                    .find(|p| p.der.as_ref() == issuer.der().as_ref())
            })
            .and_then(|p| p.locality.clone());
        let peer = PeerIdentity {
            spiffe_id,
            cluster,
            not_after: leaf.not_after,
            root_fingerprint,
        };
        Ok((peer, (valid_from, valid_until)))
    }

    fn known(&self) -> String {
        if self.domains.is_empty() {
            return "none".to_owned();
        }
        self.domains
            .keys()
            .map(|td| td.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The SPIFFE ID of a leaf, after the X509-SVID leaf rules.
pub fn leaf_identity(leaf: &ParsedCert) -> Result<SpiffeId, VerifyError> {
    let id = match leaf.uris.as_slice() {
        [] => return Err(VerifyError::NoSpiffeId(leaf.label())),
        [one] => {
            SpiffeId::parse_workload(one).map_err(|e| VerifyError::BadSpiffeId(one.clone(), e))?
        }
        many => {
            return Err(VerifyError::ManyUris {
                subject: leaf.label(),
                count: many.len(),
            });
        }
    };
    if leaf.is_ca {
        return Err(VerifyError::LeafIsCa(leaf.label()));
    }
    let problem = match &leaf.key_usage {
        None => Some("the keyUsage extension is missing"),
        Some(ku) if !ku.critical => Some("the keyUsage extension is not critical"),
        Some(ku) if !ku.digital_signature => Some("digitalSignature is not set"),
        Some(ku) if ku.key_cert_sign || ku.crl_sign => {
            Some("keyCertSign or cRLSign is set on a leaf")
        }
        Some(_) => None,
    };
    if let Some(problem) = problem {
        return Err(VerifyError::LeafKeyUsage {
            subject: leaf.label(),
            problem,
        });
    }
    Ok(id)
}

/// Checks the leaf's issuing intermediate against the leaf's trust domain.
fn binding_problem(
    issuer: &webpki::Cert<'_>,
    parsed: &[ParsedCert],
    claimed: &TrustDomain,
    policy: BindingPolicy,
) -> Option<VerifyError> {
    let label = parsed
        .iter()
        .find(|p| p.der.as_ref() == issuer.der().as_ref())
        .map(|p| p.label())
        .unwrap_or_default();
    let ids: Vec<&str> = issuer
        .valid_uri_names()
        .filter(|u| u.starts_with("spiffe://"))
        .collect();
    let bound = match ids.as_slice() {
        [] if policy == BindingPolicy::IfPresent => return None,
        [] => "no trust domain".to_owned(),
        [one] => match SpiffeId::parse(one) {
            Ok(id) if id.is_authority() && id.trust_domain_str() == claimed.as_str() => {
                return None;
            }
            Ok(id) if id.is_authority() => format!("{:?}", id.trust_domain_str()),
            _ => format!("an invalid ID {one:?}"),
        },
        _ => "several trust domains".to_owned(),
    };
    Some(VerifyError::Binding {
        issuer: label,
        bound,
        claimed: claimed.to_string(),
    })
}

fn check_validity(role: &'static str, cert: &ParsedCert, now: i64) -> Result<(), VerifyError> {
    if now > cert.not_after {
        return Err(VerifyError::Expired {
            role,
            subject: cert.label(),
            not_after: crate::ca::rfc3339(crate::ca::ts(cert.not_after)),
            ago: human_secs(now - cert.not_after),
        });
    }
    if now < cert.not_before {
        return Err(VerifyError::NotYetValid {
            role,
            subject: cert.label(),
            not_before: crate::ca::rfc3339(crate::ca::ts(cert.not_before)),
            wait: human_secs(cert.not_before - now),
        });
    }
    Ok(())
}

fn map_webpki(
    e: webpki::Error,
    td: &TrustDomain,
    leaf: &ParsedCert,
    top: &ParsedCert,
) -> VerifyError {
    use webpki::Error as W;
    match e {
        W::UnknownIssuer => VerifyError::UnknownIssuer {
            trust_domain: td.to_string(),
            issuer: top.issuer.clone(),
        },
        W::CaUsedAsEndEntity => VerifyError::LeafIsCa(leaf.label()),
        W::EndEntityUsedAsCa => VerifyError::NotACa(top.label()),
        W::PathLenConstraintViolated => VerifyError::PathLen,
        W::RequiredEkuNotFoundContext(_) => {
            VerifyError::Eku("serverAuth/clientAuth required for this side of the handshake")
        }
        W::InvalidSignatureForPublicKey => VerifyError::BadSignature,
        other => VerifyError::Other(format!("{other:?}")),
    }
}

/// `3d 4h`, `12m 5s`: the two largest units.
pub fn human_secs(secs: i64) -> String {
    let secs = secs.unsigned_abs();
    let units = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let mut parts = Vec::new();
    let mut rest = secs;
    for (size, name) in units {
        if rest >= size || (size == 1 && parts.is_empty()) {
            parts.push(format!("{}{name}", rest / size));
            rest %= size;
        }
        if parts.len() == 2 {
            break;
        }
    }
    parts.join(" ")
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Usage::Server => "server",
            Usage::Client => "client",
        })
    }
}

/// Chains a [`TrustStore`] accepted, by a digest of the usage and the chain's bytes.
#[derive(Default)]
struct Memo {
    accepted: Mutex<HashMap<[u8; 32], Accepted>>,
}

struct Accepted {
    peer: PeerIdentity,
    /// Unix seconds, inclusive at both ends, as [`check_validity`] and webpki compare.
    valid: (i64, i64),
}

impl Memo {
    /// Peers are gateways and controllers of linked clusters, a chain each per rotation; past
    /// this the memo starts over rather than track use.
    const CAPACITY: usize = 256;

    fn key(chain: &[CertificateDer<'_>], usage: Usage) -> [u8; 32] {
        use sha2::Digest;
        let mut digest = sha2::Sha256::new();
        digest.update([usage as u8]);
        for cert in chain {
            // Length-prefixed, so no two different chains feed the same bytes.
            digest.update((cert.len() as u64).to_be_bytes());
            digest.update(cert.as_ref());
        }
        digest.finalize().into()
    }

    fn get(&self, key: &[u8; 32], now: i64) -> Option<PeerIdentity> {
        let accepted = self.accepted.lock().unwrap_or_else(PoisonError::into_inner);
        let hit = accepted.get(key)?;
        (hit.valid.0 <= now && now <= hit.valid.1).then(|| hit.peer.clone())
    }

    fn insert(&self, key: [u8; 32], peer: &PeerIdentity, valid: (i64, i64)) {
        let mut accepted = self.accepted.lock().unwrap_or_else(PoisonError::into_inner);
        if accepted.len() >= Self::CAPACITY && !accepted.contains_key(&key) {
            accepted.clear();
        }
        let peer = peer.clone();
        accepted.insert(key, Accepted { peer, valid });
    }

    fn len(&self) -> usize {
        self.accepted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl fmt::Debug for Memo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memo")
            .field("accepted", &self.len())
            .finish()
    }
}

/// Classifies a certificate for messages when no hierarchy is known.
pub fn role_name(cert: &ParsedCert) -> &'static str {
    match cert.role() {
        Role::Root => "root",
        Role::Intermediate => "intermediate",
        Role::Leaf => "leaf",
    }
}

#[cfg(test)]
mod tests;
