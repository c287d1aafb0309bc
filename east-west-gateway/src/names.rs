//! The SNI grammar: which service, namespace, port and cluster a TLS server name asks for.
//!
//! # Native names, version 1
//!
//! ```text
//! <port>.<service>.<namespace>.<cluster>.v1.isthmus.internal
//! 9080.reviews.default.aws-east.v1.isthmus.internal
//! ```
//!
//! - `port` is the service port in canonical decimal (`1`–`65535`, no leading zeros).
//! - `service`, `namespace` and `cluster` are RFC 1123 labels: 1–63 characters of `a-z`, `0-9`
//!   and `-`, starting and ending with a letter or digit. Kubernetes already restricts service
//!   and namespace names to this set.
//! - `v1` versions the grammar. A later version changes what comes before it; a parser meeting
//!   `v2` reports [`Error::UnsupportedVersion`] instead of guessing.
//! - `isthmus.internal` sits under `.internal`, which ICANN reserved for private use, so a native
//!   name never collides with a public one.
//!
//! The most specific part comes first, as in DNS. Every native name is a valid DNS name: at most
//! 5 + 3 × 63 + 19 + 5 dots = 218 characters, all lowercase.
//!
//! # Istio alias
//!
//! ```text
//! outbound_.<port>_.<subset>_.<service>.<namespace>.svc.<cluster domain>
//! outbound_.9080_._.reviews.default.svc.cluster.local
//! ```
//!
//! This is the name Istio sidecars put in the SNI when they send mTLS through an east-west
//! gateway (`AUTO_PASSTHROUGH`), so Istio can use an Isthmus gateway unchanged. An empty subset
//! is written `_`. The alias carries no cluster: the receiving gateway is the target.
//!
//! This module is pure: no IO, and it never panics on any input.

use std::fmt;

/// The fixed suffix of every native name.
pub const NATIVE_SUFFIX: &str = "isthmus.internal";
/// The grammar version this build writes and reads.
pub const NATIVE_VERSION: &str = "v1";
const ISTIO_PREFIX: &str = "outbound_";
const MAX_LABEL_LEN: usize = 63;
const MAX_NAME_LEN: usize = 253;

/// Why a string is not a name of the expected grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A label breaks RFC 1123 (length, characters or leading/trailing hyphen).
    #[error("invalid label {label:?}: {reason}")]
    InvalidLabel {
        /// The offending label.
        label: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A port is not canonical decimal in 1–65535.
    #[error("invalid port {0:?}: expected 1-65535 without leading zeros")]
    InvalidPort(String),
    /// A name is longer than DNS allows.
    #[error("name longer than 253 characters")]
    TooLong,
    /// A native name has the wrong number of labels.
    #[error("native name must be <port>.<service>.<namespace>.<cluster>.v1.isthmus.internal")]
    NativeShape,
    /// A native name of a grammar version this build does not know.
    #[error("unsupported native name version {0:?}; this gateway reads v1")]
    UnsupportedVersion(String),
    /// An `outbound_.` name that does not follow Istio's layout.
    #[error("istio name must be outbound_.<port>_.<subset>_.<service>.<namespace>.svc.<domain>")]
    IstioShape,
    /// The name is in neither grammar.
    #[error("not a native or istio service name")]
    NotAServiceName,
}

/// An RFC 1123 label: 1–63 of `a-z 0-9 -`, not starting or ending with `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label(String);

/// A service port: `name.namespace:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceRef {
    /// Service name.
    pub name: Label,
    /// Namespace.
    pub namespace: Label,
    /// Service port, never 0.
    pub port: u16,
}

/// A parsed native name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NativeName {
    /// The service asked for.
    pub service: ServiceRef,
    /// The cluster that should serve it.
    pub cluster: Label,
}

/// A parsed Istio `outbound_` alias.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IstioName {
    /// The service asked for.
    pub service: ServiceRef,
    /// The DestinationRule subset; `None` for `_`.
    pub subset: Option<Label>,
    /// The cluster domain after `.svc.`, e.g. `cluster.local`.
    pub domain: String,
}

/// A server name recognised as a service name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServiceName {
    /// `<port>.<service>.<namespace>.<cluster>.v1.isthmus.internal`
    Native(NativeName),
    /// `outbound_.<port>_.<subset>_.<fqdn>`
    Istio(IstioName),
}

/// Classifies a lowercase server name as a native or Istio service name.
pub fn parse_service_name(name: &str) -> Result<ServiceName, Error> {
    if name.starts_with("outbound_.") {
        return IstioName::parse(name).map(ServiceName::Istio);
    }
    if name.ends_with(&format!(".{NATIVE_SUFFIX}")) {
        return NativeName::parse(name).map(ServiceName::Native);
    }
    Err(Error::NotAServiceName)
}

/// Checks a host name used in exact or wildcard routes: DNS length limits and lowercase labels
/// of `a-z 0-9 - _` (underscore because Istio aliases use it).
pub fn check_host_name(name: &str) -> Result<(), Error> {
    if name.len() > MAX_NAME_LEN {
        return Err(Error::TooLong);
    }
    for label in name.split('.') {
        let reason = if label.is_empty() {
            Some("empty label")
        } else if label.len() > MAX_LABEL_LEN {
            Some("longer than 63 characters")
        } else if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            Some("only a-z, 0-9, '-' and '_' are allowed")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(Error::InvalidLabel {
                label: label.to_owned(),
                reason,
            });
        }
    }
    Ok(())
}

// === impl Label ===

impl Label {
    /// Validates an RFC 1123 label.
    pub fn new(s: &str) -> Result<Self, Error> {
        let reason = if s.is_empty() {
            Some("empty")
        } else if s.len() > MAX_LABEL_LEN {
            Some("longer than 63 characters")
        } else if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            Some("only a-z, 0-9 and '-' are allowed")
        } else if s.starts_with('-') || s.ends_with('-') {
            Some("must start and end with a letter or digit")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidLabel {
                label: s.to_owned(),
                reason,
            }),
            None => Ok(Self(s.to_owned())),
        }
    }

    /// The label text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl ServiceRef ===

impl ServiceRef {
    /// Builds a service reference from unvalidated parts.
    pub fn new(name: &str, namespace: &str, port: u16) -> Result<Self, Error> {
        if port == 0 {
            return Err(Error::InvalidPort("0".to_owned()));
        }
        Ok(Self {
            name: Label::new(name)?,
            namespace: Label::new(namespace)?,
            port,
        })
    }
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}:{}", self.name, self.namespace, self.port)
    }
}

// === impl NativeName ===

impl NativeName {
    /// Parses `<port>.<service>.<namespace>.<cluster>.v1.isthmus.internal`.
    pub fn parse(name: &str) -> Result<Self, Error> {
        if name.len() > MAX_NAME_LEN {
            return Err(Error::TooLong);
        }
        let head = name
            .strip_suffix(NATIVE_SUFFIX)
            .and_then(|h| h.strip_suffix('.'))
            .ok_or(Error::NativeShape)?;
        let labels: Vec<&str> = head.split('.').collect();
        let [port, service, namespace, cluster, version] = labels[..] else {
            return Err(Error::NativeShape);
        };
        if version != NATIVE_VERSION {
            return Err(Error::UnsupportedVersion(version.to_owned()));
        }
        Ok(Self {
            service: ServiceRef {
                name: Label::new(service)?,
                namespace: Label::new(namespace)?,
                port: parse_port(port)?,
            },
            cluster: Label::new(cluster)?,
        })
    }
}

impl fmt::Display for NativeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.service;
        write!(
            f,
            "{}.{}.{}.{}.{NATIVE_VERSION}.{NATIVE_SUFFIX}",
            s.port, s.name, s.namespace, self.cluster
        )
    }
}

// === impl IstioName ===

impl IstioName {
    /// Parses `outbound_.<port>_.<subset>_.<service>.<namespace>.svc.<domain>`.
    pub fn parse(name: &str) -> Result<Self, Error> {
        // The whole name must be a host name: a 63-character subset plus its `_` is a
        // 64-character DNS label, which no resolver or TLS stack would carry.
        check_host_name(name)?;
        let mut parts = name.splitn(4, '.');
        let (Some(ISTIO_PREFIX), Some(port), Some(subset), Some(fqdn)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::IstioShape);
        };
        let port = parse_port(port.strip_suffix('_').ok_or(Error::IstioShape)?)?;
        let subset = match subset.strip_suffix('_').ok_or(Error::IstioShape)? {
            "" => None,
            s => Some(Label::new(s)?),
        };
        let mut fqdn = fqdn.splitn(4, '.');
        let (Some(service), Some(namespace), Some("svc"), Some(domain)) =
            (fqdn.next(), fqdn.next(), fqdn.next(), fqdn.next())
        else {
            return Err(Error::IstioShape);
        };
        Ok(Self {
            service: ServiceRef {
                name: Label::new(service)?,
                namespace: Label::new(namespace)?,
                port,
            },
            subset,
            domain: domain.to_owned(),
        })
    }
}

impl fmt::Display for IstioName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let subset = self.subset.as_ref().map_or("", Label::as_str);
        let s = &self.service;
        write!(
            f,
            "{ISTIO_PREFIX}.{}_.{subset}_.{}.{}.svc.{}",
            s.port, s.name, s.namespace, self.domain
        )
    }
}

// === impl ServiceName ===

impl ServiceName {
    /// The service the name asks for.
    pub fn service(&self) -> &ServiceRef {
        match self {
            Self::Native(n) => &n.service,
            Self::Istio(n) => &n.service,
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Native(n) => n.fmt(f),
            Self::Istio(n) => n.fmt(f),
        }
    }
}

fn parse_port(s: &str) -> Result<u16, Error> {
    let canonical = !s.is_empty() && !s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit());
    match s.parse::<u16>() {
        Ok(port) if canonical => Ok(port),
        _ => Err(Error::InvalidPort(s.to_owned())),
    }
}

#[cfg(test)]
mod tests;
