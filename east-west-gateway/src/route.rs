//! SNI → route lookup.
//!
//! A [`RouteTable`] is built once from validated config and never mutated; the proxy swaps whole
//! tables atomically (`arc_swap::ArcSwap` in `proxy::Shared`) so a connection sees one
//! consistent table from its first lookup on. This module is pure and never panics on input.
//!
//! # Precedence
//!
//! The server name is lowercased (DNS names are case-insensitive), then, first hit wins:
//!
//! 1. **Exact** host name (`reviews.example.com`).
//! 2. **Service**: the name parses as a native name for *this* cluster or as an Istio alias in
//!    this cluster's domain (see [`crate::names`]), and a route serves that `name.namespace:port`
//!    (and, for Istio, exactly that subset: a subset name never falls back to a subset-less
//!    route, which would send v1 traffic to every version).
//! 3. **Longest wildcard suffix**: `*.example.com` matches one or more labels in front of
//!    `.example.com`, never `example.com` itself; `*.a.example.com` beats `*.example.com`.
//! 4. Otherwise no route.
//!
//! Duplicate patterns are rejected when building, so the result never depends on the order
//! routes were inserted in.

use std::collections::HashMap;
use std::fmt;

use crate::names::{self, Label, ServiceName, ServiceRef};

/// Why a table cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Two routes claim the same pattern.
    #[error("pattern {0} is claimed by more than one route")]
    Duplicate(Pattern),
    /// A host pattern is not a valid name.
    #[error("invalid host pattern {pattern:?}: {source}")]
    InvalidHost {
        /// The pattern as written.
        pattern: String,
        /// What is wrong with it.
        source: names::Error,
    },
}

/// One thing a route answers to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// An exact, lowercase host name.
    Exact(String),
    /// `*.<suffix>`; holds the suffix without `*.`.
    Wildcard(String),
    /// A service (native name or Istio alias), optionally one Istio subset.
    Service {
        /// The service port.
        service: ServiceRef,
        /// The Istio subset, if this route serves only one.
        subset: Option<Label>,
    },
}

/// How a lookup matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    /// Exact host name.
    Exact,
    /// Native name or Istio alias.
    Service,
    /// Wildcard suffix.
    Wildcard,
}

/// An immutable SNI routing table.
#[derive(Debug, Clone)]
pub struct RouteTable<T> {
    local_cluster: Label,
    cluster_domain: String,
    exact: HashMap<String, T>,
    services: HashMap<(ServiceRef, Option<Label>), T>,
    wildcards: HashMap<String, T>,
}

/// Collects patterns for a [`RouteTable`], rejecting duplicates.
#[derive(Debug)]
pub struct Builder<T> {
    table: RouteTable<T>,
}

// === impl Pattern ===

impl Pattern {
    /// Parses a host pattern: `*.suffix` or an exact name. Uppercase is folded.
    pub fn host(pattern: &str) -> Result<Self, Error> {
        let lower = pattern.to_ascii_lowercase();
        let (name, make): (&str, fn(String) -> Self) = match lower.strip_prefix("*.") {
            Some(suffix) => (suffix, Self::Wildcard),
            None => (&lower, Self::Exact),
        };
        names::check_host_name(name).map_err(|source| Error::InvalidHost {
            pattern: pattern.to_owned(),
            source,
        })?;
        Ok(make(name.to_owned()))
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Wildcard(suffix) => write!(f, "*.{suffix}"),
            Self::Service {
                service,
                subset: None,
            } => write!(f, "service {service}"),
            Self::Service {
                service,
                subset: Some(subset),
            } => write!(f, "service {service} subset {subset}"),
        }
    }
}

// === impl Builder ===

impl<T> Builder<T> {
    /// Starts a table for the gateway of `local_cluster`, whose Istio cluster domain is
    /// `cluster_domain` (usually `cluster.local`).
    pub fn new(local_cluster: Label, cluster_domain: impl Into<String>) -> Self {
        Self {
            table: RouteTable {
                local_cluster,
                cluster_domain: cluster_domain.into(),
                exact: HashMap::new(),
                services: HashMap::new(),
                wildcards: HashMap::new(),
            },
        }
    }

    /// Adds a pattern; a pattern already present is an error.
    pub fn insert(&mut self, pattern: Pattern, value: T) -> Result<(), Error> {
        let duplicate = match &pattern {
            Pattern::Exact(name) => insert_new(&mut self.table.exact, name.clone(), value),
            Pattern::Wildcard(suffix) => {
                insert_new(&mut self.table.wildcards, suffix.clone(), value)
            }
            Pattern::Service { service, subset } => insert_new(
                &mut self.table.services,
                (service.clone(), subset.clone()),
                value,
            ),
        };
        if duplicate {
            return Err(Error::Duplicate(pattern));
        }
        Ok(())
    }

    /// Finishes the table.
    pub fn build(self) -> RouteTable<T> {
        self.table
    }
}

/// Inserts unless present; returns whether the key was a duplicate.
fn insert_new<K: std::hash::Hash + Eq, T>(map: &mut HashMap<K, T>, key: K, value: T) -> bool {
    use std::collections::hash_map::Entry;
    match map.entry(key) {
        Entry::Occupied(_) => true,
        Entry::Vacant(slot) => {
            slot.insert(value);
            false
        }
    }
}

// === impl RouteTable ===

impl<T> RouteTable<T> {
    /// Finds the route for a server name, following the documented precedence.
    pub fn lookup(&self, server_name: &str) -> Option<(&T, MatchKind)> {
        let name = server_name.to_ascii_lowercase();
        if let Some(v) = self.exact.get(&name) {
            return Some((v, MatchKind::Exact));
        }
        if let Some(v) = self.lookup_service(&name) {
            return Some((v, MatchKind::Service));
        }
        self.lookup_wildcard(&name)
            .map(|v| (v, MatchKind::Wildcard))
    }

    /// Whether the table has no patterns at all.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.services.is_empty() && self.wildcards.is_empty()
    }

    fn lookup_service(&self, name: &str) -> Option<&T> {
        let key = match names::parse_service_name(name).ok()? {
            ServiceName::Native(n) if n.cluster == self.local_cluster => (n.service, None),
            ServiceName::Istio(n) if n.domain == self.cluster_domain => (n.service, n.subset),
            _ => return None,
        };
        self.services.get(&key)
    }

    fn lookup_wildcard(&self, name: &str) -> Option<&T> {
        // Walk suffixes left to right, i.e. longest first; the first label is never a suffix.
        name.match_indices('.')
            .filter(|(dot, _)| *dot > 0)
            .find_map(|(dot, _)| self.wildcards.get(&name[dot + 1..]))
    }
}

#[cfg(test)]
mod tests;
