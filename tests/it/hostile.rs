//! Hostile input against every listener of a running, linked pair of clusters: each case ends
//! with a clear error (an outcome metric, a status, a TLS alert or a gRPC status), both
//! processes keep serving (a call crosses both gateways afterwards, the CLI still answers), and
//! resident memory stays bounded. The DNS listener's cases are in `hostile_dns.rs`.
//!
//! The gateway's own suite (`east-west-gateway/tests/it/hostile.rs`) covers the ingress cases
//! that need a tuned config: the hello timeout and floods past the connection limits.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use federation_ctl::api::peering as pb;
use federation_ctl::api::peering::peering_client::PeeringClient;
use multicloud::cluster::Cluster;
use multicloud::echo::call;
use multicloud::run_ok;

use crate::probe::{
    self, client_hello, http_get, leaf_at, load_ca, mtls_client, rss_kib, send_raw, tls_exchange,
};
use crate::security::metric;
use crate::world::{Result, echo_from, world};

/// How much a process's resident memory may grow over the whole matrix.
const RSS_BOUND_KIB: u64 = 64 * 1024;

fn closed(b: &Cluster, outcome: &str) -> f64 {
    metric(
        b.admin,
        "federation_gateway_tcp_connections_closed",
        &[&format!("outcome=\"{outcome}\"")],
    )
}

/// Calls `Link` on `peering` holding `config`'s identity: the status the controller answered,
/// or the transport error (a refused handshake).
fn link_as(peering: SocketAddr, config: Arc<rustls::ClientConfig>) -> String {
    runtime().block_on(async move {
        let channel =
            match federation_ctl::transport::tls_connect(vec![peering.to_string()], config).await {
                Ok(c) => c,
                Err(e) => return format!("connect: {e}"),
            };
        let hello = pb::LinkMessage {
            kind: Some(pb::link_message::Kind::Hello(pb::Hello {
                cluster: "a".into(),
                have_version: 0,
            })),
        };
        let mut client = PeeringClient::new(channel);
        let call = client.link(tokio_stream::iter([hello]));
        match tokio::time::timeout(probe::IO_TIMEOUT, call).await {
            Ok(Ok(mut stream)) => {
                match tokio::time::timeout(probe::IO_TIMEOUT, stream.get_mut().message()).await {
                    Ok(Ok(Some(m))) => format!("accepted: {m:?}"),
                    Ok(Ok(None)) => "stream ended".into(),
                    Ok(Err(status)) => format!("{:?}: {}", status.code(), status.message()),
                    Err(_) => "no answer".into(),
                }
            }
            Ok(Err(status)) => format!("{:?}: {}", status.code(), status.message()),
            Err(_) => "no answer".into(),
        }
    })
}

/// Calls `Join` with a token id, secret and digest that the acceptor never issued.
fn join_forged(peering: SocketAddr, config: Arc<rustls::ClientConfig>) -> String {
    runtime().block_on(async move {
        let channel = federation_ctl::transport::tls_connect(vec![peering.to_string()], config)
            .await
            .expect("connect");
        let req = pb::JoinRequest {
            token_id: "00112233445566778899aabbccddeeff".into(),
            secret: vec![7; 32],
            token_digest: vec![9; 32],
            joiner: Some(pb::PeerInfo {
                cluster: "mallory".into(),
                trust_domain: "mesh.example".into(),
                bundle_json: "{\"keys\":[]}".into(),
                ..Default::default()
            }),
        };
        match PeeringClient::new(channel).join(req).await {
            Ok(r) => format!("accepted: {:?}", r.into_inner()),
            Err(status) => format!("{:?}: {}", status.code(), status.message()),
        }
    })
}

/// Waits (bounded) for a line of `p`'s log holding every one of `needles`; returns it.
pub(crate) fn wait_log(p: &multicloud::process::Process, needles: &[&str]) -> String {
    let deadline = std::time::Instant::now() + multicloud::PATIENCE;
    loop {
        let log = std::fs::read_to_string(p.stderr_log()).unwrap_or_default();
        if let Some(line) = log.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return line.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no log line with {needles:?}\n{}",
            p.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn hostile_input_to_every_listener_is_refused_and_both_processes_keep_serving() -> Result {
    let w = world(&["a", "b"], &[])?;
    let [a, b] = &w.topo.clusters[..] else {
        unreachable!()
    };
    let listener = echo_from(a, b)?;
    let serving = |case: &str| {
        assert_eq!(
            call(listener).as_deref(),
            Ok("b"),
            "after {case}: a call through both gateways"
        );
        run_ok(&mut b.ctl(&["links", "-o", "json"]).expect("ctl"))
            .unwrap_or_else(|e| panic!("after {case}: b's controller answers: {e}"));
    };
    let pids = [
        ("a gateway", a.gateway.pid()),
        ("b gateway", b.gateway.pid()),
        ("b controller", b.controller.pid()),
        ("a controller", a.controller.pid()),
    ];
    let before: Vec<u64> = pids.iter().map(|(_, pid)| rss_kib(*pid)).collect();

    // Gateway ingress.
    // A handshake announcing a 64 KiB ClientHello, in two full 16 KiB records: past the cap.
    let big_hello: Vec<u8> = (0..2)
        .flat_map(|i| {
            let mut r = vec![22, 3, 1, 0x40, 0x00];
            let mut body = vec![0u8; 0x4000];
            if i == 0 {
                body[..4].copy_from_slice(&[1, 0x01, 0x00, 0x00]);
            }
            r.extend(body);
            r
        })
        .collect();
    let hello = client_hello("8080.echo.default.b.v1.isthmus.internal");
    let ingress_cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "garbage bytes",
            b"\x00\xffGET / HTTP/1.1\r\n\r\n".repeat(100),
            "not_tls",
        ),
        (
            "a truncated hello",
            hello[..hello.len() / 2].to_vec(),
            "client_closed",
        ),
        ("an oversized hello", big_hello, "hello_too_large"),
        (
            "a hello naming no route",
            client_hello("nothing.example"),
            "no_route",
        ),
    ];
    for (case, bytes, outcome) in ingress_cases {
        let n = closed(b, outcome);
        let reply = send_raw(b.ingress, &bytes);
        assert!(reply.is_empty(), "{case}: the gateway answered {reply:?}");
        // The outcome is recorded when the connection ends, which the probe saw already.
        let deadline = std::time::Instant::now() + multicloud::PATIENCE;
        while closed(b, outcome) <= n {
            assert!(
                std::time::Instant::now() < deadline,
                "{case}: no {outcome} counted"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        println!("ingress, {case}: closed, outcome {outcome}");
        serving(case);
    }
    // Many idle connections at once (below the limit): the calls still get through.
    let idle: Vec<_> = (0..2000)
        .map(|_| std::net::TcpStream::connect(b.ingress).expect("connect"))
        .collect();
    serving("2000 idle connections");
    drop(idle);

    // Gateway admin.
    for (case, bytes) in [
        ("garbage", b"\x16\x03\x01\x00\x05hello\r\n\r\n".to_vec()),
        ("a huge header", {
            let mut r = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
            r.extend(std::iter::repeat_n(b'a', 1 << 20));
            r.extend_from_slice(b"\r\n\r\n");
            r
        }),
    ] {
        let reply = String::from_utf8_lossy(&send_raw(b.admin, &bytes)).into_owned();
        assert!(
            reply.is_empty() || reply.starts_with("HTTP/1.1 4"),
            "admin, {case}: {reply:?}"
        );
        println!(
            "admin, {case}: {:?}",
            reply.lines().next().unwrap_or("closed")
        );
    }
    let reply = http_get(b.admin, "/nope");
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
    assert!(http_get(b.admin, "/healthz").starts_with("HTTP/1.1 200"));
    serving("admin cases");

    // Gateway egress: garbage from a local client reaches b's endpoint through mTLS and gets
    // no answer; nothing else changes.
    let reply = send_raw(listener, b"\x00\x01\x02 not http\r\n\r\n");
    println!("egress, garbage: {} bytes back", reply.len());
    serving("egress garbage");

    // Controller peering: garbage, then TLS clients with bad certificates.
    let reply = send_raw(b.peering, b"\x00\x00\x00garbage\r\n\r\n");
    assert!(reply.len() < 64, "peering answered garbage with {reply:?}");
    wait_log(
        &b.controller,
        &["peering handshake refused", "corrupt message"],
    );
    let ca_a = load_ca(&a.dir.join("ca"));
    let controller_a = "spiffe://mesh.example/isthmus/cluster/a/controller";
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    // Issued as if the clock read 5 minutes ago, valid 1 minute: expired now.
    let expired = leaf_at(
        &ca_a,
        controller_a,
        now - Duration::from_secs(300),
        Duration::from_secs(60),
    );
    let future = leaf_at(&ca_a, controller_a, now + Duration::from_secs(86_400), hour);
    let foreign_root = trust_bundle::test_util::root("mesh.example");
    let foreign_ca = trust_bundle::test_util::intermediate(&foreign_root, "a", None);
    let foreign = trust_bundle::test_util::leaf(&foreign_ca, controller_a);
    let wrong_id = leaf_at(
        &ca_a,
        "spiffe://mesh.example/ns/default/sa/mallory",
        now,
        hour,
    );
    // The handshake itself is refused, with the alert naming why.
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    for (case, cred, reason) in [
        ("an expired client certificate", &expired, "expired"),
        (
            "a not-yet-valid client certificate",
            &future,
            "is not valid for another",
        ),
        (
            "a client certificate from a foreign root",
            &foreign,
            "does not lead to any root",
        ),
    ] {
        let config = mtls_client(cred, &ca_a);
        let answer = tls_exchange(&config, b.peering, "controller.isthmus.internal", preface);
        println!("peering with {case}: {answer:?}");
        let err = answer.expect_err(case);
        assert!(
            err.contains("alert"),
            "{case}: expected a TLS alert, got {err:?}"
        );
        let line = wait_log(&b.controller, &["peering handshake refused", reason]);
        println!("  b's controller: {line}");
        serving(case);
    }
    // A valid certificate of the shared root that names no linked controller: the handshake
    // passes (`Join` needs none), `Link` is refused.
    let answer = link_as(b.peering, mtls_client(&wrong_id, &ca_a));
    println!("peering Link with a certificate naming no linked peer: {answer}");
    assert!(answer.starts_with("NotFound"), "{answer}");
    serving("a certificate naming no linked peer");
    let answer = join_forged(b.peering, mtls_client(&wrong_id, &ca_a));
    println!("peering Join with a forged token: {answer}");
    assert!(answer.starts_with("PermissionDenied"), "{answer}");
    serving("a forged token");

    // Controller local API: garbage on the Unix socket.
    let api = b.dir.join("state/api.sock");
    for bytes in [
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff"[..],
        b"garbage",
    ] {
        let mut sock = UnixStream::connect(&api).expect("api socket");
        let _ = sock.write_all(bytes);
        sock.set_read_timeout(Some(probe::IO_TIMEOUT))
            .expect("timeout");
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut sock, &mut buf);
    }
    serving("garbage on the local API");

    // Controller DNS (a's: it serves the import of b's echo).
    let dns = a.dns().expect("a's controller serves DNS");
    crate::hostile_dns::dns_matrix(dns, &a.controller);
    serving("the DNS cases");

    for ((who, pid), before) in pids.iter().zip(before) {
        let after = rss_kib(*pid);
        println!("RSS {who}: {before} KiB before, {after} KiB after");
        assert!(
            after <= before + RSS_BOUND_KIB,
            "{who} grew from {before} to {after} KiB"
        );
    }
    Ok(())
}
