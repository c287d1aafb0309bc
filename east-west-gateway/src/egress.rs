//! Egress listeners: a local client connects to `listen`; the gateway picks a remote gateway
//! ([`gateways`]: healthy first, lowest priority, weight within it), and either
//! - `mtls`: originates mutual TLS with the chosen gateway's SNI, verifying the remote gateway
//!   against the bundle map and the trust domain configured for that gateway, then splices the
//!   client's plain TCP into it;
//! - `passthrough`: peeks the client's own ClientHello and sends its bytes untouched to the
//!   remote gateway's ingress, so the client's end-to-end TLS survives.
//!
//! Gateways of one listener may front different clusters (an import merged from several
//! clusters): each carries its own SNI and expected trust domain, so failover by priority can
//! cross clusters. A remote gateway that refuses the connection or fails the handshake is ejected
//! and the next one tried; nothing of the client's has been sent by then, so failover never
//! duplicates bytes. A [`Pool`] (gateways, resolvers, TLS clients) is immutable; a changed
//! listener gets a new pool. Certificates and bundles reload underneath pools (the TLS handles
//! are shared). Active probes are not per pool: one per distinct remote gateway address, shared
//! by every pool naming it ([`probe`]).

mod conn;
mod gateways;
mod listeners;
mod probe;
mod resolve;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use hickory_resolver::TokioResolver;
use rustls_pki_types::ServerName;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use self::gateways::{Gateway, Gateways, Target};
pub(crate) use self::listeners::Listeners;
pub use self::listeners::{BindFailure, Handle, Report};
use crate::config::{self, EgressMode};
use crate::metrics::{EgressLabel, Metrics};
use crate::tls;

/// Why an egress pool could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An mTLS egress listener exists but the gateway has no TLS material.
    #[error("egress {0}: mtls needs the gateway's certificate (the tls section)")]
    NoIdentity(String),
    /// The client configuration could not be built.
    #[error("egress {egress}: {source}")]
    Tls {
        /// The listener.
        egress: String,
        /// The TLS error.
        source: tls::Error,
    },
    /// The SNI is not a valid server name (config validation normally catches this).
    #[error("egress {egress}: invalid sni {sni:?}")]
    Sni {
        /// The listener.
        egress: String,
        /// The configured SNI.
        sni: String,
    },
}

/// One remote gateway as the active probes see it.
#[derive(Debug, Clone)]
pub(crate) struct ProbeStatus {
    pub(crate) address: String,
    pub(crate) cluster: String,
    pub(crate) priority: u32,
    pub(crate) healthy: bool,
    /// (p50, p99) over the probe window; `None` before the first success.
    pub(crate) rtt: Option<(std::time::Duration, std::time::Duration)>,
    pub(crate) sni: String,
}

/// One egress listener's runtime: its config, remote gateways (each with its TLS client, for
/// mTLS, and its subscription to the shared probe) and their background resolvers, which stop
/// when the pool is dropped.
pub struct Pool {
    config: config::Egress,
    gateways: Gateways,
    label: EgressLabel,
    metrics: Arc<Metrics>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("egress", &self.label.egress)
            .field("gateways", &self.gateways)
            .finish_non_exhaustive()
    }
}

/// Whether any gateway of `egress` is a host name (and so needs a DNS resolver).
pub(crate) fn needs_dns<'a>(egress: impl IntoIterator<Item = &'a config::Egress>) -> bool {
    egress.into_iter().any(|e| {
        e.gateways.iter().any(|g| {
            let host = g.address.rsplit_once(':').map_or("", |(h, _)| h);
            host.trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_err()
        })
    })
}

/// The system resolver, or `None` (logged) when it cannot be set up: host-name gateways then
/// stay unresolved while IP gateways keep working.
pub(crate) fn resolver() -> Option<TokioResolver> {
    resolve::resolver()
        .inspect_err(|error| tracing::error!(%error, "host-name gateways stay unresolved"))
        .ok()
}

impl Pool {
    /// Builds one listener's pool: a TLS client per expected trust domain, host names resolved
    /// once now, then re-resolution in the background, and each gateway reading the shared
    /// probe of its address from `probes`.
    pub(crate) async fn build(
        e: &config::Egress,
        upstream: &config::Upstream,
        material: Option<&tls::Material>,
        metrics: &Arc<Metrics>,
        resolver: Option<&TokioResolver>,
        probes: &probe::Registry,
    ) -> Result<Self, Error> {
        let name = e.name.to_string();
        let mut connectors: HashMap<&str, tokio_rustls::TlsConnector> = HashMap::new();
        let mut list = Vec::with_capacity(e.gateways.len());
        for g in &e.gateways {
            let target = match (e.mode, &g.mtls) {
                (EgressMode::Mtls, Some(mtls)) => {
                    let connector = match connectors.get(mtls.trust_domain.as_str()) {
                        Some(connector) => connector.clone(),
                        None => {
                            let material =
                                material.ok_or_else(|| Error::NoIdentity(name.clone()))?;
                            let client =
                                material
                                    .client_config(&mtls.trust_domain)
                                    .map_err(|source| Error::Tls {
                                        egress: name.clone(),
                                        source,
                                    })?;
                            let connector = tokio_rustls::TlsConnector::from(client);
                            connectors.insert(&mtls.trust_domain, connector.clone());
                            connector
                        }
                    };
                    let sni = ServerName::try_from(mtls.sni.clone()).map_err(|_| Error::Sni {
                        egress: name.clone(),
                        sni: mtls.sni.clone(),
                    })?;
                    Some(Target { connector, sni })
                }
                // Validation gives every gateway of an mTLS listener a target.
                (EgressMode::Mtls, None) => return Err(Error::NoIdentity(name.clone())),
                (EgressMode::Passthrough, _) => None,
            };
            let probed = probes.get(&g.address, &e.probe);
            list.push(Arc::new(Gateway::new(&name, g, probed).with_tls(target)));
        }
        let mut tasks = Vec::new();
        for gateway in &list {
            tasks.extend(resolve::start(gateway, resolver, metrics).await);
            gateway.probe.subscribe(gateway, metrics);
        }
        Ok(Self {
            config: e.clone(),
            gateways: Gateways::new(list, upstream),
            label: EgressLabel { egress: name },
            metrics: metrics.clone(),
            tasks: Mutex::new(tasks),
        })
    }

    /// The listener's configured address.
    pub fn listen(&self) -> SocketAddr {
        self.config.listen
    }

    /// Stops re-resolution and reading probe results now (connections still using the pool
    /// keep working) and drops the gauge series of gateways `successor` does not have.
    pub(crate) fn retire(&self, successor: Option<&Pool>) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
        for gateway in &self.gateways.list {
            // First, so no probe result recreates a series forgotten below.
            gateway.probe.unsubscribe(gateway);
            let kept = successor.is_some_and(|s| {
                s.gateways
                    .list
                    .iter()
                    .any(|other| other.label == gateway.label)
            });
            if !kept {
                self.metrics.forget_gateway(&gateway.label);
            }
        }
    }

    /// Each remote gateway's health and probe RTT, for the controller's report.
    pub(crate) fn probes(&self) -> Vec<ProbeStatus> {
        self.gateways
            .list
            .iter()
            .map(|g| ProbeStatus {
                address: g.config.address.clone(),
                cluster: g
                    .config
                    .cluster
                    .as_ref()
                    .map(|c| c.as_str().to_owned())
                    .unwrap_or_default(),
                priority: g.config.priority,
                healthy: g.is_alive(),
                rtt: g.rtt(),
                sni: g
                    .config
                    .mtls
                    .as_ref()
                    .map(|m| m.sni.clone())
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// Runtime state for `/config_dump`: per gateway health, RTT and name resolution.
    pub fn status(&self) -> Value {
        let gateways: Vec<Value> = self
            .gateways
            .list
            .iter()
            .map(|g| {
                let dns = g.dns();
                let rtt = g.rtt();
                json!({
                    "address": g.config.address,
                    "priority": g.config.priority,
                    "weight": g.config.weight,
                    "cluster": g.config.cluster.as_ref().map(|c| c.as_str()),
                    "sni": g.config.mtls.as_ref().map(|m| &m.sni),
                    "healthy": g.is_alive(),
                    "rtt_p50_ms": rtt.map(|r| r.0.as_secs_f64() * 1e3),
                    "rtt_p99_ms": rtt.map(|r| r.1.as_secs_f64() * 1e3),
                    "resolved": g.addresses().iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "resolved_at": dns.resolved_at.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
                    "dns_ttl": dns.ttl.map(|t| humantime::format_duration(t).to_string()),
                    "dns_error": dns.last_error,
                    "dns_stale": dns.stale,
                })
            })
            .collect();
        json!({ "name": self.label.egress, "gateways": gateways })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for task in self
            .tasks
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
    }
}
