//! The operator verbs against real processes: `status`, `trust status`, `trace`, `check`,
//! `completions`, and DNS for imports resolved with `dig` (Debian `dnsutils`).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use multicloud::cluster::{Cluster, ECHO, Options};
use multicloud::echo::call;
use multicloud::shell::Shell;
use multicloud::topology::Topology;
use multicloud::{Error, PATIENCE, run_ok};
use serde_json::Value;

type Result<T = (), E = Error> = std::result::Result<T, E>;

struct World {
    topo: Topology,
    work: tempfile::TempDir,
}

/// `a` and `b` share the root of `mesh.example`; `c` has its own root (`other.example`).
/// `a` links with both; `b` and `c` export the echo service, which `a` imports from both.
fn world() -> Result<World> {
    let work = tempfile::tempdir().expect("tempdir");
    let mut topo = Topology::new(Shell::new(work.path())?);
    let mesh = topo.root("root", "mesh.example")?;
    let other = topo.root("other-root", "other.example")?;
    for (name, root) in [("a", &mesh), ("b", &mesh), ("c", &other)] {
        let ca = topo.intermediate(root, name)?;
        topo.start(name, &ca, &Options::default())?;
    }
    let [a, b, c] = &topo.clusters[..] else {
        unreachable!()
    };
    a.join(&b.token()?)?;
    a.join(&c.token()?)?;
    b.export(ECHO)?;
    c.export(ECHO)?;
    a.wait_import("echo imported from b and c", ECHO, |i| {
        i.and_then(|i| i["sources"].as_array())
            .is_some_and(|s| s.len() == 2)
    })?;
    Ok(World { topo, work })
}

/// Runs `a` verb with `-o json` and parses it.
fn json(cluster: &Cluster, args: &[&str]) -> Result<Value> {
    let mut cmd = cluster.ctl(args)?;
    cmd.args(["-o", "json"]);
    let out = run_ok(&mut cmd)?;
    Ok(serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}")))
}

/// Runs a verb; its exit code, stdout and stderr.
fn run(mut cmd: Command) -> (i32, String, String) {
    let out = cmd.output().expect("run federation-ctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `f` until it returns `Some` (bounded by `PATIENCE`).
fn eventually<T>(what: &str, f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    match multicloud::poll(PATIENCE, Duration::from_millis(100), f)? {
        Some((value, _)) => Ok(value),
        None => panic!("timed out after {PATIENCE:?} waiting for {what}"),
    }
}

/// `dig @server -p PORT name qtype extra..`: its output.
fn dig(server: SocketAddr, name: &str, qtype: &str, extra: &[&str]) -> String {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), name, qtype])
        .args(["+tries=1", "+time=5"])
        .args(extra)
        .output()
        .expect("dig runs (apt-get install dnsutils; `cargo xtask deps` installs it)");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn status_trust_status_trace_and_dns_show_where_calls_go() -> Result {
    let w = world()?;
    let [a, b, c] = &w.topo.clusters[..] else {
        unreachable!()
    };
    let listener = a.listener(ECHO)?;

    // status: identity, the gateway reporting, both links, and RTTs measured by a's gateway's
    // probes through b's and c's gateways.
    let status = eventually("both paths measured in status", || {
        let s = json(a, &["status"])?;
        let measured = s["paths"]
            .as_array()
            .is_some_and(|p| p.len() == 2 && p.iter().all(|p| p["measured"] == true));
        Ok(measured.then_some(s))
    })?;
    assert_eq!(status["cluster"], "a");
    assert_eq!(
        status["spiffe_id"],
        "spiffe://mesh.example/isthmus/cluster/a/controller"
    );
    assert!(status["identity_expires_at_ms"].as_i64() > status["now_ms"].as_i64());
    let gateways = status["gateways"].as_array().expect("gateways");
    assert_eq!(gateways.len(), 1, "{status}");
    assert_eq!(gateways[0]["name"], "a-gw");
    assert_eq!(gateways[0]["ready"], true);
    assert_eq!(gateways[0]["ingress"], a.ingress.to_string());
    let links = status["links"].as_array().expect("links");
    assert_eq!(links.len(), 2);
    assert!(links.iter().all(|l| l["state"] == "connected"), "{status}");
    assert_eq!(
        (status["imports"].as_u64(), status["exports"].as_u64()),
        (Some(1), Some(0))
    );
    for (peer, cluster) in [("b", b), ("c", c)] {
        let path = status["paths"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["cluster"] == peer))
            .unwrap_or_else(|| panic!("a path to {peer}: {status}"));
        assert_eq!(path["gateway_address"], cluster.ingress.to_string());
        assert_eq!(path["healthy"], true);
        let (p50, p99) = (path["rtt_p50_us"].as_u64(), path["rtt_p99_us"].as_u64());
        assert!(p50 > Some(0) && p99 >= p50, "{path}");
    }
    assert_eq!(status["dns_listen"], a.dns().expect("dns").to_string());
    let table = run_ok(&mut a.ctl(&["status"])?)?;
    for want in ["CLUSTER  a", "GATEWAYS", "a-gw", "DATA PATH", "RTT P50"] {
        assert!(table.contains(want), "{want} in:\n{table}");
    }

    // trust status: b shares our root, c federates by bundle exchange; differences marked.
    let trust = json(a, &["trust", "status"])?;
    assert_eq!(trust["ours"]["trust_domain"], "mesh.example");
    let peer = |name: &str| {
        trust["peers"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["cluster"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {trust}"))
    };
    assert_eq!(peer("b")["federation"], "shared");
    assert_eq!(
        peer("b")["roots"][0]["fingerprint"],
        trust["ours"]["roots"][0]["fingerprint"]
    );
    assert_eq!(peer("c")["federation"], "exchanged");
    assert_eq!(peer("c")["trust_domain"], "other.example");
    assert!(
        peer("c")["differences"][0]
            .as_str()
            .is_some_and(|d| d.contains("federated by bundle exchange"))
    );
    let table = run_ok(&mut a.ctl(&["trust", "status"])?)?;
    assert!(
        table.contains("c *") && table.contains("differs from ours"),
        "{table}"
    );

    // trace: the DNS answer, the listener, candidates b then c (by name), with SNI and RTT.
    let trace = eventually("trace with measured candidates", || {
        let t = json(a, &["trace", ECHO])?;
        let measured = t["ports"][0]["candidates"]
            .as_array()
            .is_some_and(|c| c.iter().all(|c| c["measured"] == true));
        Ok(measured.then_some(t))
    })?;
    assert_eq!(trace["dns_name"], "echo.default.svc.clusterset.local");
    let answers: Vec<&str> = trace["dns_answers"]
        .as_array()
        .expect("answers")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        answers.contains(&format!("A {}", a.host).as_str()),
        "{answers:?}"
    );
    let port = &trace["ports"][0];
    assert_eq!(port["listener"], listener.to_string());
    assert_eq!(port["mode"], "mtls");
    let candidates = port["candidates"].as_array().expect("candidates");
    assert_eq!(candidates.len(), 2);
    assert_eq!(
        (&candidates[0]["cluster"], &candidates[1]["cluster"]),
        (&"b".into(), &"c".into())
    );
    assert_eq!(candidates[0]["gateway_address"], b.ingress.to_string());
    assert_eq!(
        candidates[0]["sni"],
        "8080.echo.default.b.v1.isthmus.internal"
    );
    assert_eq!(candidates[1]["trust_domain"], "other.example");
    assert!(
        candidates
            .iter()
            .all(|c| c["source_healthy"] == true && c["gateway_healthy"] == true)
    );
    let (code, _, err) = run(a.ctl(&["trace", "nope.default"])?);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("nope.default is not imported here"), "{err}");

    // DNS: dig finds the address and the port, and that address carries a call through the
    // gateways to b.
    let dns = a.dns().expect("a's controller serves DNS");
    let ip = dig(dns, "echo.default.svc.clusterset.local", "A", &["+short"]);
    let srv = dig(
        dns,
        "_http._tcp.echo.default.svc.clusterset.local",
        "SRV",
        &["+short"],
    );
    let srv_port: u16 = srv
        .split_whitespace()
        .nth(2)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("SRV answer: {srv:?}"));
    assert_eq!(
        srv,
        format!("0 1 {srv_port} echo.default.svc.clusterset.local.")
    );
    let resolved = SocketAddr::new(ip.parse().expect("an IP address"), srv_port);
    assert_eq!(resolved, listener);
    assert_eq!(call(resolved).as_deref(), Ok("b"));
    let nx = dig(dns, "nope.default.svc.clusterset.local", "A", &[]);
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    let refused = dig(dns, "example.com", "A", &[]);
    assert!(refused.contains("status: REFUSED"), "{refused}");

    // check on a healthy world: no error, exit 0.
    let check = json(a, &["check"])?;
    let findings = check.as_array().expect("findings");
    let errors: Vec<&Value> = findings
        .iter()
        .filter(|f| f["severity"] == "error")
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert!(
        findings.iter().any(|f| f["check"] == "peer-gateway"
            && f["subject"] == format!("c {}", c.ingress)
            && f["message"]
                .as_str()
                .is_some_and(|m| m.contains("mutual TLS ok"))),
        "{check}"
    );
    assert!(
        findings
            .iter()
            .any(|f| f["check"] == "clock-skew" && f["severity"] == "ok")
    );

    // completions need no controller.
    let mut cmd = w.topo.shell.command("federation-ctl")?;
    cmd.args(["completions", "bash"]);
    let script = run_ok(&mut cmd)?;
    assert!(
        script.contains("complete -F _federation__ctl") && script.contains("trace"),
        "bash completion:\n{script}"
    );
    Ok(())
}

/// A CA directory for `cluster` (trust domain `mesh.example`) holding an intermediate that
/// expired 30 days ago, under a root made 50 days ago, as `trust-bundle intermediate create`
/// lays it out.
fn plant_expired_intermediate(cluster: &str, out: &Path) {
    use trust_bundle::TrustDomain;
    use trust_bundle::bundle::pem_cert;
    use trust_bundle::ca::{Authority, IntermediateParams, KeyAlgorithm, RootParams};
    let now = time::OffsetDateTime::now_utc();
    let root = Authority::create_root(
        &RootParams {
            trust_domain: TrustDomain::parse("mesh.example").expect("td"),
            validity: Duration::from_secs(3650 * 86_400),
            algorithm: KeyAlgorithm::default(),
        },
        now - time::Duration::days(50),
    )
    .expect("root");
    let ca = root
        .create_intermediate(
            &IntermediateParams {
                cluster: cluster.to_owned(),
                trust_domain: None,
                validity: Duration::from_secs(10 * 86_400),
                algorithm: KeyAlgorithm::default(),
            },
            now - time::Duration::days(40),
        )
        .expect("intermediate");
    let write = |name: &str, text: String| {
        std::fs::write(out.join(name), text).expect("write the planted CA");
    };
    write("cert.pem", pem_cert(&ca.credential.cert));
    write("chain.pem", pem_cert(&ca.credential.cert));
    write("root.pem", pem_cert(&root.credential.cert));
    write("key.pem", ca.credential.key.to_pem());
}

#[test]
fn check_finds_an_unreachable_gateway_a_foreign_root_and_an_expired_intermediate() -> Result {
    let mut w = world()?;
    let work = w.work.path().to_owned();
    let c_ingress = w.topo.get("c")?.ingress;
    let c_td_gateway = "spiffe://other.example/isthmus/cluster/c/gateway";

    // b's gateway dies.
    w.topo.get_mut("b")?.kill_gateway();
    // c's gateway is replaced by a server presenting c's gateway identity from a root c never
    // put in its bundle (as when a new root is used before it was federated).
    w.topo.get_mut("c")?.kill_gateway();
    let shell = w.topo.shell.clone();
    let tb = |args: &[&str]| -> Result<String> {
        let mut cmd = shell.command("trust-bundle")?;
        cmd.args(args);
        run_ok(&mut cmd)
    };
    tb(&[
        "root",
        "create",
        "--trust-domain",
        "other.example",
        "--out",
        "rogue-root",
    ])?;
    tb(&[
        "intermediate",
        "create",
        "--root",
        "rogue-root",
        "--cluster",
        "c",
        "--out",
        "rogue-ca",
    ])?;
    tb(&[
        "leaf",
        "issue",
        "--ca",
        "rogue-ca",
        "--spiffe-id",
        c_td_gateway,
        "--out",
        "rogue-gw",
    ])?;
    let rogue = Command::new("openssl")
        .current_dir(&work)
        .args(["s_server", "-quiet", "-naccept", "100", "-accept"])
        .arg(c_ingress.to_string())
        .args(["-cert", "rogue-gw/cert.pem", "-key", "rogue-gw/key.pem"])
        .args(["-cert_chain", "rogue-gw/chain.pem"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let _rogue = KillOnDrop(rogue);
    // a's CA directory gets an intermediate that expired 30 days ago (the running controller
    // keeps the one it loaded; a restart would refuse it).
    plant_expired_intermediate("a", &find_ca_dir(&work, "a"));

    let a = w.topo.get("a")?;
    let findings = eventually("check sees the foreign root and the dead gateway", || {
        let (code, out, err) = run(a.ctl(&["check", "-o", "json"])?);
        assert_eq!(code, 1, "check exits 1 on errors: {err}");
        let findings: Vec<Value> = serde_json::from_str(&out).expect("json");
        let has = |check: &str, subject: &str| {
            findings.iter().any(|f| {
                f["check"] == check
                    && f["subject"]
                        .as_str()
                        .is_some_and(|s| s.starts_with(subject))
            })
        };
        Ok((has("peer-gateway", "b ") && has("peer-gateway-trust", "c ")).then_some(findings))
    })?;
    let find = |check: &str, subject: &str| {
        findings
            .iter()
            .find(|f| {
                f["check"] == check
                    && f["severity"] == "error"
                    && f["subject"]
                        .as_str()
                        .is_some_and(|s| s.starts_with(subject))
            })
            .unwrap_or_else(|| panic!("{check} error about {subject}: {findings:#?}"))
    };
    let unreachable = find("peer-gateway", "b ");
    assert!(
        unreachable["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot connect"))
    );
    assert!(
        unreachable["hint"]
            .as_str()
            .is_some_and(|h| h.contains("b's gateway runs"))
    );
    let foreign = find("peer-gateway-trust", "c ");
    assert!(
        foreign["message"]
            .as_str()
            .is_some_and(|m| m.contains("not federated")),
        "{foreign}"
    );
    assert!(
        foreign["hint"]
            .as_str()
            .is_some_and(|h| h.contains("serve that root in its bundle")),
        "{foreign}"
    );
    let expired = find("expiry", "cluster intermediate a");
    assert!(
        expired["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("expired 30 days ago")),
        "{expired}"
    );
    assert!(
        expired["hint"]
            .as_str()
            .is_some_and(|h| h.contains("trust-bundle intermediate create"))
    );

    // The table names each problem with its fix, and exits 1.
    let (code, table, err) = run(a.ctl(&["check"])?);
    assert_eq!(code, 1);
    assert!(err.contains("check found"), "{err}");
    for want in [
        "ERROR peer-gateway ",
        "ERROR peer-gateway-trust",
        "ERROR expiry",
        "fix: ",
    ] {
        assert!(table.contains(want), "{want} in:\n{table}");
    }

    // Without a running controller, --config runs the local checks and finds the expired
    // intermediate too.
    let mut cmd = w.topo.shell.command("federation-ctl")?;
    cmd.args([
        "check",
        "--config",
        "a/controller.yaml",
        "--controller",
        "nowhere.sock",
        "-o",
        "json",
    ]);
    let (code, out, _) = run(cmd);
    assert_eq!(code, 1);
    let offline: Vec<Value> = serde_json::from_str(&out).expect("json");
    assert!(
        offline
            .iter()
            .any(|f| f["check"] == "expiry" && f["severity"] == "error")
    );
    assert!(
        offline
            .iter()
            .any(|f| f["check"] == "controller" && f["severity"] == "warning")
    );
    Ok(())
}

/// The CA directory the topology made for `cluster` (as `controller.yaml`'s `ca:` names it).
fn find_ca_dir(work: &Path, cluster: &str) -> std::path::PathBuf {
    let config = std::fs::read_to_string(work.join(cluster).join("controller.yaml"))
        .expect("controller.yaml");
    let ca = config
        .lines()
        .find_map(|l| l.strip_prefix("ca: "))
        .expect("a ca: line");
    work.join(cluster).join(ca)
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `link join` on a terminal (under `script`, which gives it one): a spinner says what it
/// waits for, then the healthy link; with `-o json` the terminal gets JSON only.
#[test]
fn link_join_waits_for_a_healthy_link_with_a_spinner_only_on_a_terminal_table() -> Result {
    let work = tempfile::tempdir().expect("tempdir");
    let mut topo = Topology::new(Shell::new(work.path())?);
    let root = topo.root("root", "mesh.example")?;
    for name in ["x", "y", "z"] {
        let ca = topo.intermediate(&root, name)?;
        topo.start(name, &ca, &Options::default())?;
    }
    let [x, y, z] = &topo.clusters[..] else {
        unreachable!()
    };
    let ctl = topo.shell.bins().join("federation-ctl");
    let on_terminal = |token: &str, extra: &str| -> String {
        let line = format!(
            "{} --controller {} link join {token} {extra}",
            ctl.display(),
            x.api.display()
        );
        let out = Command::new("script")
            .current_dir(work.path())
            .args(["-qec", &line, "/dev/null"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("script (util-linux) runs");
        assert!(out.status.success(), "{line}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let table = on_terminal(y.token()?.as_str(), "--timeout 20s");
    assert!(table.contains("waiting for the link with y"), "{table:?}");
    let row = table
        .lines()
        .find(|l| l.starts_with("y "))
        .unwrap_or_else(|| panic!("a row for y in {table:?}"));
    assert!(
        row.contains("connected") && !row.contains("never"),
        "healthy: {row:?}"
    );

    let json = on_terminal(z.token()?.as_str(), "-o json");
    assert!(
        !json.contains("waiting"),
        "no spinner with -o json: {json:?}"
    );
    let links: Value = serde_json::from_str(json.trim()).expect("only JSON on the terminal");
    assert_eq!(links[0]["peer"], "z");
    assert_eq!(links[0]["state"], "connected");
    assert!(links[0]["last_heartbeat"].is_string(), "{links}");
    drop(topo);
    Ok(())
}
