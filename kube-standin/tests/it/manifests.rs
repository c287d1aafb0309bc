//! The Kubernetes manifests in `examples/multicloud/kubernetes/` are accepted by an API server:
//! a server-side dry run of the whole folder, then a real apply, then a re-apply that changes
//! nothing.

use crate::support::{Cluster, repo_root};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multicloud_manifests_apply_to_the_standin() {
    let cluster = Cluster::start().await;
    let dir = repo_root().join("examples/multicloud/kubernetes");
    let dir = dir.to_str().expect("utf-8 path");
    let namespace = format!("{dir}/00-namespace.yaml");

    // The dry run needs the namespace to exist, as on a real server.
    cluster.kubectl_ok(&["apply", "-f", &namespace]).await;
    if cluster.kubectl_minor().await >= 21 {
        let out = cluster
            .kubectl_ok(&["apply", "--dry-run=server", "-f", dir])
            .await;
        assert!(
            out.contains("deployment.apps/isthmus-controller created (server dry run)"),
            "{out}"
        );
        assert!(
            cluster
                .standin
                .objects("apps", "v1", "deployments", None)
                .is_empty(),
            "a dry run stores nothing"
        );
    } else {
        // kubectl 1.20 looks for dry-run support in the OpenAPI v2 document, which the
        // stand-in serves empty; the real apply below still checks every manifest.
        eprintln!("kubectl < 1.21: skipping the server-side dry run");
    }

    let out = cluster.kubectl_ok(&["apply", "-f", dir]).await;
    for line in [
        "customresourcedefinition.apiextensions.k8s.io/serviceexports.multicluster.x-k8s.io created",
        "clusterrole.rbac.authorization.k8s.io/isthmus-controller created",
        "role.rbac.authorization.k8s.io/isthmus-controller created",
        "deployment.apps/isthmus-controller created",
        "deployment.apps/isthmus-gateway created",
        "service/isthmus-gateway created",
        "configmap/isthmus-coredns created",
    ] {
        assert!(out.contains(line), "{line:?} missing from:\n{out}");
    }
    let gateway = cluster
        .kubectl_json(&[
            "get",
            "-n",
            "isthmus-system",
            "svc",
            "isthmus-gateway",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(gateway["spec"]["type"], "LoadBalancer");
    assert_eq!(gateway["spec"]["ports"][0]["port"], 15443);
    let controller = cluster
        .kubectl_json(&[
            "get",
            "-n",
            "isthmus-system",
            "svc",
            "isthmus-controller",
            "-o",
            "json",
        ])
        .await;
    let dns: Vec<(u64, &str)> = controller["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with("dns")))
        .map(|p| {
            (
                p["port"].as_u64().unwrap_or(0),
                p["protocol"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(dns, [(5353, "UDP"), (5353, "TCP")]);

    let again = cluster.kubectl_ok(&["apply", "-f", dir]).await;
    assert!(
        again.lines().all(|l| l.ends_with(" unchanged")),
        "a second apply changes nothing:\n{again}"
    );
}
