//! Controller mode: a gateway driven by a real tonic `GatewayDiscovery` server on a Unix socket.
//! Configs apply (routes, egress, TLS material from memory), change, get rejected while the last
//! good one stays, and the gateway keeps serving when the controller goes away, then reconnects
//! to a new one on the same socket.

use std::path::Path;

use east_west_gateway::api;
use serde_json::Value;
use trust_bundle::Credential;
use trust_bundle::bundle::pem_cert;
use trust_bundle::test_util::leaf;

use crate::lifecycle::{SNI, open};
use crate::mtls::{call, gateway_b};
use crate::support::backend::EchoBackend;
use crate::support::controller::Controller;
use crate::support::pki::{Pki, gateway_id};
use crate::support::{Gateway, addr};

const BOOTSTRAP: &str = "cluster: aws
ingress: { listen: 127.0.0.1:0 }
admin: { listen: 127.0.0.1:0 }
drain_timeout: 5s
";

/// Version `version`: route `svc` to `endpoint`, egress `reviews` to `gateway` (cluster gcp),
/// with `identity` and the federation bundle map.
fn config(
    version: u64,
    endpoint: std::net::SocketAddr,
    gateway: std::net::SocketAddr,
    identity: &Credential,
    bundle: &str,
) -> api::GatewayConfig {
    let service = |name: &str| api::ServiceRef {
        name: name.to_owned(),
        namespace: "default".to_owned(),
        port: 9080,
    };
    api::GatewayConfig {
        version,
        routes: vec![api::Route {
            name: "svc".to_owned(),
            hosts: vec![SNI.to_owned()],
            endpoints: vec![api::Endpoint {
                address: endpoint.to_string(),
                weight: 0,
            }],
            ..api::Route::default()
        }],
        egress: vec![api::Egress {
            name: "reviews".to_owned(),
            listen: "127.0.0.1:0".to_owned(),
            service: Some(service("reviews")),
            gateways: vec![api::RemoteGateway {
                address: gateway.to_string(),
                cluster: "gcp".to_owned(),
                trust_domain: "gcp.example".to_owned(),
                ..api::RemoteGateway::default()
            }],
            ..api::Egress::default()
        }],
        identity: Some(api::Identity {
            cert_chain_pem: identity.chain.iter().map(|c| pem_cert(c)).collect(),
            private_key_pem: identity.key.to_pem(),
        }),
        bundle_map_json: bundle.to_owned(),
        cluster: String::new(),
    }
}

fn applied(gw: &Gateway, version: u64) -> Value {
    gw.wait_event("config", |e| {
        e["version"] == version && e["result"] == "applied"
    })
}

fn dump(gw: &Gateway) -> Value {
    serde_json::from_str(&gw.admin_get("/config_dump").1).expect("json dump")
}

#[test]
fn a_controller_drives_the_gateway_which_keeps_the_last_good_config_and_survives_it() {
    let pki = Pki::new();
    let (first, second, third) = (
        EchoBackend::start("1"),
        EchoBackend::start("2"),
        EchoBackend::start("3"),
    );
    let (gcp1, gcp2) = (EchoBackend::start("gcp1:"), EchoBackend::start("gcp2:"));
    let b1 = Gateway::start(&gateway_b(
        &pki.gateway("b1", &pki.gcp, "gcp.example"),
        gcp1.addr,
        "",
    ));
    let b2 = Gateway::start(&gateway_b(
        &pki.gateway("b2", &pki.gcp, "gcp.example"),
        gcp2.addr,
        "",
    ));
    let identity = leaf(&pki.aws, &gateway_id("aws.example"));
    let bundle = pki.federation().to_json();
    let key_line = identity
        .key
        .to_pem()
        .lines()
        .nth(1)
        .expect("key line")
        .to_owned();

    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("controller.sock");
    let address = format!("unix:{}", socket.display());
    let controller = Controller::start(&socket);
    let gw = Gateway::start_controlled(&address, BOOTSTRAP, "gw-a");
    assert_eq!(gw.ready_event()["controller"], address.as_str());
    assert_eq!(gw.ready_event()["egress"], serde_json::json!({}));
    gw.wait_event("controller", |e| e["connected"] == true);
    let request = controller.request();
    assert_eq!(
        (request.gateway.as_str(), request.have_version),
        ("gw-a", 0)
    );
    gw.wait_metric_eq("federation_gateway_controller_connected", 1.0);
    let expiry = "federation_gateway_certificate_expiry_seconds";
    assert!(
        !gw.admin_get("/metrics").1.contains(expiry),
        "no certificate yet"
    );

    // The first config: routes serve, the egress listener is bound, TLS comes from memory.
    controller.send(config(1, first.addr, b1.ingress, &identity, &bundle));
    let egress = addr(&applied(&gw, 1)["egress"]["reviews"]);
    assert_eq!(open(gw.ingress).1, '1');
    assert_eq!(call(egress, b"x"), b"gcp1:x");
    let dumped = dump(&gw);
    assert_eq!(
        dumped["controller"]["address"],
        address.as_str(),
        "{dumped}"
    );
    assert_eq!(dumped["controller"]["version"], 1, "{dumped}");
    assert_eq!(dumped["controller"]["connected"], true, "{dumped}");
    assert_eq!(
        dumped["tls"]["spiffe_id"],
        gateway_id("aws.example"),
        "{dumped}"
    );
    assert!(dumped["tls"]["expires"].is_string(), "{dumped}");
    assert_eq!(dumped["config"]["tls"]["source"], "controller", "{dumped}");
    gw.wait_metric_eq("federation_gateway_controller_config_version", 1.0);
    assert!(
        gw.metric(expiry) > 80_000.0,
        "the controller's leaf is in force"
    );

    // A second config changes the route and the egress gateway.
    controller.send(config(2, second.addr, b2.ingress, &identity, &bundle));
    let event = applied(&gw, 2);
    assert_eq!(
        addr(&event["egress"]["reviews"]),
        egress,
        "changed in place"
    );
    assert_eq!(open(gw.ingress).1, '2');
    assert_eq!(call(egress, b"x"), b"gcp2:x");

    // The gateway reports its readiness, version and what its probes measure.
    let report = controller.report_where(|r| {
        r.config_version == 2
            && r.egress
                .first()
                .and_then(|e| e.gateways.first())
                .is_some_and(|g| g.measured)
    });
    assert_eq!((report.gateway.as_str(), report.ready), ("gw-a", true));
    assert_eq!(report.ingress, gw.ingress.to_string());
    let probe = &report.egress[0].gateways[0];
    assert_eq!(report.egress[0].listen, egress.to_string());
    assert_eq!(
        (
            probe.address.as_str(),
            probe.cluster.as_str(),
            probe.healthy
        ),
        (b2.ingress.to_string().as_str(), "gcp", true),
        "{report:?}"
    );
    assert!(
        probe.rtt_p50_us > 0 && probe.rtt_p99_us >= probe.rtt_p50_us,
        "{report:?}"
    );
    assert!(
        probe.sni.ends_with(".gcp.v1.isthmus.internal"),
        "{report:?}"
    );

    // Invalid configs are rejected with the precise reason; the last good one stays.
    let mut invalid = config(3, third.addr, b1.ingress, &identity, &bundle);
    invalid.routes[0].endpoints[0].address = "nowhere".to_owned();
    controller.send(invalid);
    let rejected = gw.wait_event("config", |e| e["version"] == 3);
    assert_eq!(rejected["result"], "rejected");
    assert!(
        rejected["error"].as_str().is_some_and(
            |e| e.contains("routes[0].endpoints[0].address: \"nowhere\" is not IP:PORT")
        ),
        "{rejected}"
    );
    let mut bad_key = config(4, third.addr, b1.ingress, &identity, &bundle);
    if let Some(identity) = bad_key.identity.as_mut() {
        identity.private_key_pem = identity.private_key_pem.replace(&key_line[..8], "AAAAAAAA");
    }
    controller.send(bad_key);
    let rejected = gw.wait_event("config", |e| e["version"] == 4);
    assert_eq!(rejected["result"], "rejected", "{rejected}");
    assert!(
        rejected["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("identity.private_key_pem (from the controller): ")),
        "{rejected}"
    );
    gw.wait_metric(
        "federation_gateway_controller_configs_total{result=\"rejected\"}",
        2.0,
    );
    assert_eq!(open(gw.ingress).1, '2');
    assert_eq!(call(egress, b"y"), b"gcp2:y");
    assert_eq!(dump(&gw)["controller"]["version"], 2);

    // The controller goes away: the gateway keeps serving the last good config.
    drop(controller);
    gw.wait_event("controller", |e| e["connected"] == false);
    gw.wait_metric_eq("federation_gateway_controller_connected", 0.0);
    assert_eq!(open(gw.ingress).1, '2');
    assert_eq!(call(egress, b"z"), b"gcp2:z");

    // A new controller on the same socket: the gateway reconnects, says what it runs, applies.
    let controller = Controller::start(&socket);
    controller.send(config(5, third.addr, b2.ingress, &identity, &bundle));
    gw.wait_event("controller", |e| e["connected"] == true);
    assert_eq!(controller.request().have_version, 2);
    applied(&gw, 5);
    assert_eq!(open(gw.ingress).1, '3');
    gw.wait_metric_eq("federation_gateway_controller_config_version", 5.0);
    assert!(
        gw.logs().contains("controller unreachable")
            || gw.logs().contains("controller stream lost"),
        "reconnect attempts are logged"
    );

    // The key never leaves the gateway.
    let (_, metrics) = gw.admin_get("/metrics");
    for text in [dump(&gw).to_string(), metrics, gw.logs(), gw.stdout()] {
        assert!(!text.contains(&key_line), "key material leaked");
    }
}

#[test]
fn a_bootstrap_file_with_routes_is_refused_in_controller_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bootstrap.yaml");
    std::fs::write(
        &path,
        format!("{BOOTSTRAP}routes: [{{ name: r, hosts: [a.example], endpoints: [{{ address: 127.0.0.1:9 }}] }}]\n"),
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_east-west-gateway"))
        .arg("--config")
        .arg(&path)
        .env(
            "EWG_CONTROLLER",
            format!("unix:{}", Path::new(dir.path()).join("none.sock").display()),
        )
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "routes: not allowed in the bootstrap file of a gateway run with --controller"
        ),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "no ready event");
}
