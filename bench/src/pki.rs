//! The benchmark's certificates, made with the trust-bundle library: one root, one intermediate
//! per role, ECDSA P-256 leaves (serverAuth + clientAuth, a SPIFFE ID and a DNS name), written
//! as PEM files every contender reads, plus the rustls configs the load generator and the
//! backends use.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use trust_bundle::bundle::{BundleMap, X509Bundle, parse_pem_certs, pem_cert};
use trust_bundle::ca::{IntermediateParams, LeafParams, RootParams};
use trust_bundle::{Authority, Credential, KeyAlgorithm, PrivateKey, SpiffeId, TrustDomain};

/// The trust domain of every benchmark identity.
pub(crate) const TRUST_DOMAIN: &str = "bench.test";
/// SNI of the TLS backend (passthrough scenarios and the direct mTLS baseline).
pub(crate) const TLS_NAME: &str = "tls.bench.test";
/// SNI of the plaintext sink behind an SNI router (the plaintext bulk scenario).
pub(crate) const PLAIN_NAME: &str = "plain.bench.test";
/// SNI and DNS name of the terminating gateway B (for peers that verify a host name).
pub(crate) const GATEWAY_B_NAME: &str = "east.bench.test";

/// The identities, as files and as rustls material.
pub(crate) struct Pki {
    /// The directory holding every file.
    pub(crate) dir: PathBuf,
    root: CertificateDer<'static>,
    backend: Identity,
    client: Identity,
}

/// A certificate chain (leaf first) and its PKCS#8 key.
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
}

/// Paths of one identity: chain (leaf first, root excluded), key, and the two together.
pub(crate) struct IdentityFiles {
    pub(crate) chain: PathBuf,
    pub(crate) key: PathBuf,
    /// Chain then key in one file (HAProxy's `crt`).
    pub(crate) combined: PathBuf,
}

impl Pki {
    /// Creates the CA hierarchy and writes every identity under `dir`.
    pub(crate) fn create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let now = time::OffsetDateTime::now_utc();
        let td = TrustDomain::parse(TRUST_DOMAIN)?;
        let root = Authority::create_root(
            &RootParams {
                trust_domain: td.clone(),
                validity: Duration::from_secs(7 * 86_400),
                algorithm: KeyAlgorithm::EcdsaP256,
            },
            now,
        )?;
        let intermediate = |cluster: &str| {
            root.create_intermediate(
                &IntermediateParams {
                    cluster: cluster.to_owned(),
                    trust_domain: None,
                    validity: Duration::from_secs(86_400),
                    algorithm: KeyAlgorithm::EcdsaP256,
                },
                now,
            )
        };
        let west = intermediate("west")?;
        let east = intermediate("east")?;
        let leaf = |ca: &Authority, id: &str, dns: &str| {
            ca.issue_leaf(
                &LeafParams {
                    spiffe_id: SpiffeId::parse(&format!("spiffe://{TRUST_DOMAIN}/{id}"))?,
                    dns_names: vec![dns.to_owned()],
                    validity: Duration::from_secs(86_400),
                    algorithm: KeyAlgorithm::EcdsaP256,
                },
                now,
            )
            .map_err(anyhow::Error::from)
        };
        let root_cert = root.credential.cert.clone();
        write_private(&dir.join("root.pem"), &pem_cert(&root_cert))?;
        let mut bundle = BundleMap::new();
        bundle.insert(td, X509Bundle::new([root_cert])?);
        write_private(&dir.join("bundle.json"), &bundle.to_json())?;
        let identities = [
            ("backend", leaf(&east, "ns/bench/sa/backend", TLS_NAME)?),
            (
                "client",
                leaf(&west, "ns/bench/sa/client", "client.bench.test")?,
            ),
            (
                "gateway-a",
                leaf(&west, "ns/isthmus/sa/gateway-a", "west.bench.test")?,
            ),
            (
                "gateway-b",
                leaf(&east, "ns/isthmus/sa/gateway-b", GATEWAY_B_NAME)?,
            ),
        ];
        for (name, cred) in &identities {
            write_identity(&identity_files(dir, name), cred)?;
        }
        Self::load(dir)
    }

    /// Reads what [`create`](Self::create) wrote (the backend process does this).
    pub(crate) fn load(dir: &Path) -> anyhow::Result<Self> {
        let read = |path: PathBuf| {
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
        };
        let certs = |path: PathBuf| -> anyhow::Result<Vec<CertificateDer<'static>>> {
            Ok(parse_pem_certs(&read(path)?)?)
        };
        let identity = |name: &str| -> anyhow::Result<Identity> {
            let files = identity_files(dir, name);
            let key = PrivateKey::from_pem(&String::from_utf8(read(files.key)?)?)?;
            Ok(Identity {
                chain: certs(files.chain)?,
                key: key.to_pkcs8_der(),
            })
        };
        let root = certs(dir.join("root.pem"))?
            .into_iter()
            .next()
            .context("root.pem holds no certificate")?;
        Ok(Self {
            dir: dir.to_owned(),
            root,
            backend: identity("backend")?,
            client: identity("client")?,
        })
    }

    /// The files of an identity written by [`create`](Self::create).
    pub(crate) fn identity(&self, name: &str) -> IdentityFiles {
        identity_files(&self.dir, name)
    }

    pub(crate) fn root_file(&self) -> PathBuf {
        self.dir.join("root.pem")
    }

    pub(crate) fn bundle_file(&self) -> PathBuf {
        self.dir.join("bundle.json")
    }

    fn roots(&self) -> anyhow::Result<Arc<RootCertStore>> {
        let mut roots = RootCertStore::empty();
        roots.add(self.root.clone())?;
        Ok(Arc::new(roots))
    }

    /// The backend's server config: TLS 1.3, no resumption (every new connection is a full
    /// handshake), client certificates required when `mtls`.
    pub(crate) fn backend_config(&self, mtls: bool) -> anyhow::Result<Arc<ServerConfig>> {
        let builder = ServerConfig::builder_with_provider(trust_bundle::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?;
        let builder = if mtls {
            let verifier = WebPkiClientVerifier::builder_with_provider(
                self.roots()?,
                trust_bundle::tls::provider(),
            )
            .build()?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config =
            builder.with_single_cert(self.backend.chain.clone(), pkcs8(&self.backend.key))?;
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        Ok(Arc::new(config))
    }

    /// The load generator's client config: verifies the backend's DNS name, never resumes,
    /// and presents the client identity when `mtls`.
    pub(crate) fn client_config(&self, mtls: bool) -> anyhow::Result<Arc<ClientConfig>> {
        let builder = ClientConfig::builder_with_provider(trust_bundle::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots()?);
        let mut config = if mtls {
            builder.with_client_auth_cert(self.client.chain.clone(), pkcs8(&self.client.key))?
        } else {
            builder.with_no_client_auth()
        };
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Arc::new(config))
    }
}

/// A TLS ClientHello record naming `sni`, as a real client sends it; the plaintext bulk
/// scenario sends one first so that every SNI router routes it like TLS.
pub(crate) fn client_hello(config: &Arc<ClientConfig>, sni: &str) -> anyhow::Result<Vec<u8>> {
    let name = ServerName::try_from(sni.to_owned())?;
    let mut conn = rustls::ClientConnection::new(config.clone(), name)?;
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello)?;
    }
    Ok(hello)
}

fn identity_files(dir: &Path, name: &str) -> IdentityFiles {
    IdentityFiles {
        chain: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
        combined: dir.join(format!("{name}.combined.pem")),
    }
}

fn write_identity(files: &IdentityFiles, cred: &Credential) -> anyhow::Result<()> {
    let chain: String = cred.chain.iter().map(|c| pem_cert(c)).collect();
    let key = cred.key.to_pem();
    write_private(&files.chain, &chain)?;
    write_private(&files.key, &key)?;
    write_private(&files.combined, &format!("{chain}{key}"))
}

fn pkcs8(der: &[u8]) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.to_vec()))
}

/// Writes a file readable by its owner only (tempfile creates it 0600), atomically (a sibling
/// temp file, then rename): it may hold a private key.
pub(crate) fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(contents.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
