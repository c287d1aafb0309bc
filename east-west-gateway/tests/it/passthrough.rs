//! Passthrough routing with real TLS clients: the client's TLS session ends at the backend.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::backend::{EchoBackend, TlsBackend, https_get};
use crate::support::{Gateway, closed, config};

const REVIEWS_SNI: &str = "outbound_.9080_._.reviews.default.svc.cluster.local";

fn reviews_gateway(backend: &TlsBackend) -> Gateway {
    Gateway::start(&config(
        "",
        &format!(
            "routes:
  - name: reviews
    services: [{{ name: reviews, namespace: default, port: 9080 }}]
    hosts: [reviews.example.com]
    endpoints: [{{ address: {} }}]
",
            backend.addr
        ),
    ))
}

#[test]
fn curl_sees_the_backend_certificate() {
    let backend = TlsBackend::start(&["reviews.example.com"], "hello from reviews");
    let gw = reviews_gateway(&backend);
    let port = gw.ingress.port();
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20"])
        .arg("--resolve")
        .arg(format!("reviews.example.com:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(&backend.ca_pem)
        .arg(format!("https://reviews.example.com:{port}/"))
        .output()
        .expect("run curl");
    // --cacert holds only the backend's private CA, so a verified session proves the
    // certificate came from the backend, untouched by the gateway.
    assert!(
        output.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "hello from reviews"
    );
    gw.wait_metric(&closed("reviews", "forwarded"), 1.0);
    let logs = gw.logs();
    let access = logs
        .lines()
        .find(|l| l.contains("\"target\":\"access\""))
        .expect("an access log line");
    let line: serde_json::Value = serde_json::from_str(access).expect("JSON access log");
    assert_eq!(line["sni"], "reviews.example.com");
    assert_eq!(line["route"], "reviews");
    assert_eq!(line["mode"], "passthrough");
    assert_eq!(line["outcome"], "forwarded");
    assert_eq!(line["dst"], backend.addr.to_string());
    assert!(line["bytes_sent"].as_u64().expect("bytes_sent") > 0);
    assert!(line["bytes_received"].as_u64().expect("bytes_received") > 0);
}

#[test]
fn openssl_reaches_reviews_through_the_istio_alias() {
    let backend = TlsBackend::start(&["reviews.default.svc.cluster.local"], "reviews via istio");
    let gw = reviews_gateway(&backend);
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-verify_return_error"])
        .arg("-connect")
        .arg(gw.ingress.to_string())
        .args(["-servername", REVIEWS_SNI])
        .arg("-CAfile")
        .arg(&backend.ca_pem)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"GET / HTTP/1.1\r\nhost: reviews\r\n\r\n")
        .expect("send request");
    let output = child.wait_with_output().expect("openssl output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("reviews via istio"),
        "openssl stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    gw.wait_metric(&closed("reviews", "forwarded"), 1.0);
}

#[test]
fn native_names_route_and_dribbled_hellos_still_route() {
    let native = "9080.reviews.default.aws-east.v1.isthmus.internal";
    let backend = TlsBackend::start(&[native], "native");
    let gw = reviews_gateway(&backend);
    let fast = https_get(gw.ingress, native, &backend.ca, false);
    assert!(fast.ends_with("native"), "{fast}");
    let slow = https_get(gw.ingress, native, &backend.ca, true);
    assert!(slow.ends_with("native"), "{slow}");
    gw.wait_metric(&closed("reviews", "forwarded"), 2.0);
}

#[test]
fn connect_failures_retry_another_endpoint_and_eject() {
    let echo = EchoBackend::start("up");
    // A port that refuses: bind, learn the port, close.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let gw = Gateway::start(&config(
        "",
        &format!(
            "upstream: {{ connect_attempts: 2, ejection_base: 30s, ejection_max: 60s }}
routes:
  - name: flaky
    hosts: [flaky.example]
    endpoints: [{{ address: {dead} }}, {{ address: {} }}]
",
            echo.addr
        ),
    ));
    for _ in 0..8 {
        let reply = crate::load::echo_roundtrip(gw.ingress, "flaky.example", b"ping", 2);
        assert_eq!(reply, b"ping");
    }
    gw.wait_metric(&closed("flaky", "forwarded"), 8.0);
    // The dead endpoint fails at most once: afterwards it is ejected for 30s.
    assert_eq!(
        gw.metric("federation_gateway_upstream_connect_failures_total{route=\"flaky\"}"),
        gw.metric("federation_gateway_endpoint_ejections_total{route=\"flaky\"}"),
    );
    assert!(
        gw.metric("federation_gateway_upstream_connect_failures_total{route=\"flaky\"}") <= 1.0
    );
}
