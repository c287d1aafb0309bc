//! The controller: the composition of the federation model with its IO.
//!
//! One [`Shared`] value holds the controller's state behind a mutex that is never held across
//! an `.await`; tasks around it do the IO:
//!
//! - the registry watcher pushes export changes to every connected link as deltas;
//! - one session per link (the joiner dials with backoff, the acceptor answers) trades export
//!   snapshots, deltas, peer info and heartbeats ([`session`], [`peering`]);
//! - the lease ticker withdraws a silent peer's imports and restores them when it returns;
//! - the gateway publisher rebuilds the gateways' config after changes, coalesced, and streams
//!   it when it differs ([`services`]);
//! - the identity task renews the controller's and the gateway's leaves at half-life;
//! - the trust watcher applies a changed CA directory or trust bundle file (a root rotation):
//!   new leaves, a new bundle map for the gateways, a `TrustBundleUpdate` to every peer
//!   ([`trust`]).
//!
//! A peer never blocks the local control plane: sessions talk to it through bounded queues, and
//! a peer that cannot keep up loses its session (it resyncs from a snapshot when it redials).
//!
//! `FEDERATION_SYNC=full-resync` turns the two economies off (every registry change sends each
//! peer a full snapshot; every change rebuilds and pushes the gateways' config at once, equal
//! or not): the naive implementation of the same model, which the control-plane benchmark
//! measures Isthmus against in the same run. Not for production.

pub mod convert;
mod operate;
mod peering;
mod report;
mod services;
mod session;
mod trust;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use east_west_gateway::api as gw;
use tokio::sync::{Notify, mpsc, watch};
use trust_bundle::tls::{IdentityHandle, TrustHandle};
use trust_bundle::{BundleMap, TrustStore};

use crate::api::peering as pb;
use crate::config::{ControllerConfig, HostPort};
use crate::gateway_config;
use crate::identity::{ClusterCa, Identity, Role};
use crate::model::{
    ClusterName, Conflict, ExportFeed, ImportedService, PeerImports, Registry, merge_imports,
};
use crate::registry::Registry as RegistrySource;
use crate::state::{EgressPorts, LinkRecord, LinkRole, StateDir, TrustRecord};
use crate::token::TokenBook;

pub use self::peering::join_link;

/// How long changes are gathered before the gateways' config is rebuilt.
const GATEWAY_DEBOUNCE: Duration = Duration::from_millis(100);
/// Outbound messages queued per link before the session is given up as too slow.
const LINK_QUEUE: usize = 1024;
/// Env var choosing the sync mode: unset (deltas, coalesced pushes) or `full-resync` (the
/// benchmark's naive baseline; see the module doc).
pub const SYNC_ENV: &str = "FEDERATION_SYNC";

/// Everything the controller's tasks share.
pub struct Shared {
    pub(crate) cfg: ControllerConfig,
    /// Replaced whole when the CA directory or the bundle file changes (a rotation).
    pub(crate) ca: ArcSwap<ClusterCa>,
    /// Our bundle as announced to peers, with its sequence. Held while `ca` is swapped and while
    /// a session's opening messages are built, so a peer never gets the two out of step.
    pub(crate) announced: Mutex<TrustRecord>,
    pub(crate) state: StateDir,
    pub(crate) registry: Arc<dyn RegistrySource>,
    pub(crate) core: Mutex<Core>,
    /// Wakes the gateway publisher.
    pub(crate) changed: Notify,
    /// Our bundle and every linked peer's: verifies peer controllers.
    pub(crate) trust: TrustHandle,
    /// The controller's own TLS identity.
    pub(crate) identity: IdentityHandle,
    pub(crate) controller_identity: Mutex<Arc<Identity>>,
    pub(crate) gateway_identity: Mutex<Arc<Identity>>,
    /// Wakes the renewal task after identities were replaced out of turn (a new CA).
    pub(crate) identities_changed: Notify,
    pub(crate) gateway_config: watch::Sender<Arc<gw::GatewayConfig>>,
    pub(crate) peering_addresses: Vec<HostPort>,
    next_session: AtomicU64,
    /// The latest report of each gateway.
    pub(crate) reports: report::Reports,
    /// The bound DNS listener, when `dns` is configured.
    pub(crate) dns: std::sync::OnceLock<std::net::SocketAddr>,
    /// What is imported and on which egress ports, for writers outside the gateway config
    /// (the Kubernetes import writer).
    imports_view: watch::Sender<Arc<ImportsView>>,
    /// `FEDERATION_SYNC=full-resync`: snapshots instead of deltas, no coalescing, no diffing.
    pub(crate) full_resync: bool,
}

/// The merged imports with the egress port each port was given (ports without one are left
/// out: nothing listens for them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportsView {
    pub imports: BTreeMap<crate::model::ServiceKey, ImportedService>,
    /// (service, port name) → egress port.
    pub egress: BTreeMap<(crate::model::ServiceKey, String), u16>,
}

/// The mutable federation state.
pub(crate) struct Core {
    pub(crate) registry: Arc<Registry>,
    pub(crate) links: BTreeMap<ClusterName, Link>,
    pub(crate) tokens: TokenBook,
    pub(crate) egress: EgressPorts,
    pub(crate) imports: BTreeMap<crate::model::ServiceKey, ImportedService>,
    pub(crate) conflicts: Vec<Conflict>,
}

impl Core {
    /// Queues what `message` makes for each connected peer's session. A peer whose queue is full
    /// is not keeping up: its session is dropped, and it resyncs from a snapshot when it redials.
    pub(crate) fn send_to_sessions(
        &mut self,
        mut message: impl FnMut(&ClusterName, &mut Session) -> Option<pb::LinkMessage>,
    ) {
        let mut slow = Vec::new();
        for (peer, link) in self.links.iter_mut() {
            let Some(session) = link.session.as_mut() else {
                continue;
            };
            let Some(msg) = message(peer, session) else {
                continue;
            };
            if session.tx.try_send(msg).is_err() {
                slow.push(peer.clone());
            }
        }
        for peer in slow {
            if let Some(link) = self.links.get_mut(&peer) {
                tracing::warn!(%peer, "peer is not keeping up; its session is dropped and will resync");
                link.session = None;
                link.state = LinkState::Disconnected;
            }
        }
    }
}

/// One link and its live session, if any.
pub(crate) struct Link {
    pub(crate) record: LinkRecord,
    pub(crate) imports: PeerImports,
    pub(crate) session: Option<Session>,
    pub(crate) state: LinkState,
    pub(crate) last_error: String,
    /// Set to true when the link is removed: stops its dialer and session.
    pub(crate) stop: watch::Sender<bool>,
    /// The peer's clock minus ours at its last heartbeat.
    pub(crate) clock_skew_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkState {
    Connecting,
    Connected,
    Disconnected,
}

pub(crate) struct Session {
    pub(crate) id: u64,
    pub(crate) tx: mpsc::Sender<pb::LinkMessage>,
    pub(crate) feed: ExportFeed,
}

/// Where a started controller listens.
#[derive(Debug, Clone)]
pub struct Listening {
    pub peering: std::net::SocketAddr,
    pub api: PathBuf,
    /// The DNS server for imports, when configured.
    pub dns: Option<std::net::SocketAddr>,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl LinkState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Disconnected => "disconnected",
        }
    }
}

impl Link {
    pub(crate) fn new(record: LinkRecord, imports: PeerImports) -> Self {
        Self {
            record,
            imports,
            session: None,
            state: LinkState::Disconnected,
            last_error: String::new(),
            stop: watch::channel(false).0,
            clock_skew_ms: None,
        }
    }
}

// === startup ===

/// Loads state, binds the listeners and starts every task. Returns once the controller serves.
pub async fn start(
    cfg: ControllerConfig,
    registry: Arc<dyn RegistrySource>,
) -> anyhow::Result<(Arc<Shared>, Listening)> {
    let state = StateDir::open(&cfg.state_dir)?;
    start_with_state(cfg, registry, state).await
}

/// [`start`] on a state directory already open (e.g. with its changes mirrored elsewhere).
pub async fn start_with_state(
    cfg: ControllerConfig,
    registry: Arc<dyn RegistrySource>,
    state: StateDir,
) -> anyhow::Result<(Arc<Shared>, Listening)> {
    let ca = ClusterCa::load(
        &cfg.ca,
        &cfg.cluster,
        cfg.trust_domain.as_ref(),
        cfg.trust_bundle.as_deref(),
    )?;
    let announced = trust::announced_at_start(&state, &ca)?;
    let now = SystemTime::now();
    let controller_id = ca.issue(Role::Controller, cfg.identity_validity, now)?;
    let gateway_id = ca.issue(Role::Gateway, cfg.identity_validity, now)?;
    let identity = IdentityHandle::from_credential(&controller_id.credential)
        .context("the controller's identity is not usable for TLS")?;

    // A restart grants restored imports one fresh lease, so peers have time to redial before
    // anything is withdrawn: a controller restart must never fail a call.
    let now_ms = now_ms();
    let mut imports = state.load_imports()?;
    let mut links = BTreeMap::new();
    for (peer, record) in state.load_links()? {
        let priority = cfg.priority_of(&peer);
        let mut peer_imports = match imports.remove(&peer) {
            Some(rec) => rec.into_peer(priority),
            None => PeerImports::new(peer.clone(), priority),
        };
        if peer_imports.version().is_some() {
            peer_imports.heard(now_ms);
        }
        links.insert(peer, Link::new(record, peer_imports));
    }
    let (egress, dropped) = state.load_egress(cfg.gateways.egress.ports)?;
    for entry in dropped {
        tracing::warn!(service = %entry.service, port = entry.port, "egress port outside the configured range dropped");
    }
    let core = Core {
        registry: registry.watch().borrow().clone(),
        links,
        tokens: state.load_tokens()?,
        egress,
        imports: BTreeMap::new(),
        conflicts: Vec::new(),
    };

    let listener = bind_peering(&cfg, &state).await?;
    let peering_addr = listener.local_addr()?;
    let peering_addresses = cfg.peering_addresses(peering_addr);

    let full_resync = match std::env::var(SYNC_ENV).as_deref() {
        Err(_) | Ok("" | "delta") => false,
        Ok("full-resync") => {
            tracing::warn!(
                "{SYNC_ENV}=full-resync: full snapshots to peers and uncoalesced gateway pushes on every change (a benchmark baseline, not for production)"
            );
            true
        }
        Ok(other) => anyhow::bail!(
            "{SYNC_ENV}={other:?} is not a sync mode: unset it (or use `delta`), or use `full-resync` for the benchmark baseline"
        ),
    };
    let shared = Arc::new(Shared {
        full_resync,
        trust: TrustHandle::default(),
        identity,
        controller_identity: Mutex::new(Arc::new(controller_id)),
        gateway_identity: Mutex::new(Arc::new(gateway_id)),
        identities_changed: Notify::new(),
        announced: Mutex::new(announced),
        gateway_config: watch::channel(Arc::new(gw::GatewayConfig::default())).0,
        peering_addresses,
        next_session: AtomicU64::new(1),
        reports: report::Reports::default(),
        dns: std::sync::OnceLock::new(),
        imports_view: watch::channel(Arc::new(ImportsView::default())).0,
        core: Mutex::new(core),
        changed: Notify::new(),
        registry,
        state,
        ca: ArcSwap::from_pointee(ca),
        cfg,
    });
    shared.refresh_trust()?;
    // The first config is complete before any gateway can ask for it.
    shared.publish_gateway_config();

    let dns = match &shared.cfg.dns {
        Some(cfg) => {
            let address = operate::serve_dns(&shared, cfg).await?;
            let _ = shared.dns.set(address);
            Some(address)
        }
        None => None,
    };
    let api_path = services::serve_api(&shared).await?;
    peering::serve(&shared, listener)?;
    for (peer, link) in shared.lock().links.iter() {
        if link.record.role == LinkRole::Joiner {
            peering::spawn_dialer(&shared, peer.clone(), link.stop.subscribe());
        }
    }
    tokio::spawn(watch_registry(shared.clone()));
    tokio::spawn(publish_gateway_config(shared.clone()));
    tokio::spawn(lease_ticker(shared.clone()));
    tokio::spawn(renew_identities(shared.clone()));
    tokio::spawn(trust::watch(shared.clone()));
    Ok((
        shared,
        Listening {
            peering: peering_addr,
            api: api_path,
            dns,
        },
    ))
}

/// Binds the peering listener. Port 0 picks a free port the first time and the same one after
/// a restart (kept in the state directory), since peers keep dialing the address they learned.
async fn bind_peering(
    cfg: &ControllerConfig,
    state: &StateDir,
) -> anyhow::Result<tokio::net::TcpListener> {
    let mut addr = cfg.peering.listen;
    if addr.port() == 0
        && let Some(port) = state.load_peering_port()?
    {
        let sticky = std::net::SocketAddr::new(addr.ip(), port);
        match tokio::net::TcpListener::bind(sticky).await {
            Ok(listener) => return Ok(listener),
            Err(error) => {
                tracing::warn!(%sticky, %error, "the peering port used before is taken; picking a new one (peers must link again)");
            }
        }
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for peering on {addr}"))?;
    if addr.port() == 0 {
        addr = listener.local_addr()?;
        state.save_peering_port(addr.port())?;
    }
    Ok(listener)
}

// === impl Shared ===

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock is a bug elsewhere; the state itself stays usable.
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// The imports as the gateways get them, current after every change.
    pub fn imports(&self) -> watch::Receiver<Arc<ImportsView>> {
        self.imports_view.subscribe()
    }

    /// Our bundle plus every linked peer's.
    pub(crate) fn bundle_map(&self) -> BundleMap {
        let core = self.lock();
        let mut maps = vec![self.ca.load().bundle_map()];
        for link in core.links.values() {
            match link.record.bundle() {
                Ok(bundle) => {
                    let mut map = BundleMap::new();
                    map.insert(link.record.trust_domain.clone(), bundle);
                    maps.push(map);
                }
                Err(error) => {
                    tracing::warn!(peer = %link.record.peer, %error, "stored peer bundle is unreadable; its calls will be refused");
                }
            }
        }
        BundleMap::merge(&maps)
    }

    /// Recompiles the trust store after links or bundles changed.
    pub(crate) fn refresh_trust(&self) -> anyhow::Result<()> {
        let store = TrustStore::new(&self.bundle_map())
            .context("the combined bundle map cannot be used for verification")?;
        self.trust.store(store);
        Ok(())
    }

    /// What we tell peers about ourselves.
    pub(crate) fn our_info(&self) -> pb::PeerInfo {
        let ca = self.ca.load();
        pb::PeerInfo {
            cluster: self.cfg.cluster.to_string(),
            trust_domain: ca.trust_domain().to_string(),
            bundle_json: ca.bundle().to_spiffe_json(),
            peering_addresses: self
                .peering_addresses
                .iter()
                .map(|a| a.to_string())
                .collect(),
            gateway_addresses: self
                .cfg
                .gateways
                .addresses
                .iter()
                .map(|a| a.to_string())
                .collect(),
            gateway_spiffe_ids: vec![ca.spiffe_id(Role::Gateway).to_string()],
        }
    }

    /// Removes a link and everything learned from it. Returns the peer's session sender, if it
    /// was connected, so the caller can tell it.
    pub(crate) fn remove_link(
        &self,
        peer: &ClusterName,
        reason: &str,
    ) -> Option<(usize, Option<mpsc::Sender<pb::LinkMessage>>)> {
        let removed = self.lock().links.remove(peer)?;
        let _ = removed.stop.send(true);
        if let Err(error) = self.state.remove_link(peer) {
            tracing::error!(%peer, %error, "cannot remove the link record");
        }
        if let Err(error) = self.state.remove_imports(peer) {
            tracing::error!(%peer, %error, "cannot remove the stored imports");
        }
        if let Err(error) = self.refresh_trust() {
            tracing::error!(%error, "trust store not refreshed after unlink");
        }
        tracing::info!(%peer, reason, imports = removed.imports.services().len(), "link removed");
        self.changed.notify_one();
        Some((
            removed.imports.services().len(),
            removed.session.map(|s| s.tx),
        ))
    }

    fn identity_slot(&self, role: Role) -> Arc<Identity> {
        let slot = match role {
            Role::Controller => &self.controller_identity,
            Role::Gateway => &self.gateway_identity,
        };
        slot.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Issues a fresh leaf for `role` from the current CA and puts it in force: the controller's
    /// into its TLS handle (open connections keep theirs), the gateway's into the next config.
    pub(crate) fn reissue(&self, role: Role, now: SystemTime) -> anyhow::Result<()> {
        let id = self
            .ca
            .load()
            .issue(role, self.cfg.identity_validity, now)?;
        match role {
            Role::Controller => {
                self.identity
                    .replace(
                        id.credential.chain.clone(),
                        id.credential.key.to_pkcs8_der(),
                    )
                    .context("the new controller identity is not usable for TLS")?;
                tracing::info!(spiffe_id = %id.spiffe_id, "controller identity issued");
                *self
                    .controller_identity
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Arc::new(id);
            }
            Role::Gateway => {
                tracing::info!(spiffe_id = %id.spiffe_id, "gateway identity issued");
                *self
                    .gateway_identity
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Arc::new(id);
                self.changed.notify_one();
            }
        }
        Ok(())
    }

    /// Rebuilds the gateways' config and publishes it if anything changed.
    pub(crate) fn publish_gateway_config(&self) {
        let lease = self.cfg.lease();
        let now = now_ms();
        let (routes, egress) = {
            let mut core = self.lock();
            let core = &mut *core;
            let peers: Vec<PeerImports> = core.links.values().map(|l| l.imports.clone()).collect();
            let (imports, conflicts) = merge_imports(&peers, lease, now);
            // Ports stay allocated while any linked peer knows the service, even when its lease
            // lapsed, so clients find the same port when the peer comes back.
            let known: std::collections::BTreeSet<(crate::model::ServiceKey, String)> = core
                .links
                .values()
                .flat_map(|l| l.imports.services().values())
                .flat_map(|s| s.ports.iter().map(|p| (s.key.clone(), p.name.clone())))
                .collect();
            let mut allocations_changed = !core
                .egress
                .retain(|k, p| known.contains(&(k.clone(), p.to_owned())))
                .is_empty();
            for import in imports.values() {
                for port in &import.ports {
                    if core.egress.get(&import.key, &port.name).is_none() {
                        match core.egress.allocate(&import.key, &port.name) {
                            Ok(_) => allocations_changed = true,
                            Err(full) => {
                                tracing::error!(service = %import.key, port = %port.name, error = %full, "no egress port left");
                            }
                        }
                    }
                }
            }
            if allocations_changed && let Err(error) = self.state.save_egress(&core.egress) {
                tracing::error!(%error, "cannot persist egress port allocations");
            }
            for c in &conflicts {
                if !core.conflicts.contains(c) {
                    tracing::warn!(service = %c.key, port = %c.port_name, winner = %c.winner, loser = %c.loser, "import port conflict: the oldest export wins");
                }
            }
            let peers: Vec<gateway_config::Peer> = core
                .links
                .values()
                .map(|l| gateway_config::Peer {
                    cluster: l.record.peer.clone(),
                    trust_domain: l.record.trust_domain.to_string(),
                    gateway_addresses: l
                        .record
                        .gateway_addresses
                        .iter()
                        .map(|a| a.to_string())
                        .collect(),
                    gateway_spiffe_ids: l
                        .record
                        .gateway_spiffe_ids
                        .iter()
                        .map(|id| id.to_string())
                        .collect(),
                })
                .collect();
            let egress_ports = &core.egress;
            let built = gateway_config::build(
                &core.registry,
                &peers,
                &imports,
                self.cfg.gateways.egress.address,
                &|k, p| egress_ports.get(k, p),
            );
            let view = ImportsView {
                egress: imports
                    .values()
                    .flat_map(|i| i.ports.iter().map(move |p| (&i.key, &p.name)))
                    .filter_map(|(k, p)| Some(((k.clone(), p.clone()), egress_ports.get(k, p)?)))
                    .collect(),
                imports: imports.clone(),
            };
            self.imports_view.send_if_modified(|current| {
                let changed = **current != view;
                if changed {
                    *current = Arc::new(view);
                }
                changed
            });
            core.imports = imports;
            core.conflicts = conflicts;
            built
        };
        let identity = self
            .gateway_identity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut next = gw::GatewayConfig {
            version: 0,
            routes,
            egress,
            identity: Some(gw::Identity {
                cert_chain_pem: identity.chain_pem(),
                private_key_pem: identity.key_pem(),
            }),
            bundle_map_json: self.bundle_map().to_json(),
            cluster: self.cfg.cluster.to_string(),
        };
        let always = self.full_resync;
        self.gateway_config.send_if_modified(|current| {
            next.version = current.version;
            if !always && **current == next {
                return false;
            }
            next.version += 1;
            tracing::info!(
                version = next.version,
                routes = next.routes.len(),
                egress = next.egress.len(),
                "gateway config changed"
            );
            *current = Arc::new(std::mem::take(&mut next));
            true
        });
    }
}

// === background tasks ===

async fn publish_gateway_config(shared: Arc<Shared>) {
    loop {
        shared.changed.notified().await;
        // Gather a burst of changes (a registry edit touching many services, a snapshot) into
        // one push.
        if !shared.full_resync {
            tokio::time::sleep(GATEWAY_DEBOUNCE).await;
        }
        shared.publish_gateway_config();
    }
}

/// Sends export changes to every connected peer.
async fn watch_registry(shared: Arc<Shared>) {
    let mut rx = shared.registry.watch();
    while rx.changed().await.is_ok() {
        let registry = rx.borrow_and_update().clone();
        {
            let mut core = shared.lock();
            core.registry = registry.clone();
            let full_resync = shared.full_resync;
            core.send_to_sessions(|peer, session| {
                let exports = registry.exports_for(peer);
                let update = if full_resync {
                    session.feed.snapshot(&exports)
                } else {
                    session.feed.update(&exports)?
                };
                Some(convert::message(convert::update_to_pb(&update)))
            });
        }
        shared.changed.notify_one();
    }
}

/// Withdraws the imports of peers whose lease lapsed, and republishes when one comes back.
async fn lease_ticker(shared: Arc<Shared>) {
    let lease = shared.cfg.lease();
    let tick = (shared.cfg.lease.heartbeat_interval / 4).max(Duration::from_millis(50));
    let mut live: BTreeMap<ClusterName, bool> = BTreeMap::new();
    let mut interval = tokio::time::interval(tick);
    loop {
        interval.tick().await;
        let now = now_ms();
        let mut changed = false;
        {
            let core = shared.lock();
            let current: BTreeMap<ClusterName, bool> = core
                .links
                .iter()
                .map(|(peer, l)| {
                    let alive = l.imports.version().is_some()
                        && lease.is_live(l.imports.last_heard_ms, now);
                    (peer.clone(), alive)
                })
                .collect();
            for (peer, alive) in &current {
                if live.get(peer) != Some(alive) {
                    changed = true;
                    if *alive {
                        tracing::info!(%peer, "peer lease live: its imports are served");
                    } else if live.contains_key(peer) {
                        tracing::warn!(%peer, "peer silent past its lease: its imports are withdrawn");
                    }
                }
            }
            live = current;
        }
        if changed {
            shared.changed.notify_one();
        }
    }
}

/// Renews the controller's and the gateway's leaves at half-life.
async fn renew_identities(shared: Arc<Shared>) {
    loop {
        let renew_at = |role| shared.identity_slot(role).renew_at;
        let next = renew_at(Role::Controller).min(renew_at(Role::Gateway));
        let wait = next
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            // Replaced out of turn: compute the next renewal afresh.
            () = shared.identities_changed.notified() => continue,
        }
        let now = SystemTime::now();
        let mut failed = false;
        for role in [Role::Controller, Role::Gateway] {
            if shared.identity_slot(role).needs_renewal(now)
                && let Err(error) = shared.reissue(role, now)
            {
                tracing::error!(?role, %error, "identity renewal failed");
                failed = true;
            }
        }
        // A failed renewal is retried a minute later, well within the remaining half-life.
        if failed {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    }
}
