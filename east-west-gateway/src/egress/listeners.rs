//! The egress listeners in force, reconciled with each new config in two phases, so a config
//! is applied whole or not at all:
//!
//! 1. [`Listeners::prepare`] (fallible, changes nothing visible): builds a [`Pool`] for every new
//!    or changed entry.
//! 2. [`Listeners::commit`] (infallible): stops removed listeners and those whose address
//!    changed (they stop accepting at once; their open connections get `drain_timeout`), swaps
//!    the new pool into a changed listener that keeps its address (no rebind: new connections
//!    use the new gateways and SNI, open ones keep the pool they started with), and binds new
//!    and moved listeners. A listener that cannot bind is reported and counted, the rest
//!    applies, and the next config retries it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_resolver::TokioResolver;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::{Error, Pool, conn, probe};
use crate::config::{self, Config};
use crate::drain;
use crate::metrics::{EgressLabel, Metrics};
use crate::proxy::{self, Shared};
use crate::tls;

/// How long a stopped accept loop may take to release its port before a rebind goes ahead.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// One bound egress listener as the admin endpoint and the events see it.
#[derive(Debug)]
pub struct Handle {
    /// The configured name.
    pub name: String,
    /// The bound address (port 0 resolved).
    pub address: SocketAddr,
    pool: ArcSwap<Pool>,
}

impl Handle {
    /// The remote gateways' health and probe RTT.
    pub(crate) fn probes(&self) -> Vec<super::ProbeStatus> {
        self.pool.load().probes()
    }

    /// Runtime state for `/config_dump`.
    pub fn status(&self) -> Value {
        let mut status = self.pool.load().status();
        status["listen"] = Value::from(self.address.to_string());
        status
    }
}

/// What one reconcile did: the listeners now bound (all of them, in config order) and the
/// entries that could not be bound.
#[derive(Debug, Default)]
pub struct Report {
    /// Name and bound address of every listener in force.
    pub bound: Vec<(String, SocketAddr)>,
    /// Entries of the config that are not listening, with the bind error.
    pub failed: Vec<BindFailure>,
}

/// An egress listener that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind egress listener {name} on {address}: {source}")]
pub struct BindFailure {
    /// The entry's name.
    pub name: String,
    /// The configured address.
    pub address: SocketAddr,
    /// The OS error.
    pub source: std::io::Error,
}

/// Every egress listener in force; owned by the one task that applies configs.
#[derive(Debug)]
pub(crate) struct Listeners {
    running: Vec<Running>,
    /// Created on first need and kept: `None` until then, `Some(None)` if it failed.
    resolver: Option<Option<TokioResolver>>,
    /// Active probes shared by every pool naming the same remote gateway.
    probes: probe::Registry,
    spawner: drain::Spawner,
    metrics: Arc<Metrics>,
}

#[derive(Debug)]
struct Running {
    handle: Arc<Handle>,
    config: config::Egress,
    ejection: (Duration, Duration),
    scope: drain::Trigger,
    accept: JoinHandle<()>,
}

/// The outcome of [`Listeners::prepare`], to be committed.
#[derive(Debug)]
pub(crate) struct Plan {
    steps: Vec<Step>,
}

#[derive(Debug)]
enum Step {
    /// Unchanged: keeps running as is.
    Keep(String),
    /// Same address, new settings: the pool is swapped in place.
    Swap(String, Pool),
    /// New, moved, or not bound yet: (re)bind.
    Bind(config::Egress, Pool),
}

impl Step {
    fn name(&self) -> &str {
        match self {
            Self::Keep(name) | Self::Swap(name, _) => name,
            Self::Bind(config, _) => config.name.as_str(),
        }
    }
}

impl Listeners {
    pub(crate) fn new(spawner: drain::Spawner, metrics: Arc<Metrics>) -> Self {
        Self {
            running: Vec::new(),
            resolver: None,
            probes: probe::Registry::default(),
            spawner,
            metrics,
        }
    }

    /// Builds pools for the entries of `config` that are new or changed.
    pub(crate) async fn prepare(
        &mut self,
        config: &Config,
        material: Option<&tls::Material>,
    ) -> Result<Plan, Error> {
        let ejection = (config.upstream.ejection_base, config.upstream.ejection_max);
        let mut steps = Vec::with_capacity(config.egress.len());
        for e in &config.egress {
            let current = self.running.iter().find(|r| r.config.name == e.name);
            if current.is_some_and(|r| r.config == *e && r.ejection == ejection) {
                steps.push(Step::Keep(e.name.to_string()));
                continue;
            }
            let resolver = if super::needs_dns([e]) {
                self.resolver.get_or_insert_with(super::resolver).as_ref()
            } else {
                None
            };
            let pool = Pool::build(
                e,
                &config.upstream,
                material,
                &self.metrics,
                resolver,
                &self.probes,
            )
            .await?;
            steps.push(match current {
                Some(r) if r.config.listen == e.listen => Step::Swap(e.name.to_string(), pool),
                _ => Step::Bind(e.clone(), pool),
            });
        }
        Ok(Plan { steps })
    }

    /// Puts `plan` in force and publishes the listeners to `shared`.
    pub(crate) async fn commit(
        &mut self,
        plan: Plan,
        shared: &Arc<Shared>,
        drain_timeout: Duration,
    ) -> Report {
        let ejection = {
            let upstream = &shared.load().config.upstream;
            (upstream.ejection_base, upstream.ejection_max)
        };
        // Stop what goes away or moves first, so a moved listener's port is free below.
        let (mut kept, stopping): (Vec<Running>, Vec<Running>) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|r| {
                plan.steps
                    .iter()
                    .any(|s| s.name() == r.config.name.as_str() && !matches!(s, Step::Bind(..)))
            });
        for running in stopping {
            running.stop(drain_timeout).await;
        }
        let mut report = Report::default();
        for step in plan.steps {
            let running = match step {
                Step::Keep(name) => take(&mut kept, &name),
                Step::Swap(name, pool) => take(&mut kept, &name).map(|mut running| {
                    let old = running.handle.pool.swap(Arc::new(pool));
                    old.retire(Some(&running.handle.pool.load()));
                    tracing::info!(egress = %name, "egress listener updated in place");
                    running.config = running.handle.pool.load().config.clone();
                    running.ejection = ejection;
                    running
                }),
                Step::Bind(config, pool) => match self.start(config, pool, shared, ejection) {
                    Ok(running) => running,
                    Err(failure) => {
                        self.metrics
                            .egress_bind_failures
                            .get_or_create(&EgressLabel {
                                egress: failure.name.clone(),
                            })
                            .inc();
                        tracing::error!(egress = %failure.name, address = %failure.address, error = %failure.source, "egress listener not bound; the rest of the config applies");
                        report.failed.push(failure);
                        None
                    }
                },
            };
            self.running.extend(running);
        }
        report.bound = self
            .running
            .iter()
            .map(|r| (r.handle.name.clone(), r.handle.address))
            .collect();
        shared.set_egress(self.running.iter().map(|r| r.handle.clone()).collect());
        report
    }

    /// Binds one listener and starts its accept loop; `Ok(None)` once the gateway drains.
    fn start(
        &self,
        config: config::Egress,
        pool: Pool,
        shared: &Arc<Shared>,
        ejection: (Duration, Duration),
    ) -> Result<Option<Running>, BindFailure> {
        let name = config.name.to_string();
        let bound = proxy::bind(config.listen).and_then(|l| Ok((l.local_addr()?, l)));
        let (address, listener) = bound.map_err(|source| BindFailure {
            name: name.clone(),
            address: config.listen,
            source,
        })?;
        let Some(gateway) = self.spawner.watch() else {
            pool.retire(None);
            return Ok(None);
        };
        let (scope, scope_watch) = drain::channel();
        let handle = Arc::new(Handle {
            name: name.clone(),
            address,
            pool: ArcSwap::from_pointee(pool),
        });
        let accept = tokio::spawn(
            serve(
                listener,
                handle.clone(),
                shared.clone(),
                gateway.scoped(&scope_watch),
            )
            .instrument(tracing::info_span!("egress_listener", egress = %name)),
        );
        tracing::info!(egress = %name, %address, "egress listener bound");
        Ok(Some(Running {
            handle,
            config,
            ejection,
            scope,
            accept,
        }))
    }
}

impl Running {
    /// Stops accepting now (the port is released before this returns) and lets open
    /// connections finish within `drain_timeout`.
    async fn stop(self, drain_timeout: Duration) {
        let Self {
            handle,
            scope,
            mut accept,
            ..
        } = self;
        tokio::spawn(scope.drain(drain_timeout, drain::CLOSE_GRACE));
        if tokio::time::timeout(STOP_TIMEOUT, &mut accept)
            .await
            .is_err()
        {
            tracing::warn!(egress = %handle.name, "egress accept loop did not stop in time; aborted");
            accept.abort();
        }
        handle.pool.load().retire(None);
        tracing::info!(egress = %handle.name, address = %handle.address, "egress listener stopped");
    }
}

fn take(running: &mut Vec<Running>, name: &str) -> Option<Running> {
    let index = running
        .iter()
        .position(|r| r.config.name.as_str() == name)?;
    Some(running.swap_remove(index))
}

/// Accepts on one egress listener until the gateway or this listener drains; each connection
/// uses the pool in force when it was accepted.
async fn serve(
    listener: TcpListener,
    handle: Arc<Handle>,
    shared: Arc<Shared>,
    mut drain: drain::Watch,
) {
    loop {
        let accepted = tokio::select! {
            () = drain.stopped() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "egress accept failed");
                tokio::time::sleep(proxy::ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        proxy::on_accept(&stream);
        let pool = handle.pool.load_full();
        let span = tracing::info_span!("egress", egress = %handle.name, peer = %peer);
        tokio::spawn(
            conn::handle(stream, peer, pool, shared.clone(), drain.clone()).instrument(span),
        );
    }
}
