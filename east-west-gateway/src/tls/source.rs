//! Where TLS material comes from (the files a config names, or the controller's message) and
//! how it is read and checked before anything is swapped. Errors name the setting and the file
//! (or "from the controller"), never the content.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use rustls_pki_types::CertificateDer;
use trust_bundle::bundle::{self, BundleMap};
use trust_bundle::cert::ParsedCert;
use trust_bundle::tls::IdentityHandle;
use trust_bundle::{PrivateKey, TrustStore};

use super::Error;
use crate::config;

/// Identity and bundle map as the controller sends them.
#[derive(Clone, Default)]
pub struct Inline {
    /// PEM certificate chain, leaf first.
    pub cert_chain_pem: String,
    /// PEM PKCS#8 private key; never logged, dumped or echoed in an error.
    pub private_key_pem: String,
    /// SPIFFE bundle map JSON.
    pub bundle_map_json: String,
}

impl std::fmt::Debug for Inline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inline")
            .field(
                "cert_chain_pem",
                &format_args!("{} bytes", self.cert_chain_pem.len()),
            )
            .field("private_key_pem", &format_args!("[redacted]"))
            .field(
                "bundle_map_json",
                &format_args!("{} bytes", self.bundle_map_json.len()),
            )
            .finish()
    }
}

/// Where one load reads its material.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// The files a config file names.
    Files(&'a config::TlsFiles),
    /// The controller's message.
    Memory(&'a Inline),
}

#[derive(Debug, Clone, Copy)]
enum Part {
    Chain,
    Key,
    Bundle,
}

impl Source<'_> {
    /// The setting's name and where it came from, for error messages.
    fn describe(&self, part: Part) -> (&'static str, String) {
        match (self, part) {
            (Self::Files(f), Part::Chain) => ("tls.cert_chain", f.cert_chain.display().to_string()),
            (Self::Files(f), Part::Key) => ("tls.private_key", f.private_key.display().to_string()),
            (Self::Files(f), Part::Bundle) => {
                ("tls.trust_bundle", f.trust_bundle.display().to_string())
            }
            (Self::Memory(_), part) => (
                match part {
                    Part::Chain => "identity.cert_chain_pem",
                    Part::Key => "identity.private_key_pem",
                    Part::Bundle => "bundle_map_json",
                },
                "(from the controller)".to_owned(),
            ),
        }
    }

    fn bytes(&self, part: Part) -> Result<Cow<'_, [u8]>, Error> {
        let files = match self {
            Self::Memory(inline) => {
                let text = match part {
                    Part::Chain => &inline.cert_chain_pem,
                    Part::Key => &inline.private_key_pem,
                    Part::Bundle => &inline.bundle_map_json,
                };
                return Ok(Cow::Borrowed(text.as_bytes()));
            }
            Self::Files(files) => files,
        };
        let path: &Path = match part {
            Part::Chain => &files.cert_chain,
            Part::Key => &files.private_key,
            Part::Bundle => &files.trust_bundle,
        };
        std::fs::read(path)
            .map(Cow::Owned)
            .map_err(|source| Error::Read {
                what: self.describe(part).0,
                path: path.to_owned(),
                source,
            })
    }

    fn invalid(&self, part: Part, problem: impl ToString) -> Error {
        let (what, from) = self.describe(part);
        Error::Invalid {
            what,
            from,
            problem: problem.to_string(),
        }
    }
}

/// Our own certificate and the roots we trust, as logs, `/config_dump` and `/metrics` show
/// them (public material only: what a root rotation is checked with).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Own {
    /// The leaf's SPIFFE ID.
    pub spiffe_id: String,
    /// The leaf's notAfter, Unix seconds.
    pub not_after: i64,
    /// The chain we present, leaf first.
    pub chain: Vec<CertSummary>,
    /// The roots in force, per trust domain.
    pub roots: BTreeMap<String, Vec<CertSummary>>,
}

/// A certificate as `/config_dump` names it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CertSummary {
    pub subject: String,
    pub issuer: String,
    /// SHA-256 of the DER, colon hex (as `trust-bundle inspect` prints it).
    pub sha256: String,
}

impl CertSummary {
    fn of(der: &[u8]) -> Self {
        match ParsedCert::parse(der) {
            Ok(p) => Self {
                sha256: p.fingerprint(),
                subject: p.label(),
                issuer: p.issuer,
            },
            Err(_) => Self::default(),
        }
    }
}

/// Parsed contents, checked and ready to install.
pub(super) struct Loaded {
    pub(super) chain: Vec<CertificateDer<'static>>,
    pub(super) key: Vec<u8>,
    pub(super) store: TrustStore,
    pub(super) own: Own,
}

impl Loaded {
    pub(super) fn read(source: &Source<'_>) -> Result<Self, Error> {
        let chain_pem = source.bytes(Part::Chain)?;
        let chain =
            bundle::parse_pem_certs(&chain_pem).map_err(|e| source.invalid(Part::Chain, e))?;
        let leaf = chain
            .first()
            .ok_or_else(|| source.invalid(Part::Chain, "no PEM certificate"))?;
        let not_after = ParsedCert::parse(leaf)
            .map_err(|e| source.invalid(Part::Chain, e))?
            .not_after;
        let spiffe_id = trust_bundle::tls::peer_spiffe_id(&chain)
            .ok_or_else(|| {
                source.invalid(
                    Part::Chain,
                    "the leaf carries no SPIFFE ID; issue it with `trust-bundle leaf issue`",
                )
            })?
            .to_string();
        let key_pem = source.bytes(Part::Key)?;
        // Neither the key nor rcgen's parse error text is ever shown: only the setting's name.
        let key = std::str::from_utf8(&key_pem)
            .ok()
            .and_then(|pem| PrivateKey::from_pem(pem).ok())
            .ok_or_else(|| source.invalid(Part::Key, "not a PKCS#8 PEM private key"))?
            .to_pkcs8_der();
        // Prove the key matches the chain before anything is swapped.
        IdentityHandle::new(chain.clone(), key.clone()).map_err(|_| {
            let (chain_name, _) = source.describe(Part::Chain);
            source.invalid(
                Part::Key,
                format!("does not match the leaf of {chain_name}"),
            )
        })?;
        let bundle_text = source.bytes(Part::Bundle)?;
        let map =
            bundle_map(&bundle_text).map_err(|problem| source.invalid(Part::Bundle, problem))?;
        let store = TrustStore::new(&map).map_err(|e| source.invalid(Part::Bundle, e))?;
        let roots = map
            .iter()
            .map(|(td, b)| {
                let roots = b.roots().iter().map(|r| CertSummary::of(r)).collect();
                (td.to_string(), roots)
            })
            .collect();
        let summaries = chain.iter().map(|c| CertSummary::of(c)).collect();
        Ok(Self {
            chain,
            key,
            store,
            own: Own {
                spiffe_id,
                not_after,
                chain: summaries,
                roots,
            },
        })
    }
}

/// A SPIFFE bundle map (JSON), or PEM roots grouped by the trust domain each root is bound to.
pub(super) fn bundle_map(text: &[u8]) -> Result<BundleMap, String> {
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

/// The files whose content a reload watches, besides the config itself.
pub fn watched_files(tls: &config::TlsFiles) -> [&Path; 3] {
    [&tls.cert_chain, &tls.private_key, &tls.trust_bundle]
}
