//! Issue-level scenarios for the controller: clusters link with tokens, export and import,
//! and calls cross both gateways with mutual TLS, through failover, crashes and unlinking.

use std::time::{Duration, Instant};

use multicloud::cluster::{ECHO, Options};
use multicloud::echo::call;
use multicloud::shell::Shell;
use multicloud::topology::Topology;
use multicloud::traffic::{Traffic, call_until, call_until_refused};
use multicloud::{PATIENCE, run_err, run_ok};

use crate::security::metric;
use crate::world::{Result, echo_from, import_echo_from_two, world};

#[test]
fn linked_clusters_import_an_export_and_calls_cross_both_gateways_with_mtls() -> Result {
    let w = world(&["a", "b", "c"], &[])?;
    let [a, b, c] = &w.topo.clusters[..] else {
        unreachable!()
    };
    a.join(&b.token()?)?;
    c.join(&b.token()?)?;

    let exported = Instant::now();
    b.export(ECHO)?;
    let listener = a.listener(ECHO)?;
    println!("export to import visible in a: {:?}", exported.elapsed());
    let (took, _) = call_until(listener, "b")?;
    println!(
        "export to first call answered by b: {:?}",
        exported.elapsed()
    );
    assert!(took < PATIENCE);
    // c imports it too, and neither a nor c sees anything from each other (not linked).
    assert_eq!(call(c.listener(ECHO)?).as_deref(), Ok("b"));
    let import = a.services()?["imports"][0].clone();
    assert_eq!(import["sources"][0]["cluster"], "b");
    assert_eq!(import["sources"].as_array().map(Vec::len), Some(1));

    // The hop between the gateways is mutual TLS with SPIFFE identities.
    let log = std::fs::read_to_string(a.gateway.stderr_log()).unwrap();
    assert!(
        log.contains("\"peer_spiffe_id\":\"spiffe://mesh.example/isthmus/cluster/b/gateway\""),
        "a's gateway verified b's gateway identity:\n{log}"
    );
    let links = b.links()?;
    assert_eq!(links.len(), 2, "b is linked with a and c: {links:?}");
    Ok(())
}

#[test]
fn calls_prefer_one_cluster_and_fail_over_when_its_gateway_dies() -> Result {
    let prefer_b = Options {
        preferences: vec!["b".into(), "c".into()],
        ..Options::default()
    };
    let mut w = world(&["a", "b", "c"], &[prefer_b])?;
    {
        let [a, b, c] = &w.topo.clusters[..] else {
            unreachable!()
        };
        import_echo_from_two(a, b, c)?;
        let listener = a.listener(ECHO)?;
        call_until(listener, "b")?;
        for _ in 0..5 {
            assert_eq!(
                call(listener).as_deref(),
                Ok("b"),
                "the preferred cluster serves"
            );
        }
    }
    let listener = w.topo.clusters[0].listener(ECHO)?;
    let killed = Instant::now();
    w.topo.clusters[1].kill_gateway();
    let (gap, failed) = call_until(listener, "c")?;
    println!(
        "failover b -> c: first call answered by c {gap:?} after b's gateway died ({failed} calls failed meanwhile)"
    );
    for _ in 0..5 {
        assert_eq!(call(listener).as_deref(), Ok("c"));
    }
    assert!(killed.elapsed() < PATIENCE);
    Ok(())
}

#[test]
fn a_killed_controllers_imports_are_served_until_the_lease_lapses_and_return_on_restart() -> Result
{
    let mut w = world(&["a", "b"], &[])?;
    let listener = {
        let [a, b] = &w.topo.clusters[..] else {
            unreachable!()
        };
        echo_from(a, b)?
    };
    w.topo.clusters[1].kill_controller();
    // b's gateway still serves: until the lease lapses, a keeps calling it.
    assert_eq!(call(listener).as_deref(), Ok("b"));
    let a = &w.topo.clusters[0];
    let withdrawn = Instant::now();
    a.wait_import("import from the silent b withdrawn", ECHO, |i| i.is_none())?;
    println!(
        "import withdrawn {:?} after b's controller was killed",
        withdrawn.elapsed()
    );
    a.wait_links("b's lease expired", |l| l[0]["lease_live"] == false)?;

    // Restart from the state directory: no new token, the link resumes and the import returns.
    w.topo.clusters[1].restart_controller()?;
    let a = &w.topo.clusters[0];
    a.wait_links("link with b reconnected", |l| l[0]["state"] == "connected")?;
    let listener = a.listener(ECHO)?;
    call_until(listener, "b")?;
    assert_eq!(a.links()?.len(), 1);
    Ok(())
}

#[test]
fn restarting_either_controller_never_fails_a_call() -> Result {
    let mut w = world(&["a", "b"], &[])?;
    let listener = {
        let [a, b] = &w.topo.clusters[..] else {
            unreachable!()
        };
        echo_from(a, b)?
    };
    let traffic = Traffic::start(listener, "b");
    traffic.wait_successes(20)?;
    for i in [0, 1, 0] {
        w.topo.clusters[i].restart_controller()?;
        w.topo.clusters[0].wait_links("link back up", |l| l[0]["state"] == "connected")?;
        traffic.wait_successes(20)?;
    }
    let counts = traffic.stop();
    println!(
        "{} calls across three controller restarts, {} failed",
        counts.ok, counts.failed
    );
    assert_eq!(
        counts.failed, 0,
        "calls failed during controller restarts: {:?}",
        counts.errors
    );
    Ok(())
}

#[test]
fn tokens_are_single_use_tamper_evident_and_expire() -> Result {
    let w = world(&["a", "b", "c"], &[])?;
    let [a, b, c] = &w.topo.clusters[..] else {
        unreachable!()
    };
    let token = b.token()?;
    a.join(&token)?;

    let (code, err) = run_err(&mut c.ctl(&["link", "join", token.as_str()])?)?;
    assert_eq!(code, 1);
    assert!(err.contains("already used by cluster a"), "reuse: {err}");

    // Flip one character of the payload: caught locally by the checksum.
    let mut bytes = b.token()?.value.into_bytes();
    let i = 20;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    let (_, err) = run_err(&mut c.ctl(&["link", "join", std::str::from_utf8(&bytes).unwrap()])?)?;
    assert!(
        err.contains("corrupted") || err.contains("checksum"),
        "tampered: {err}"
    );

    // A one-second token, presented after its expiry (the behaviour under test is wall time).
    let short = run_ok(&mut b.ctl(&["link", "token", "--ttl", "1s"])?)?
        .trim()
        .to_owned();
    std::thread::sleep(Duration::from_millis(1500));
    let (_, err) = run_err(&mut c.ctl(&["link", "join", &short])?)?;
    assert!(err.contains("expired"), "expired: {err}");
    assert!(c.links()?.is_empty(), "no link was made by refused tokens");
    Ok(())
}

#[test]
fn clusters_with_different_roots_link_by_bundle_exchange_and_call_both_ways() -> Result {
    let work = tempfile::tempdir().expect("tempdir");
    let mut topo = Topology::new(Shell::new(work.path())?);
    topo.start_with_own_roots(&[("aws", "aws.example"), ("onprem", "onprem.example")])?;
    let [a, b] = &topo.clusters[..] else {
        unreachable!()
    };
    a.join(&b.token()?)?;
    a.export(ECHO)?;
    b.export(ECHO)?;
    call_until(a.listener(ECHO)?, "onprem")?;
    call_until(b.listener(ECHO)?, "aws")?;
    let links = a.links()?;
    assert_eq!(links[0]["trust_domain"], "onprem.example");
    Ok(())
}

#[test]
fn unlink_removes_imports_and_routes_on_both_sides() -> Result {
    let w = world(&["a", "b"], &[])?;
    let [a, b] = &w.topo.clusters[..] else {
        unreachable!()
    };
    a.join(&b.token()?)?;
    a.export(ECHO)?;
    b.export(ECHO)?;
    let from_a = a.listener(ECHO)?;
    let from_b = b.listener(ECHO)?;
    call_until(from_a, "b")?;
    call_until(from_b, "a")?;

    b.unlink("a")?;
    a.wait_links("a dropped its side", <[_]>::is_empty)?;
    assert!(b.links()?.is_empty());
    a.wait_import("a's import from b removed", ECHO, |i| i.is_none())?;
    b.wait_import("b's import from a removed", ECHO, |i| i.is_none())?;
    // The egress listeners are gone and the routes too: calls fail on both sides.
    call_until_refused(from_a)?;
    call_until_refused(from_b)?;
    Ok(())
}

#[test]
fn cli_errors_name_the_problem_and_exit_with_stable_codes() -> Result {
    use std::process::Command;
    let ctl = || -> Result<Command> {
        let mut cmd = Command::new(multicloud::bin("federation-ctl")?);
        cmd.env_remove("ISTHMUS_CONTROLLER");
        Ok(cmd)
    };
    let (code, err) = run_err(ctl()?.arg("links"))?;
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("--controller") && err.contains("ISTHMUS_CONTROLLER"),
        "{err}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("nothing.sock");
    let (code, err) = run_err(ctl()?.arg("--controller").arg(&sock).arg("services"))?;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot reach the controller"), "{err}");

    let config = dir.path().join("controller.yaml");
    std::fs::write(&config, "cluster: Not_A_Label\n").expect("write config");
    let (code, err) = run_err(ctl()?.arg("controller").arg("--config").arg(&config))?;
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("cluster"), "{err}");

    // A running controller refuses bad arguments with the reason, and keeps serving.
    let w = world(&["a"], &[])?;
    let a = &w.topo.clusters[0];
    let (code, err) = run_err(&mut a.ctl(&["export", "nope"])?)?;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("NAME.NAMESPACE"), "{err}");
    let (_, err) = run_err(&mut a.ctl(&["unlink", "ghost"])?)?;
    assert!(err.contains("no link with ghost"), "{err}");
    let (_, err) = run_err(&mut a.ctl(&["link", "join", "isthmus1.garbage"])?)?;
    assert!(err.contains("token"), "{err}");
    assert!(a.links()?.is_empty());
    Ok(())
}

#[test]
fn sessions_between_gateways_outlive_a_config_push() -> Result {
    let w = world(&["a", "b"], &[])?;
    let [a, b] = &w.topo.clusters[..] else {
        unreachable!()
    };
    let listener = echo_from(a, b)?;
    let resumed = || {
        metric(
            a.admin,
            "federation_gateway_tls_sessions_resumed_total",
            &[],
        )
    };
    let applied = || {
        let name = "federation_gateway_controller_configs_total";
        metric(a.admin, name, &["result=\"applied\""])
    };
    // Call until one makes a full handshake (each gives two sessions): a then holds a session.
    let full = (0..4).any(|_| {
        let before = resumed();
        assert_eq!(call(listener).as_deref(), Ok("b"));
        resumed() == before
    });
    assert!(full, "no full handshake in four calls");

    // b exports another service: the controller pushes a's gateway a config with new egress
    // listeners and the same identity and bundle map.
    let pushes = applied();
    b.add_and_export(&["audit"])?;
    a.listener("audit.default")?;
    a.wait_for("a's gateway applied the push", || Ok(applied() > pushes))?;
    let before = resumed();
    assert_eq!(call(listener).as_deref(), Ok("b"));
    assert_eq!(
        resumed(),
        before + 1.0,
        "the first call after the push resumed a session made before it"
    );
    Ok(())
}
