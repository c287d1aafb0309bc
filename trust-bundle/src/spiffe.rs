//! SPIFFE trust domains and IDs, parsed strictly by the SPIFFE-ID standard.
//!
//! Parsing is the only way to obtain a [`TrustDomain`] or a [`SpiffeId`], so a value of either type
//! is always valid ("parse, don't validate"). Scheme and trust domain are case-insensitive on input
//! but we refuse uppercase rather than silently folding it: an ID that differs from what the
//! certificate says would make audit logs lie.

use std::fmt;
use std::str::FromStr;

/// The longest SPIFFE ID the standard requires implementations to accept.
const MAX_ID_LEN: usize = 2048;
/// The longest trust domain name.
const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Why a trust domain or SPIFFE ID was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("SPIFFE ID {0:?} must start with \"spiffe://\"")]
    Scheme(String),
    #[error("trust domain is empty")]
    EmptyTrustDomain,
    #[error(
        "trust domain {0:?} has a character outside [a-z0-9.-_] (use lowercase letters, digits, '.', '-' and '_')"
    )]
    TrustDomainChar(String),
    #[error("trust domain {0:?} is longer than 255 bytes")]
    TrustDomainTooLong(String),
    #[error("SPIFFE ID {0:?} is longer than 2048 bytes")]
    IdTooLong(String),
    #[error("SPIFFE ID {0:?} has an empty path segment (no '//' and no trailing '/')")]
    EmptySegment(String),
    #[error("SPIFFE ID {0:?} has a '.' or '..' path segment")]
    DotSegment(String),
    #[error("SPIFFE ID {0:?} has a path character outside [a-zA-Z0-9.-_]")]
    PathChar(String),
    #[error("SPIFFE ID {0:?} has no path; a workload ID needs one, like spiffe://TD/ns/NS/sa/SA")]
    NoPath(String),
}

/// A SPIFFE trust domain name, such as `mesh.example` or `aws.mesh.example`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrustDomain(String);

/// A SPIFFE ID: `spiffe://<trust-domain><path>`. The path may be empty only for the IDs that
/// certificate authorities carry (see [`SpiffeId::is_authority`]).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpiffeId {
    id: String,
    /// Byte offset where the path starts (the length of `spiffe://` + trust domain).
    path_start: usize,
}

// === impl TrustDomain ===

impl TrustDomain {
    /// Parses a bare trust domain name (`mesh.example`) or a path-less SPIFFE ID
    /// (`spiffe://mesh.example`).
    pub fn parse(s: &str) -> Result<Self, Error> {
        let name = s.strip_prefix("spiffe://").unwrap_or(s);
        if name.is_empty() {
            return Err(Error::EmptyTrustDomain);
        }
        if name.len() > MAX_TRUST_DOMAIN_LEN {
            return Err(Error::TrustDomainTooLong(name.to_owned()));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
        {
            return Err(Error::TrustDomainChar(name.to_owned()));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path-less SPIFFE ID that names this trust domain, as carried by its CA certificates.
    pub fn authority_id(&self) -> SpiffeId {
        SpiffeId {
            id: format!("spiffe://{}", self.0),
            path_start: "spiffe://".len() + self.0.len(),
        }
    }
}

impl FromStr for TrustDomain {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({})", self.0)
    }
}

// === impl SpiffeId ===

impl SpiffeId {
    /// Parses any SPIFFE ID, with or without a path.
    pub fn parse(s: &str) -> Result<Self, Error> {
        if s.len() > MAX_ID_LEN {
            return Err(Error::IdTooLong(s.chars().take(64).collect()));
        }
        let rest = s
            .strip_prefix("spiffe://")
            .ok_or_else(|| Error::Scheme(s.to_owned()))?;
        let (td, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        TrustDomain::parse(td)?;
        if !path.is_empty() {
            for segment in path[1..].split('/') {
                if segment.is_empty() {
                    return Err(Error::EmptySegment(s.to_owned()));
                }
                if segment == "." || segment == ".." {
                    return Err(Error::DotSegment(s.to_owned()));
                }
                if !segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
                {
                    return Err(Error::PathChar(s.to_owned()));
                }
            }
        }
        Ok(Self {
            id: s.to_owned(),
            path_start: "spiffe://".len() + td.len(),
        })
    }

    /// Parses a workload ID, which must have a path.
    pub fn parse_workload(s: &str) -> Result<Self, Error> {
        let id = Self::parse(s)?;
        if id.is_authority() {
            return Err(Error::NoPath(s.to_owned()));
        }
        Ok(id)
    }

    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.id["spiffe://".len()..self.path_start].to_owned())
    }

    /// The trust-domain name without allocating.
    pub fn trust_domain_str(&self) -> &str {
        &self.id["spiffe://".len()..self.path_start]
    }

    /// The path, empty or starting with `/`.
    pub fn path(&self) -> &str {
        &self.id[self.path_start..]
    }

    /// True for a path-less ID, the form a CA certificate uses to name its trust domain.
    pub fn is_authority(&self) -> bool {
        self.path().is_empty()
    }

    pub fn as_str(&self) -> &str {
        &self.id
    }
}

impl FromStr for SpiffeId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.id)
    }
}

#[cfg(test)]
mod tests;
