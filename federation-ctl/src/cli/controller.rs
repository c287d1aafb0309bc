//! `federation-ctl controller --config FILE`: load, start, announce, run until signalled.
//!
//! Logs go to stderr as JSON (`FEDERATION_LOG` filter, `FEDERATION_LOG_FORMAT=plain` for
//! humans); stdout carries one JSON line per lifecycle event (`ready` with the bound addresses,
//! `stopped`) so scripts and tests wait on events instead of polling.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;

use super::{EXIT_CONFIG, Exit};
use crate::config::{self, RegistryConfig};
use crate::controller;
use crate::registry::{FileRegistry, Registry};
use crate::state::{StateDir, StateLock};

/// Env var holding the log filter.
pub const LOG_ENV: &str = "FEDERATION_LOG";
/// Env var choosing `json` (default) or `plain` logs.
pub const LOG_FORMAT_ENV: &str = "FEDERATION_LOG_FORMAT";

fn init_logs() {
    let filter = std::env::var(LOG_ENV).unwrap_or_else(|_| "info".to_owned());
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if std::env::var(LOG_FORMAT_ENV).as_deref() == Ok("plain") {
        builder.try_init()
    } else {
        builder.json().flatten_event(true).try_init()
    };
}

/// Writes one lifecycle event line to stdout.
pub(super) fn event(value: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

pub async fn run(path: &Path) -> anyhow::Result<()> {
    init_logs();
    let cfg = config::load(path).map_err(|e| Exit {
        code: EXIT_CONFIG,
        message: e.to_string(),
    })?;
    // Before anything reads or cleans the state directory: another controller may own it.
    let _lock = StateLock::acquire(&cfg.state_dir).map_err(|e| Exit {
        code: EXIT_CONFIG,
        message: e.to_string(),
    })?;
    let state = StateDir::open(&cfg.state_dir)?;
    // A standby waits here: it reads no state, binds no listener and writes nothing.
    #[cfg(feature = "kubernetes")]
    let leading = match &cfg.leader_election {
        Some(election) => Some(super::leader::lead(election, state.clone()).await?),
        None => None,
    };
    #[cfg(feature = "kubernetes")]
    let (state, leader) = match &leading {
        Some(l) => (l.state.clone(), Some(l.identity.clone())),
        None => (state, None),
    };
    #[cfg(not(feature = "kubernetes"))]
    let leader: Option<String> = match cfg.leader_election {
        Some(_) => {
            return Err(Exit {
                code: EXIT_CONFIG,
                message: format!(
                    "{}: leader_election needs federation-ctl built with the `kubernetes` feature",
                    path.display()
                ),
            }
            .into());
        }
        None => None,
    };
    let (registry, import_writer): (Arc<dyn Registry>, _) = match &cfg.registry {
        RegistryConfig::File {
            path,
            watch_interval,
        } => {
            let registry =
                FileRegistry::open(path, *watch_interval, state.clone()).map_err(|e| Exit {
                    code: EXIT_CONFIG,
                    message: e.to_string(),
                })?;
            tokio::spawn(registry.clone().run());
            (Arc::new(registry), None)
        }
        RegistryConfig::Kubernetes(kube_cfg) => kubernetes(kube_cfg, &cfg).await?,
    };
    let cluster = cfg.cluster.clone();
    let (shared, listening) = controller::start_with_state(cfg, registry, state)
        .await
        .context("the controller could not start")?;
    if let Some(kube) = import_writer {
        #[cfg(feature = "kubernetes")]
        {
            tokio::spawn(crate::kube::imports::Writer::run(
                kube.writer,
                shared.imports(),
            ));
            tokio::spawn(kube.registry.follow_imports(shared.imports()));
        }
        #[cfg(not(feature = "kubernetes"))]
        let () = kube;
    }
    tracing::info!(%cluster, peering = %listening.peering, api = %listening.api.display(), "controller ready");
    event(&serde_json::json!({
        "event": "ready",
        "cluster": cluster.to_string(),
        "peering": listening.peering.to_string(),
        "peering_addresses": shared.peering_addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "api": listening.api,
        "dns": listening.dns.map(|a| a.to_string()),
        "leader": leader,
        "pid": std::process::id(),
    }));
    #[cfg(feature = "kubernetes")]
    if let Some(leading) = leading {
        tokio::spawn(super::leader::report_link_status(shared.clone()));
        tokio::select! {
            signalled = wait_for_signal() => signalled?,
            lost = leading.renewing => {
                let message = match lost {
                    Ok(lost) => lost.to_string(),
                    Err(e) => format!("the Lease renewal task failed: {e}"),
                };
                tracing::error!(%message, "leadership lost: exiting so that only one replica writes");
                event(&serde_json::json!({"event": "leadership_lost", "pid": std::process::id()}));
                return Err(Exit { code: super::EXIT_LEADERSHIP_LOST, message }.into());
            }
        }
        event(&serde_json::json!({"event": "stopped", "pid": std::process::id()}));
        return Ok(());
    }
    wait_for_signal().await?;
    event(&serde_json::json!({"event": "stopped", "pid": std::process::id()}));
    Ok(())
}

/// What follows the controller's imports once it holds them: the import writer, and the
/// registry's `Conflict` conditions.
#[cfg(feature = "kubernetes")]
struct KubeTasks {
    writer: crate::kube::imports::Writer,
    registry: Arc<crate::kube::registry::KubeRegistry>,
}

/// The Kubernetes registry, started (first lists done), and what to run once the controller
/// holds its imports.
#[cfg(feature = "kubernetes")]
async fn kubernetes(
    kube_cfg: &config::KubernetesRegistry,
    cfg: &config::ControllerConfig,
) -> anyhow::Result<(Arc<dyn Registry>, Option<KubeTasks>)> {
    use crate::kube::registry::{KubeRegistry, client};
    let config_error = |e: crate::kube::registry::KubeError| Exit {
        code: EXIT_CONFIG,
        message: e.to_string(),
    };
    let client = client(kube_cfg).await.map_err(config_error)?;
    let registry = KubeRegistry::start(kube_cfg, cfg.cluster.clone(), client.clone())
        .await
        .context("the kubernetes registry could not start")?;
    tokio::spawn(registry.clone().run());
    let writer = crate::kube::imports::Writer {
        client,
        gateway_selector: kube_cfg.gateway_selector.clone(),
        egress_address: cfg.gateways.egress.address,
    };
    Ok((registry.clone(), Some(KubeTasks { writer, registry })))
}

#[cfg(not(feature = "kubernetes"))]
async fn kubernetes(
    _: &config::KubernetesRegistry,
    _: &config::ControllerConfig,
) -> anyhow::Result<(Arc<dyn Registry>, Option<()>)> {
    Err(Exit {
        code: EXIT_CONFIG,
        message: "this federation-ctl was built without the `kubernetes` feature; use `registry: { file: ... }` or a build with it".to_owned(),
    }
    .into())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
