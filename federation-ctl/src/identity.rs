//! The controller's certificate authority: the cluster intermediate from
//! `trust-bundle intermediate create`, the short-lived leaf identities it issues to the controller
//! and the gateways, and our trust domain's bundle.
//!
//! SPIFFE IDs: `spiffe://<td>/isthmus/cluster/<cluster>/controller` and `.../gateway`.
//! Leaves are valid for `identity_validity` (never past the CA's own expiry) and due for renewal
//! at half-life. Time is a parameter; [`read_ca_dir`] and [`read_bundle_file`] are the only IO.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use trust_bundle::bundle::{self, BundleMap, pem_cert};
use trust_bundle::ca::{self, Authority, Credential, KeyAlgorithm, LeafParams, PrivateKey};
use trust_bundle::cert::ParsedCert;
use trust_bundle::{SpiffeId, TrustDomain, X509Bundle};

use crate::model::ClusterName;

/// File names of a CA directory, as `trust-bundle` writes them.
pub const CA_CERT: &str = "cert.pem";
pub const CA_KEY: &str = "key.pem";
pub const CA_CHAIN: &str = "chain.pem";
pub const CA_ROOT: &str = "root.pem";

/// The shortest leaf the CA will issue (unless a shorter one is asked for); a CA with less time
/// left must be renewed first.
const MIN_LEAF_VALIDITY: Duration = Duration::from_secs(60);

/// Why the CA could not be loaded or an identity issued.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "cannot read {}: {source}; is {} a CA directory from `trust-bundle intermediate create --out DIR`?",
        path.display(), dir.display()
    )]
    Read {
        dir: PathBuf,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CA directory {}: {problem}; {fix}", dir.display())]
    CaDir {
        dir: PathBuf,
        problem: String,
        fix: String,
    },
    #[error("CA directory {}: {source}", dir.display())]
    Ca {
        dir: PathBuf,
        source: Box<ca::Error>,
    },
    #[error("trust bundle {}: {problem}; {fix}", path.display())]
    Bundle {
        path: PathBuf,
        problem: String,
        fix: String,
    },
    #[error("cannot issue {id} from {}: {source}", dir.display())]
    Issue {
        id: String,
        dir: PathBuf,
        source: Box<ca::Error>,
    },
}

/// Who a leaf is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Controller,
    Gateway,
}

/// The raw files of a CA directory. The key PEM never shows in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct CaFiles {
    pub cert_pem: Vec<u8>,
    key_pem: String,
    /// `chain.pem`: the CA certificate then the intermediates above it (root excluded).
    pub chain_pem: Option<Vec<u8>>,
    pub root_pem: Option<Vec<u8>>,
}

/// A loaded, checked cluster intermediate and our trust domain's bundle.
#[derive(Debug)]
pub struct ClusterCa {
    dir: PathBuf,
    authority: Authority,
    cluster: ClusterName,
    bundle: X509Bundle,
}

/// A leaf credential and when to replace it.
#[derive(Debug)]
pub struct Identity {
    pub role: Role,
    pub spiffe_id: SpiffeId,
    /// The leaf, its chain (leaf first, root excluded) and its key (redacted in `Debug`).
    pub credential: Credential,
    pub issued_at: SystemTime,
    pub not_after: SystemTime,
    /// Half-way through the validity: renew then, so a slow or failed renewal has time to retry.
    pub renew_at: SystemTime,
}

/// `spiffe://<td>/isthmus/cluster/<cluster>/<controller|gateway>`.
pub fn spiffe_id(td: &TrustDomain, cluster: &ClusterName, role: Role) -> SpiffeId {
    let path = match role {
        Role::Controller => "controller",
        Role::Gateway => "gateway",
    };
    // A trust domain and an RFC 1123 label always make a valid ID; the fallback is unreachable
    // but keeps this total.
    SpiffeId::parse(&format!("spiffe://{td}/isthmus/cluster/{cluster}/{path}"))
        .unwrap_or_else(|_| td.authority_id())
}

/// Reads a CA directory's files (`cert.pem`, `key.pem`, and `chain.pem`, `root.pem` if present).
pub fn read_ca_dir(dir: &Path) -> Result<CaFiles, IdentityError> {
    if !dir.is_dir() {
        return Err(IdentityError::CaDir {
            dir: dir.to_owned(),
            problem: "not a directory".into(),
            fix: "create the cluster's CA with `trust-bundle intermediate create --root ROOT --cluster NAME --out DIR` and set `ca:` to DIR".into(),
        });
    }
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|source| IdentityError::Read {
            dir: dir.to_owned(),
            path,
            source,
        })
    };
    let optional = |name: &str| -> Result<Option<Vec<u8>>, IdentityError> {
        if dir.join(name).exists() {
            read(name).map(Some)
        } else {
            Ok(None)
        }
    };
    let key_bytes = read(CA_KEY)?;
    Ok(CaFiles {
        cert_pem: read(CA_CERT)?,
        key_pem: String::from_utf8(key_bytes).map_err(|_| IdentityError::CaDir {
            dir: dir.to_owned(),
            problem: format!("{CA_KEY} is not PEM text"),
            fix: "restore the key written by `trust-bundle intermediate create`".into(),
        })?,
        chain_pem: optional(CA_CHAIN)?,
        root_pem: optional(CA_ROOT)?,
    })
}

/// Reads the configured trust bundle file.
pub fn read_bundle_file(path: &Path) -> Result<Vec<u8>, IdentityError> {
    std::fs::read(path).map_err(|e| IdentityError::Bundle {
        path: path.to_owned(),
        problem: format!("cannot read it: {e}"),
        fix: "fix `trust_bundle:` or remove it to use the root in the CA directory".into(),
    })
}

// === impl CaFiles ===

impl CaFiles {
    pub fn new(
        cert_pem: Vec<u8>,
        key_pem: String,
        chain_pem: Option<Vec<u8>>,
        root_pem: Option<Vec<u8>>,
    ) -> Self {
        Self {
            cert_pem,
            key_pem,
            chain_pem,
            root_pem,
        }
    }
}

impl fmt::Debug for CaFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaFiles")
            .field("cert_pem", &self.cert_pem.len())
            .field("key_pem", &"redacted")
            .field("chain_pem", &self.chain_pem.as_ref().map(Vec::len))
            .field("root_pem", &self.root_pem.as_ref().map(Vec::len))
            .finish()
    }
}

// === impl ClusterCa ===

impl ClusterCa {
    /// Loads and checks the CA directory and our bundle (`bundle_file`, or the CA's root).
    pub fn load(
        dir: &Path,
        cluster: &ClusterName,
        trust_domain: Option<&TrustDomain>,
        bundle_file: Option<&Path>,
    ) -> Result<Self, IdentityError> {
        let files = read_ca_dir(dir)?;
        let bundle = match bundle_file {
            Some(path) => Some((path, read_bundle_file(path)?)),
            None => None,
        };
        Self::from_files(
            dir,
            files,
            cluster,
            trust_domain,
            bundle.as_ref().map(|(p, b)| (*p, b.as_slice())),
        )
    }

    /// The checks of [`Self::load`] without IO. `dir` and the bundle path only label messages.
    pub fn from_files(
        dir: &Path,
        files: CaFiles,
        cluster: &ClusterName,
        trust_domain: Option<&TrustDomain>,
        bundle_file: Option<(&Path, &[u8])>,
    ) -> Result<Self, IdentityError> {
        let dir_err = |problem: String, fix: &str| IdentityError::CaDir {
            dir: dir.to_owned(),
            problem,
            fix: fix.to_owned(),
        };
        let recreate = "recreate it with `trust-bundle intermediate create`";
        let certs = |name: &str, pem: &[u8]| {
            bundle::parse_pem_certs(pem).map_err(|e| dir_err(format!("{name}: {e}"), recreate))
        };
        let cert = certs(CA_CERT, &files.cert_pem)?
            .into_iter()
            .next()
            .ok_or_else(|| dir_err(format!("{CA_CERT} holds no certificate"), recreate))?;
        let key = PrivateKey::from_pem(&files.key_pem).map_err(|e| IdentityError::Ca {
            dir: dir.to_owned(),
            source: Box::new(e),
        })?;
        let above = match &files.chain_pem {
            Some(pem) => certs(CA_CHAIN, pem)?.into_iter().skip(1).collect(),
            None => Vec::new(),
        };
        let root = match &files.root_pem {
            Some(pem) => certs(CA_ROOT, pem)?
                .into_iter()
                .next()
                .ok_or_else(|| dir_err(format!("{CA_ROOT} holds no certificate"), recreate))?,
            None => cert.clone(),
        };
        let authority =
            Authority::load(cert, key, above, root).map_err(|source| IdentityError::Ca {
                dir: dir.to_owned(),
                source: Box::new(source),
            })?;
        if authority.is_root() {
            return Err(dir_err(
                "it holds a root CA; a controller issues from its cluster's intermediate".into(),
                &format!(
                    "create one with `trust-bundle intermediate create --root {} --cluster {cluster} --out DIR` and set `ca:` to DIR",
                    dir.display()
                ),
            ));
        }
        if let Some(td) = trust_domain
            && td != authority.trust_domain()
        {
            return Err(dir_err(
                format!(
                    "the CA is bound to trust domain {}, but the config says trust_domain: {td}",
                    authority.trust_domain()
                ),
                &format!(
                    "use a CA created with --trust-domain {td}, or remove `trust_domain:` to use {}",
                    authority.trust_domain()
                ),
            ));
        }
        if let Some(ca_cluster) = authority.cluster()
            && ca_cluster != cluster.as_str()
        {
            return Err(dir_err(
                format!(
                    "the CA was created for cluster {ca_cluster} (L={ca_cluster}), but this controller is cluster {cluster}"
                ),
                &format!(
                    "point `ca:` at {cluster}'s CA, or create it with `trust-bundle intermediate create --cluster {cluster}`"
                ),
            ));
        }
        let bundle = match bundle_file {
            None => X509Bundle::new([authority.credential.root.clone()])
                .map_err(|e| dir_err(format!("{CA_ROOT}: {e}"), recreate))?,
            Some((path, bytes)) => our_bundle(path, bytes, &authority)?,
        };
        Ok(Self {
            dir: dir.to_owned(),
            authority,
            cluster: cluster.clone(),
            bundle,
        })
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        self.authority.trust_domain()
    }

    pub fn cluster(&self) -> &ClusterName {
        &self.cluster
    }

    /// Our trust domain's roots: what peers verify us with.
    pub fn bundle(&self) -> &X509Bundle {
        &self.bundle
    }

    /// A bundle map holding only our trust domain (peers' bundles are added by the controller).
    pub fn bundle_map(&self) -> BundleMap {
        let mut map = BundleMap::new();
        map.insert(self.trust_domain().clone(), self.bundle.clone());
        map
    }

    /// The intermediate's certificate (DER): tells a re-issued intermediate from the same one.
    pub fn intermediate_der(&self) -> &[u8] {
        &self.authority.credential.cert
    }

    /// When the intermediate itself expires.
    pub fn not_after(&self) -> SystemTime {
        system_time(self.authority.parsed().not_after)
    }

    pub fn spiffe_id(&self, role: Role) -> SpiffeId {
        spiffe_id(self.trust_domain(), &self.cluster, role)
    }

    /// Issues a leaf for `role` valid for `validity` from `now`, cut short to the CA's expiry.
    pub fn issue(
        &self,
        role: Role,
        validity: Duration,
        now: SystemTime,
    ) -> Result<Identity, IdentityError> {
        let id = self.spiffe_id(role);
        let issue_err = |source| IdentityError::Issue {
            id: id.to_string(),
            dir: self.dir.clone(),
            source: Box::new(source),
        };
        // Certificates carry whole seconds.
        let now_secs = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let now = UNIX_EPOCH + Duration::from_secs(now_secs);
        let ca_left = u64::try_from(self.authority.parsed().not_after)
            .unwrap_or(0)
            .saturating_sub(now_secs);
        let asked = validity;
        let validity = Duration::from_secs(validity.as_secs().min(ca_left));
        if validity < MIN_LEAF_VALIDITY.min(asked) {
            return Err(IdentityError::CaDir {
                dir: self.dir.clone(),
                problem: format!(
                    "the intermediate expires at {}, too soon to issue {id}",
                    ca::rfc3339(ca::ts(self.authority.parsed().not_after))
                ),
                fix: "renew it with `trust-bundle intermediate create` (or `trust-bundle rotate`) and restart the controller".into(),
            });
        }
        let params = LeafParams {
            spiffe_id: id.clone(),
            dns_names: Vec::new(),
            validity,
            algorithm: KeyAlgorithm::EcdsaP256,
        };
        let credential = self
            .authority
            .issue_leaf(&params, OffsetDateTime::from(now))
            .map_err(issue_err)?;
        Ok(Identity {
            role,
            spiffe_id: id,
            credential,
            issued_at: now,
            not_after: now + validity,
            renew_at: now + validity / 2,
        })
    }
}

// === impl Identity ===

impl Identity {
    /// PEM certificates, leaf first, then the intermediate(s); the root is not included.
    pub fn chain_pem(&self) -> String {
        self.credential.chain.iter().map(|c| pem_cert(c)).collect()
    }

    /// The private key as PKCS#8 PEM. A secret: hand it only to the gateway stream or a 0600
    /// file, never to a log.
    pub fn key_pem(&self) -> String {
        self.credential.key.to_pem()
    }

    pub fn needs_renewal(&self, now: SystemTime) -> bool {
        now >= self.renew_at
    }
}

/// Our bundle from the configured file: a SPIFFE bundle, a bundle map (our entry) or PEM. It must
/// hold the root our CA chains to, or peers could not verify the leaves we issue.
fn our_bundle(
    path: &Path,
    bytes: &[u8],
    authority: &Authority,
) -> Result<X509Bundle, IdentityError> {
    let td = authority.trust_domain();
    let err = |problem: String, fix: String| IdentityError::Bundle {
        path: path.to_owned(),
        problem,
        fix,
    };
    let fix =
        || "give a SPIFFE bundle (`trust-bundle bundle build`) or PEM of our roots".to_owned();
    let text = String::from_utf8_lossy(bytes);
    let bundle = if text.trim_start().starts_with('{') {
        let is_map = serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .is_some_and(|v| v.get("trust_domains").is_some());
        if is_map {
            let map = BundleMap::from_json(bytes).map_err(|e| err(e.to_string(), fix()))?;
            map.get(td).cloned().ok_or_else(|| {
                err(
                    format!("the bundle map has no entry for our trust domain {td}"),
                    format!("add {td}'s roots with `trust-bundle bundle merge`"),
                )
            })?
        } else {
            X509Bundle::from_spiffe_json(bytes).map_err(|e| err(e.to_string(), fix()))?
        }
    } else {
        X509Bundle::from_pem(bytes).map_err(|e| err(e.to_string(), fix()))?
    };
    let spki = |der: &[u8]| ParsedCert::parse(der).ok().map(|p| p.spki);
    let ours = spki(&authority.credential.root);
    if ours.is_none() || !bundle.roots().iter().any(|r| spki(r) == ours) {
        return Err(err(
            "it does not contain the root the CA directory chains to".into(),
            format!(
                "add that root (the CA directory's {CA_ROOT}) with `trust-bundle bundle merge`, or remove `trust_bundle:`"
            ),
        ));
    }
    Ok(bundle)
}

fn system_time(unix_secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(unix_secs).unwrap_or(0))
}

#[cfg(test)]
mod tests;
