//! `/metrics` details: connection counters carry `src_cluster`/`dst_cluster` labels bounded to
//! the clusters the config names (else `other`, or `unknown`), and the certificate expiry gauge.

use std::io::{Read, Write};
use std::net::TcpStream;

use trust_bundle::test_util::{intermediate, leaf};

use crate::mtls::{call, gateway_a};
use crate::support::backend::{EchoBackend, client_hello};
use crate::support::pki::{Files, Pki, gateway_id};
use crate::support::{Gateway, PATIENCE, config, label_values};

const EXPIRY: &str = "federation_gateway_certificate_expiry_seconds";

/// Gateway B of cluster gcp: reviews terminates for trust domain aws.example (any cluster).
fn gateway_b(files: &Files, endpoint: std::net::SocketAddr) -> String {
    format!(
        "cluster: gcp
ingress: {{ listen: 127.0.0.1:0 }}
admin: {{ listen: 127.0.0.1:0 }}
{}
routes:
  - name: reviews
    services: [{{ name: reviews, namespace: default, port: 9080 }}]
    mode: terminate
    authorize: {{ trust_domains: [aws.example], clusters: [aws] }}
    endpoints: [{{ address: {endpoint} }}]
",
        files.section()
    )
}

fn closed(route: &str, outcome: &str, src: &str, dst: &str) -> String {
    format!(
        "federation_gateway_tcp_connections_closed_total{{route=\"{route}\",outcome=\"{outcome}\",src_cluster=\"{src}\",dst_cluster=\"{dst}\"}}"
    )
}

#[test]
fn connection_counters_carry_bounded_cluster_labels() {
    let pki = Pki::new();
    let echo = EchoBackend::start("gcp:");
    let b = Gateway::start(&gateway_b(
        &pki.gateway("b", &pki.gcp, "gcp.example"),
        echo.addr,
    ));
    let gateways = format!("{{ address: '{}' }}", b.ingress);
    let a = Gateway::start(&gateway_a(
        &pki.gateway("a", &pki.aws, "aws.example"),
        &gateways,
        "",
    ));
    assert_eq!(call(a.egress("reviews"), b"x"), b"gcp:x");
    b.wait_metric(&closed("reviews", "forwarded", "aws", "gcp"), 1.0);
    a.wait_metric(
        "federation_gateway_egress_connections_closed_total{egress=\"reviews\",outcome=\"forwarded\",src_cluster=\"aws\",dst_cluster=\"gcp\"}",
        1.0,
    );

    // A trusted peer from a cluster B's config never names: counted as `other`.
    let zeta = intermediate(&pki.aws_root, "zeta", None);
    let stranger = pki.write(
        "zeta",
        &leaf(&zeta, &gateway_id("aws.example")),
        &pki.federation(),
    );
    let a2 = Gateway::start(&gateway_a(&stranger, &gateways, ""));
    assert_eq!(call(a2.egress("reviews"), b"y"), b"gcp:y");
    b.wait_metric(&closed("reviews", "forwarded", "other", "gcp"), 1.0);
    assert!(
        b.logs().contains("\"src_cluster\":\"zeta\""),
        "the access log keeps the real name"
    );

    // No route: neither side is known.
    let mut tcp = TcpStream::connect(b.ingress).expect("connect");
    tcp.set_read_timeout(Some(PATIENCE)).expect("timeout");
    tcp.write_all(&client_hello(Some("nothing.example")))
        .expect("hello");
    let _ = tcp.read_to_end(&mut Vec::new());
    b.wait_metric(&closed("unmatched", "no_route", "unknown", "unknown"), 1.0);

    let (_, metrics) = b.admin_get("/metrics");
    for label in ["src_cluster", "dst_cluster"] {
        for value in label_values(
            &metrics,
            "federation_gateway_tcp_connections_closed_total",
            label,
        ) {
            assert!(
                ["aws", "gcp", "other", "unknown"].contains(&value.as_str()),
                "{label}={value} is not bounded by the config"
            );
        }
    }
}

#[test]
fn the_certificate_expiry_gauge_counts_down_to_the_leafs_not_after() {
    let pki = Pki::new();
    let echo = EchoBackend::start("");
    let b = Gateway::start(&gateway_b(
        &pki.gateway("b", &pki.gcp, "gcp.example"),
        echo.addr,
    ));
    // Test leaves are valid for 24 hours from issuance.
    let remaining = b.metric(EXPIRY);
    assert!(
        remaining > 86_400.0 - 600.0 && remaining <= 86_400.0,
        "{EXPIRY} = {remaining}"
    );
    let plain = Gateway::start(&config("", ""));
    let (_, metrics) = plain.admin_get("/metrics");
    assert!(
        !metrics.contains(EXPIRY),
        "no certificate, no gauge:\n{metrics}"
    );
}
