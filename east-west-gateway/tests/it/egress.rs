//! Egress: failover between remote gateways by priority, SNI passthrough egress that keeps the
//! client's own TLS, and 1000 concurrent connections through the two-gateway mTLS chain.

use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use trust_bundle::test_util::{intermediate, leaf};

use crate::mtls::{call, gateway_a, gateway_b, remote_gateway};
use crate::support::backend::{EchoBackend, TlsBackend, https_get};
use crate::support::pki::{Pki, gateway_id};
use crate::support::{Gateway, closed, join_bounded, rt};

fn healthy(gateway: std::net::SocketAddr) -> String {
    format!("federation_gateway_remote_gateway_healthy{{egress=\"reviews\",gateway=\"{gateway}\"}}")
}

/// Asserts that every call through `egress` answers `want` (`x` echoed behind a tag) once the
/// preferred gateway is gone: failover happens before any byte of the client's is sent, so not
/// one call may fail.
fn assert_fails_over(egress: std::net::SocketAddr, want: &[u8]) {
    for _ in 0..5 {
        assert_eq!(
            call(egress, b"x"),
            want,
            "failover happens before any byte is sent"
        );
    }
}

#[test]
fn calls_fail_over_to_the_next_priority_when_the_preferred_gateway_dies() {
    let pki = Pki::new();
    let (one, two) = (EchoBackend::start("one:"), EchoBackend::start("two:"));
    let mut b1 = Gateway::start(&gateway_b(
        &pki.gateway("b1", &pki.gcp, "gcp.example"),
        one.addr,
        "",
    ));
    let b2 = Gateway::start(&gateway_b(
        &pki.gateway("b2", &pki.gcp, "gcp.example"),
        two.addr,
        "",
    ));
    let gateways = format!(
        "{{ address: '{}', priority: 0 }}, {{ address: '{}', priority: 1 }}",
        b1.ingress, b2.ingress
    );
    let a = Gateway::start(&gateway_a(
        &pki.gateway("a", &pki.aws, "aws.example"),
        &gateways,
        "",
    ));
    let egress = a.egress("reviews");
    for _ in 0..5 {
        assert_eq!(call(egress, b"x"), b"one:x", "priority 0 is preferred");
    }

    let b1_address = b1.ingress;
    let killed = Instant::now();
    b1.kill();
    assert_fails_over(egress, b"two:x");
    println!("failover gap after SIGKILL: {:?}", killed.elapsed());
    a.wait_metric_eq(&healthy(b1_address), 0.0);
    println!("death detected by probes after {:?}", killed.elapsed());
    assert_eq!(a.metric(&healthy(b2.ingress)), 1.0);
    let rtt = a.metric(&format!(
        "federation_gateway_remote_gateway_rtt_seconds{{egress=\"reviews\",gateway=\"{}\",quantile=\"0.99\"}}",
        b2.ingress
    ));
    assert!(rtt > 0.0 && rtt < 1.0, "p99 rtt {rtt}");
    let (_, dump) = a.admin_get("/config_dump");
    let dump: serde_json::Value = serde_json::from_str(&dump).expect("json");
    assert_eq!(dump["egress"][0]["gateways"][0]["healthy"], false, "{dump}");
    assert_eq!(dump["egress"][0]["gateways"][1]["healthy"], true, "{dump}");
}

#[test]
fn one_listener_fails_over_across_clusters_with_each_gateways_sni_and_trust_domain() {
    let pki = Pki::new();
    let (echo_b, echo_c) = (EchoBackend::start("b:"), EchoBackend::start("c:"));
    // Cluster b's gateway is in trust domain gcp.example, cluster c's in aws.example: a wrong
    // expected trust domain or an SNI naming the other cluster would be refused.
    let b_ca = intermediate(&pki.gcp_root, "b", None);
    let c_ca = intermediate(&pki.aws_root, "c", None);
    let b_files = pki.write(
        "b",
        &leaf(&b_ca, &gateway_id("gcp.example")),
        &pki.federation(),
    );
    let c_files = pki.write(
        "c",
        &leaf(&c_ca, &gateway_id("aws.example")),
        &pki.federation(),
    );
    let mut b = Gateway::start(&remote_gateway("b", &b_files, echo_b.addr, ""));
    let c = Gateway::start(&remote_gateway("c", &c_files, echo_c.addr, ""));
    let a = Gateway::start(&format!(
        "cluster: aws
ingress: {{ listen: 127.0.0.1:0 }}
admin: {{ listen: 127.0.0.1:0 }}
{}
egress:
  - name: reviews
    listen: 127.0.0.1:0
    service: {{ name: reviews, namespace: default, port: 9080 }}
    probe: {{ interval: 100ms, timeout: 500ms, unhealthy_after: 2 }}
    gateways:
      - {{ address: '{}', priority: 0, cluster: b, trust_domain: gcp.example }}
      - {{ address: '{}', priority: 1, cluster: c, trust_domain: aws.example }}
",
        pki.gateway("a", &pki.aws, "aws.example").section(),
        b.ingress,
        c.ingress,
    ));
    let egress = a.egress("reviews");
    for _ in 0..3 {
        assert_eq!(
            call(egress, b"x"),
            b"b:x",
            "priority 0 (cluster b) is preferred"
        );
    }
    b.kill();
    assert_fails_over(egress, b"c:x");
    c.wait_metric(&closed("reviews", "forwarded"), 5.0);
    let logs = a.logs();
    for sni in [
        "9080.reviews.default.b.v1.isthmus.internal",
        "9080.reviews.default.c.v1.isthmus.internal",
    ] {
        assert!(logs.contains(sni), "{sni} in the access log:\n{logs}");
    }
    assert!(logs.contains("\"dst_cluster\":\"c\""), "{logs}");
}

#[test]
fn passthrough_egress_keeps_the_clients_own_tls_end_to_end() {
    let backend = TlsBackend::start(&["secure.example"], "end to end");
    let b = Gateway::start(&crate::support::config(
        "",
        &format!(
            "routes:\n  - name: secure\n    hosts: [secure.example]\n    endpoints: [{{ address: {} }}]\n",
            backend.addr
        ),
    ));
    let a = Gateway::start(&format!(
        "cluster: aws
ingress: {{ listen: 127.0.0.1:0 }}
admin: {{ listen: 127.0.0.1:0 }}
egress:
  - name: secure
    listen: 127.0.0.1:0
    mode: passthrough
    service: {{ name: secure, namespace: default, port: 443 }}
    gateways: [{{ address: '{}' }}]
",
        b.ingress
    ));
    // The client verifies the backend's certificate against the backend's own test CA: only
    // the backend's TLS, untouched by either gateway, can satisfy it.
    let response = https_get(a.egress("secure"), "secure.example", &backend.ca, false);
    assert!(response.ends_with("end to end"), "{response}");
    b.wait_metric(&closed("secure", "forwarded"), 1.0);
}

#[test]
fn a_thousand_concurrent_mtls_connections_lose_and_corrupt_nothing() {
    const CONNECTIONS: usize = 1000;
    let pki = Pki::new();
    let echo = EchoBackend::start("");
    let b_config = gateway_b(
        &pki.gateway("b", &pki.gcp, "gcp.example"),
        echo.addr,
        "upstream: { connect_timeout: 30s }\n",
    )
    .replace(
        "ingress: { listen: 127.0.0.1:0 }",
        "ingress: { listen: 127.0.0.1:0, hello_timeout: 60s }",
    );
    let b = Gateway::start(&b_config);
    let a = Gateway::start(&gateway_a(
        &pki.gateway("a", &pki.aws, "aws.example"),
        &format!("{{ address: '{}' }}", b.ingress),
        "upstream: { connect_timeout: 30s }\n",
    ));
    let egress = a.egress("reviews");
    let started = Instant::now();
    let results = rt().block_on(async move {
        let all_open = Arc::new(tokio::sync::Barrier::new(CONNECTIONS));
        let tasks: Vec<_> = (0..CONNECTIONS)
            .map(|i| {
                let all_open = all_open.clone();
                tokio::spawn(async move {
                    let len = 1 + (i * 7919) % 65_536;
                    let data: Vec<u8> = (0..len).map(|j| (i * 31 + j * 17) as u8).collect();
                    let mut tcp = tokio::net::TcpStream::connect(egress).await?;
                    all_open.wait().await;
                    let (mut r, mut w) = tcp.split();
                    let send = async {
                        w.write_all(&data).await?;
                        w.shutdown().await
                    };
                    let mut echoed = Vec::new();
                    let (sent, received) = tokio::join!(send, r.read_to_end(&mut echoed));
                    sent?;
                    received?;
                    Ok::<_, std::io::Error>(Sha256::digest(&echoed) == Sha256::digest(&data))
                })
            })
            .collect();
        join_bounded(tasks).await
    });
    println!("{CONNECTIONS} mTLS connections in {:?}", started.elapsed());
    let errors: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        errors.is_empty(),
        "{} failed, first: {}",
        errors.len(),
        errors[0]
    );
    let corrupted = results.iter().filter(|r| matches!(r, Ok(false))).count();
    assert_eq!(corrupted, 0, "lost or corrupted connections");
    b.wait_metric(&closed("reviews", "forwarded"), CONNECTIONS as f64);
    assert_eq!(
        b.metric("federation_gateway_tls_handshake_failures_total{reason=\"other\"}"),
        0.0
    );
}
