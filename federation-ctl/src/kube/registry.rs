//! The `kubernetes` registry: kube-runtime watchers with reflector stores of Services,
//! EndpointSlices and ServiceExports in the selected namespaces, rebuilt into the federation
//! [`model::Registry`] on every change ([`super::local`] does the conversion), and each
//! ServiceExport's `Valid` / `Conflict` conditions written back by server-side apply on its
//! `/status` with the field manager [`MANAGER`]. `Conflict` compares each export with the
//! peers' exports of the same service, so statuses are also recomputed when the imports change
//! ([`KubeRegistry::follow_imports`]).
//!
//! Watchers relist on their own after a dropped watch or a `410 Gone`; the stores then hold
//! exactly what the server holds, and the next rebuild publishes it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::{Notify, watch};

use super::local::{self, ExportObject, MANAGER};
use super::mcs::ServiceExport;
use crate::config::KubernetesRegistry;
use crate::controller::ImportsView;
use crate::model::{self, ClusterName, ExportTo, ImportedService, ServiceKey};
use crate::registry::{
    BoxFuture, ExportOrigin, Registry, RegistryError, RegistryProblem, RegistryStatus,
};

/// Changes gathered before the registry is rebuilt.
const DEBOUNCE: Duration = Duration::from_millis(20);
/// How long after a failed ServiceExport status write it is tried again.
const STATUS_RETRY: Duration = Duration::from_secs(1);
/// How long the first list of every kind may take before the controller gives up starting.
const INITIAL_SYNC: Duration = Duration::from_secs(30);

/// Why the Kubernetes registry could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("cannot load the kubeconfig {}: {source}; fix `registry.kubernetes.kubeconfig`", path.display())]
    Kubeconfig {
        path: std::path::PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error(
        "no Kubernetes config found ({0}); run in a pod, set KUBECONFIG, or give `registry.kubernetes.kubeconfig`"
    )]
    Infer(#[from] kube::config::InferConfigError),
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error(
        "the API server did not list {0} within {INITIAL_SYNC:?}; check it is reachable, that the multicluster.x-k8s.io CRDs are installed, and the RBAC rules"
    )]
    Sync(&'static str),
}

/// A client for `cfg`: its kubeconfig, or in-cluster / `$KUBECONFIG`.
pub async fn client(cfg: &KubernetesRegistry) -> Result<Client, KubeError> {
    let config = match &cfg.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                KubeError::Kubeconfig {
                    path: path.clone(),
                    source,
                }
            })?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|source| KubeError::Kubeconfig {
                    path: path.clone(),
                    source,
                })?
        }
        None => kube::Config::infer().await?,
    };
    Client::try_from(config).map_err(KubeError::Client)
}

/// The reflector stores of one kind, one per namespace (or one for all).
struct Stores<K: Resource + Clone + 'static>(Vec<Store<K>>)
where
    K::DynamicType: Eq + std::hash::Hash + Clone;

impl<K> Stores<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    fn all(&self) -> Vec<K> {
        self.0
            .iter()
            .flat_map(|s| s.state())
            .map(|o| (*o).clone())
            .collect()
    }

    async fn ready(&self) -> bool {
        for s in &self.0 {
            if s.wait_until_ready().await.is_err() {
                return false;
            }
        }
        true
    }
}

/// The Kubernetes registry.
pub struct KubeRegistry {
    client: Client,
    /// This cluster, as its exports are named in conflict messages and ordered against peers'.
    cluster: ClusterName,
    namespaces: Vec<String>,
    services: Stores<Service>,
    slices: Stores<EndpointSlice>,
    exports: Stores<ExportObject>,
    changed: Arc<Notify>,
    tx: watch::Sender<Arc<model::Registry>>,
    problem: Arc<Mutex<Option<RegistryProblem>>>,
    loaded_at_ms: Mutex<i64>,
    /// The services imported from peers, for `Conflict`.
    imports: Mutex<Arc<BTreeMap<ServiceKey, ImportedService>>>,
}

impl KubeRegistry {
    /// Starts the watchers and returns once every kind was listed, with the first registry
    /// published; [`Self::run`] keeps it current.
    pub async fn start(
        cfg: &KubernetesRegistry,
        cluster: ClusterName,
        client: Client,
    ) -> Result<Arc<Self>, KubeError> {
        let changed = Arc::new(Notify::new());
        let problem = Arc::new(Mutex::new(None));
        let namespaces = cfg.namespaces.clone();
        let spawn = Spawner {
            client: &client,
            namespaces: &namespaces,
            changed: &changed,
            problem: &problem,
        };
        let services = spawn.stores::<Service>("services", watcher::Config::default());
        let slices = spawn.stores::<EndpointSlice>(
            "endpointslices",
            watcher::Config::default().labels(local::LABEL_SLICE_SERVICE),
        );
        let exports = spawn.stores::<ExportObject>("serviceexports", watcher::Config::default());
        let sync = async {
            if !services.ready().await {
                return Err(KubeError::Sync("services"));
            }
            if !slices.ready().await {
                return Err(KubeError::Sync("endpointslices"));
            }
            if !exports.ready().await {
                return Err(KubeError::Sync("serviceexports"));
            }
            Ok(())
        };
        let failed = || KubeError::Sync("services, endpointslices and serviceexports");
        tokio::time::timeout(INITIAL_SYNC, sync)
            .await
            .map_err(|_| failed())??;
        let registry = Arc::new(Self {
            client,
            cluster,
            namespaces,
            services,
            slices,
            exports,
            changed,
            tx: watch::channel(Arc::new(model::Registry::default())).0,
            problem,
            loaded_at_ms: Mutex::new(0),
            imports: Mutex::new(Arc::default()),
        });
        registry.rebuild();
        Ok(registry)
    }

    /// Rebuilds and publishes after every change, and keeps ServiceExport statuses current.
    pub async fn run(self: Arc<Self>) {
        loop {
            self.changed.notified().await;
            tokio::time::sleep(DEBOUNCE).await;
            self.rebuild();
            if !self.write_statuses().await {
                // Without a change to come, a failed write would wait for one: wake ourselves.
                let changed = self.changed.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(STATUS_RETRY).await;
                    changed.notify_one();
                });
            }
        }
    }

    /// Keeps the imports `Conflict` is computed from current, until `imports` closes (the
    /// controller stopped); a change wakes [`Self::run`] to recompute the statuses.
    pub async fn follow_imports(self: Arc<Self>, mut imports: watch::Receiver<Arc<ImportsView>>) {
        loop {
            let next = imports.borrow_and_update().imports.clone();
            {
                let mut current = self.imports.lock().unwrap_or_else(|e| e.into_inner());
                if **current != next {
                    *current = Arc::new(next);
                    self.changed.notify_one();
                }
            }
            if imports.changed().await.is_err() {
                return;
            }
        }
    }

    fn rebuild(&self) {
        let next = local::registry(
            &self.services.all(),
            &self.slices.all(),
            &self.exports.all(),
        );
        let published = self.tx.send_if_modified(|current| {
            if **current == next {
                return false;
            }
            *current = Arc::new(next);
            true
        });
        if published {
            let r = self.tx.borrow().clone();
            tracing::info!(
                services = r.services.len(),
                exports = r.exports.len(),
                "kubernetes registry changed"
            );
            *self.loaded_at_ms.lock().unwrap_or_else(|e| e.into_inner()) =
                crate::controller::now_ms();
        }
    }

    /// Writes `Valid` and `Conflict` where they differ from what the export carries; false when
    /// a write failed (logged; the caller tries again after [`STATUS_RETRY`]).
    async fn write_statuses(&self) -> bool {
        let mut all_written = true;
        let registry = self.tx.borrow().clone();
        let imports = self
            .imports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for export in self.exports.all() {
            let Some(key) = local::key_of(&export.metadata) else {
                continue;
            };
            let want = local::wanted_conditions(&registry, &imports, &self.cluster, &key);
            let now = Time(k8s_openapi::jiff::Timestamp::now());
            let Some(conditions) = local::conditions_update(&export.conditions(), &want, now)
            else {
                continue;
            };
            let api: Api<ServiceExport> = Api::namespaced(self.client.clone(), key.namespace());
            let patch = json!({
                "apiVersion": "multicluster.x-k8s.io/v1alpha1",
                "kind": "ServiceExport",
                "metadata": {"name": key.name(), "namespace": key.namespace()},
                "status": {"conditions": conditions},
            });
            let params = PatchParams::apply(MANAGER).force();
            match api
                .patch_status(key.name(), &params, &Patch::Apply(patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(export = %key, valid = want[0].status, reason = want[0].reason, conflict = want[1].status, conflict_reason = want[1].reason, "ServiceExport status written")
                }
                Err(error) => {
                    all_written = false;
                    tracing::warn!(export = %key, %error, retry_in = ?STATUS_RETRY, "cannot write the ServiceExport status")
                }
            }
        }
        all_written
    }

    async fn export_now(&self, key: ServiceKey, to: ExportTo) -> Result<(), RegistryError> {
        if let ExportTo::Peers(_) = to {
            return Err(RegistryError::Kubernetes {
                action: format!("export {key}"),
                message: "a ServiceExport goes to every linked cluster; omit --to".to_owned(),
            });
        }
        let api: Api<ServiceExport> = Api::namespaced(self.client.clone(), key.namespace());
        let object = json!({
            "apiVersion": "multicluster.x-k8s.io/v1alpha1",
            "kind": "ServiceExport",
            "metadata": {"name": key.name(), "namespace": key.namespace()},
            "spec": {},
        });
        api.patch(
            key.name(),
            &PatchParams::apply(MANAGER),
            &Patch::Apply(object),
        )
        .await
        .map_err(|e| kube_error(format!("create ServiceExport {key}"), &e))?;
        Ok(())
    }

    async fn unexport_now(&self, key: &ServiceKey) -> Result<(), RegistryError> {
        let api: Api<ServiceExport> = Api::namespaced(self.client.clone(), key.namespace());
        match api.delete(key.name(), &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => {
                Err(RegistryError::NotExported { key: key.clone() })
            }
            Err(e) => Err(kube_error(format!("delete ServiceExport {key}"), &e)),
        }
    }
}

fn kube_error(action: String, e: &kube::Error) -> RegistryError {
    RegistryError::Kubernetes {
        action,
        message: e.to_string(),
    }
}

/// Spawns one watcher task per namespace for a kind.
struct Spawner<'a> {
    client: &'a Client,
    namespaces: &'a [String],
    changed: &'a Arc<Notify>,
    problem: &'a Arc<Mutex<Option<RegistryProblem>>>,
}

impl Spawner<'_> {
    fn stores<K>(&self, kind: &'static str, config: watcher::Config) -> Stores<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone + Default,
    {
        let apis: Vec<(String, Api<K>)> = if self.namespaces.is_empty() {
            vec![("*".to_owned(), Api::all(self.client.clone()))]
        } else {
            self.namespaces
                .iter()
                .map(|ns| (ns.clone(), Api::namespaced(self.client.clone(), ns)))
                .collect()
        };
        let mut stores = Vec::new();
        for (namespace, api) in apis {
            let (reader, writer) = reflector::store();
            let changed = self.changed.clone();
            let problem = self.problem.clone();
            let stream = watcher(api, config.clone())
                .default_backoff()
                .reflect(writer);
            tokio::spawn(async move {
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(_) => {
                            // The watch works again: an earlier failure is no longer news.
                            *problem.lock().unwrap_or_else(|e| e.into_inner()) = None;
                            changed.notify_one();
                        }
                        Err(error) => {
                            tracing::warn!(kind, %namespace, %error, "watch failed; retrying with backoff");
                            *problem.lock().unwrap_or_else(|e| e.into_inner()) =
                                Some(RegistryProblem {
                                    message: format!("watching {kind} in {namespace}: {error}"),
                                    at_ms: crate::controller::now_ms(),
                                });
                        }
                    }
                }
            });
            stores.push(reader);
        }
        Stores(stores)
    }
}

impl Registry for KubeRegistry {
    fn watch(&self) -> watch::Receiver<Arc<model::Registry>> {
        self.tx.subscribe()
    }

    fn status(&self) -> RegistryStatus {
        let r = self.tx.borrow().clone();
        let namespaces = if self.namespaces.is_empty() {
            "all namespaces".to_owned()
        } else {
            format!("namespaces {}", self.namespaces.join(","))
        };
        RegistryStatus {
            source: format!("kubernetes ({namespaces})"),
            loaded_at_ms: *self.loaded_at_ms.lock().unwrap_or_else(|e| e.into_inner()),
            services: r.services.len(),
            exports: r.exports.len(),
            last_error: self
                .problem
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    fn export_origin(&self, key: &ServiceKey) -> Option<ExportOrigin> {
        self.tx
            .borrow()
            .exports
            .contains_key(key)
            .then_some(ExportOrigin::Registry)
    }

    fn export(&self, key: ServiceKey, to: ExportTo) -> BoxFuture<'_, Result<(), RegistryError>> {
        Box::pin(self.export_now(key, to))
    }

    fn unexport<'a>(&'a self, key: &'a ServiceKey) -> BoxFuture<'a, Result<(), RegistryError>> {
        Box::pin(self.unexport_now(key))
    }
}

impl std::fmt::Debug for KubeRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeRegistry")
            .field("namespaces", &self.namespaces)
            .finish_non_exhaustive()
    }
}
