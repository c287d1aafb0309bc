//! The one place that reads X.509 with x509-parser: [`ParsedCert`] owns the facts the rest of the
//! crate needs, so parser types never leak into our API.

use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Why a certificate could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("not a DER X.509 certificate: {0}")]
    Der(String),
    #[error("trailing bytes after the certificate")]
    Trailing,
}

/// What a certificate's role in a hierarchy is, judged from its own contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Root,
    Intermediate,
    Leaf,
}

/// Key usage bits that matter for SPIFFE and path validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyUsage {
    pub critical: bool,
    pub digital_signature: bool,
    pub key_encipherment: bool,
    pub key_agreement: bool,
    pub key_cert_sign: bool,
    pub crl_sign: bool,
}

/// The facts about one certificate that verification, inspection and issuance use.
#[derive(Debug, Clone)]
pub struct ParsedCert {
    pub der: CertificateDer<'static>,
    pub subject: String,
    pub issuer: String,
    pub self_issued: bool,
    pub serial_hex: String,
    pub not_before: i64,
    pub not_after: i64,
    pub is_ca: bool,
    pub path_len: Option<u32>,
    pub key_usage: Option<KeyUsage>,
    pub ext_key_usage: Option<Vec<String>>,
    pub uris: Vec<String>,
    pub dns_names: Vec<String>,
    pub ips: Vec<String>,
    pub san_critical: bool,
    pub ski: Option<Vec<u8>>,
    pub aki: Option<Vec<u8>>,
    /// The subject's `L=` attribute, where Isthmus records the cluster of an intermediate.
    pub locality: Option<String>,
    pub key_algorithm: String,
    /// DER of the SubjectPublicKeyInfo.
    pub spki: Vec<u8>,
    pub sha256: [u8; 32],
}

impl ParsedCert {
    pub fn parse(der: &[u8]) -> Result<Self, Error> {
        let (rest, x509) = X509Certificate::from_der(der).map_err(|e| Error::Der(e.to_string()))?;
        if !rest.is_empty() {
            return Err(Error::Trailing);
        }
        let tbs = &x509.tbs_certificate;
        let mut out = Self {
            der: CertificateDer::from(der.to_vec()),
            subject: tbs.subject.to_string(),
            issuer: tbs.issuer.to_string(),
            self_issued: tbs.subject.as_raw() == tbs.issuer.as_raw(),
            serial_hex: colon_hex(tbs.raw_serial()),
            not_before: tbs.validity.not_before.timestamp(),
            not_after: tbs.validity.not_after.timestamp(),
            is_ca: false,
            path_len: None,
            key_usage: None,
            ext_key_usage: None,
            uris: Vec::new(),
            dns_names: Vec::new(),
            ips: Vec::new(),
            san_critical: false,
            ski: None,
            aki: None,
            locality: tbs
                .subject
                .iter_locality()
                .next()
                .and_then(|l| l.as_str().ok())
                .map(str::to_owned),
            key_algorithm: key_algorithm(&x509),
            spki: tbs.subject_pki.raw.to_vec(),
            sha256: Sha256::digest(der).into(),
        };
        for ext in tbs.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::BasicConstraints(bc) => {
                    out.is_ca = bc.ca;
                    out.path_len = bc.path_len_constraint;
                }
                ParsedExtension::KeyUsage(ku) => {
                    out.key_usage = Some(KeyUsage {
                        critical: ext.critical,
                        digital_signature: ku.digital_signature(),
                        key_encipherment: ku.key_encipherment(),
                        key_agreement: ku.key_agreement(),
                        key_cert_sign: ku.key_cert_sign(),
                        crl_sign: ku.crl_sign(),
                    });
                }
                ParsedExtension::ExtendedKeyUsage(eku) => {
                    let mut names = Vec::new();
                    if eku.any {
                        names.push("any".to_owned());
                    }
                    if eku.server_auth {
                        names.push("serverAuth".to_owned());
                    }
                    if eku.client_auth {
                        names.push("clientAuth".to_owned());
                    }
                    if eku.code_signing {
                        names.push("codeSigning".to_owned());
                    }
                    if eku.email_protection {
                        names.push("emailProtection".to_owned());
                    }
                    names.extend(eku.other.iter().map(|oid| oid.to_id_string()));
                    out.ext_key_usage = Some(names);
                }
                ParsedExtension::SubjectAlternativeName(san) => {
                    out.san_critical = ext.critical;
                    for name in &san.general_names {
                        match name {
                            GeneralName::URI(u) => out.uris.push((*u).to_owned()),
                            GeneralName::DNSName(d) => out.dns_names.push((*d).to_owned()),
                            GeneralName::IPAddress(ip) => out.ips.push(ip_string(ip)),
                            _ => {}
                        }
                    }
                }
                ParsedExtension::SubjectKeyIdentifier(ski) => out.ski = Some(ski.0.to_vec()),
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    out.aki = aki.key_identifier.as_ref().map(|k| k.0.to_vec());
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Role judged from the certificate alone: a self-issued CA is a root.
    pub fn role(&self) -> Role {
        match (self.is_ca, self.self_issued) {
            (true, true) => Role::Root,
            (true, false) => Role::Intermediate,
            (false, _) => Role::Leaf,
        }
    }

    /// SHA-256 of the SubjectPublicKeyInfo: the identity of a key, used to de-duplicate bundles.
    pub fn spki_sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.spki).into()
    }

    pub fn fingerprint(&self) -> String {
        colon_hex(&self.sha256)
    }

    /// A short human label: the subject, or the SPIFFE ID for subject-less leaves.
    pub fn label(&self) -> String {
        if self.subject.is_empty() {
            self.uris
                .first()
                .cloned()
                .unwrap_or_else(|| "(no subject)".to_owned())
        } else {
            self.subject.clone()
        }
    }
}

pub(crate) fn colon_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{b:02X}"));
    }
    s
}

fn ip_string(raw: &[u8]) -> String {
    match raw.len() {
        4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(raw).unwrap_or_default()).to_string(),
        16 => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(raw).unwrap_or_default()).to_string(),
        _ => hex::encode(raw),
    }
}

fn key_algorithm(x509: &X509Certificate<'_>) -> String {
    use x509_parser::public_key::PublicKey;
    match x509.public_key().parsed() {
        Ok(PublicKey::EC(point)) => format!("ECDSA P-{}", point.key_size()),
        Ok(PublicKey::RSA(rsa)) => format!("RSA {}", rsa.key_size()),
        Ok(_) if x509.public_key().algorithm.algorithm.to_id_string() == "1.3.101.112" => {
            "Ed25519".to_owned()
        }
        _ => x509.public_key().algorithm.algorithm.to_id_string(),
    }
}
