//! Leader election for `federation-ctl controller`: the standby waits here, before anything
//! reads the state directory or binds a listener; the new leader restores its state directory
//! from the API and mirrors every later change into it.
//!
//! A leader that cannot renew its Lease within the renew deadline exits (code
//! [`EXIT_LEADERSHIP_LOST`](super::EXIT_LEADERSHIP_LOST)) rather than keep serving next to a
//! new leader: its pod restarts as a standby.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinHandle;

use super::controller::event;
use crate::config::LeaderElection;
use crate::controller::{LinkState, Shared};
use crate::kube::elector::{LeadershipLost, LeaseElector};
use crate::kube::state::{Hydrated, Mirror, run_writer, seed};
use crate::state::{StateChange, StateDir};

/// How often the leader tells the mirror how its links are doing (the mirror writes only what
/// changed).
const STATUS_INTERVAL: Duration = Duration::from_secs(2);

/// A replica that leads: the task renewing the Lease (it ends when leadership is lost) and the
/// state directory, restored and mirrored.
pub(super) struct Leading {
    pub(super) identity: String,
    pub(super) renewing: JoinHandle<LeadershipLost>,
    pub(super) state: StateDir,
}

async fn client(cfg: &LeaderElection) -> anyhow::Result<kube::Client> {
    let config = match &cfg.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .with_context(|| format!("the kubeconfig {} is not usable", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "no Kubernetes API configured: run in a pod, set KUBECONFIG, or give leader_election.kubeconfig",
        )?,
    };
    kube::Client::try_from(config).context("cannot build the Kubernetes client")
}

/// Waits until this replica holds the Lease, then restores `state` from the API.
pub(super) async fn lead(cfg: &LeaderElection, state: StateDir) -> anyhow::Result<Leading> {
    let client = client(cfg).await?;
    let mut elector = LeaseElector::new(client.clone(), cfg);
    let identity = elector.identity().to_owned();
    let lease = format!("{}/{}", cfg.namespace, cfg.lease_name);
    elector
        .acquire(|holder| {
            tracing::info!(%identity, %holder, %lease, "standby: another replica leads");
            event(&serde_json::json!({
                "event": "standby",
                "identity": identity,
                "holder": holder,
                "lease": lease,
                "pid": std::process::id(),
            }));
        })
        .await;
    tracing::info!(%identity, %lease, "leading: holding the Lease");
    event(&serde_json::json!({
        "event": "leading",
        "identity": identity,
        "lease": lease,
        "pid": std::process::id(),
    }));
    // Renewal starts before the restore, which may take a while on a large clusterset.
    let renewing = tokio::spawn(elector.keep());

    let mirror = Mirror::new(client, &cfg.namespace);
    let hydrated = mirror
        .hydrate(&state)
        .await
        .context("cannot restore the state directory from the API")?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let records = match hydrated {
        Hydrated::Restored { records } => records,
        Hydrated::Seed => {
            tracing::info!(namespace = %cfg.namespace, "the API holds no state yet: mirroring the local state directory into it");
            for change in seed(&state)? {
                let _ = tx.send(change);
            }
            Default::default()
        }
    };
    tokio::spawn(run_writer(mirror, rx, records));
    Ok(Leading {
        identity,
        renewing,
        state: state.with_mirror(tx),
    })
}

/// Reports every link's session state and last heartbeat to the mirror, for the `ClusterLink`
/// statuses, until the process stops.
pub(super) async fn report_link_status(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(STATUS_INTERVAL);
    loop {
        tick.tick().await;
        let statuses: Vec<StateChange> = shared
            .lock()
            .links
            .iter()
            .map(|(peer, link)| StateChange::LinkStatus {
                peer: peer.clone(),
                connected: matches!(link.state, LinkState::Connected),
                last_heard_ms: (link.imports.last_heard_ms != i64::MIN)
                    .then_some(link.imports.last_heard_ms),
                feed_version: link.imports.version(),
            })
            .collect();
        for status in statuses {
            shared.state.report(|| status);
        }
    }
}
