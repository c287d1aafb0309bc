//! The import writer: keeps the importing cluster's ServiceImports, derived Services and
//! EndpointSlices equal to what the controller imports ([`super::derive`] says what they are).
//!
//! Level-triggered: every pass applies the whole desired set with server-side apply (field
//! manager [`MANAGER`]) and deletes whatever carries our `managed-by` label but is not desired,
//! so the first pass after a start removes what a crashed controller left behind. A pass runs
//! when the imports change, after a failure (with backoff), and every [`RESYNC`] (which also
//! finishes a ServiceImport someone deleted by hand: its dependents go, the finalizer is
//! removed, and it is written anew if still imported).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt as _};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::watch;

use super::derive::{self, Derived, FINALIZER};
use super::local::{LABEL_MANAGED_BY, LABEL_SLICE_MANAGED_BY, MANAGER};
use super::mcs::{LABEL_SERVICE_NAME, ServiceImport};
use crate::controller::ImportsView;
use crate::model::ServiceKey;

/// Full passes run at least this often.
pub const RESYNC: Duration = Duration::from_secs(10);
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// What the writer needs besides the imports.
#[derive(Clone)]
pub struct Writer {
    pub client: Client,
    pub gateway_selector: BTreeMap<String, String>,
    pub egress_address: IpAddr,
}

impl Writer {
    /// Runs passes until `imports` closes (the controller stopped).
    pub async fn run(self, mut imports: watch::Receiver<Arc<ImportsView>>) {
        let mut backoff = BACKOFF_FIRST;
        loop {
            let view = imports.borrow_and_update().clone();
            let wait = match self.pass(&view).await {
                Ok(()) => {
                    backoff = BACKOFF_FIRST;
                    RESYNC
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, imports = view.imports.len(), "import writer pass failed");
                    let wait = backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    wait
                }
            };
            tokio::select! {
                changed = imports.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One pass: apply what is desired, then remove what is not.
    pub async fn pass(&self, view: &ImportsView) -> Result<(), kube::Error> {
        let desired = derive::derive_all(view, &self.gateway_selector, self.egress_address);
        // One import that cannot be written (its namespace missing, say) holds up no other.
        let mut failed = None;
        for d in desired.values() {
            if let Err(error) = self.apply(d).await {
                tracing::warn!(import = %d.key, %error, "cannot write the import's objects");
                failed.get_or_insert(error);
            }
        }
        self.remove_undesired(&desired).await?;
        failed.map_or(Ok(()), Err)
    }

    async fn apply(&self, d: &Derived) -> Result<(), kube::Error> {
        let ns = d.key.namespace();
        let name = d.key.name();
        let params = PatchParams::apply(MANAGER).force();
        let imports: Api<ServiceImport> = Api::namespaced(self.client.clone(), ns);
        if let Some(existing) = imports.get_opt(name).await?
            && existing.metadata.deletion_timestamp.is_some()
        {
            // Deleted by hand: finish the deletion; the next pass writes it anew.
            return self.finish_deletion(&existing).await;
        }
        let si = imports
            .patch(name, &params, &Patch::Apply(&d.service_import))
            .await?;
        imports
            .patch_status(name, &params, &Patch::Apply(&d.service_import_status))
            .await?;
        let uid = si.uid().unwrap_or_default();
        let services: Api<Service> = Api::namespaced(self.client.clone(), ns);
        let service = derive::owned_by(d.service.clone(), name, &uid);
        services
            .patch(&d.service_name, &params, &Patch::Apply(&service))
            .await?;
        let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
        for (slice_name, slice) in &d.slices {
            let slice = derive::owned_by(slice.clone(), name, &uid);
            slices
                .patch(slice_name, &params, &Patch::Apply(&slice))
                .await?;
        }
        tracing::debug!(import = %d.key, slices = d.slices.len(), "import written");
        Ok(())
    }

    /// Deletes every object we manage that no desired import accounts for.
    async fn remove_undesired(
        &self,
        desired: &BTreeMap<ServiceKey, Derived>,
    ) -> Result<(), kube::Error> {
        let managed = format!("{LABEL_MANAGED_BY}={MANAGER}");
        let wanted_import = |ns: &str, name: &str| {
            ServiceKey::new(name, ns)
                .ok()
                .is_some_and(|k| desired.contains_key(&k))
        };
        let imports: Api<ServiceImport> = Api::all(self.client.clone());
        for si in list(&imports, &managed).await? {
            let ns = si.namespace().unwrap_or_default();
            if !wanted_import(&ns, &si.name_any()) {
                tracing::info!(import = %format!("{}.{ns}", si.name_any()), "import gone: deleting its ServiceImport and derived objects");
                let api: Api<ServiceImport> = Api::namespaced(self.client.clone(), &ns);
                if si.metadata.deletion_timestamp.is_none() {
                    ignore_missing(api.delete(&si.name_any(), &DeleteParams::default()).await)?;
                }
                self.finish_deletion(&si).await?;
            }
        }
        let wanted_services: BTreeSet<(&str, &str)> = desired
            .values()
            .map(|d| (d.key.namespace(), d.service_name.as_str()))
            .collect();
        self.prune::<Service>(None, &managed, |ns, name| {
            wanted_services.contains(&(ns, name))
        })
        .await?;
        let wanted_slices: BTreeSet<(&str, &str)> = desired
            .values()
            .flat_map(|d| d.slices.keys().map(|n| (d.key.namespace(), n.as_str())))
            .collect();
        let slices = format!("{LABEL_SLICE_MANAGED_BY}={MANAGER}");
        self.prune::<EndpointSlice>(None, &slices, |ns, name| {
            wanted_slices.contains(&(ns, name))
        })
        .await?;
        Ok(())
    }

    /// Deletes a ServiceImport's dependents, then removes our finalizer so it goes.
    async fn finish_deletion(&self, si: &ServiceImport) -> Result<(), kube::Error> {
        let ns = si.namespace().unwrap_or_default();
        let name = si.name_any();
        let of_import = format!("{LABEL_SERVICE_NAME}={name}");
        let none = |_: &str, _: &str| false;
        let services = format!("{of_import},{LABEL_MANAGED_BY}={MANAGER}");
        self.prune::<Service>(Some(&ns), &services, none).await?;
        let slices = format!("{of_import},{LABEL_SLICE_MANAGED_BY}={MANAGER}");
        self.prune::<EndpointSlice>(Some(&ns), &slices, none)
            .await?;
        let rest: Vec<&String> = si.finalizers().iter().filter(|f| *f != FINALIZER).collect();
        if rest.len() != si.finalizers().len() {
            let api: Api<ServiceImport> = Api::namespaced(self.client.clone(), &ns);
            let patch = json!({"metadata": {
                "finalizers": rest,
                "resourceVersion": si.resource_version(),
            }});
            ignore_missing(
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await,
            )?;
        }
        tracing::info!(import = %format!("{name}.{ns}"), "ServiceImport and derived objects deleted");
        Ok(())
    }
}

impl Writer {
    /// Deletes the objects matching `selector` (in `namespace`, or in all) that `keep`
    /// (namespace, name) does not keep.
    async fn prune<K>(
        &self,
        namespace: Option<&str>,
        selector: &str,
        keep: impl Fn(&str, &str) -> bool,
    ) -> Result<(), kube::Error>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let api: Api<K> = match namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        for object in list(&api, selector).await? {
            let ns = object.namespace().unwrap_or_default();
            if !keep(&ns, &object.name_any()) {
                delete(&Api::<K>::namespaced(self.client.clone(), &ns), &object).await?;
            }
        }
        Ok(())
    }
}

async fn list<K>(api: &Api<K>, selector: &str) -> Result<Vec<K>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    Ok(api
        .list(&ListParams::default().labels(selector))
        .await?
        .items)
}

async fn delete<K>(api: &Api<K>, object: &K) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    tracing::info!(kind = %K::kind(&Default::default()), name = %object.name_any(), namespace = object.namespace().unwrap_or_default(), "deleting a derived object no import accounts for");
    ignore_missing(
        api.delete(&object.name_any(), &DeleteParams::default())
            .await
            .map(|_| ()),
    )
}

/// Already gone is as good as deleted.
fn ignore_missing<T>(result: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}
