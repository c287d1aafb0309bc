//! Hostile and broken clients: each is closed cleanly with a recorded outcome, and the gateway
//! keeps serving afterwards.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::load::echo_roundtrip;
use crate::support::backend::{EchoBackend, client_hello};
use crate::support::{Gateway, PATIENCE, closed, config};

fn gateway(ingress: &str, echo: &EchoBackend) -> Gateway {
    Gateway::start(&config(
        ingress,
        &format!(
            "routes:
  - name: echo
    hosts: [echo.example]
    endpoints: [{{ address: {} }}]
",
            echo.addr
        ),
    ))
}

/// Sends `bytes`, then expects the gateway to close the connection (EOF or reset) without
/// sending anything back.
fn expect_closed(gw: SocketAddr, bytes: &[u8]) {
    let mut tcp = TcpStream::connect(gw).expect("connect");
    tcp.set_read_timeout(Some(PATIENCE)).expect("timeout");
    // The gateway may close before reading everything; a failed write is fine.
    let _ = tcp.write_all(bytes);
    let mut buf = [0u8; 64];
    match tcp.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("gateway answered {n} bytes instead of closing"),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("expected a close, got {e}"),
    }
}

fn still_serving(gw: &Gateway) {
    assert_eq!(
        echo_roundtrip(gw.ingress, "echo.example", b"alive", 0),
        b"alive"
    );
}

#[test]
fn bad_hellos_close_with_their_outcome() {
    let echo = EchoBackend::start("");
    let gw = gateway("max_hello_bytes: 2048", &echo);

    expect_closed(gw.ingress, &client_hello(None));
    gw.wait_metric(&closed("unmatched", "no_sni"), 1.0);

    expect_closed(gw.ingress, &client_hello(Some("evil-unknown.example")));
    gw.wait_metric(&closed("unmatched", "no_route"), 1.0);

    expect_closed(gw.ingress, b"GET / HTTP/1.1\r\nhost: echo.example\r\n\r\n");
    gw.wait_metric(&closed("unmatched", "not_tls"), 1.0);
    gw.wait_metric(
        "federation_gateway_tls_hello_failures_total{reason=\"not_tls\"}",
        1.0,
    );

    // A record header announcing a 64 KiB ClientHello: refused as soon as it is read.
    let mut huge = vec![22, 3, 1, 0x40, 0x00, 1, 0x00, 0xff, 0xff];
    huge.extend(vec![0u8; 3000]);
    expect_closed(gw.ingress, &huge);
    // A hello that really is bigger than the 2 KiB cap, in many small valid records.
    let big: Vec<u8> = vec![0u8; 4000]
        .chunks(100)
        .enumerate()
        .flat_map(|(i, c)| {
            let mut r = vec![22, 3, 1, 0, 100];
            if i == 0 {
                r.extend([1, 0, 0x0f, 0xa0]);
                r.extend(&c[4..]);
            } else {
                r.extend(c);
            }
            r
        })
        .collect();
    expect_closed(gw.ingress, &big);
    gw.wait_metric(&closed("unmatched", "hello_too_large"), 2.0);

    expect_closed(gw.ingress, &[22, 3, 1, 0, 4, 2, 0, 0, 0]);
    gw.wait_metric(&closed("unmatched", "malformed_hello"), 1.0);

    let (_, metrics) = gw.admin_get("/metrics");
    assert!(
        !metrics.contains("evil-unknown"),
        "raw SNI must never become a label"
    );
    still_serving(&gw);
}

#[test]
fn a_hello_that_never_completes_is_closed_at_the_timeout() {
    let echo = EchoBackend::start("");
    let gw = gateway("hello_timeout: 300ms", &echo);
    let hello = client_hello(Some("echo.example"));
    let started = Instant::now();
    expect_closed(gw.ingress, &hello[..hello.len() / 2]);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "closed after {waited:?}, before the 300ms timeout"
    );
    gw.wait_metric(&closed("unmatched", "hello_timeout"), 1.0);
    still_serving(&gw);
}

#[test]
fn a_flood_past_the_connection_limit_is_shed() {
    let echo = EchoBackend::start("");
    let gw = gateway("max_connections: 5, hello_timeout: 20s", &echo);
    // Five connections that stall mid-hello hold every slot.
    let hello = client_hello(Some("echo.example"));
    let holders: Vec<TcpStream> = (0..5)
        .map(|_| {
            let mut tcp = TcpStream::connect(gw.ingress).expect("connect");
            tcp.write_all(&hello[..10]).expect("partial hello");
            tcp
        })
        .collect();
    gw.wait_metric("federation_gateway_tcp_connections_active", 5.0);
    for _ in 0..20 {
        expect_closed(gw.ingress, &hello);
    }
    gw.wait_metric(&closed("unmatched", "connection_limit"), 20.0);
    drop(holders);
    gw.wait_metric(&closed("unmatched", "client_closed"), 5.0);
    still_serving(&gw);
}

#[test]
fn a_route_limit_sheds_only_that_route() {
    let echo = EchoBackend::start("");
    let gw = Gateway::start(&config(
        "",
        &format!(
            "routes:
  - name: small
    hosts: [small.example]
    max_connections: 1
    endpoints: [{{ address: {0} }}]
  - name: echo
    hosts: [echo.example]
    endpoints: [{{ address: {0} }}]
",
            echo.addr
        ),
    ));
    let mut holder = TcpStream::connect(gw.ingress).expect("connect");
    holder
        .write_all(&client_hello(Some("small.example")))
        .expect("hello");
    gw.wait_metric(
        "federation_gateway_route_connections_active{route=\"small\"}",
        1.0,
    );
    expect_closed(gw.ingress, &client_hello(Some("small.example")));
    gw.wait_metric(&closed("small", "route_connection_limit"), 1.0);
    still_serving(&gw);
    drop(holder);
}
