//! kube-rs against the stand-in: a `watcher` + reflector sees every change in order and
//! recovers from a forced disconnect and from `410 Gone` with no duplicate and no missed
//! object; server-side apply by two field managers conflicts; typed custom resources.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use kube::{Client, Config, ResourceExt as _};
use kube_standin::Options;
use serde_json::json;
use tokio::sync::mpsc;

use crate::support::{Cluster, eventually};

const WAIT: Duration = Duration::from_secs(20);

async fn client(cluster: &Cluster) -> Client {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&cluster.standin.kubeconfig())
        .expect("kubeconfig parses");
    let config =
        Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .expect("kubeconfig loads");
    Client::try_from(config).expect("client builds")
}

fn cm(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"v": value}}))
        .expect("configmap")
}

/// What the server holds: name → resourceVersion.
fn server_state(cluster: &Cluster) -> BTreeMap<String, String> {
    cluster
        .standin
        .objects("", "v1", "configmaps", Some("default"))
        .into_iter()
        .map(|o| {
            (
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                o["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

fn store_state(store: &reflector::Store<ConfigMap>) -> BTreeMap<String, String> {
    store
        .state()
        .iter()
        .map(|o| (o.name_any(), o.resource_version().unwrap_or_default()))
        .collect()
}

/// A watch event as recorded: kind, name, resourceVersion.
type Seen = (&'static str, String, String);

fn describe(event: &watcher::Event<ConfigMap>) -> Option<Seen> {
    let rec =
        |kind, o: &ConfigMap| Some((kind, o.name_any(), o.resource_version().unwrap_or_default()));
    match event {
        watcher::Event::Apply(o) => rec("apply", o),
        watcher::Event::Delete(o) => rec("delete", o),
        watcher::Event::InitApply(o) => rec("init-apply", o),
        watcher::Event::Init => Some(("init", String::new(), String::new())),
        watcher::Event::InitDone => Some(("init-done", String::new(), String::new())),
    }
}

/// Runs a watch stream, sending what it sees to the returned channel. Errors (a 410) are part
/// of the story: the watcher relists after them.
fn record<S>(stream: S) -> (tokio::task::JoinHandle<()>, mpsc::UnboundedReceiver<Seen>)
where
    S: futures::Stream<Item = Result<watcher::Event<ConfigMap>, watcher::Error>> + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Ok(event) = event
                && let Some(seen) = describe(&event)
            {
                let _ = tx.send(seen);
            }
        }
    });
    (task, rx)
}

async fn next_seen(rx: &mut mpsc::UnboundedReceiver<Seen>, what: &str) -> Seen {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no watch event within {WAIT:?} (waiting for {what})"))
        .expect("the watch task is running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_sees_changes_in_order_and_recovers_from_disconnect_and_gone() {
    let cluster = Cluster::start_with(Options {
        bookmark_interval: Duration::from_millis(200),
        ..Options::default()
    })
    .await;
    let api: Api<ConfigMap> = Api::namespaced(client(&cluster).await, "default");
    api.create(&PostParams::default(), &cm("before", "0"))
        .await
        .expect("create before");

    let (reader, writer) = reflector::store();
    let stream = watcher(api.clone(), watcher::Config::default()).default_backoff();
    let (watch, mut rx) = record(reflector(writer, stream));

    // The initial list.
    assert_eq!(next_seen(&mut rx, "init").await.0, "init");
    assert_eq!(next_seen(&mut rx, "the existing object").await.1, "before");
    assert_eq!(next_seen(&mut rx, "init-done").await.0, "init-done");

    // Create, update, delete arrive in order with the server's resourceVersions.
    let created = api
        .create(&PostParams::default(), &cm("a", "1"))
        .await
        .expect("create a");
    let mut changed = created.clone();
    changed.data = Some([("v".to_owned(), "2".to_owned())].into());
    let updated = api
        .replace("a", &PostParams::default(), &changed)
        .await
        .expect("update a");
    api.delete("a", &DeleteParams::default())
        .await
        .expect("delete a");
    let mut got = Vec::new();
    for what in ["create", "update", "delete"] {
        got.push(next_seen(&mut rx, what).await);
    }
    assert_eq!(
        got,
        [
            (
                "apply",
                "a".to_owned(),
                created.resource_version().unwrap_or_default()
            ),
            (
                "apply",
                "a".to_owned(),
                updated.resource_version().unwrap_or_default()
            ),
            ("delete", "a".to_owned(), got[2].2.clone()),
        ]
    );
    assert!(
        got[2].2 > got[1].2,
        "the delete has a later resourceVersion"
    );

    // A forced disconnect: the watcher resumes from its resourceVersion, so writes made while
    // it reconnects arrive once each.
    cluster.standin.disconnect_watches();
    for i in 0..5 {
        api.create(&PostParams::default(), &cm(&format!("d{i}"), "x"))
            .await
            .expect("create");
    }
    let mut after_disconnect = Vec::new();
    for i in 0..5 {
        let seen = next_seen(&mut rx, &format!("d{i} after the disconnect")).await;
        after_disconnect.push((seen.0, seen.1));
    }
    let want: Vec<_> = (0..5).map(|i| ("apply", format!("d{i}"))).collect();
    assert_eq!(after_disconnect, want, "no duplicate, no gap, in order");

    // 410 Gone: the history is gone, so resuming fails and the watcher relists; objects
    // changed meanwhile are all in the store afterwards, and nothing is left over.
    cluster.standin.compact();
    cluster.standin.disconnect_watches();
    api.delete("d0", &DeleteParams::default())
        .await
        .expect("delete d0");
    api.create(&PostParams::default(), &cm("g1", "x"))
        .await
        .expect("create g1");
    let relist = eventually("the relist after 410 Gone", WAIT, || {
        let seen = rx.try_recv().ok();
        async move { seen.filter(|s| s.0 == "init-done") }
    })
    .await;
    assert_eq!(relist.0, "init-done");
    api.create(&PostParams::default(), &cm("g2", "x"))
        .await
        .expect("create g2");
    eventually("the reflector to match the server", WAIT, || {
        let same = store_state(&reader) == server_state(&cluster);
        async move { same.then_some(()) }
    })
    .await;
    let names: Vec<String> = store_state(&reader).into_keys().collect();
    assert_eq!(names, ["before", "d1", "d2", "d3", "d4", "g1", "g2"]);
    watch.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_by_two_managers_conflicts_unless_forced() {
    let cluster = Cluster::start().await;
    let client = client(&cluster).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in federation_ctl::kube::crds() {
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("CRD created");
    }
    use federation_ctl::kube::mcs::{ServiceImport, ServiceImportSpec, ServicePort};
    let imports: Api<ServiceImport> = Api::namespaced(client, "default");
    let import = |port: i32| {
        let mut i = ServiceImport::new(
            "web",
            ServiceImportSpec {
                ports: vec![ServicePort {
                    name: Some("http".into()),
                    port,
                    ..ServicePort::default()
                }],
                ..ServiceImportSpec::default()
            },
        );
        i.metadata.namespace = Some("default".into());
        i
    };
    let alice = PatchParams::apply("alice");
    imports
        .patch("web", &alice, &Patch::Apply(import(80)))
        .await
        .expect("alice applies");
    let err = imports
        .patch("web", &PatchParams::apply("bob"), &Patch::Apply(import(81)))
        .await
        .expect_err("bob conflicts with alice");
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 409, "{status:?}");
            assert!(status.message.contains("alice"), "{}", status.message);
        }
        other => panic!("expected a 409 from the server, got {other}"),
    }
    // Same value: shared ownership, no conflict.
    imports
        .patch(
            "web",
            &PatchParams::apply("carol"),
            &Patch::Apply(import(80)),
        )
        .await
        .expect("carol agrees");
    let forced = imports
        .patch(
            "web",
            &PatchParams::apply("bob").force(),
            &Patch::Apply(import(81)),
        )
        .await
        .expect("forced apply");
    assert_eq!(forced.spec.ports[0].port, 81);
    let managers: Vec<String> = forced
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(managers.contains(&"bob".to_owned()), "{managers:?}");

    // The status subresource: apply there leaves the spec alone, and the spec apply leaves the
    // status alone.
    let status = json!({"apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceImport",
                        "status": {"clusters": [{"cluster": "gcp"}]}});
    let with_status = imports
        .patch_status(
            "web",
            &PatchParams::apply("ctl").force(),
            &Patch::Apply(status),
        )
        .await
        .expect("status apply");
    assert_eq!(
        with_status.status.expect("status").clusters[0].cluster,
        "gcp"
    );
    assert_eq!(with_status.spec.ports[0].port, 81);
    let again = imports
        .patch("web", &PatchParams::apply("bob"), &Patch::Apply(import(82)))
        .await
        .expect("bob applies again");
    assert_eq!(
        again.status.expect("status kept").clusters[0].cluster,
        "gcp"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selector_watch_sees_objects_enter_and_leave_the_selection() {
    let cluster = Cluster::start().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&cluster).await, "default");
    let stream = watcher(api.clone(), watcher::Config::default().labels("app=web"));
    let (watch, mut rx) = record(stream);
    assert_eq!(next_seen(&mut rx, "init").await.0, "init");
    assert_eq!(next_seen(&mut rx, "init-done").await.0, "init-done");
    let label = |app: &str| {
        let patch = json!({"metadata": {"labels": {"app": app}}});
        let api = api.clone();
        async move {
            api.patch("c", &PatchParams::default(), &Patch::Merge(patch))
                .await
                .expect("relabel");
        }
    };
    api.create(&PostParams::default(), &cm("other", "0"))
        .await
        .expect("create an object outside the selection");
    let mut web = cm("c", "0");
    web.metadata.labels = Some([("app".to_owned(), "web".to_owned())].into());
    api.create(&PostParams::default(), &web)
        .await
        .expect("create c");
    label("db").await;
    label("web").await;
    let mut got = Vec::new();
    for what in ["c created", "c leaving", "c entering again"] {
        let seen = next_seen(&mut rx, what).await;
        got.push((seen.0, seen.1));
    }
    assert_eq!(
        got,
        [
            ("apply", "c".to_owned()),
            ("delete", "c".to_owned()),
            ("apply", "c".to_owned())
        ]
    );
    watch.abort();
}
