//! The server's TLS: a fresh self-signed CA and a server certificate for the listen address,
//! and the kubeconfig that trusts that CA and carries the bearer token.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// TLS setup failures.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot generate the stand-in's certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot build the stand-in's TLS config: {0}")]
    Config(#[from] rustls::Error),
    #[error("cannot write the kubeconfig {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// The CA (PEM, for clients) and the server's TLS config.
pub struct Material {
    pub ca_pem: String,
    pub server: Arc<rustls::ServerConfig>,
}

/// A CA and a server certificate naming `ip`, `127.0.0.1` and `localhost`.
pub fn generate(ip: IpAddr) -> Result<Material, TlsError> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "kube-standin CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "kube-standin");
    for addr in [ip, IpAddr::from([127, 0, 0, 1])] {
        if !leaf.subject_alt_names.contains(&SanType::IpAddress(addr)) {
            leaf.subject_alt_names.push(SanType::IpAddress(addr));
        }
    }
    let leaf_cert = leaf.signed_by(&key, &issuer)?;

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![
                CertificateDer::from(leaf_cert.der().to_vec()),
                CertificateDer::from(ca_cert.der().to_vec()),
            ],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Material {
        ca_pem: ca_cert.pem(),
        server: Arc::new(server),
    })
}

/// A kubeconfig for `addr`, trusting `ca_pem`, authenticating with `token`.
pub fn kubeconfig(addr: SocketAddr, ca_pem: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: kube-standin
  cluster:
    server: https://{addr}
    certificate-authority-data: {ca}
users:
- name: kube-standin
  user:
    token: {token}
contexts:
- name: kube-standin
  context:
    cluster: kube-standin
    user: kube-standin
    namespace: default
current-context: kube-standin
"
    )
}

/// Writes `contents` to `path` atomically, mode 0600 (it holds a bearer token).
pub fn write_private(path: &Path, contents: &str) -> Result<(), TlsError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let err = |source| TlsError::Write {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    file.write_all(contents.as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}
