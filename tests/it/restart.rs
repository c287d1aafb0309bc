//! Gateway restart with graceful drain: a second gateway takes the ingress socket over from the
//! running one (`--handover`), the old one is drained with SIGTERM, calls keep flowing and the
//! connection that was open through the old one is served to its end.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use multicloud::cluster::{ECHO, Options};
use multicloud::shell::Shell;
use multicloud::topology::Topology;
use multicloud::traffic::{Traffic, call_until};
use multicloud::{Error, PATIENCE};

type Result<T = (), E = Error> = std::result::Result<T, E>;

const CALLS: usize = 20;

#[test]
fn a_gateway_replaced_by_handover_and_drained_cuts_no_connection_and_fails_no_call() -> Result {
    let work = tempfile::tempdir().expect("tempdir");
    let mut topo = Topology::new(Shell::new(work.path())?);
    let root = topo.root("root", "mesh.example")?;
    let (aws_ca, gcp_ca) = (
        topo.intermediate(&root, "aws")?,
        topo.intermediate(&root, "gcp")?,
    );
    topo.start("aws", &aws_ca, &Options::default())?;
    let gcp_opts = Options {
        handover: true,
        // Long enough that the held connection below ends well before it.
        drain_timeout: Duration::from_secs(20),
        ..Options::default()
    };
    topo.start("gcp", &gcp_ca, &gcp_opts)?;
    let (aws, gcp) = (topo.get("aws")?, topo.get("gcp")?);
    aws.join(&gcp.token()?)?;
    gcp.export(ECHO)?;
    let listener = aws.listener(ECHO)?;
    call_until(listener, "gcp")?;

    // A connection through gcp's current gateway, held open mid-request.
    // Nothing else calls yet, so the next connection the endpoint accepts is this one.
    let before = gcp.echo.accepted();
    let mut held = TcpStream::connect(listener).expect("connect to aws's egress listener");
    held.write_all(b"GET / HTTP/1.0\r\n")
        .expect("first half of the request");
    gcp.wait_for(
        "the held connection reaches the endpoint through gcp's gateway",
        || Ok(gcp.echo.accepted() > before),
    )?;

    let traffic = Traffic::start(listener, "gcp");
    traffic.wait_successes(CALLS)?;
    let old = topo.get_mut("gcp")?.replace_gateway()?;
    traffic.wait_successes(CALLS)?;
    let replaced = Instant::now();
    old.sigterm()?;
    let draining = old.wait_event("draining", |_| true)?;
    println!("old gateway draining: {draining}");
    // New connections now reach the new instance only.
    traffic.wait_successes(CALLS)?;

    // The held connection was not cut: it finishes through the draining gateway.
    held.write_all(b"Host: echo\r\n\r\n")
        .expect("second half of the request");
    held.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut response = String::new();
    held.read_to_string(&mut response)
        .expect("read the held connection's response");
    assert!(
        response.starts_with("HTTP/1.0 200") && response.trim_end().ends_with("gcp"),
        "the connection opened before the drain is served to its end: {response:?}"
    );
    // The client's half of the connection: the gateways close theirs once both are done.
    drop(held);
    let stopped = old.wait_event("stopped", |_| true)?;
    assert_eq!(
        stopped["drained"], true,
        "the old gateway finished every connection before its drain deadline: {stopped}"
    );
    let counts = traffic.stop();
    println!(
        "calls across the gateway replacement: {} ok, {} failed; old gateway stopped {:?} after SIGTERM",
        counts.ok,
        counts.failed,
        replaced.elapsed()
    );
    assert!(
        counts.failed == 0,
        "{} calls failed across the replacement: {:?}",
        counts.failed,
        counts.errors
    );
    // The new gateway serves on its own.
    let gcp = topo.get("gcp")?;
    assert!(gcp.gateway.is_alive());
    call_until(listener, "gcp")?;
    Ok(())
}
