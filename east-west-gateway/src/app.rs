//! Composition root: binds every listener first (so a port conflict fails startup before any
//! task runs), then spawns the ingress accept loop, the admin server and the reloader.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::drain::{self, Drained};
use crate::metrics::Metrics;
use crate::proxy::{self, Shared, Snapshot};
use crate::{admin, egress, reload, telemetry, tls};

/// Accept queue length: bursts of new connections wait in the kernel instead of being dropped
/// (tokio's default is 1024; the kernel caps it at net.core.somaxconn).
const LISTEN_BACKLOG: u32 = 4096;
/// Time given to connections cut at the drain deadline to record their outcome.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener address could not be bound.
    #[error("cannot bind {listener} listener on {address}: {source}")]
    Bind {
        /// `ingress`, `admin` or `egress`.
        listener: &'static str,
        /// The configured address.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A signal handler could not be installed.
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
    /// The routing state could not be built.
    #[error(transparent)]
    Routes(#[from] proxy::Error),
    /// The certificate, key or bundle could not be loaded.
    #[error(transparent)]
    Tls(#[from] tls::Error),
    /// The egress listeners could not be set up.
    #[error(transparent)]
    Egress(#[from] egress::Error),
}

/// A running gateway: its bound addresses and the handles to stop it.
#[derive(Debug)]
pub struct Bound {
    /// The ingress listener's actual address (port 0 resolved).
    pub ingress: SocketAddr,
    /// The admin listener's actual address.
    pub admin: SocketAddr,
    /// Each egress listener's name and actual address, in config order.
    pub egress: Vec<(String, SocketAddr)>,
    shared: Arc<Shared>,
    trigger: drain::Trigger,
    background: Vec<JoinHandle<()>>,
    terminate: Signal,
    interrupt: Signal,
    drain_timeout: Duration,
}

/// Binds the listeners and starts serving. `config_path` enables reload from that file.
pub async fn build(config: Config, config_path: Option<PathBuf>) -> Result<Bound, Error> {
    let ingress = bind("ingress", config.ingress.listen)?;
    let admin = bind("admin", config.admin.listen)?;
    let addresses = (
        local_addr(&ingress, "ingress")?,
        local_addr(&admin, "admin")?,
    );
    let mut egress_listeners = Vec::with_capacity(config.egress.len());
    for e in &config.egress {
        let listener = bind("egress", e.listen)?;
        let address = local_addr(&listener, "egress")?;
        egress_listeners.push((e.name.to_string(), listener, address));
    }
    // Install handlers before reporting ready, so an early signal is never fatal.
    let terminate = signal(SignalKind::terminate()).map_err(Error::Signal)?;
    let interrupt = signal(SignalKind::interrupt()).map_err(Error::Signal)?;
    let hangup = signal(SignalKind::hangup()).map_err(Error::Signal)?;

    let drain_timeout = config.drain_timeout;
    let metrics = Arc::new(Metrics::new());
    let material = config.tls.as_ref().map(tls::Material::load).transpose()?;
    let pools = egress::build(&config, material.as_ref(), &metrics).await?;
    let mut background = Vec::new();
    let snapshot = Snapshot::new(config, 1, material.as_ref())?;
    let shared = Arc::new(Shared::new(snapshot, metrics, material, pools.clone()));
    let (trigger, watch) = drain::channel();
    tokio::spawn(proxy::serve(ingress, shared.clone(), watch.clone()));
    let mut egress_addresses = Vec::with_capacity(pools.len());
    for ((name, listener, address), pool) in egress_listeners.into_iter().zip(pools) {
        tokio::spawn(egress::serve(listener, pool, shared.clone(), watch.clone()));
        egress_addresses.push((name, address));
    }
    drop(watch);
    background.push(tokio::spawn(admin::serve(admin, shared.clone())));
    if let Some(path) = config_path {
        let baseline = reload::baseline(&path, shared.load().config.tls.as_ref());
        background.push(tokio::spawn(reload::run(
            path,
            baseline,
            shared.clone(),
            hangup,
        )));
    }
    tracing::info!(ingress = %addresses.0, admin = %addresses.1, "gateway listening");
    Ok(Bound {
        ingress: addresses.0,
        admin: addresses.1,
        egress: egress_addresses,
        shared,
        trigger,
        background,
        terminate,
        interrupt,
        drain_timeout,
    })
}

impl Bound {
    /// State shared with the data path (metrics, current snapshot).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The `ready` event: bound addresses and pid, for `--ready-file` and stdout.
    pub fn ready_event(&self) -> serde_json::Value {
        serde_json::json!({
            "event": "ready",
            "ingress": self.ingress.to_string(),
            "admin": self.admin.to_string(),
            "egress": self.egress.iter()
                .map(|(name, address)| (name.clone(), serde_json::json!(address.to_string())))
                .collect::<serde_json::Map<_, _>>(),
            "pid": std::process::id(),
        })
    }

    /// Runs until SIGTERM or SIGINT, then drains.
    pub async fn wait_termination(mut self) -> Drained {
        tokio::select! {
            _ = self.terminate.recv() => tracing::info!(signal = "SIGTERM", "draining"),
            _ = self.interrupt.recv() => tracing::info!(signal = "SIGINT", "draining"),
        }
        self.shutdown().await
    }

    /// Stops accepting, lets open connections finish up to the drain timeout, closes the rest.
    pub async fn shutdown(self) -> Drained {
        self.shared.set_not_ready();
        telemetry::event(&serde_json::json!({
            "event": "draining",
            "active": self.shared.metrics.active.get(),
            "deadline_ms": u64::try_from(self.drain_timeout.as_millis()).unwrap_or(u64::MAX),
        }));
        let drained = self.trigger.drain(self.drain_timeout, CLOSE_GRACE).await;
        for task in self.background {
            task.abort();
        }
        tracing::info!(?drained, "gateway stopped");
        telemetry::event(&serde_json::json!({
            "event": "stopped",
            "drained": matches!(drained, Drained::Gracefully),
        }));
        drained
    }
}

fn bind(listener: &'static str, address: SocketAddr) -> Result<TcpListener, Error> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    };
    socket
        .and_then(|socket| {
            // Restarts must not wait out TIME_WAIT on the listening port.
            socket.set_reuseaddr(true)?;
            socket.bind(address)?;
            socket.listen(LISTEN_BACKLOG)
        })
        .map_err(|source| Error::Bind {
            listener,
            address,
            source,
        })
}

fn local_addr(listener: &TcpListener, name: &'static str) -> Result<SocketAddr, Error> {
    listener.local_addr().map_err(|source| Error::Bind {
        listener: name,
        address: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })
}
