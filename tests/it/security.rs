//! Security scenarios: who may reach what across linked clusters, and where secrets may never
//! show up. Real processes on loopback; the identities the probes hold are issued here from the
//! clusters' own CA directories.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use multicloud::cluster::{Cluster, ECHO};
use multicloud::traffic::call_until;
use multicloud::{run_err, run_ok};

use crate::probe::{self, client_hello, http_get, leaf_at, load_ca, mtls_client, mtls_get};
use crate::world::{Result, world};

/// The native SNI name of the echo service's `http` port in `cluster`.
fn echo_sni(cluster: &str) -> String {
    format!("8080.echo.default.{cluster}.v1.isthmus.internal")
}

fn gateway_id(cluster: &str) -> String {
    format!("spiffe://mesh.example/isthmus/cluster/{cluster}/gateway")
}

/// The sum of a metric's samples whose line contains every one of `labels`.
pub(crate) fn metric(admin: std::net::SocketAddr, name: &str, labels: &[&str]) -> f64 {
    http_get(admin, "/metrics")
        .lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn ca_dir(c: &Cluster) -> PathBuf {
    c.dir.join("ca")
}

#[test]
fn a_peer_reaches_only_the_services_exported_to_it() -> Result {
    let w = world(&["a", "b", "c"], &[])?;
    let [a, b, c] = &w.topo.clusters[..] else {
        unreachable!()
    };
    a.join(&b.token()?)?;
    c.join(&b.token()?)?;

    // Before any export, b's gateway has no route for echo: a TLS hello naming it is closed
    // unanswered (passthrough never forwards a name nothing was exported under).
    let before = metric(
        b.admin,
        "federation_gateway_tcp_connections_closed",
        &["no_route"],
    );
    for sni in [
        echo_sni("b"),
        "8080.secret.default.b.v1.isthmus.internal".into(),
    ] {
        let reply = probe::send_raw(b.ingress, &client_hello(&sni));
        assert!(reply.is_empty(), "{sni}: the gateway answered {reply:?}");
    }
    assert!(
        metric(
            b.admin,
            "federation_gateway_tcp_connections_closed",
            &["no_route"]
        ) >= before + 2.0,
        "unexported names are counted as no_route"
    );

    run_ok(&mut b.ctl(&["export", ECHO, "--to", "a"])?)?;
    call_until(a.listener(ECHO)?, "b")?;
    let services = c.services()?;
    assert!(
        services["imports"].as_array().is_none_or(Vec::is_empty),
        "c imports what was exported to a only: {services}"
    );

    // The terminate route authorizes a's gateway only: the same request with c's gateway
    // identity (a valid leaf of the shared root) is refused in the handshake, no route reached.
    let ca_a = load_ca(&ca_dir(a));
    let ca_c = load_ca(&ca_dir(c));
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);
    let as_a = mtls_client(&leaf_at(&ca_a, &gateway_id("a"), now, day), &ca_a);
    let as_c = mtls_client(&leaf_at(&ca_c, &gateway_id("c"), now, day), &ca_c);
    let forwarded = |label: &str| {
        metric(
            b.admin,
            "federation_gateway_tcp_connections_closed",
            &["forwarded", label],
        )
    };
    let answered = mtls_get(&as_a, b.ingress, &echo_sni("b"))
        .unwrap_or_else(|e| panic!("a's gateway identity is refused: {e}"));
    assert!(
        answered.ends_with("b\n"),
        "a's identity reaches echo: {answered:?}"
    );

    let refusals = metric(b.admin, "federation_gateway_tls_handshake_failures", &[]);
    let forwarded_before = forwarded("");
    let err = mtls_get(&as_c, b.ingress, &echo_sni("b"))
        .expect_err("c's gateway reached a service exported to a only");
    println!("c's gateway identity on a's export: {err}");
    assert!(err.contains("alert"), "refused with a TLS alert: {err}");
    assert!(
        metric(b.admin, "federation_gateway_tls_handshake_failures", &[]) > refusals,
        "the refusal is counted"
    );
    assert_eq!(
        forwarded(""),
        forwarded_before,
        "nothing was forwarded for c"
    );
    let log = std::fs::read_to_string(b.gateway.stderr_log()).unwrap_or_default();
    assert!(
        log.contains(&gateway_id("c")),
        "b's gateway logs which identity it refused"
    );

    // Exported to everyone, c gets in too; unexported, nobody does.
    run_ok(&mut b.ctl(&["export", ECHO])?)?;
    call_until(c.listener(ECHO)?, "b")?;
    let answered = mtls_get(&as_c, b.ingress, &echo_sni("b"))
        .unwrap_or_else(|e| panic!("c's gateway identity is refused after export to all: {e}"));
    assert!(answered.ends_with("b\n"), "{answered:?}");
    run_ok(&mut b.ctl(&["unexport", ECHO])?)?;
    let deadline = std::time::Instant::now() + multicloud::PATIENCE;
    // While the terminate route exists the gateway answers a hello with its ServerHello.
    while !probe::send_raw(b.ingress, &client_hello(&echo_sni("b"))).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "echo is still routed {:?} after unexport",
            multicloud::PATIENCE
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(mtls_get(&as_a, b.ingress, &echo_sni("b")).is_err());
    Ok(())
}

/// Every PEM body line (the base64 between the armour lines) of every `key.pem` under `dir`.
fn key_material_on_disk(dir: &Path, keys: &mut Vec<(String, String)>) {
    for entry in walk(dir) {
        if entry.file_name().is_some_and(|n| n == "key.pem") {
            let text = std::fs::read_to_string(&entry).unwrap_or_default();
            keys.extend(pem_lines(&text).map(|l| (entry.display().to_string(), l)));
        }
    }
}

/// The base64 lines of a PEM text that are long enough to be unmistakable.
fn pem_lines(pem: &str) -> impl Iterator<Item = String> + '_ {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 32)
        .map(str::to_owned)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => todo.push(path),
                Ok(_) => out.push(path),
                Err(_) => {}
            }
        }
    }
    out
}

/// The gateway identity a controller hands out on its local API (to the socket's owner only).
fn gateway_key_pem(api: &Path) -> String {
    use east_west_gateway::api::WatchRequest;
    use east_west_gateway::api::gateway_discovery_client::GatewayDiscoveryClient;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let channel = federation_ctl::transport::unix_channel(api)
            .await
            .expect("the API socket");
        let mut stream = GatewayDiscoveryClient::new(channel)
            .watch(WatchRequest::default())
            .await
            .expect("watch")
            .into_inner();
        let config = tokio::time::timeout(multicloud::PATIENCE, stream.message())
            .await
            .expect("a gateway config in time")
            .expect("a gateway config")
            .expect("the stream is open");
        config.identity.expect("an identity").private_key_pem
    })
}

#[test]
fn secrets_never_reach_logs_metrics_config_dump_or_errors_and_key_files_are_0600() -> Result {
    use base64::Engine as _;
    let w = world(&["a", "b"], &[])?;
    let [a, b] = &w.topo.clusters[..] else {
        unreachable!()
    };
    // Everything the processes and the CLI print, except the `link token` output, which shows a
    // token because the operator asked for one.
    let mut outputs: Vec<(String, String)> = Vec::new();
    let mut tokens = vec![b.token()?, b.token()?, a.token()?];
    a.join(&tokens[0])?;
    b.export(ECHO)?;
    call_until(a.listener(ECHO)?, "b")?;

    // Refused tokens: reused, tampered, expired on the acceptor, unknown to it.
    let (_, err) = run_err(&mut a.ctl(&["link", "join", tokens[0].as_str()])?)?;
    outputs.push(("join with a used token".into(), err));
    let mut tampered = tokens[1].value.clone().into_bytes();
    tampered[30] = if tampered[30] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    let (_, err) = run_err(&mut a.ctl(&["link", "join", &tampered])?)?;
    outputs.push(("join with a tampered token".into(), err));
    let (_, err) = run_err(&mut b.ctl(&["link", "join", tokens[2].as_str()])?)?;
    outputs.push(("join a linked cluster again".into(), err));
    let short = run_ok(&mut b.ctl(&["link", "token", "--ttl", "1s"])?)?;
    tokens.push(multicloud::cluster::Token {
        value: short.trim().to_owned(),
        issuer: "b".into(),
    });
    for args in [
        &["links", "-o", "json"][..],
        &["services", "-o", "yaml"],
        &["links"],
    ] {
        for c in [a, b] {
            outputs.push((format!("{} {args:?}", c.name), run_ok(&mut c.ctl(args)?)?));
        }
    }
    for c in [a, b] {
        for path in ["/metrics", "/config_dump", "/healthz", "/readyz"] {
            outputs.push((
                format!("{} gateway {path}", c.name),
                http_get(c.admin, path),
            ));
        }
    }
    for file in walk(w.work.path()) {
        let name = file.display().to_string();
        if name.ends_with(".out") || name.ends_with(".err") || name.ends_with(".log") {
            outputs.push((name, std::fs::read_to_string(&file).unwrap_or_default()));
        }
    }
    assert!(
        outputs
            .iter()
            .any(|(_, text)| text.contains("\"peer_spiffe_id\"")),
        "the gateways' logs are among the outputs"
    );

    // The secrets: every private key on disk, the gateway keys the controllers hand out, and
    // every token's text, payload and secret.
    let mut secrets: Vec<(String, String)> = Vec::new();
    key_material_on_disk(w.work.path(), &mut secrets);
    for c in [a, b] {
        let pem = gateway_key_pem(&c.dir.join("state/api.sock"));
        secrets.extend(pem_lines(&pem).map(|l| (format!("{}'s gateway key", c.name), l)));
    }
    assert!(secrets.len() >= 8, "keys found: {}", secrets.len());
    for t in &tokens {
        let decoded = federation_ctl::token::JoinToken::decode(&t.value)
            .unwrap_or_else(|e| panic!("token from {}: {e}", t.issuer));
        let secret = decoded.secret.as_bytes();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        secrets.push(("token secret (base64url)".into(), b64.encode(secret)));
        secrets.push(("token secret (hex)".into(), hex::encode(secret)));
        secrets.push(("token text".into(), t.value.clone()));
        let payload = t.value.split('.').nth(1).unwrap_or_default();
        secrets.push((
            "token payload".into(),
            payload[..payload.len().min(64)].to_owned(),
        ));
    }
    let mut leaks = Vec::new();
    for (what, text) in &outputs {
        for (secret_of, secret) in &secrets {
            if text.contains(secret.as_str()) {
                leaks.push(format!("{secret_of} appears in {what}"));
            }
        }
    }
    let bytes: usize = outputs.iter().map(|(_, t)| t.len()).sum();
    println!(
        "searched {} outputs ({bytes} bytes) for {} secrets",
        outputs.len(),
        secrets.len()
    );
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));

    // Key files and the state directory are the owner's alone.
    let mut checked = 0;
    for file in walk(w.work.path()) {
        let mode = std::fs::metadata(&file).map(|m| m.permissions().mode() & 0o777);
        let name = file.display().to_string();
        let in_state = name.contains("/state/");
        if file.file_name().is_some_and(|n| n == "key.pem") || in_state {
            assert_eq!(mode.ok(), Some(0o600), "{name} is not 0600");
            checked += 1;
        }
    }
    for c in [a, b] {
        let mode = std::fs::metadata(c.dir.join("state")).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.ok(), Some(0o700), "{}'s state dir is not 0700", c.name);
    }
    println!("{checked} key and state files are 0600");
    assert!(checked >= 8, "only {checked} key and state files found");
    Ok(())
}
