//! Trust bundles: the X.509 roots of one trust domain ([`X509Bundle`]) and the per-trust-domain
//! collection of them ([`BundleMap`]). Bundles of different trust domains are never pooled: the
//! verifier picks anchors by the trust domain of the SPIFFE ID being verified.
//!
//! Formats: the SPIFFE bundle (a JWK set with `use: "x509-svid"` keys, `spiffe_sequence`,
//! `spiffe_refresh_hint`), the SPIFFE bundle map (`{"trust_domains": {TD: bundle}}`) and PEM.
//! Isthmus adds one member the SPIFFE format permits, `isthmus_binding`, the trust-domain binding
//! policy for intermediates under these roots (see [`BindingPolicy`]).

mod strict_json;

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

use crate::cert::{self, ParsedCert};
use crate::spiffe::TrustDomain;

/// Default `spiffe_refresh_hint`: five minutes, the SPIFFE federation default poll interval.
pub const DEFAULT_REFRESH_HINT_SECS: u64 = 300;
/// Bundles larger than this are refused before parsing.
pub const MAX_BUNDLE_BYTES: usize = 4 << 20;

/// Why a bundle could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("bundle is larger than {MAX_BUNDLE_BYTES} bytes")]
    TooLarge,
    #[error("malformed bundle JSON: {0}")]
    Json(String),
    #[error("bundle key {index}: x5c[0] is not valid base64")]
    Base64 { index: usize },
    #[error("bundle key {index}: {source}")]
    Cert { index: usize, source: cert::Error },
    #[error("bundle key {index}: {subject:?} is not a CA certificate and cannot be a root")]
    NotCa { index: usize, subject: String },
    #[error("PEM: {0}")]
    Pem(String),
    #[error("no CERTIFICATE block found in the PEM input")]
    NoCertificates,
    #[error("invalid trust domain {0:?} in the bundle map: {1}")]
    TrustDomain(String, crate::spiffe::Error),
}

/// How strictly intermediates under a bundle's roots must be bound to a trust domain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindingPolicy {
    /// Intermediates must carry a SPIFFE trust-domain ID, and the leaf's issuer must be bound to
    /// the leaf's trust domain. The default, and what Isthmus CAs always satisfy.
    #[default]
    Required,
    /// For foreign meshes whose CAs carry no SPIFFE ID (such as Istio's plug-in CA Makefiles):
    /// an unbound intermediate is accepted; a bound one must still match.
    IfPresent,
}

/// The X.509 roots of one trust domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X509Bundle {
    pub sequence: u64,
    pub refresh_hint: Option<u64>,
    pub binding: BindingPolicy,
    /// Sorted by the SHA-256 of their public key, one certificate per key.
    roots: Vec<CertificateDer<'static>>,
}

/// Bundles keyed by trust domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BundleMap {
    domains: BTreeMap<TrustDomain, X509Bundle>,
}

// === impl X509Bundle ===

impl X509Bundle {
    /// A bundle of `roots` (de-duplicated by public key) with sequence 1.
    pub fn new(roots: impl IntoIterator<Item = CertificateDer<'static>>) -> Result<Self, Error> {
        let mut bundle = Self {
            sequence: 1,
            refresh_hint: Some(DEFAULT_REFRESH_HINT_SECS),
            binding: BindingPolicy::Required,
            roots: Vec::new(),
        };
        for (index, root) in roots.into_iter().enumerate() {
            check_root(index, &root)?;
            bundle.roots.push(root);
        }
        bundle.normalise();
        Ok(bundle)
    }

    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// True when the trust domain has revoked every key: an empty `keys` array.
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// Adds a root; returns whether the key was new. Bumps the sequence when it was.
    pub fn add_root(&mut self, root: CertificateDer<'static>) -> Result<bool, Error> {
        check_root(0, &root)?;
        let before = self.key_set();
        self.roots.push(root);
        self.normalise();
        let changed = self.key_set() != before;
        if changed {
            self.sequence = self.sequence.saturating_add(1);
        }
        Ok(changed)
    }

    /// Removes every root whose public key or certificate has this SHA-256 (hex, colons optional);
    /// returns how many were removed. Bumps the sequence when any was.
    pub fn remove_root(&mut self, fingerprint: &str) -> usize {
        let want = fingerprint.replace(':', "").to_ascii_lowercase();
        let before = self.roots.len();
        self.roots.retain(|r| {
            let Ok(p) = ParsedCert::parse(r) else {
                return true;
            };
            hex::encode(p.sha256) != want && hex::encode(p.spki_sha256()) != want
        });
        let removed = before - self.roots.len();
        if removed > 0 {
            self.sequence = self.sequence.saturating_add(1);
        }
        removed
    }

    /// Merges bundles of one trust domain: the union of their keys, de-duplicated by public key.
    /// The sequence is the highest input sequence, plus one when the union differs from every
    /// input that carried it, so merging is idempotent and independent of input order.
    pub fn merge<'a>(bundles: impl IntoIterator<Item = &'a X509Bundle>) -> Option<X509Bundle> {
        let bundles: Vec<&X509Bundle> = bundles.into_iter().collect();
        let first = bundles.first()?;
        let mut out = X509Bundle {
            sequence: 0,
            refresh_hint: None,
            binding: first.binding,
            roots: Vec::new(),
        };
        for b in &bundles {
            out.roots.extend(b.roots.iter().cloned());
            out.refresh_hint = match (out.refresh_hint, b.refresh_hint) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            out.binding = out.binding.min(b.binding);
        }
        out.normalise();
        let max_seq = bundles.iter().map(|b| b.sequence).max().unwrap_or(0);
        let union = out.key_set();
        let unchanged = bundles
            .iter()
            .any(|b| b.sequence == max_seq && b.key_set() == union);
        out.sequence = if unchanged {
            max_seq
        } else {
            max_seq.saturating_add(1)
        };
        Some(out)
    }

    /// Parses a SPIFFE bundle (a JWK set).
    pub fn from_spiffe_json(input: &[u8]) -> Result<Self, Error> {
        if input.len() > MAX_BUNDLE_BYTES {
            return Err(Error::TooLarge);
        }
        strict_json::check(input).map_err(|e| Error::Json(e.to_string()))?;
        let raw: RawBundle =
            serde_json::from_slice(input).map_err(|e| Error::Json(e.to_string()))?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: RawBundle) -> Result<Self, Error> {
        let mut roots = Vec::new();
        for (index, key) in raw.keys.into_iter().enumerate() {
            // The standard says to ignore keys of other uses and keys without x5c.
            if key.use_.as_deref() != Some("x509-svid") {
                continue;
            }
            let Some(first) = key.x5c.and_then(|x| x.into_iter().next()) else {
                continue;
            };
            let der = B64
                .decode(first.as_bytes())
                .map_err(|_| Error::Base64 { index })?;
            let der = CertificateDer::from(der);
            check_root(index, &der)?;
            roots.push(der);
        }
        let mut bundle = Self {
            sequence: raw.spiffe_sequence.unwrap_or(0),
            refresh_hint: raw.spiffe_refresh_hint,
            binding: raw.isthmus_binding.unwrap_or_default(),
            roots,
        };
        bundle.normalise();
        Ok(bundle)
    }

    /// Serialises as a SPIFFE bundle (pretty JSON).
    pub fn to_spiffe_json(&self) -> String {
        let raw = self.to_raw();
        serde_json::to_string_pretty(&raw).unwrap_or_default()
    }

    fn to_raw(&self) -> RawBundle {
        RawBundle {
            keys: self.roots.iter().map(|r| jwk_for(r)).collect(),
            spiffe_sequence: Some(self.sequence),
            spiffe_refresh_hint: self.refresh_hint,
            isthmus_binding: Some(self.binding),
        }
    }

    /// Parses PEM roots; PEM carries no sequence, so it starts at 1.
    pub fn from_pem(input: &[u8]) -> Result<Self, Error> {
        Self::new(parse_pem_certs(input)?)
    }

    pub fn to_pem(&self) -> String {
        self.roots.iter().map(|r| pem_cert(r)).collect()
    }

    fn normalise(&mut self) {
        // One certificate per key: keep the longest-lived, then the greatest DER, so the choice
        // does not depend on input order.
        let mut by_key: BTreeMap<[u8; 32], (i64, CertificateDer<'static>)> = BTreeMap::new();
        for root in self.roots.drain(..) {
            let Ok(p) = ParsedCert::parse(&root) else {
                continue;
            };
            let entry = (p.not_after, root);
            match by_key.get(&p.spki_sha256()) {
                Some(existing)
                    if (existing.0, existing.1.as_ref()) >= (entry.0, entry.1.as_ref()) => {}
                _ => {
                    by_key.insert(p.spki_sha256(), entry);
                }
            }
        }
        self.roots = by_key.into_values().map(|(_, der)| der).collect();
    }

    fn key_set(&self) -> Vec<Vec<u8>> {
        self.roots.iter().map(|r| r.to_vec()).collect()
    }
}

// === impl BundleMap ===

impl BundleMap {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, td: &TrustDomain) -> Option<&X509Bundle> {
        self.domains.get(td)
    }

    pub fn get_mut(&mut self, td: &TrustDomain) -> Option<&mut X509Bundle> {
        self.domains.get_mut(td)
    }

    pub fn insert(&mut self, td: TrustDomain, bundle: X509Bundle) -> Option<X509Bundle> {
        self.domains.insert(td, bundle)
    }

    pub fn remove(&mut self, td: &TrustDomain) -> Option<X509Bundle> {
        self.domains.remove(td)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&TrustDomain, &X509Bundle)> {
        self.domains.iter()
    }

    pub fn len(&self) -> usize {
        self.domains.len()
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    /// Merges maps trust domain by trust domain (see [`X509Bundle::merge`]).
    pub fn merge<'a>(maps: impl IntoIterator<Item = &'a BundleMap>) -> BundleMap {
        let mut grouped: BTreeMap<&TrustDomain, Vec<&X509Bundle>> = BTreeMap::new();
        for map in maps {
            for (td, bundle) in &map.domains {
                grouped.entry(td).or_default().push(bundle);
            }
        }
        let domains = grouped
            .into_iter()
            .filter_map(|(td, bundles)| Some((td.clone(), X509Bundle::merge(bundles)?)))
            .collect();
        BundleMap { domains }
    }

    /// Parses a SPIFFE bundle map, refusing duplicate keys at any depth.
    pub fn from_json(input: &[u8]) -> Result<Self, Error> {
        if input.len() > MAX_BUNDLE_BYTES {
            return Err(Error::TooLarge);
        }
        strict_json::check(input).map_err(|e| Error::Json(e.to_string()))?;
        let raw: RawBundleMap =
            serde_json::from_slice(input).map_err(|e| Error::Json(e.to_string()))?;
        let mut domains = BTreeMap::new();
        for (name, bundle) in raw.trust_domains {
            let td = TrustDomain::parse(&name).map_err(|e| Error::TrustDomain(name.clone(), e))?;
            domains.insert(td, X509Bundle::from_raw(bundle)?);
        }
        Ok(Self { domains })
    }

    pub fn to_json(&self) -> String {
        let raw = RawBundleMap {
            trust_domains: self
                .domains
                .iter()
                .map(|(td, b)| (td.to_string(), b.to_raw()))
                .collect(),
        };
        serde_json::to_string_pretty(&raw).unwrap_or_default()
    }
}

/// Parses every CERTIFICATE block of a PEM text; other blocks are ignored.
pub fn parse_pem_certs(input: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(input)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(Error::NoCertificates);
    }
    Ok(certs)
}

/// One certificate as a PEM block.
pub fn pem_cert(der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn check_root(index: usize, der: &CertificateDer<'_>) -> Result<(), Error> {
    let parsed = ParsedCert::parse(der).map_err(|source| Error::Cert { index, source })?;
    if !parsed.is_ca {
        return Err(Error::NotCa {
            index,
            subject: parsed.label(),
        });
    }
    Ok(())
}

/// The JWK for a root: its public key parameters where we know the key type, and `x5c`.
fn jwk_for(der: &CertificateDer<'_>) -> RawKey {
    let mut key = RawKey {
        use_: Some("x509-svid".to_owned()),
        kty: None,
        crv: None,
        x: None,
        y: None,
        x5c: Some(vec![B64.encode(der)]),
    };
    if let Ok(p) = ParsedCert::parse(der) {
        let point = spki_public_key(&p.spki);
        match p.key_algorithm.as_str() {
            "ECDSA P-256" if point.len() == 65 && point[0] == 4 => {
                key.kty = Some("EC".to_owned());
                key.crv = Some("P-256".to_owned());
                key.x = Some(B64URL.encode(&point[1..33]));
                key.y = Some(B64URL.encode(&point[33..]));
            }
            "Ed25519" => {
                key.kty = Some("OKP".to_owned());
                key.crv = Some("Ed25519".to_owned());
                key.x = Some(B64URL.encode(point));
            }
            _ => {}
        }
    }
    key
}

/// The subjectPublicKey BIT STRING contents of a DER SubjectPublicKeyInfo.
fn spki_public_key(spki: &[u8]) -> &[u8] {
    use x509_parser::prelude::FromDer;
    match x509_parser::x509::SubjectPublicKeyInfo::from_der(spki) {
        Ok((_, info)) => {
            let data: &[u8] = &info.subject_public_key.data;
            // Point back into `spki` so the lifetime is the input's.
            let start = spki.len() - data.len();
            &spki[start..]
        }
        Err(_) => &[],
    }
}

// === serde shapes ===

#[derive(Serialize, Deserialize)]
struct RawBundleMap {
    trust_domains: BTreeMap<String, RawBundle>,
}

#[derive(Serialize, Deserialize)]
struct RawBundle {
    keys: Vec<RawKey>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spiffe_sequence: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spiffe_refresh_hint: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    isthmus_binding: Option<BindingPolicy>,
}

#[derive(Serialize, Deserialize)]
struct RawKey {
    #[serde(rename = "use", skip_serializing_if = "Option::is_none")]
    use_: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kty: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    crv: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    y: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x5c: Option<Vec<String>>,
}

#[cfg(test)]
mod tests;
