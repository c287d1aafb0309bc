//! The `kubernetes` registry end to end: two in-repo API servers as clusters a and b, a
//! controller in kubernetes mode and a gateway for each. A Service, EndpointSlice and
//! ServiceExport applied with the real `kubectl` in b become a ServiceImport, a derived Service
//! and EndpointSlices in a; calls to the derived Service's target port cross both gateways to
//! b's endpoint; deleting the export removes them; forced watch disconnects and `410 Gone`
//! while exports come and go leave a's objects exactly as expected; a restarted controller
//! removes what was left behind, and unlinking removes the rest. The same service exported by
//! both clusters with different port numbers sets `Conflict=True` on both ServiceExports.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kube_standin::{Options as StandInOptions, StandIn};
use multicloud::PATIENCE;
use multicloud::cluster::Options;
use multicloud::traffic::call_until;
use serde_json::Value;

use crate::world::{Result, world};

/// One cluster's API server with its kubeconfig and a private kubectl home.
struct ApiServer {
    standin: StandIn,
    kubeconfig: PathBuf,
    home: PathBuf,
}

impl ApiServer {
    fn start(rt: &tokio::runtime::Runtime, dir: &Path, name: &str) -> Self {
        let standin = rt
            .block_on(StandIn::start(StandInOptions::default()))
            .expect("the stand-in API server starts");
        let home = dir.join(format!("kube-{name}"));
        std::fs::create_dir_all(&home).expect("kubectl home");
        let kubeconfig = home.join("kubeconfig");
        standin
            .write_kubeconfig(&kubeconfig)
            .expect("kubeconfig written");
        let api = Self {
            standin,
            kubeconfig,
            home,
        };
        let crds = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/multicloud/kubernetes/01-crds.yaml");
        api.kubectl(&["apply", "-f", &crds.display().to_string()], None);
        api
    }

    /// Runs kubectl (bounded by its request timeout) and fails the test unless it succeeds.
    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.home.join("cache"))
            .arg("--request-timeout=20s")
            .args(args)
            .env("HOME", &self.home)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot run kubectl ({e}); install it with `cargo xtask deps`")
        });
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            use std::io::Write as _;
            pipe.write_all(text.as_bytes()).expect("kubectl stdin");
        }
        let out = child.wait_with_output().expect("kubectl ran");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\nstdout: {stdout}\nstderr: {stderr}"
        );
        stdout
    }

    fn apply(&self, manifest: &str) {
        self.kubectl(&["apply", "-f", "-"], Some(manifest));
    }

    /// The objects of a kind in namespace `default`.
    fn objects(&self, group: &str, version: &str, plural: &str) -> Vec<Value> {
        self.standin
            .objects(group, version, plural, Some("default"))
    }

    /// What a's controller wrote: ServiceImports, derived Services and our EndpointSlices, by
    /// name (a name listed twice would show as a duplicate).
    fn imported(&self) -> Imported {
        let names = |objects: Vec<Value>, managed: &str| -> Vec<String> {
            let mut names: Vec<String> = objects
                .iter()
                .filter(|o| o["metadata"]["labels"][managed] == "isthmus-controller")
                .map(|o| {
                    o["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect();
            names.sort();
            names
        };
        const MANAGED: &str = "app.kubernetes.io/managed-by";
        Imported {
            service_imports: names(
                self.objects("multicluster.x-k8s.io", "v1alpha1", "serviceimports"),
                MANAGED,
            ),
            services: names(self.objects("", "v1", "services"), MANAGED),
            slices: names(
                self.objects("discovery.k8s.io", "v1", "endpointslices"),
                "endpointslice.kubernetes.io/managed-by",
            ),
        }
    }

    /// Forces every watch to end and the next one to get `410 Gone`.
    fn disrupt(&self) {
        self.standin.disconnect_watches();
        self.standin.compact();
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Imported {
    service_imports: Vec<String>,
    services: Vec<String>,
    slices: Vec<String>,
}

impl Imported {
    /// What a holds when b exports `names`.
    fn of(names: &[&str]) -> Self {
        let set = |f: &dyn Fn(&str) -> String| names.iter().map(|n| f(n)).collect::<BTreeSet<_>>();
        Self {
            service_imports: set(&|n| n.to_owned()).into_iter().collect(),
            services: set(&|n| format!("derived-{n}")).into_iter().collect(),
            slices: set(&|n| format!("derived-{n}-b")).into_iter().collect(),
        }
    }
}

/// Polls `ok` until it holds, for at most [`PATIENCE`]; the failure names `what` and the last
/// value seen.
fn wait_until<T: std::fmt::Debug>(
    what: &str,
    mut get: impl FnMut() -> T,
    ok: impl Fn(&T) -> bool,
) -> T {
    let mut last = None;
    let Ok(found) = multicloud::poll(PATIENCE, Duration::from_millis(50), || {
        let value = get();
        if ok(&value) {
            return Ok::<_, std::convert::Infallible>(Some(value));
        }
        last = Some(value);
        Ok(None)
    });
    match found {
        Some((value, _)) => value,
        None => panic!("timed out after {PATIENCE:?} waiting for {what}; last seen: {last:#?}"),
    }
}

/// A Service `name` with port `http` 8080 served by `endpoint`, its EndpointSlice, and
/// (when `export`) its ServiceExport.
fn service_manifest(name: &str, endpoint: SocketAddr, export: bool) -> String {
    service_manifest_on(name, 8080, endpoint, export)
}

/// [`service_manifest`] with port `http` numbered `service_port`.
fn service_manifest_on(
    name: &str,
    service_port: u16,
    endpoint: SocketAddr,
    export: bool,
) -> String {
    let mut yaml = format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  ports: [{{name: http, port: {service_port}, protocol: TCP, targetPort: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: default
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
endpoints:
- addresses: [\"{ip}\"]
  conditions: {{ready: true}}
  zone: az1
ports: [{{name: http, port: {port}, protocol: TCP}}]
",
        ip = endpoint.ip(),
        port = endpoint.port(),
    );
    if export {
        yaml.push_str(&export_manifest(name));
    }
    yaml
}

fn export_manifest(name: &str) -> String {
    format!(
        "---\napiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\nmetadata: {{name: {name}, namespace: default}}\nspec: {{}}\n"
    )
}

/// The condition `type_` of the ServiceExport `name`, as (status, reason, message).
fn export_condition(api: &ApiServer, name: &str, type_: &str) -> Option<(String, String, String)> {
    let exports = api.objects("multicluster.x-k8s.io", "v1alpha1", "serviceexports");
    let export = exports.iter().find(|e| e["metadata"]["name"] == name)?;
    let conditions = export["status"]["conditions"].as_array()?;
    let c = conditions.iter().find(|c| c["type"] == type_)?;
    Some((
        c["status"].as_str()?.to_owned(),
        c["reason"].as_str()?.to_owned(),
        c["message"].as_str()?.to_owned(),
    ))
}

#[test]
fn kubectl_exports_become_imports_through_watch_loss_and_a_controller_crash() -> Result {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let api_a = ApiServer::start(&rt, dir.path(), "a");
    let api_b = ApiServer::start(&rt, dir.path(), "b");
    let in_kube = |api: &ApiServer| Options {
        kubeconfig: Some(api.kubeconfig.clone()),
        ..Options::default()
    };
    let mut w = world(&["a", "b"], &[in_kube(&api_a), in_kube(&api_b)])?;
    let [a, b] = &w.topo.clusters[..] else {
        unreachable!()
    };
    a.join(&b.token()?)?;

    let exported = Instant::now();
    api_b.apply(&service_manifest("echo", b.echo.addr, true));
    let imported = wait_until(
        "a's ServiceImport, derived Service and EndpointSlice for echo",
        || api_a.imported(),
        |i| *i == Imported::of(&["echo"]),
    );
    println!(
        "kubectl apply in b to objects in a: {:?} ({imported:?})",
        exported.elapsed()
    );

    // The objects say what the KEP asks for.
    let si = &api_a.objects("multicluster.x-k8s.io", "v1alpha1", "serviceimports")[0];
    assert_eq!(si["spec"]["type"], "ClusterSetIP");
    assert_eq!(si["spec"]["ports"][0]["port"], 8080);
    assert_eq!(si["metadata"]["finalizers"][0], "isthmus.dev/cleanup");
    let si_uid = si["metadata"]["uid"].clone();
    let si = wait_until(
        "the ServiceImport's status names b",
        || api_a.objects("multicluster.x-k8s.io", "v1alpha1", "serviceimports"),
        |s| {
            s.first()
                .is_some_and(|s| s["status"]["clusters"][0]["cluster"] == "b")
        },
    );
    assert_eq!(
        si[0]["metadata"]["managedFields"][0]["manager"],
        "isthmus-controller"
    );
    let services = api_a.objects("", "v1", "services");
    let derived = services
        .iter()
        .find(|s| s["metadata"]["name"] == "derived-echo")
        .expect("derived Service");
    assert_eq!(
        derived["spec"]["selector"]["app.kubernetes.io/name"],
        "isthmus-gateway"
    );
    assert_eq!(derived["metadata"]["ownerReferences"][0]["uid"], si_uid);
    let egress_port = derived["spec"]["ports"][0]["targetPort"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .expect("a numeric targetPort");
    assert_eq!(
        SocketAddr::new(a.host, egress_port),
        a.listener(multicloud::cluster::ECHO)?,
        "the derived Service targets the egress listener the controller opened"
    );
    let slices = api_a.objects("discovery.k8s.io", "v1", "endpointslices");
    let slice = slices
        .iter()
        .find(|s| s["metadata"]["name"] == "derived-echo-b")
        .expect("derived EndpointSlice");
    let labels = &slice["metadata"]["labels"];
    assert_eq!(labels["multicluster.kubernetes.io/source-cluster"], "b");
    assert_eq!(labels["multicluster.kubernetes.io/service-name"], "echo");
    assert_eq!(labels["kubernetes.io/service-name"], "derived-echo");
    assert_eq!(slice["ports"][0]["port"], egress_port);
    assert_eq!(slice["metadata"]["ownerReferences"][0]["uid"], si_uid);

    // A call to the derived Service's target port crosses both gateways to b's endpoint.
    let (took, _) = call_until(SocketAddr::new(a.host, egress_port), "b")?;
    println!("first call through the derived target port answered by b after {took:?}");
    wait_until(
        "b's ServiceExport Valid=True",
        || export_condition(&api_b, "echo", "Valid"),
        |c| c.as_ref().is_some_and(|(s, _, _)| s == "True"),
    );
    assert_eq!(
        export_condition(&api_b, "echo", "Conflict").map(|c| c.0),
        Some("False".to_owned())
    );
    // a exports the same service with another port number: both exports say Conflict=True
    // (KEP-1645 marks every export; which one is older depends on the clock's second).
    let clashed = Instant::now();
    api_a.apply(&service_manifest_on("echo", 9090, a.echo.addr, true));
    for (api, other) in [(&api_a, "cluster b"), (&api_b, "cluster a")] {
        let (_, _, message) = wait_until(
            &format!("Conflict=True PortConflict on the export that {other} clashes with"),
            || export_condition(api, "echo", "Conflict"),
            |c| {
                c.as_ref()
                    .is_some_and(|(s, r, _)| s == "True" && r == "PortConflict")
            },
        )
        .expect("a condition");
        assert!(
            message.contains(other) && message.contains("9090") && message.contains("8080"),
            "the message names the other cluster and both port numbers: {message}"
        );
        println!("Conflict message: {message}");
    }
    println!(
        "kubectl apply of a clashing export to Conflict=True on both: {:?}",
        clashed.elapsed()
    );
    // The clash gone, so is the condition.
    api_a.kubectl(&["delete", "serviceexport", "echo"], None);
    api_a.kubectl(&["delete", "service", "echo"], None);
    wait_until(
        "b's ServiceExport echo back to Conflict=False",
        || export_condition(&api_b, "echo", "Conflict"),
        |c| c.as_ref().is_some_and(|(s, _, _)| s == "False"),
    );
    // An export of a Service that does not exist is refused with the reason.
    api_b.apply(&export_manifest("ghost"));
    wait_until(
        "b's ServiceExport ghost Valid=False ServiceNotFound",
        || export_condition(&api_b, "ghost", "Valid"),
        |c| {
            c.as_ref()
                .is_some_and(|(s, r, _)| s == "False" && r == "ServiceNotFound")
        },
    );
    api_b.kubectl(&["get", "serviceexports", "-o", "wide"], None);

    // Deleting the export removes everything in a.
    let deleted = Instant::now();
    api_b.kubectl(&["delete", "serviceexport", "echo"], None);
    wait_until(
        "a's objects for echo removed",
        || api_a.imported(),
        |i| *i == Imported::of(&[]),
    );
    println!(
        "kubectl delete in b to objects gone in a: {:?}",
        deleted.elapsed()
    );
    assert!(
        api_a
            .objects("multicluster.x-k8s.io", "v1alpha1", "serviceimports")
            .is_empty(),
        "the finalizer was removed and the ServiceImport is gone"
    );

    // Watches dropped and history compacted on both servers while exports come and go.
    let disrupt = || {
        api_a.disrupt();
        api_b.disrupt();
    };
    disrupt();
    api_b.apply(&service_manifest("second", b.echo.addr, true));
    disrupt();
    api_b.apply(&export_manifest("echo"));
    api_b.kubectl(&["delete", "serviceexport", "second"], None);
    disrupt();
    api_b.apply(&export_manifest("second"));
    disrupt();
    let recovered = wait_until(
        "a holds exactly the imports of echo and second after the disruptions",
        || api_a.imported(),
        |i| *i == Imported::of(&["echo", "second"]),
    );
    println!("after forced disconnects and 410 Gone: {recovered:?}");
    wait_until(
        "a's controller imports exactly echo and second",
        || {
            a.services()
                .map(|s| s["imports"].as_array().map(Vec::len))
                .ok()
                .flatten()
        },
        |n| *n == Some(2),
    );
    call_until(a.listener(multicloud::cluster::ECHO)?, "b")?;

    // A crash leaves objects behind that no import accounts for (here written by hand while
    // a's controller is down): the restarted controller removes them, finalizer and all.
    w.topo.clusters[0].kill_controller();
    api_a.apply(STALE);
    w.topo.clusters[0].restart_controller()?;
    let after_crash = wait_until(
        "a's stale objects removed after the controller restarted",
        || api_a.imported(),
        |i| *i == Imported::of(&["echo", "second"]),
    );
    println!("after a controller crash: {after_crash:?}");

    // Removing the link removes every import it brought.
    w.topo.clusters[0].unlink("b")?;
    wait_until(
        "a's objects removed after unlinking b",
        || api_a.imported(),
        |i| *i == Imported::of(&[]),
    );
    Ok(())
}

/// Objects as a crashed controller could leave them: an import gone meanwhile.
const STALE: &str = "apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceImport
metadata:
  name: stale
  namespace: default
  labels: {app.kubernetes.io/managed-by: isthmus-controller, multicluster.kubernetes.io/service-name: stale}
  finalizers: [isthmus.dev/cleanup]
spec: {type: ClusterSetIP, ports: [{name: http, protocol: TCP, port: 8080}]}
---
apiVersion: v1
kind: Service
metadata:
  name: derived-stale
  namespace: default
  labels: {app.kubernetes.io/managed-by: isthmus-controller, multicluster.kubernetes.io/service-name: stale}
spec: {selector: {app.kubernetes.io/name: isthmus-gateway}, ports: [{name: http, port: 8080, targetPort: 15000}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: derived-stale-b
  namespace: default
  labels:
    endpointslice.kubernetes.io/managed-by: isthmus-controller
    multicluster.kubernetes.io/service-name: stale
    kubernetes.io/service-name: derived-stale
addressType: IPv4
endpoints: [{addresses: [127.0.0.1]}]
";
