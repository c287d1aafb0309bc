//! Leader election between controller replicas with a `coordination.k8s.io` Lease in the
//! in-repo API server: one replica leads and serves, the other waits without peering; killed,
//! the leader is replaced by the standby, which restores the link from the `ClusterLink` and the
//! state Secret, and calls through the cluster's gateway work again.
//!
//! Both replicas name the same API socket (only the leader binds it), so the gateway reconnects
//! to whichever replica leads without being told.

use std::path::Path;
use std::time::{Duration, Instant};

use federation_ctl::config::LeaderElection;
use federation_ctl::kube::elector::{Attempt, LeaseElector};
use kube::api::{Api, PostParams};
use kube_standin::{Options as StandInOptions, StandIn};
use multicloud::Error;
use multicloud::cluster::{ECHO, Options};
use multicloud::traffic::call_until;
use serde_json::Value;

use crate::world::{Result, world};

const NAMESPACE: &str = "default";
const LEASE: &str = "isthmus-a";
/// Short timings, so the takeover happens within the test's seconds.
const LEASE_DURATION: Duration = Duration::from_secs(3);
const RENEW_DEADLINE: Duration = Duration::from_secs(2);
const RETRY_PERIOD: Duration = Duration::from_millis(500);

/// An in-process API server with the CRDs installed, and its kubeconfig in `dir`.
fn standin(rt: &tokio::runtime::Runtime, dir: &Path) -> (StandIn, kube::Client) {
    rt.block_on(async {
        let standin = StandIn::start(StandInOptions::default())
            .await
            .expect("the stand-in API server starts");
        standin
            .write_kubeconfig(&dir.join("kubeconfig"))
            .expect("write the kubeconfig");
        let client = client(&standin).await;
        let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
            Api::all(client.clone());
        for crd in federation_ctl::kube::crds() {
            crds.create(&PostParams::default(), &crd)
                .await
                .expect("install the CRDs");
        }
        (standin, client)
    })
}

async fn client(standin: &StandIn) -> kube::Client {
    let kubeconfig =
        kube::config::Kubeconfig::from_yaml(&standin.kubeconfig()).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kubeconfig loads");
    kube::Client::try_from(config).expect("client builds")
}

/// The Lease's holder, as the API server has it.
fn holder(standin: &StandIn) -> Option<String> {
    standin
        .objects("coordination.k8s.io", "v1", "leases", Some(NAMESPACE))
        .into_iter()
        .find(|l| l["metadata"]["name"] == LEASE)
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
}

/// How many configs the cluster's gateway has applied so far.
fn gateway_configs(c: &multicloud::cluster::Cluster) -> usize {
    std::fs::read_to_string(c.gateway.stdout_log())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "config" && e["result"] == "applied")
        .count()
}

/// Polls `ok` every 20 ms until it holds or `bound` passes; how long it took.
fn wait_until(what: &str, bound: Duration, mut ok: impl FnMut() -> bool) -> Result<Duration> {
    let every = Duration::from_millis(20);
    match multicloud::poll(bound, every, || Ok::<_, Error>(ok().then_some(())))? {
        Some(((), took)) => Ok(took),
        None => Err(Error::Timeout {
            what: what.to_owned(),
            logs: String::new(),
        }),
    }
}

#[test]
fn a_standby_replica_takes_over_from_a_killed_leader_and_the_link_works_again() -> Result {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let kdir = tempfile::tempdir().expect("tempdir");
    let (standin, _client) = standin(&rt, kdir.path());
    let election = Options {
        controller_extra: format!(
            "leader_election: {{ kubeconfig: {}, namespace: {NAMESPACE}, lease_name: {LEASE}, lease_duration: {}s, renew_deadline: {}s, retry_period: {}ms }}\n",
            kdir.path().join("kubeconfig").display(),
            LEASE_DURATION.as_secs(),
            RENEW_DEADLINE.as_secs(),
            RETRY_PERIOD.as_millis(),
        ),
        ..Options::default()
    };
    let mut w = world(&["a", "b"], &[election])?;
    let [a, b] = &mut w.topo.clusters[..] else {
        unreachable!()
    };

    // The first replica found the Lease free and leads; the second waits.
    let leader = a
        .controller
        .last_event("leading")
        .and_then(|e| e["identity"].as_str().map(str::to_owned))
        .expect("the first replica announced that it leads");
    assert_eq!(holder(&standin).as_deref(), Some(leader.as_str()));
    let standby = a.spawn_replica("controller-2", "state-2")?;
    let waiting = standby.wait_event("standby", |_| true)?;
    assert_eq!(waiting["holder"], leader.as_str(), "{waiting}");
    let standby_id = waiting["identity"].as_str().unwrap_or_default().to_owned();
    assert_ne!(standby_id, leader);

    a.join(&b.token()?)?;
    b.export(ECHO)?;
    let listener = a.listener(ECHO)?;
    call_until(listener, "b")?;

    // The standby neither serves nor peers: no `ready`, no listener, nothing in its state.
    assert!(standby.is_alive());
    assert!(standby.last_event("ready").is_none());
    assert_eq!(holder(&standin).as_deref(), Some(leader.as_str()));
    let standby_links = a.dir.join("state-2").join("links");
    assert!(
        std::fs::read_dir(&standby_links).map_or(true, |mut d| d.next().is_none()),
        "the standby holds no link yet"
    );
    assert_eq!(
        b.links()?.len(),
        1,
        "b is linked with a's leader only, once"
    );

    // The link and the records reach the API (the mirror is asynchronous).
    let mirrored = |standin: &StandIn| {
        let link = standin
            .objects("isthmus.dev", "v1alpha1", "clusterlinks", Some(NAMESPACE))
            .into_iter()
            .find(|l| l["metadata"]["name"] == "b");
        let state = standin
            .objects("", "v1", "secrets", Some(NAMESPACE))
            .into_iter()
            .find(|s| s["metadata"]["name"] == "isthmus-controller-state");
        let keys = |s: &Value| {
            ["egress.json", "peering-port.json", "trust.json"]
                .iter()
                .all(|k| s["data"][k].is_string())
        };
        link.is_some_and(|l| l["status"]["state"] == "Connected") && state.is_some_and(|s| keys(&s))
    };
    let took = wait_until(
        "the link and the state records mirrored into the API",
        multicloud::PATIENCE,
        || mirrored(&standin),
    )
    .map_err(|e| {
        let names = |plural: &str, group: &str, version: &str| {
            standin
                .objects(group, version, plural, Some(NAMESPACE))
                .iter()
                .map(|o| format!("{} status={}", o["metadata"]["name"], o["status"]))
                .collect::<Vec<_>>()
        };
        let keys: Vec<String> = standin
            .objects("", "v1", "secrets", Some(NAMESPACE))
            .iter()
            .map(|s| {
                format!(
                    "{}: {:?}",
                    s["metadata"]["name"],
                    s["data"]
                        .as_object()
                        .map(|d| d.keys().cloned().collect::<Vec<_>>())
                )
            })
            .collect();
        Error::Timeout {
            what: format!(
                "{e}; clusterlinks {:?}, secrets {keys:?}",
                names("clusterlinks", "isthmus.dev", "v1alpha1")
            ),
            logs: a.controller.logs(),
        }
    })?;
    println!("link mirrored into the API {took:?} after the first call");

    // SIGKILL the leader: the standby takes the Lease once it expires.
    let configs_before = gateway_configs(a);
    let killed = Instant::now();
    a.kill_controller();
    // The standby sees the last renewal up to one retry period late, then waits a lease
    // duration and retries every period; the rest is slack for a loaded machine.
    let bound = LEASE_DURATION + 2 * RETRY_PERIOD + Duration::from_secs(10);
    let takeover = wait_until("the standby holds the Lease", bound, || {
        holder(&standin).as_deref() == Some(standby_id.as_str())
    })?;
    println!(
        "takeover: the standby held the Lease {takeover:?} after the leader was killed (lease_duration {LEASE_DURATION:?}, retry_period {RETRY_PERIOD:?})"
    );
    let old = a.promote(standby)?;
    let ready = a.controller.last_event("ready").expect("ready");
    assert_eq!(ready["leader"], standby_id.as_str(), "{ready}");
    let status = a.show(&["status", "-o", "json"])?;
    let status: Value = serde_json::from_str(&status).expect("status -o json");
    assert_eq!(
        status["leader"],
        standby_id.as_str(),
        "status names the new leader"
    );
    println!(
        "the new leader served {:?} after the kill",
        killed.elapsed()
    );

    // It restored the link from the API into its empty state directory, dialed b again, and
    // calls through a's gateway reach b's endpoint on the same local listener.
    assert!(
        standby_links.join("b.json").is_file(),
        "the link was restored into the new leader's state directory"
    );
    a.wait_links("the restored link with b connected", |links| {
        links
            .iter()
            .any(|l| l["peer"] == "b" && l["state"] == "connected")
    })?;
    // The gateway reconnected to the new leader on the shared socket and took its config.
    a.wait_for("a's gateway applied a config from the new leader", || {
        Ok(gateway_configs(a) > configs_before)
    })?;
    let (gap, failed) = call_until(a.listener(ECHO)?, "b")?;
    assert_eq!(a.listener(ECHO)?, listener, "the egress port was restored");
    // The API token the replicas use never reaches their output.
    let kubeconfig = std::fs::read_to_string(kdir.path().join("kubeconfig")).expect("kubeconfig");
    let token = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .expect("the kubeconfig holds a token")
        .trim_matches('"');
    for p in [&a.controller, &old] {
        for log in [p.stdout_log(), p.stderr_log()] {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            assert!(
                !text.contains(token),
                "{} shows the API token",
                log.display()
            );
        }
    }
    println!(
        "calls through a's gateway answered by b again {:?} after the kill ({gap:?} of polling, {failed} failed calls)",
        killed.elapsed()
    );

    // The ClusterLink's status follows the link: b's controller gone, it reads Disconnected.
    b.kill_controller();
    let link_state = || {
        standin
            .objects("isthmus.dev", "v1alpha1", "clusterlinks", Some(NAMESPACE))
            .into_iter()
            .find(|l| l["metadata"]["name"] == "b")
            .map(|l| l["status"]["state"].clone())
    };
    wait_until(
        "the ClusterLink b reads Disconnected",
        multicloud::PATIENCE,
        || link_state() == Some(Value::from("Disconnected")),
    )?;
    Ok(())
}

fn election(identity: &str) -> LeaderElection {
    LeaderElection {
        kubeconfig: None,
        namespace: NAMESPACE.to_owned(),
        lease_name: "race".to_owned(),
        identity: identity.to_owned(),
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_secs(1),
        retry_period: Duration::from_millis(100),
    }
}

#[test]
fn two_electors_racing_on_one_lease_never_both_hold_it() {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let kdir = tempfile::tempdir().expect("tempdir");
    let (_standin, client) = standin(&rt, kdir.path());
    rt.block_on(async {
        let mut x = LeaseElector::new(client.clone(), &election("x"));
        let mut y = LeaseElector::new(client.clone(), &election("y"));
        // Both find no Lease and create it at once: exactly one wins.
        let (rx, ry) = tokio::join!(x.try_once(), y.try_once());
        let (rx, ry) = (
            rx.expect("x reaches the API"),
            ry.expect("y reaches the API"),
        );
        let winners = [&rx, &ry]
            .iter()
            .filter(|r| ***r == Attempt::Leading)
            .count();
        assert_eq!(winners, 1, "one creation wins: x {rx:?}, y {ry:?}");
        let (mut leader, mut other) = if rx == Attempt::Leading {
            (x, y)
        } else {
            (y, x)
        };
        // Racing every retry period: the leader renews, the other waits.
        for round in 0..10 {
            let (rl, ro) = tokio::join!(leader.try_once(), other.try_once());
            let (rl, ro) = (rl.expect("API"), ro.expect("API"));
            assert!(
                !(leader.is_leader() && other.is_leader()),
                "round {round}: both lead ({rl:?}, {ro:?})"
            );
            assert_eq!(rl, Attempt::Leading, "round {round}");
            assert!(
                matches!(ro, Attempt::Standby { ref holder } if holder == leader.identity()),
                "round {round}: {ro:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The leader stops renewing: the other takes over only once the old one's renew
        // deadline has passed.
        let stopped = Instant::now();
        loop {
            let r = other.try_once().await.expect("API");
            assert!(
                !(leader.is_leader() && other.is_leader()),
                "both lead after {:?}",
                stopped.elapsed()
            );
            if r == Attempt::Leading {
                break;
            }
            assert!(
                stopped.elapsed() < Duration::from_secs(30),
                "the other never took over a Lease nobody renews"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!leader.is_leader(), "the old leader's deadline passed");
        println!(
            "takeover of an unrenewed Lease after {:?}",
            stopped.elapsed()
        );
        // The old leader, back, finds the Lease held and stays out.
        let back = leader.try_once().await.expect("API");
        assert!(
            matches!(back, Attempt::Standby { ref holder } if holder == other.identity()),
            "{back:?}"
        );
        assert!(!leader.is_leader() && other.is_leader());
        // The old leader, renewing again, learns at its first attempt that it no longer leads.
        let lost = tokio::time::timeout(Duration::from_secs(30), leader.keep())
            .await
            .expect("keep returns once leadership is lost");
        assert!(
            lost.to_string()
                .starts_with("lost the Lease default/race: not renewed"),
            "{lost}"
        );
    });
}
