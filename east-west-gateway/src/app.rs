//! Composition root: binds the ingress and admin listeners first (so a port conflict fails
//! startup before any task runs), applies the config through the same [`Applier`] a reload uses
//! (TLS material, routes, egress listeners; an egress port conflict also fails startup), then
//! spawns the ingress accept loop, the admin server and either the file reloader or, in
//! controller mode, the controller client (the gateway is ready at once and serves nothing
//! until the controller's first config). With a handover socket, the ingress listener is taken
//! from the instance being replaced ([`crate::handover`]) and, in controller mode, accepted on
//! only once the controller's first config is in force, so the predecessor answers meanwhile.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::task::JoinHandle;

use crate::apply::{self, Applier};
use crate::config::{Bootstrap, Config};
use crate::controller;
use crate::drain::{self, CLOSE_GRACE, Drained};
use crate::metrics::Metrics;
use crate::proxy::{self, Shared, Snapshot};
use crate::{admin, egress, reload, telemetry, tls};

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
    /// The ingress listener could not be taken over, or the handover socket served.
    #[error("{0}")]
    Handover(String),
}

impl From<apply::Error> for Error {
    fn from(error: apply::Error) -> Self {
        match error {
            apply::Error::Routes(e) => Self::Routes(e),
            apply::Error::Tls(e) => Self::Tls(e),
            apply::Error::Egress(e) => Self::Egress(e),
        }
    }
}

/// Where the gateway's config comes from.
#[derive(Debug)]
pub enum Source {
    /// Standalone: a config file, reloaded on change and SIGHUP when its path is given.
    File {
        /// The validated config.
        config: Box<Config>,
        /// The file, for reloads.
        path: Option<PathBuf>,
    },
    /// Controller mode: the bootstrap file's settings now, the controller's configs later.
    Controller {
        /// The validated bootstrap file.
        bootstrap: Box<Bootstrap>,
        /// Where the controller is.
        settings: controller::Settings,
    },
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
    /// The controller address, in controller mode.
    pub controller: Option<String>,
    /// Whether the ingress listener was taken over from a predecessor.
    pub handed_over: bool,
    shared: Arc<Shared>,
    /// Serves the handover socket; stopped first on drain, so no successor takes a socket this
    /// instance is closing.
    handover: Option<JoinHandle<()>>,
    trigger: drain::Trigger,
    background: Vec<JoinHandle<()>>,
    terminate: Signal,
    interrupt: Signal,
    drain_timeout: Duration,
}

/// Binds the listeners and starts serving.
pub async fn build(source: Source) -> Result<Bound, Error> {
    build_with_handover(source, None).await
}

/// As [`build`], with the ingress listener taken from the instance serving `handover` if one
/// does, and `handover` then served for a successor.
pub async fn build_with_handover(source: Source, handover: Option<&Path>) -> Result<Bound, Error> {
    let config = match &source {
        Source::File { config, .. } => Config::clone(config),
        Source::Controller { bootstrap, .. } => bootstrap.initial().clone(),
    };
    let taken = match handover {
        Some(path) => take_ingress(path, config.ingress.listen)?,
        None => None,
    };
    let handed_over = taken.is_some();
    let ingress = match taken {
        Some(listener) => listener,
        None => bind("ingress", config.ingress.listen)?,
    };
    let admin = bind("admin", config.admin.listen)?;
    let addresses = (
        local_addr(&ingress, "ingress")?,
        local_addr(&admin, "admin")?,
    );
    // Install handlers before reporting ready, so an early signal is never fatal.
    let terminate = signal(SignalKind::terminate()).map_err(Error::Signal)?;
    let interrupt = signal(SignalKind::interrupt()).map_err(Error::Signal)?;
    let hangup = signal(SignalKind::hangup()).map_err(Error::Signal)?;

    let drain_timeout = config.drain_timeout;
    let metrics = Arc::new(Metrics::new());
    // Generation 0 serves nothing; applying the config makes generation 1.
    let empty = Config {
        routes: Vec::new(),
        egress: Vec::new(),
        tls: None,
        ..config.clone()
    };
    let shared = Arc::new(Shared::new(Snapshot::new(empty, 0, None)?, metrics));
    let (trigger, watch) = drain::channel();
    let mut applier = Applier::new(shared.clone(), trigger.spawner());
    let applied = applier.apply(config, None).await?;
    if let Some(failure) = applied.egress.failed.into_iter().next() {
        return Err(Error::Bind {
            listener: "egress",
            address: failure.address,
            source: failure.source,
        });
    }
    let handover = match handover {
        Some(path) => Some(serve_handover(path, &ingress)?),
        None => None,
    };
    let mut gate = None;
    let mut background = vec![tokio::spawn(admin::serve(admin, shared.clone()))];
    let mut controller_address = None;
    match source {
        Source::File {
            path: Some(path), ..
        } => {
            let baseline = reload::baseline(&path, shared.load().config.tls.as_ref());
            background.push(tokio::spawn(reload::run(path, baseline, applier, hangup)));
        }
        Source::File { path: None, .. } => {}
        Source::Controller {
            bootstrap,
            settings,
        } => {
            let status = Arc::new(controller::Status::new(&settings));
            shared.set_controller(status.clone());
            if handed_over {
                gate = Some(status.clone());
            }
            controller_address = Some(settings.address.clone());
            background.push(tokio::spawn(ignore_hangups(hangup)));
            let client = controller::Client {
                settings,
                bootstrap: *bootstrap,
                applier,
                status,
                ingress: addresses.0,
                applied: Arc::default(),
            };
            background.push(tokio::spawn(client.run()));
        }
    }
    let mut gate_watch = watch.clone();
    let serve = proxy::serve(ingress, shared.clone(), watch);
    match gate {
        // The predecessor keeps answering until this instance can route.
        Some(status) => tokio::spawn(async move {
            tokio::select! {
                () = status.first_config() => serve.await,
                () = gate_watch.stopped() => {}
            }
        }),
        None => tokio::spawn(serve),
    };
    tracing::info!(ingress = %addresses.0, admin = %addresses.1, handed_over, "gateway listening");
    Ok(Bound {
        ingress: addresses.0,
        admin: addresses.1,
        egress: applied.egress.bound,
        controller: controller_address,
        handed_over,
        shared,
        handover,
        trigger,
        background,
        terminate,
        interrupt,
        drain_timeout,
    })
}

/// In controller mode the bootstrap file is read once; SIGHUP must not end the process.
async fn ignore_hangups(mut hangup: Signal) {
    while hangup.recv().await.is_some() {
        tracing::info!("SIGHUP ignored: in controller mode the controller sends every change");
    }
}

impl Bound {
    /// State shared with the data path (metrics, current snapshot).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The `ready` event: bound addresses and pid, for `--ready-file` and stdout.
    pub fn ready_event(&self) -> serde_json::Value {
        let mut event = serde_json::json!({
            "event": "ready",
            "ingress": self.ingress.to_string(),
            "admin": self.admin.to_string(),
            "egress": apply::egress_map(&self.egress),
            "pid": std::process::id(),
        });
        if let Some(address) = &self.controller {
            event["controller"] = address.clone().into();
        }
        if self.handed_over {
            event["ingress_handed_over"] = true.into();
        }
        event
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
        if let Some(task) = &self.handover {
            task.abort();
        }
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
    proxy::bind(address).map_err(|source| Error::Bind {
        listener,
        address,
        source,
    })
}

/// The ingress listener of the instance serving `path`, if any; it must listen where the config
/// says (any address when the config says port 0).
#[cfg(target_os = "linux")]
fn take_ingress(path: &Path, configured: SocketAddr) -> Result<Option<TcpListener>, Error> {
    let Some(listener) = crate::handover::take(path).map_err(|e| Error::Handover(e.to_string()))?
    else {
        return Ok(None);
    };
    let listener = proxy::adopt(listener)
        .map_err(|e| Error::Handover(format!("handover socket {}: {e}", path.display())))?;
    let actual = local_addr(&listener, "ingress")?;
    if configured.port() != 0 && actual != configured {
        return Err(Error::Handover(format!(
            "handover socket {}: the instance there listens on {actual}, but ingress.listen is {configured}; hand over only between instances of one config",
            path.display()
        )));
    }
    tracing::info!(socket = %path.display(), ingress = %actual, "ingress listener taken over from the running instance");
    Ok(Some(listener))
}

#[cfg(not(target_os = "linux"))]
fn take_ingress(path: &Path, _: SocketAddr) -> Result<Option<TcpListener>, Error> {
    Err(Error::Handover(format!(
        "--handover {}: listener handover needs Linux",
        path.display()
    )))
}

#[cfg(target_os = "linux")]
fn serve_handover(path: &Path, ingress: &TcpListener) -> Result<JoinHandle<()>, Error> {
    use std::os::fd::AsFd;
    let fd = ingress.as_fd().try_clone_to_owned().map_err(|e| {
        Error::Handover(format!(
            "cannot duplicate the ingress socket for handover: {e}"
        ))
    })?;
    crate::handover::serve(path, fd).map_err(|e| Error::Handover(e.to_string()))
}

#[cfg(not(target_os = "linux"))]
fn serve_handover(path: &Path, _: &TcpListener) -> Result<JoinHandle<()>, Error> {
    take_ingress(path, SocketAddr::from(([0, 0, 0, 0], 0))).map(|_| tokio::spawn(async {}))
}

fn local_addr(listener: &TcpListener, name: &'static str) -> Result<SocketAddr, Error> {
    listener.local_addr().map_err(|source| Error::Bind {
        listener: name,
        address: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })
}
