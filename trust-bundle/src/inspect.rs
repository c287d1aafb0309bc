//! Certificate facts for people and scripts, with lint findings against the SPIFFE X509-SVID
//! rules and Isthmus conventions.

use serde::Serialize;

use crate::cert::{ParsedCert, Role, colon_hex};
use crate::spiffe::SpiffeId;

/// How serious a lint finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One lint finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub message: String,
}

/// Everything `trust-bundle inspect` shows about one certificate.
#[derive(Debug, Clone, Serialize)]
pub struct CertInfo {
    pub role: Role,
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub spiffe_id: Option<String>,
    pub uri_sans: Vec<String>,
    pub dns_sans: Vec<String>,
    pub ip_sans: Vec<String>,
    pub cluster: Option<String>,
    pub not_before: String,
    pub not_after: String,
    pub seconds_left: i64,
    pub key_algorithm: String,
    pub key_usage: Vec<&'static str>,
    pub key_usage_critical: bool,
    pub ext_key_usage: Vec<String>,
    pub is_ca: bool,
    pub path_len: Option<u32>,
    pub subject_key_id: Option<String>,
    pub authority_key_id: Option<String>,
    pub sha256_fingerprint: String,
    pub findings: Vec<Finding>,
}

impl CertInfo {
    pub fn new(cert: &ParsedCert, now: i64) -> Self {
        let mut key_usage = Vec::new();
        if let Some(ku) = &cert.key_usage {
            for (set, name) in [
                (ku.digital_signature, "digitalSignature"),
                (ku.key_encipherment, "keyEncipherment"),
                (ku.key_agreement, "keyAgreement"),
                (ku.key_cert_sign, "keyCertSign"),
                (ku.crl_sign, "cRLSign"),
            ] {
                if set {
                    key_usage.push(name);
                }
            }
        }
        Self {
            role: cert.role(),
            subject: cert.subject.clone(),
            issuer: cert.issuer.clone(),
            serial: cert.serial_hex.clone(),
            spiffe_id: cert
                .uris
                .iter()
                .find(|u| u.starts_with("spiffe://"))
                .cloned(),
            uri_sans: cert.uris.clone(),
            dns_sans: cert.dns_names.clone(),
            ip_sans: cert.ips.clone(),
            cluster: cert.locality.clone(),
            not_before: crate::ca::rfc3339(crate::ca::ts(cert.not_before)),
            not_after: crate::ca::rfc3339(crate::ca::ts(cert.not_after)),
            seconds_left: cert.not_after - now,
            key_algorithm: cert.key_algorithm.clone(),
            key_usage,
            key_usage_critical: cert.key_usage.as_ref().is_some_and(|ku| ku.critical),
            ext_key_usage: cert.ext_key_usage.clone().unwrap_or_default(),
            is_ca: cert.is_ca,
            path_len: cert.path_len,
            subject_key_id: cert.ski.as_deref().map(colon_hex),
            authority_key_id: cert.aki.as_deref().map(colon_hex),
            sha256_fingerprint: cert.fingerprint(),
            findings: lint(cert, now),
        }
    }
}

/// Lints a certificate against the SPIFFE X509-SVID rules for its role.
pub fn lint(cert: &ParsedCert, now: i64) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut error = |m: String| {
        out.push(Finding {
            severity: Severity::Error,
            message: m,
        })
    };
    let spiffe: Vec<&String> = cert
        .uris
        .iter()
        .filter(|u| u.starts_with("spiffe://"))
        .collect();
    if cert.not_after < now {
        error(format!(
            "expired {} ago",
            crate::verify::human_secs(now - cert.not_after)
        ));
    } else if cert.not_before > now {
        error(format!(
            "not valid for another {}",
            crate::verify::human_secs(cert.not_before - now)
        ));
    }
    match cert.role() {
        Role::Leaf => {
            match spiffe.as_slice() {
                [] => error("leaf has no SPIFFE ID URI SAN".into()),
                [id] => {
                    if let Err(e) = SpiffeId::parse_workload(id) {
                        error(format!("invalid SPIFFE ID: {e}"));
                    }
                }
                _ => {}
            }
            if cert.uris.len() > 1 {
                error(format!(
                    "{} URI SANs; an X509-SVID must have exactly one",
                    cert.uris.len()
                ));
            }
            match &cert.key_usage {
                None => error("keyUsage is missing".into()),
                Some(ku) => {
                    if !ku.critical {
                        error("keyUsage is not critical".into());
                    }
                    if !ku.digital_signature {
                        error("keyUsage lacks digitalSignature".into());
                    }
                    if ku.key_cert_sign || ku.crl_sign {
                        error("a leaf must not have keyCertSign or cRLSign".into());
                    }
                }
            }
            if let Some(eku) = &cert.ext_key_usage
                && !(eku.iter().any(|e| e == "serverAuth") && eku.iter().any(|e| e == "clientAuth"))
            {
                error("extendedKeyUsage must include serverAuth and clientAuth".into());
            }
            if cert.subject.is_empty() && !cert.san_critical {
                error("subject is empty but the SAN extension is not critical".into());
            }
        }
        Role::Root | Role::Intermediate => {
            match &cert.key_usage {
                Some(ku) if ku.key_cert_sign => {}
                _ => error("a CA must have the keyCertSign key usage".into()),
            }
            match spiffe.as_slice() {
                [] => out.push(Finding {
                    severity: Severity::Warning,
                    message: "CA carries no SPIFFE trust-domain ID; Isthmus cannot check which trust domain it may issue for".into(),
                }),
                [id] => match SpiffeId::parse(id) {
                    Ok(id) if id.is_authority() => {}
                    Ok(_) => out.push(Finding {
                        severity: Severity::Error,
                        message: "a CA's SPIFFE ID must have no path".into(),
                    }),
                    Err(e) => out.push(Finding {
                        severity: Severity::Error,
                        message: format!("invalid SPIFFE ID: {e}"),
                    }),
                },
                _ => out.push(Finding {
                    severity: Severity::Error,
                    message: "a CA must name at most one trust domain".into(),
                }),
            }
            if cert.role() == Role::Intermediate && cert.path_len != Some(0) {
                out.push(Finding {
                    severity: Severity::Warning,
                    message: "intermediate without pathLen 0 can create further CAs".into(),
                });
            }
        }
    }
    if cert.ski.is_none() && cert.is_ca {
        out.push(Finding {
            severity: Severity::Warning,
            message: "CA has no subjectKeyIdentifier".into(),
        });
    }
    out
}
