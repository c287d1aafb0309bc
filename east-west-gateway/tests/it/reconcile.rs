//! Egress listeners follow the config file on reload: added ones serve, removed ones refuse new
//! connections while open ones finish, changed gateways take over new connections without a
//! rebind, a moved listener is rebound, and one that cannot bind is reported while the rest
//! applies.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use serde_json::Value;

use crate::mtls::{call, gateway_b};
use crate::support::backend::EchoBackend;
use crate::support::pki::{Files, Pki};
use crate::support::{Gateway, PATIENCE, addr};

/// Gateway A (cluster aws) with `egress` entries (YAML list items), polling its file.
fn gateway_a(files: &Files, egress: &[String]) -> String {
    format!(
        "cluster: aws
ingress: {{ listen: 127.0.0.1:0 }}
admin: {{ listen: 127.0.0.1:0 }}
reload: {{ watch_interval: 50ms }}
drain_timeout: 30s
{}egress: [{}]
",
        files.section(),
        egress.join(", ")
    )
}

/// An mTLS egress entry for reviews.default:9080 in cluster gcp.
fn reviews(name: &str, listen: &str, gateway: SocketAddr) -> String {
    format!(
        "{{ name: {name}, listen: '{listen}', service: {{ name: reviews, namespace: default, port: 9080 }}, \
         cluster: gcp, trust_domain: gcp.example, gateways: [{{ address: '{gateway}' }}] }}"
    )
}

/// Writes `config` and waits for the reload that applies it as `generation`.
fn reload(gw: &Gateway, config: &str, generation: u64) -> Value {
    gw.write_config(config);
    gw.wait_event("reload", |e| {
        e["result"] == "applied" && e["generation"] == generation
    })
}

fn refused(address: SocketAddr) -> bool {
    matches!(TcpStream::connect(address), Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
}

/// A connection through `address` that has been answered once (so it is past gateway choice).
fn open(address: SocketAddr, tag: &[u8]) -> TcpStream {
    let mut tcp = TcpStream::connect(address).expect("connect egress");
    tcp.set_read_timeout(Some(PATIENCE)).expect("timeout");
    tcp.write_all(b"hi").expect("write");
    let mut answer = vec![0u8; tag.len() + 2];
    tcp.read_exact(&mut answer).expect("answer");
    assert_eq!(&answer[..tag.len()], tag);
    tcp
}

fn assert_echoes(tcp: &mut TcpStream, what: &[u8]) {
    tcp.write_all(what).expect("write");
    let mut back = vec![0u8; what.len()];
    tcp.read_exact(&mut back).expect("echo");
    assert_eq!(back, what);
}

#[test]
fn egress_listeners_are_added_changed_in_place_and_removed_on_reload() {
    let pki = Pki::new();
    let (one, two) = (EchoBackend::start("one:"), EchoBackend::start("two:"));
    let b1 = Gateway::start(&gateway_b(
        &pki.gateway("b1", &pki.gcp, "gcp.example"),
        one.addr,
        "",
    ));
    let b2 = Gateway::start(&gateway_b(
        &pki.gateway("b2", &pki.gcp, "gcp.example"),
        two.addr,
        "",
    ));
    let files = pki.gateway("a", &pki.aws, "aws.example");
    let a = Gateway::start(&gateway_a(&files, &[]));
    assert_eq!(a.ready_event()["egress"], serde_json::json!({}));

    // Added: bound and serving.
    let applied = reload(
        &a,
        &gateway_a(&files, &[reviews("reviews", "127.0.0.1:0", b1.ingress)]),
        2,
    );
    assert_eq!(applied["egress_errors"], serde_json::json!({}), "{applied}");
    let listener = addr(&applied["egress"]["reviews"]);
    assert_eq!(call(listener, b"x"), b"one:x");
    let mut before = open(listener, b"one:");

    // Changed gateways, same address: no rebind; new connections use the new gateway.
    let applied = reload(
        &a,
        &gateway_a(&files, &[reviews("reviews", "127.0.0.1:0", b2.ingress)]),
        3,
    );
    assert_eq!(
        addr(&applied["egress"]["reviews"]),
        listener,
        "same listener"
    );
    assert_eq!(call(listener, b"x"), b"two:x");
    assert_echoes(&mut before, b"opened before the change");
    let (_, dump) = a.admin_get("/config_dump");
    let dump: Value = serde_json::from_str(&dump).expect("json");
    assert_eq!(
        dump["egress"][0]["gateways"][0]["address"],
        b2.ingress.to_string(),
        "{dump}"
    );
    assert_eq!(dump["egress"][0]["listen"], listener.to_string(), "{dump}");

    // Moved: rebound on the new address, the old one refuses.
    let applied = reload(
        &a,
        &gateway_a(&files, &[reviews("reviews", "127.0.0.2:0", b2.ingress)]),
        4,
    );
    let moved = addr(&applied["egress"]["reviews"]);
    assert_eq!(moved.ip().to_string(), "127.0.0.2");
    assert!(refused(listener), "the old address is closed");
    assert_eq!(call(moved, b"x"), b"two:x");
    let mut during = open(moved, b"two:");

    // Removed: refuses new connections; open ones finish (drain_timeout is 30s).
    let applied = reload(&a, &gateway_a(&files, &[]), 5);
    assert_eq!(applied["egress"], serde_json::json!({}), "{applied}");
    assert!(refused(moved), "a removed listener refuses connections");
    assert_echoes(&mut during, b"open through the removal");
    assert_echoes(&mut before, b"and the older one too");
    let (_, metrics) = a.admin_get("/metrics");
    assert!(
        !metrics.contains("federation_gateway_remote_gateway_healthy{"),
        "gauges of removed gateways are dropped:\n{metrics}"
    );
}

#[test]
fn an_egress_listener_that_cannot_bind_is_reported_and_the_rest_applies() {
    let pki = Pki::new();
    let echo = EchoBackend::start("gcp:");
    let b = Gateway::start(&gateway_b(
        &pki.gateway("b", &pki.gcp, "gcp.example"),
        echo.addr,
        "",
    ));
    let files = pki.gateway("a", &pki.aws, "aws.example");
    let a = Gateway::start(&gateway_a(&files, &[]));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_address = taken.local_addr().expect("addr");
    let config = gateway_a(
        &files,
        &[
            reviews("taken", &taken_address.to_string(), b.ingress),
            reviews("free", "127.0.0.1:0", b.ingress),
        ],
    );
    let applied = reload(&a, &config, 2);
    let error = applied["egress_errors"]["taken"]
        .as_str()
        .unwrap_or_default();
    assert!(
        error.contains(&format!(
            "cannot bind egress listener taken on {taken_address}"
        )),
        "{applied}"
    );
    assert!(applied["egress"].get("taken").is_none(), "{applied}");
    assert_eq!(call(addr(&applied["egress"]["free"]), b"x"), b"gcp:x");
    a.wait_metric(
        "federation_gateway_egress_bind_failures_total{egress=\"taken\"}",
        1.0,
    );
    assert!(
        a.logs().contains("egress listener not bound"),
        "error logged"
    );

    // Once the port is free, the next reload binds it.
    drop(taken);
    a.signal("HUP");
    let applied = a.wait_event("reload", |e| {
        e["result"] == "applied" && e["generation"] == 3
    });
    assert_eq!(
        addr(&applied["egress"]["taken"]),
        taken_address,
        "{applied}"
    );
    assert_eq!(applied["egress_errors"], serde_json::json!({}), "{applied}");
    assert_eq!(call(taken_address, b"y"), b"gcp:y");
}
