//! Hot reload under traffic, graceful drain, drain deadline and idle timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::support::backend::{EchoBackend, client_hello};
use crate::support::{Gateway, PATIENCE, closed, config};

pub(crate) const SNI: &str = "svc.example";

fn routed_to(backend: SocketAddr, extra: &str) -> String {
    config(
        "",
        &format!(
            "{extra}
routes:
  - name: svc
    hosts: [{SNI}]
    endpoints: [{{ address: {backend} }}]
"
        ),
    )
}

/// Opens a forwarded connection and returns it with the backend's one-byte tag.
pub(crate) fn open(gw: SocketAddr) -> (TcpStream, char) {
    let hello = client_hello(Some(SNI));
    let mut tcp = TcpStream::connect(gw).expect("connect");
    tcp.set_read_timeout(Some(PATIENCE)).expect("timeout");
    tcp.write_all(&hello).expect("hello");
    let mut echoed = vec![0u8; 1 + hello.len()];
    tcp.read_exact(&mut echoed).expect("tag and echoed hello");
    (tcp, char::from(echoed[0]))
}

fn assert_echoes(tcp: &mut TcpStream, what: &[u8]) {
    tcp.write_all(what).expect("write");
    let mut back = vec![0u8; what.len()];
    tcp.read_exact(&mut back).expect("echo");
    assert_eq!(back, what);
}

fn assert_closed_by_gateway(tcp: &mut TcpStream) {
    let mut buf = [0u8; 16];
    match tcp.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("unexpected {n} bytes"),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("expected close, got {e}"),
    }
}

#[test]
fn reload_under_traffic_keeps_old_connections_and_routes_new_ones() {
    let (a, b) = (EchoBackend::start("A"), EchoBackend::start("B"));
    let gw = Gateway::start(&routed_to(a.addr, "reload: { watch_interval: 50ms }"));
    let (mut first, tag) = open(gw.ingress);
    assert_eq!(tag, 'A');

    // File change, picked up by polling.
    gw.write_config(&routed_to(b.addr, "reload: { watch_interval: 0s }"));
    gw.wait_event("reload", |e| {
        e["result"] == "applied" && e["generation"] == 2
    });
    let (mut second, tag) = open(gw.ingress);
    assert_eq!(tag, 'B', "new connections follow the new routes");
    assert_echoes(&mut first, b"opened before the reload");

    // An invalid file is rejected and the config in force stays.
    gw.write_config("cluster: aws-east\nroutes: [{ name: svc }]\n");
    gw.signal("HUP");
    let rejected = gw.wait_event("reload", |e| e["result"] == "rejected");
    assert!(
        rejected["error"]
            .as_str()
            .is_some_and(|e| e.contains("routes[0]")),
        "{rejected}"
    );
    assert_eq!(open(gw.ingress).1, 'B');
    gw.wait_metric(
        "federation_gateway_config_reloads_total{result=\"rejected\"}",
        1.0,
    );

    // SIGHUP alone (polling is off now) applies a valid change.
    gw.write_config(&routed_to(a.addr, "reload: { watch_interval: 0s }"));
    gw.signal("HUP");
    gw.wait_event("reload", |e| {
        e["result"] == "applied" && e["generation"] == 3
    });
    assert_eq!(open(gw.ingress).1, 'A');
    assert_echoes(&mut first, b"generation 1 still flowing");
    assert_echoes(&mut second, b"generation 2 still flowing");
    let (_, dump) = gw.admin_get("/config_dump");
    let dump: serde_json::Value = serde_json::from_str(&dump).expect("json dump");
    assert_eq!(dump["generation"], 3);
    assert_eq!(
        dump["config"]["routes"][0]["endpoints"][0]["address"],
        a.addr.to_string()
    );
}

#[test]
fn sigterm_drains_open_connections_then_exits() {
    let echo = EchoBackend::start("E");
    let mut gw = Gateway::start(&routed_to(echo.addr, "drain_timeout: 30s"));
    let (mut conn, _) = open(gw.ingress);
    gw.signal("TERM");
    gw.wait_event("draining", |_| true);
    assert_eq!(gw.admin_get("/readyz").0, 503);
    // The listener closes: new connections are refused (bounded wait for the accept loop).
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(gw.ingress).is_ok() {
        assert!(
            Instant::now() < deadline,
            "ingress still accepting while draining"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_echoes(&mut conn, b"still served while draining");
    drop(conn);
    let stopped = gw.wait_event("stopped", |_| true);
    assert_eq!(stopped["drained"], true);
    assert!(gw.wait_exit().success());
}

#[test]
fn connections_still_open_at_the_drain_deadline_are_closed() {
    let echo = EchoBackend::start("E");
    let mut gw = Gateway::start(&routed_to(echo.addr, "drain_timeout: 300ms"));
    let (mut conn, _) = open(gw.ingress);
    gw.signal("TERM");
    assert_closed_by_gateway(&mut conn);
    let stopped = gw.wait_event("stopped", |_| true);
    assert_eq!(stopped["drained"], false);
    assert!(gw.wait_exit().success());
    assert!(
        gw.logs().contains("\"outcome\":\"drained\""),
        "access log records the drained connection"
    );
}

#[test]
fn idle_connections_are_closed() {
    let echo = EchoBackend::start("E");
    // Long enough that opening the connection under the parallel load tests never idles out.
    let gw = Gateway::start(&routed_to(echo.addr, "upstream: { idle_timeout: 1s }"));
    let (mut conn, _) = open(gw.ingress);
    assert_echoes(&mut conn, b"activity");
    let started = Instant::now();
    assert_closed_by_gateway(&mut conn);
    assert!(started.elapsed() >= Duration::from_millis(900));
    gw.wait_metric(&closed("svc", "idle_timeout"), 1.0);
}
