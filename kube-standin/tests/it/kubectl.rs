//! Real `kubectl` against the stand-in: CRDs from `federation-ctl crds`, then apply, get,
//! label selection, re-apply, server-side apply conflicts and delete.

use serde_json::Value;

use crate::support::Cluster;

const OBJECTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: demo
  labels: {app: web}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  namespace: demo
  labels:
    app: web
    kubernetes.io/service-name: web
addressType: IPv4
ports:
- {name: http, port: 8080, protocol: TCP}
endpoints:
- addresses: ["10.0.0.7"]
  conditions: {ready: true}
---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata:
  name: web
  namespace: demo
  labels: {app: web}
"#;

/// `kubectl get -o json` of one object equals what the server stores.
async fn same_as_server(
    cluster: &Cluster,
    args: &[&str],
    group: &str,
    version: &str,
    plural: &str,
) -> Value {
    let got = cluster.kubectl_get_full(args).await;
    let name = got["metadata"]["name"].as_str().expect("a name").to_owned();
    let stored = cluster
        .standin
        .objects(group, version, plural, Some("demo"))
        .into_iter()
        .find(|o| o["metadata"]["name"] == name.as_str())
        .unwrap_or_else(|| panic!("{plural}/{name} is not on the server"));
    assert_eq!(got, stored, "kubectl shows what the server stores");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_gets_and_deletes_crds_and_objects() {
    let cluster = Cluster::start().await;
    let crds = cluster.write(
        "crds.yaml",
        &federation_ctl::kube::crds_yaml().expect("crds"),
    );
    let out = cluster
        .kubectl_ok(&["apply", "-f", crds.to_str().expect("utf-8")])
        .await;
    assert!(
        out.contains("serviceexports.multicluster.x-k8s.io created"),
        "{out}"
    );
    let crd = cluster
        .kubectl_json(&[
            "get",
            "crd",
            "serviceimports.multicluster.x-k8s.io",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(crd["status"]["conditions"][1]["type"], "Established");

    let objects = cluster.write("objects.yaml", OBJECTS);
    let objects = objects.to_str().expect("utf-8");
    let out = cluster.kubectl_ok(&["apply", "-f", objects]).await;
    for line in [
        "namespace/demo created",
        "service/web created",
        "endpointslice.discovery.k8s.io/web-abc created",
        "serviceexport.multicluster.x-k8s.io/web created",
    ] {
        assert!(out.contains(line), "{line:?} missing from:\n{out}");
    }

    let export = same_as_server(
        &cluster,
        &["serviceexport", "web", "-n", "demo"],
        "multicluster.x-k8s.io",
        "v1alpha1",
        "serviceexports",
    )
    .await;
    assert_eq!(export["kind"], "ServiceExport");
    let svc = same_as_server(
        &cluster,
        &["svc", "web", "-n", "demo"],
        "",
        "v1",
        "services",
    )
    .await;
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
    assert!(
        svc["spec"]["clusterIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.96.")),
        "{svc}"
    );
    let slice = same_as_server(
        &cluster,
        &["endpointslices", "web-abc", "-n", "demo"],
        "discovery.k8s.io",
        "v1",
        "endpointslices",
    )
    .await;
    assert_eq!(slice["endpoints"][0]["addresses"][0], "10.0.0.7");

    // Label selection across kinds, by short name.
    let names = cluster
        .kubectl_ok(&[
            "get",
            "svc,svcex,endpointslices",
            "-n",
            "demo",
            "-l",
            "app=web",
            "-o",
            "name",
        ])
        .await;
    let mut names: Vec<&str> = names.lines().collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "endpointslice.discovery.k8s.io/web-abc",
            "service/web",
            "serviceexport.multicluster.x-k8s.io/web"
        ]
    );
    let none = cluster
        .kubectl_ok(&[
            "get",
            "svc",
            "-n",
            "demo",
            "-l",
            "app notin (web)",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(none.trim(), "");

    // Re-apply with a change: kubectl computes a patch from its last-applied annotation.
    let changed = OBJECTS.replace("port: 80, targetPort: 8080", "port: 81, targetPort: 8080");
    let changed = cluster.write("changed.yaml", &changed);
    let out = cluster
        .kubectl_ok(&["apply", "-f", changed.to_str().expect("utf-8")])
        .await;
    assert!(out.contains("service/web configured"), "{out}");
    assert!(
        out.contains("serviceexport.multicluster.x-k8s.io/web unchanged"),
        "{out}"
    );
    let svc = cluster
        .kubectl_json(&["get", "svc", "web", "-n", "demo", "-o", "json"])
        .await;
    assert_eq!(svc["spec"]["ports"][0]["port"], 81);
    assert_eq!(svc["metadata"]["generation"], 2);

    // Delete (kubectl waits for the objects to be gone).
    let out = cluster
        .kubectl_ok(&[
            "delete",
            "-n",
            "demo",
            "serviceexport/web",
            "service/web",
            "endpointslice/web-abc",
        ])
        .await;
    assert!(out.contains("service \"web\" deleted"), "{out}");
    assert!(
        cluster
            .standin
            .objects("", "v1", "services", Some("demo"))
            .is_empty()
    );
    assert!(
        cluster
            .standin
            .objects(
                "multicluster.x-k8s.io",
                "v1alpha1",
                "serviceexports",
                Some("demo")
            )
            .is_empty()
    );
    let (ok, _, stderr) = cluster.kubectl(&["get", "svc", "web", "-n", "demo"]).await;
    assert!(
        !ok && stderr.contains("NotFound") || stderr.contains("not found"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_server_side_apply_conflicts_between_managers() {
    let cluster = Cluster::start().await;
    let cm = |value: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: default\ndata:\n  mode: {value}\n"
        )
    };
    let a = cluster.write("a.yaml", &cm("fast"));
    let b = cluster.write("b.yaml", &cm("safe"));
    let (a, b) = (a.to_str().expect("utf-8"), b.to_str().expect("utf-8"));
    cluster
        .kubectl_ok(&["apply", "--server-side", "--field-manager=alice", "-f", a])
        .await;
    let (ok, _, stderr) = cluster
        .kubectl(&["apply", "--server-side", "--field-manager=bob", "-f", b])
        .await;
    assert!(!ok, "bob's apply must conflict");
    assert!(
        stderr.contains("conflict") && stderr.contains("alice"),
        "{stderr}"
    );
    cluster
        .kubectl_ok(&[
            "apply",
            "--server-side",
            "--field-manager=bob",
            "--force-conflicts",
            "-f",
            b,
        ])
        .await;
    let got = cluster.kubectl_get_full(&["cm", "settings"]).await;
    assert_eq!(got["data"]["mode"], "safe");
    let managers: Vec<&str> = got["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields")
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert_eq!(
        managers,
        ["bob"],
        "alice lost her only field to the forced apply"
    );
}
