//! Issue-level scenarios for the controller: clusters link with tokens, export and import,
//! and calls cross both gateways with mutual TLS, through failover, crashes and unlinking.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tests::cluster::{self, Cluster, Options};
use tests::echo::call;
use tests::{PATIENCE, run_err};

const ECHO: &str = "echo.default";

/// Calls `addr` until it answers `expected` (bounded); returns how long that took and how many
/// calls failed or answered something else meanwhile.
fn call_until(addr: std::net::SocketAddr, expected: &str) -> (Duration, usize) {
    let start = Instant::now();
    let mut misses = 0;
    loop {
        match call(addr) {
            Ok(body) if body == expected => return (start.elapsed(), misses),
            _ => misses += 1,
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{addr} never answered {expected:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs calls back to back on a thread until stopped; counts successes and failures.
struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(addr: std::net::SocketAddr, expected: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let thread = {
            let (stop, ok, failed, errors) =
                (stop.clone(), ok.clone(), failed.clone(), errors.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match call(addr) {
                        Ok(body) if body == expected => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            errors
                                .lock()
                                .expect("errors lock")
                                .push(format!("{other:?}"));
                        }
                    }
                }
            })
        };
        Self {
            stop,
            ok,
            failed,
            errors,
            thread: Some(thread),
        }
    }

    /// Waits until `n` more calls succeeded.
    fn wait_successes(&self, n: usize) {
        let target = self.ok.load(Ordering::Relaxed) + n;
        let deadline = Instant::now() + PATIENCE;
        while self.ok.load(Ordering::Relaxed) < target {
            assert!(
                Instant::now() < deadline,
                "calls stopped succeeding: {:?}",
                self.errors.lock().expect("errors lock")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop(mut self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("traffic thread");
        }
        let errors = self.errors.lock().expect("errors lock").clone();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            errors,
        )
    }
}

struct World {
    _work: tempfile::TempDir,
    clusters: Vec<Cluster>,
}

/// Clusters sharing one root (`mesh.example`), each with its own intermediate.
fn world(names: &[&str], opts: &[Options]) -> World {
    let work = tempfile::tempdir().expect("tempdir");
    let root = cluster::root(work.path(), "root", "mesh.example");
    let clusters = names
        .iter()
        .zip(
            opts.iter()
                .cloned()
                .chain(std::iter::repeat(Options::default())),
        )
        .map(|(name, opts)| {
            let ca = cluster::intermediate(work.path(), &root, name);
            Cluster::start(work.path(), name, &ca, &opts)
        })
        .collect();
    World {
        _work: work,
        clusters,
    }
}

#[test]
fn linked_clusters_import_an_export_and_calls_cross_both_gateways_with_mtls() {
    let w = world(&["a", "b", "c"], &[]);
    let [a, b, c] = &w.clusters[..] else {
        unreachable!()
    };
    a.join(&b.token());
    c.join(&b.token());

    let exported = Instant::now();
    b.export(ECHO);
    let listener = a.listener(ECHO);
    println!("export to import visible in a: {:?}", exported.elapsed());
    let (took, _) = call_until(listener, "b");
    println!(
        "export to first call answered by b: {:?}",
        exported.elapsed()
    );
    assert!(took < PATIENCE);
    // c imports it too, and neither a nor c sees anything from each other (not linked).
    assert_eq!(call(c.listener(ECHO)).as_deref(), Ok("b"));
    let import = a.services()["imports"][0].clone();
    assert_eq!(import["sources"][0]["cluster"], "b");
    assert_eq!(import["sources"].as_array().map(Vec::len), Some(1));

    // The hop between the gateways is mutual TLS with SPIFFE identities.
    let log = std::fs::read_to_string(a.dir.join("a-gateway.err")).unwrap();
    assert!(
        log.contains("\"peer_spiffe_id\":\"spiffe://mesh.example/isthmus/cluster/b/gateway\""),
        "a's gateway verified b's gateway identity:\n{log}"
    );
    let links = b.links();
    assert_eq!(links.len(), 2, "b is linked with a and c: {links:?}");
}

#[test]
fn calls_prefer_one_cluster_and_fail_over_when_its_gateway_dies() {
    let prefer_b = Options {
        preferences: vec!["b".into(), "c".into()],
        ..Options::default()
    };
    let mut w = world(&["a", "b", "c"], &[prefer_b]);
    {
        let [a, b, c] = &w.clusters[..] else {
            unreachable!()
        };
        a.join(&b.token());
        a.join(&c.token());
        b.export(ECHO);
        c.export(ECHO);
        a.wait_import("imported from b and c", ECHO, |i| {
            i.is_some_and(|i| i["sources"].as_array().map(Vec::len) == Some(2))
        });
        let listener = a.listener(ECHO);
        call_until(listener, "b");
        for _ in 0..5 {
            assert_eq!(
                call(listener).as_deref(),
                Ok("b"),
                "the preferred cluster serves"
            );
        }
    }
    let listener = w.clusters[0].listener(ECHO);
    let killed = Instant::now();
    w.clusters[1].kill_gateway();
    let (gap, failed) = call_until(listener, "c");
    println!(
        "failover b -> c: first call answered by c {gap:?} after b's gateway died ({failed} calls failed meanwhile)"
    );
    for _ in 0..5 {
        assert_eq!(call(listener).as_deref(), Ok("c"));
    }
    assert!(killed.elapsed() < PATIENCE);
}

#[test]
fn a_killed_controllers_imports_are_served_until_the_lease_lapses_and_return_on_restart() {
    let mut w = world(&["a", "b"], &[]);
    {
        let [a, b] = &w.clusters[..] else {
            unreachable!()
        };
        a.join(&b.token());
        b.export(ECHO);
        call_until(a.listener(ECHO), "b");
    }
    let listener = w.clusters[0].listener(ECHO);
    w.clusters[1].kill_controller();
    // b's gateway still serves: until the lease lapses, a keeps calling it.
    assert_eq!(call(listener).as_deref(), Ok("b"));
    let a = &w.clusters[0];
    let withdrawn = Instant::now();
    a.wait_import("import from the silent b withdrawn", ECHO, |i| i.is_none());
    println!(
        "import withdrawn {:?} after b's controller was killed",
        withdrawn.elapsed()
    );
    a.wait_links("b's lease expired", |l| l[0]["lease_live"] == false);

    // Restart from the state directory: no new token, the link resumes and the import returns.
    w.clusters[1].restart_controller();
    let a = &w.clusters[0];
    a.wait_links("link with b reconnected", |l| l[0]["state"] == "connected");
    let listener = a.listener(ECHO);
    call_until(listener, "b");
    assert_eq!(a.links().len(), 1);
}

#[test]
fn restarting_either_controller_never_fails_a_call() {
    let mut w = world(&["a", "b"], &[]);
    let listener = {
        let [a, b] = &w.clusters[..] else {
            unreachable!()
        };
        a.join(&b.token());
        b.export(ECHO);
        let l = a.listener(ECHO);
        call_until(l, "b");
        l
    };
    let traffic = Traffic::start(listener, "b");
    traffic.wait_successes(20);
    for i in [0, 1, 0] {
        w.clusters[i].restart_controller();
        w.clusters[0].wait_links("link back up", |l| l[0]["state"] == "connected");
        traffic.wait_successes(20);
    }
    let (ok, failed, errors) = traffic.stop();
    println!("{ok} calls across three controller restarts, {failed} failed");
    assert_eq!(
        failed, 0,
        "calls failed during controller restarts: {errors:?}"
    );
}

#[test]
fn tokens_are_single_use_tamper_evident_and_expire() {
    let w = world(&["a", "b", "c"], &[]);
    let [a, b, c] = &w.clusters[..] else {
        unreachable!()
    };
    let token = b.token();
    a.join(&token);

    let (code, err) = run_err(&mut c.ctl(&["link", "join", &token]));
    assert_eq!(code, 1);
    assert!(err.contains("already used by cluster a"), "reuse: {err}");

    // Flip one character of the payload: caught locally by the checksum.
    let mut bytes = b.token().into_bytes();
    let i = 20;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    let (_, err) = run_err(&mut c.ctl(&["link", "join", std::str::from_utf8(&bytes).unwrap()]));
    assert!(
        err.contains("corrupted") || err.contains("checksum"),
        "tampered: {err}"
    );

    // A one-second token, presented after its expiry (the behaviour under test is wall time).
    let short = tests::run_ok(&mut b.ctl(&["link", "token", "--ttl", "1s"]))
        .trim()
        .to_owned();
    std::thread::sleep(Duration::from_millis(1500));
    let (_, err) = run_err(&mut c.ctl(&["link", "join", &short]));
    assert!(err.contains("expired"), "expired: {err}");
    assert!(c.links().is_empty(), "no link was made by refused tokens");
}

#[test]
fn clusters_with_different_roots_link_by_bundle_exchange_and_call_both_ways() {
    let work = tempfile::tempdir().expect("tempdir");
    let root_a = cluster::root(work.path(), "root-a", "aws.example");
    let root_b = cluster::root(work.path(), "root-b", "onprem.example");
    let a = Cluster::start(
        work.path(),
        "aws",
        &cluster::intermediate(work.path(), &root_a, "aws"),
        &Options::default(),
    );
    let b = Cluster::start(
        work.path(),
        "onprem",
        &cluster::intermediate(work.path(), &root_b, "onprem"),
        &Options::default(),
    );
    a.join(&b.token());
    a.export(ECHO);
    b.export(ECHO);
    call_until(a.listener(ECHO), "onprem");
    call_until(b.listener(ECHO), "aws");
    let links = a.links();
    assert_eq!(links[0]["trust_domain"], "onprem.example");
}

#[test]
fn unlink_removes_imports_and_routes_on_both_sides() {
    let w = world(&["a", "b"], &[]);
    let [a, b] = &w.clusters[..] else {
        unreachable!()
    };
    a.join(&b.token());
    a.export(ECHO);
    b.export(ECHO);
    let from_a = a.listener(ECHO);
    let from_b = b.listener(ECHO);
    call_until(from_a, "b");
    call_until(from_b, "a");

    tests::run_ok(&mut b.ctl(&["unlink", "a"]));
    a.wait_links("a dropped its side", <[_]>::is_empty);
    assert!(b.links().is_empty());
    a.wait_import("a's import from b removed", ECHO, |i| i.is_none());
    b.wait_import("b's import from a removed", ECHO, |i| i.is_none());
    // The egress listeners are gone and the routes too: calls fail on both sides.
    for (addr, who) in [(from_a, "a"), (from_b, "b")] {
        let deadline = Instant::now() + PATIENCE;
        while call(addr).is_ok() {
            assert!(
                Instant::now() < deadline,
                "{who} can still call its former peer"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn cli_errors_name_the_problem_and_exit_with_stable_codes() {
    use std::process::Command;
    let ctl = || {
        let mut cmd = Command::new(tests::bin("federation-ctl"));
        cmd.env_remove("ISTHMUS_CONTROLLER");
        cmd
    };
    let (code, err) = run_err(ctl().arg("links"));
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("--controller") && err.contains("ISTHMUS_CONTROLLER"),
        "{err}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("nothing.sock");
    let (code, err) = run_err(ctl().arg("--controller").arg(&sock).arg("services"));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot reach the controller"), "{err}");

    let config = dir.path().join("controller.yaml");
    std::fs::write(&config, "cluster: Not_A_Label\n").expect("write config");
    let (code, err) = run_err(ctl().arg("controller").arg("--config").arg(&config));
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("cluster"), "{err}");

    // A running controller refuses bad arguments with the reason, and keeps serving.
    let w = world(&["a"], &[]);
    let a = &w.clusters[0];
    let (code, err) = run_err(&mut a.ctl(&["export", "nope"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("NAME.NAMESPACE"), "{err}");
    let (_, err) = run_err(&mut a.ctl(&["unlink", "ghost"]));
    assert!(err.contains("no link with ghost"), "{err}");
    let (_, err) = run_err(&mut a.ctl(&["link", "join", "isthmus1.garbage"]));
    assert!(err.contains("token"), "{err}");
    assert!(a.links().is_empty());
}
