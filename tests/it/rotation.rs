//! Root rotation under continuous traffic: the shared root of `aws` and `gcp` is replaced
//! through all three `trust-bundle rotate` stages while `aws` calls an export in `gcp` (same
//! root) and one in `onprem` (a root of its own, federated over the link), and not one call
//! fails.

use multicloud::Error;
use multicloud::cluster::{ECHO, Options};
use multicloud::rotation::{der_base64, presented_chain, root_fingerprints, verify_chain};
use multicloud::shell::Shell;
use multicloud::topology::Topology;
use multicloud::traffic::{Counts, Traffic, call_until};

type Result<T = (), E = Error> = std::result::Result<T, E>;

/// Successful calls on each stream between stages: proof that traffic kept flowing.
const CALLS_PER_STAGE: usize = 20;

#[test]
fn rotating_the_shared_root_under_traffic_fails_no_call_and_retires_the_old_root() -> Result {
    let work = tempfile::tempdir().expect("tempdir");
    let mut topo = Topology::new(Shell::new(work.path())?);
    let mesh = topo.root("root", "mesh.example")?;
    let own = topo.root("onprem-root", "onprem.example")?;
    let cas = [
        topo.intermediate(&mesh, "aws")?,
        topo.intermediate(&mesh, "gcp")?,
    ];
    let onprem_ca = topo.intermediate(&own, "onprem")?;
    topo.start("aws", &cas[0], &Options::default())?;
    topo.start("gcp", &cas[1], &Options::default())?;
    topo.start("onprem", &onprem_ca, &Options::default())?;
    let (aws, gcp, onprem) = (topo.get("aws")?, topo.get("gcp")?, topo.get("onprem")?);
    aws.join(&gcp.token()?)?;
    aws.join(&onprem.token()?)?;
    gcp.export(ECHO)?;
    onprem.add_and_export(&["ledger"])?;
    // aws exports too, so its gateway serves a route a handshake can be checked on.
    aws.export(ECHO)?;
    let to_gcp = aws.listener(ECHO)?;
    let to_onprem = aws.listener("ledger.default")?;
    call_until(to_gcp, "gcp")?;
    call_until(to_onprem, "onprem")?;

    let traffic = [
        Traffic::start(to_gcp, "gcp"),
        Traffic::start(to_onprem, "onprem"),
    ];
    let flowing = |traffic: &[Traffic]| -> Result {
        traffic
            .iter()
            .try_for_each(|t| t.wait_successes(CALLS_PER_STAGE))
    };
    flowing(&traffic)?;

    let new = topo.rotate_prepare(&mesh, "root2")?;
    flowing(&traffic)?;
    for ca in &cas {
        topo.rotate_activate(&new, ca)?;
        flowing(&traffic)?;
    }
    topo.rotate_retire(&mesh)?;
    flowing(&traffic)?;

    let [gcp_calls, onprem_calls] = traffic.map(Traffic::stop);
    println!(
        "calls during the rotation: to gcp {} ok / {} failed, to onprem {} ok / {} failed",
        gcp_calls.ok, gcp_calls.failed, onprem_calls.ok, onprem_calls.failed
    );
    assert_no_failures("aws -> gcp (shared root)", &gcp_calls);
    assert_no_failures("aws -> onprem (own root)", &onprem_calls);

    // What peers receive: each mesh.example gateway's chain verifies to the new root and not
    // to the old one (openssl, from a real handshake).
    let new_root = work.path().join("root2/cert.pem");
    let old_root = work.path().join("root/cert.pem");
    for name in ["aws", "gcp"] {
        let cluster = topo.get(name)?;
        let sni = format!("8080.echo.default.{name}.v1.isthmus.internal");
        let chain = presented_chain(cluster.ingress, &sni)?;
        if let Err(why) = verify_chain(work.path(), &new_root, &chain) {
            panic!("{name}'s gateway chain does not verify to the new root: {why}");
        }
        assert!(
            verify_chain(work.path(), &old_root, &chain).is_err(),
            "{name}'s gateway chain still verifies to the old root"
        );
    }
    // onprem's own root was never touched: its chain still verifies to it.
    let chain = presented_chain(
        topo.get("onprem")?.ingress,
        "8080.ledger.default.onprem.v1.isthmus.internal",
    )?;
    if let Err(why) = verify_chain(
        work.path(),
        &work.path().join("onprem-root/cert.pem"),
        &chain,
    ) {
        panic!("onprem's gateway chain does not verify to its own root: {why}");
    }

    // What everyone trusts: every gateway's bundle of mesh.example holds the new root only, and
    // so do the peers' records of it (onprem learned it over the link with aws only).
    let new_fp = topo.fingerprint(&new.dir.join("cert.pem"))?;
    for cluster in &topo.clusters {
        let tls = &cluster.config_dump()?["tls"];
        assert_eq!(
            root_fingerprints(tls, "mesh.example"),
            vec![new_fp.clone()],
            "{}'s gateway trusts exactly the new mesh.example root: {tls:#}",
            cluster.name
        );
    }
    let old_der = der_base64(&old_root)?;
    let new_der = der_base64(&new_root)?;
    for (holder, peer) in [("onprem", "aws"), ("aws", "gcp"), ("gcp", "aws")] {
        let record = topo
            .get(holder)?
            .dir
            .join(format!("state/links/{peer}.json"));
        let text = std::fs::read_to_string(&record).expect("link record");
        assert!(
            text.contains(&new_der) && !text.contains(&old_der),
            "{holder}'s record of {peer}'s bundle holds the new root only: {text}"
        );
        let json: serde_json::Value = serde_json::from_str(&text).expect("link record JSON");
        assert!(
            json["bundle_sequence"].as_u64() >= Some(3),
            "{holder} applied {peer}'s sequenced updates (prepare, activate, retire): {json}"
        );
    }
    Ok(())
}

#[track_caller]
fn assert_no_failures(what: &str, counts: &Counts) {
    assert!(
        counts.failed == 0,
        "{what}: {} of {} calls failed during the rotation: {:?}",
        counts.failed,
        counts.ok + counts.failed,
        counts.errors
    );
}

#[test]
fn a_broken_trust_change_is_refused_and_the_material_in_force_stays() -> Result {
    let work = tempfile::tempdir().expect("tempdir");
    let mut topo = Topology::new(Shell::new(work.path())?);
    let mesh = topo.root("root", "mesh.example")?;
    let a_ca = topo.intermediate(&mesh, "a")?;
    let b_ca = topo.intermediate(&mesh, "b")?;
    topo.start("a", &a_ca, &Options::default())?;
    topo.start("b", &b_ca, &Options::default())?;
    let (a, b) = (topo.get("a")?, topo.get("b")?);
    a.join(&b.token()?)?;
    b.export(ECHO)?;
    let listener = a.listener(ECHO)?;
    call_until(listener, "b")?;
    let traffic = Traffic::start(listener, "b");
    let before = b.config_dump()?["tls"].clone();
    let refusals = |c: &multicloud::cluster::Cluster| {
        std::fs::read_to_string(c.controller.stderr_log())
            .unwrap_or_default()
            .matches("new trust material refused")
            .count()
    };

    // A half-written bundle file.
    let bundle = work.path().join(&mesh.bundle);
    let good = std::fs::read(&bundle).expect("bundle");
    std::fs::write(&bundle, &good[..good.len() / 2]).expect("truncate bundle");
    b.wait_for("b's controller refuses the truncated bundle", || {
        Ok(refusals(b) >= 1)
    })?;
    std::fs::write(&bundle, &good).expect("restore bundle");

    // An intermediate re-issued under a root the bundle does not hold (activate before
    // prepare): the leaves it would issue could not be verified by anyone.
    let mut cmd = topo.shell.command("trust-bundle")?;
    cmd.args([
        "root",
        "create",
        "--trust-domain",
        "mesh.example",
        "--out",
        "stray-root",
    ]);
    multicloud::run_ok(&mut cmd)?;
    let mut cmd = topo.shell.command("trust-bundle")?;
    cmd.args([
        "rotate",
        "activate",
        "--root",
        "stray-root",
        "--intermediate",
    ])
    .arg(&b_ca.dir);
    multicloud::run_ok(&mut cmd)?;
    let b = topo.get("b")?;
    b.wait_for("b's controller refuses the unanchored intermediate", || {
        Ok(refusals(b) >= 2)
    })?;
    let log = std::fs::read_to_string(b.controller.stderr_log()).unwrap_or_default();
    assert!(
        log.contains("does not contain the root the CA directory chains to"),
        "the refusal says what is wrong: {log}"
    );
    traffic.wait_successes(CALLS_PER_STAGE)?;
    let after = b.config_dump()?["tls"].clone();
    assert_eq!(
        (&after["chain"], &after["roots"]),
        (&before["chain"], &before["roots"]),
        "b's gateway keeps the identity and roots in force"
    );
    let counts = traffic.stop();
    assert_no_failures("a -> b while broken trust material was refused", &counts);
    Ok(())
}
