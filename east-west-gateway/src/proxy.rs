//! The ingress data path: accept, detect the ClientHello, route by SNI, forward.
//!
//! The passthrough path reads only the ClientHello and never decrypts anything: the buffered
//! hello bytes are replayed to the endpoint, then bytes are copied untouched both ways. The
//! terminate path replays the hello into rustls, verifies and authorizes the peer gateway, and
//! forwards plaintext. Both end in the same byte pump ([`splice`]), which egress reuses too.
//!
//! Routing state lives in an immutable [`Snapshot`] (validated config + route table) behind an
//! `ArcSwap`: a reload swaps the whole snapshot, so new connections see the new routes while
//! open ones keep the snapshot they started with.

pub(crate) mod balance;
pub(crate) mod conn;
pub(crate) mod handshakes;
mod listener;
mod passthrough;
pub(crate) mod random;
pub(crate) mod splice;
mod terminate;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};

use arc_swap::ArcSwap;

use crate::config::{self, Config};
use crate::egress;
use crate::metrics::{ClusterLabels, Metrics};
use crate::names::Label;
use crate::route::{self, RouteTable};
use crate::tls;

#[cfg(target_os = "linux")]
pub(crate) use self::listener::adopt;
pub(crate) use self::listener::{ACCEPT_ERROR_BACKOFF, bind, on_accept, serve};

/// Why the routing state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The route table rejected a pattern (config validation normally catches this first).
    #[error("route {route}: {source}")]
    Route {
        /// The route name.
        route: String,
        /// The table error.
        source: route::Error,
    },
    /// A terminate route exists but the gateway has no TLS material.
    #[error("route {route}: terminate mode needs the tls section")]
    NoIdentity {
        /// The route name.
        route: String,
    },
    /// A rustls configuration could not be built.
    #[error("route {route}: {source}")]
    Tls {
        /// The route name.
        route: String,
        /// The TLS error.
        source: tls::Error,
    },
}

/// How a connection ended: the `outcome` metric label and access-log field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Bytes flowed until both sides closed (a reset or broken pipe after one direction had
    /// ended cleanly counts as closing).
    Forwarded,
    /// The ClientHello had no server_name.
    NoSni,
    /// No route matched the server name.
    NoRoute,
    /// The first bytes were not TLS.
    NotTls,
    /// TLS-framed but not a valid ClientHello.
    MalformedHello,
    /// The ClientHello did not arrive within the hello timeout.
    HelloTimeout,
    /// The ClientHello exceeded the size cap.
    HelloTooLarge,
    /// The client closed before sending a whole ClientHello.
    ClientClosed,
    /// The gateway-wide connection limit was reached.
    ConnectionLimit,
    /// The route's connection limit was reached.
    RouteConnectionLimit,
    /// No endpoint accepted a connection.
    UpstreamConnect,
    /// No byte either way for the idle timeout.
    IdleTimeout,
    /// A socket error after forwarding started, while both directions were open.
    Reset,
    /// Cut at the drain deadline.
    Drained,
    /// The mTLS handshake failed or the peer was not authorized.
    TlsRefused,
    /// A terminated peer's chain stopped verifying against a new bundle map (its trust domain
    /// was removed, e.g. by `unlink`), so the connection was closed.
    Revoked,
}

impl Outcome {
    /// The snake_case label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Forwarded => "forwarded",
            Self::NoSni => "no_sni",
            Self::NoRoute => "no_route",
            Self::NotTls => "not_tls",
            Self::MalformedHello => "malformed_hello",
            Self::HelloTimeout => "hello_timeout",
            Self::HelloTooLarge => "hello_too_large",
            Self::ClientClosed => "client_closed",
            Self::ConnectionLimit => "connection_limit",
            Self::RouteConnectionLimit => "route_connection_limit",
            Self::UpstreamConnect => "upstream_connect",
            Self::IdleTimeout => "idle_timeout",
            Self::Reset => "reset",
            Self::Drained => "drained",
            Self::TlsRefused => "tls_refused",
            Self::Revoked => "revoked",
        }
    }
}

/// Everything a connection needs, swapped as one unit on reload.
#[derive(Debug)]
pub struct Snapshot {
    /// The validated config.
    pub config: Arc<Config>,
    /// 1 at startup, +1 per applied reload.
    pub generation: u64,
    /// The cluster names metric labels may carry.
    pub(crate) clusters: ClusterLabels,
    table: RouteTable<Arc<RouteState>>,
}

/// A route's runtime state.
#[derive(Debug)]
pub(crate) struct RouteState {
    name: Label,
    mode: config::Mode,
    max_connections: Option<usize>,
    active: AtomicUsize,
    balancer: balance::Balancer,
    /// The mTLS server configuration of a terminate route.
    server_tls: Option<Arc<rustls::ServerConfig>>,
}

/// State shared by the listener, admin server and reloader.
#[derive(Debug)]
pub struct Shared {
    snapshot: ArcSwap<Snapshot>,
    /// Gateway metrics.
    pub metrics: Arc<Metrics>,
    /// The gateway's identity and trust store, once a config has had a `tls` section.
    tls: std::sync::Mutex<Option<tls::Material>>,
    /// The egress listeners in force, in config order (published after each reconcile).
    egress: ArcSwap<Vec<Arc<egress::Handle>>>,
    /// The controller connection, in controller mode.
    controller: std::sync::OnceLock<Arc<crate::controller::Status>>,
    /// The bound on TLS handshakes in progress, sized at startup.
    pub(crate) handshakes: handshakes::Handshakes,
    active: AtomicUsize,
    ready: AtomicBool,
}

// === impl Snapshot ===

impl Snapshot {
    /// Builds the routing state for `config`; terminate routes use `tls`.
    pub fn new(
        config: Config,
        generation: u64,
        tls: Option<&tls::Material>,
    ) -> Result<Self, Error> {
        let mut builder =
            route::Builder::new(config.cluster.clone(), config.cluster_domain.clone());
        for r in &config.routes {
            let server_tls = match (&r.mode, tls) {
                (config::Mode::Passthrough, _) => None,
                (config::Mode::Terminate(auth), Some(tls)) => {
                    Some(tls.server_config(auth).map_err(|source| Error::Tls {
                        route: r.name.to_string(),
                        source,
                    })?)
                }
                (config::Mode::Terminate(_), None) => {
                    return Err(Error::NoIdentity {
                        route: r.name.to_string(),
                    });
                }
            };
            let state = Arc::new(RouteState {
                server_tls,
                name: r.name.clone(),
                mode: r.mode.clone(),
                max_connections: r.max_connections,
                active: AtomicUsize::new(0),
                balancer: balance::Balancer::new(&r.endpoints, &config.upstream),
            });
            for p in &r.patterns {
                builder
                    .insert(p.clone(), state.clone())
                    .map_err(|source| Error::Route {
                        route: r.name.to_string(),
                        source,
                    })?;
            }
        }
        Ok(Self {
            clusters: ClusterLabels::from_config(&config),
            config: Arc::new(config),
            generation,
            table: builder.build(),
        })
    }
}

// === impl Shared ===

impl Shared {
    /// Wraps the first snapshot; TLS material and egress listeners come with the first apply.
    pub fn new(snapshot: Snapshot, metrics: Arc<Metrics>) -> Self {
        metrics
            .config_generation
            .set(snapshot_generation(&snapshot));
        let limit = snapshot.config.limits.max_concurrent_handshakes;
        Self {
            handshakes: handshakes::Handshakes::new(limit),
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
            tls: std::sync::Mutex::new(None),
            egress: ArcSwap::from_pointee(Vec::new()),
            controller: std::sync::OnceLock::new(),
            active: AtomicUsize::new(0),
            ready: AtomicBool::new(true),
        }
    }

    /// The snapshot in force.
    pub fn load(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Installs a new snapshot for connections accepted from now on.
    pub fn store(&self, snapshot: Snapshot) {
        self.metrics
            .config_generation
            .set(snapshot_generation(&snapshot));
        self.snapshot.store(Arc::new(snapshot));
    }

    /// The TLS material in force, if any.
    pub fn tls(&self) -> Option<tls::Material> {
        self.tls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Makes `material` the material in force (the first time a config brings TLS).
    pub(crate) fn set_tls(&self, material: tls::Material) {
        *self
            .tls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(material);
    }

    /// The egress listeners in force.
    pub(crate) fn egress(&self) -> Arc<Vec<Arc<egress::Handle>>> {
        self.egress.load_full()
    }

    /// Publishes the egress listeners in force.
    pub(crate) fn set_egress(&self, handles: Vec<Arc<egress::Handle>>) {
        self.egress.store(Arc::new(handles));
    }

    /// The controller connection, in controller mode.
    pub(crate) fn controller(&self) -> Option<&Arc<crate::controller::Status>> {
        self.controller.get()
    }

    /// Records controller mode (once, at startup).
    pub(crate) fn set_controller(&self, status: Arc<crate::controller::Status>) {
        let _ = self.controller.set(status);
    }

    /// Whether the gateway accepts new connections (false once draining).
    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Marks the gateway as draining.
    pub fn set_not_ready(&self) {
        self.ready
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

fn snapshot_generation(s: &Snapshot) -> i64 {
    i64::try_from(s.generation).unwrap_or(i64::MAX)
}
