//! Gateway-to-gateway mTLS: gateway A (cluster aws) egress → gateway B (cluster gcp) ingress
//! terminate → echo endpoint; refusals by trust and by authorization; host-name gateway
//! addresses; certificate and bundle reload; the bound on handshakes in progress.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use trust_bundle::test_util::{bundle_map, intermediate, leaf, leaf_expiring_in, root};

use crate::support::backend::{EchoBackend, client_hello};
use crate::support::pki::{Files, Pki, gateway_id, write_atomically};
use crate::support::{Gateway, PATIENCE, closed};

/// Gateway B: a terminate route for reviews.default:9080 allowing cluster `aws`.
pub(crate) fn gateway_b(files: &Files, endpoint: SocketAddr, extra: &str) -> String {
    remote_gateway("gcp", files, endpoint, extra)
}

/// A gateway of `cluster` with gateway B's terminate route.
pub(crate) fn remote_gateway(
    cluster: &str,
    files: &Files,
    endpoint: SocketAddr,
    extra: &str,
) -> String {
    format!(
        "cluster: {cluster}
ingress: {{ listen: 127.0.0.1:0 }}
admin: {{ listen: 127.0.0.1:0 }}
{}{extra}
routes:
  - name: reviews
    services: [{{ name: reviews, namespace: default, port: 9080 }}]
    mode: terminate
    authorize: {{ clusters: [aws] }}
    endpoints: [{{ address: {endpoint} }}]
",
        files.section()
    )
}

/// Gateway A: an mTLS egress listener `reviews` toward `gateways` (YAML flow items).
pub(crate) fn gateway_a(files: &Files, gateways: &str, extra: &str) -> String {
    format!(
        "cluster: aws
ingress: {{ listen: 127.0.0.1:0 }}
admin: {{ listen: 127.0.0.1:0 }}
{}{extra}
egress:
  - name: reviews
    listen: 127.0.0.1:0
    service: {{ name: reviews, namespace: default, port: 9080 }}
    cluster: gcp
    trust_domain: gcp.example
    probe: {{ interval: 100ms, timeout: 500ms, unhealthy_after: 2 }}
    gateways: [{gateways}]
",
        files.section()
    )
}

/// Gateway A with `files`, its egress listener toward gateway `b` alone.
pub(crate) fn a_toward(files: &Files, b: &Gateway, extra: &str) -> Gateway {
    let gateways = format!("{{ address: '{}' }}", b.ingress);
    Gateway::start(&gateway_a(files, &gateways, extra))
}

/// Sends `payload` through `addr`, half-closes, and returns everything read back; a reset
/// counts as the end of the answer.
pub(crate) fn call(addr: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).expect("connect egress");
    tcp.set_read_timeout(Some(PATIENCE)).expect("timeout");
    // The remote side may already have refused; a failed write is part of the answer.
    let _ = tcp.write_all(payload);
    let _ = tcp.shutdown(Shutdown::Write);
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    answer
}

fn failures(reason: &str) -> String {
    format!("federation_gateway_tls_handshake_failures_total{{reason=\"{reason}\"}}")
}

#[test]
fn plain_tcp_crosses_two_gateways_over_mtls_and_strangers_are_refused() {
    let pki = Pki::new();
    let echo = EchoBackend::start("gcp:");
    let b = Gateway::start(&gateway_b(
        &pki.gateway("b", &pki.gcp, "gcp.example"),
        echo.addr,
        "",
    ));
    let gateways = format!("{{ address: '{}' }}", b.ingress);
    let a = a_toward(&pki.gateway("a", &pki.aws, "aws.example"), &b, "");
    assert_eq!(call(a.egress("reviews"), b"hello"), b"gcp:hello");
    b.wait_metric(&closed("reviews", "forwarded"), 1.0);
    a.wait_metric(
        "federation_gateway_egress_connections_closed_total{egress=\"reviews\",outcome=\"forwarded\"}",
        1.0,
    );
    let logs = b.logs();
    assert!(
        logs.contains(&gateway_id("aws.example")),
        "peer id logged:\n{logs}"
    );
    assert!(
        logs.contains("\"src_cluster\":\"aws\""),
        "source cluster logged:\n{logs}"
    );

    // Same trust domain name, but issued under a root B does not trust.
    let foreign = intermediate(&root("aws.example"), "aws", None);
    let stranger = pki.write(
        "stranger",
        &leaf(&foreign, &gateway_id("aws.example")),
        &pki.federation(),
    );
    let a2 = Gateway::start(&gateway_a(&stranger, &gateways, ""));
    assert!(!call(a2.egress("reviews"), b"hello").starts_with(b"gcp:"));
    b.wait_metric(&failures("unknown_issuer"), 1.0);
    b.wait_metric(&closed("reviews", "tls_refused"), 1.0);

    // Trusted, but its intermediate belongs to cluster `other`, which the route does not allow.
    let other = intermediate(&pki.aws_root, "other", None);
    let unauthorized = pki.write(
        "unauthorized",
        &leaf(&other, "spiffe://aws.example/ns/isthmus/sa/other"),
        &pki.federation(),
    );
    let a3 = Gateway::start(&gateway_a(&unauthorized, &gateways, ""));
    assert!(!call(a3.egress("reviews"), b"hello").starts_with(b"gcp:"));
    b.wait_metric(&failures("not_authorized"), 1.0);
    let logs = b.logs();
    assert!(logs.contains("\"outcome\":\"tls_refused\""), "{logs}");
    assert!(
        logs.contains("is not authorized"),
        "refusal reason logged:\n{logs}"
    );
    assert_eq!(call(a.egress("reviews"), b"still"), b"gcp:still");
}

fn resumed(side: &str) -> String {
    format!("federation_gateway_tls_sessions_resumed_total{{side=\"{side}\"}}")
}

#[test]
fn a_returning_gateway_resumes_its_session_and_the_session_is_checked_again() {
    let p = pair("", "");
    let (pki, a, b) = (&p.pki, &p.a, &p.b);
    // The first connection takes a ticket home with the answer; the second resumes with it.
    assert_eq!(call(a.egress("reviews"), b"one"), b"gcp:one");
    assert_eq!(call(a.egress("reviews"), b"two"), b"gcp:two");
    b.wait_metric(&resumed("ingress"), 1.0);
    a.wait_metric(&resumed("egress"), 1.0);

    // Certificates that expire while their sessions are still fresh: a resumed handshake
    // verifies none, so each side checks the session's chain, finds it expired and forwards
    // nothing. On ingress a2's own; on egress that of b2, the gateway a3 resumes with.
    let left = Duration::from_secs(5);
    let expires = Instant::now() + left;
    let short = |name, ca, td| {
        let leaf = leaf_expiring_in(ca, &gateway_id(td), left);
        pki.write(name, &leaf, &pki.federation())
    };
    let a2 = a_toward(&short("a2", &pki.aws, "aws.example"), b, "");
    let b2 = Gateway::start(&gateway_b(
        &short("b2", &pki.gcp, "gcp.example"),
        p.echo.addr,
        "",
    ));
    let a3 = a_toward(&pki.gateway("a3", &pki.aws, "aws.example"), &b2, "");
    assert_eq!(call(a2.egress("reviews"), b"three"), b"gcp:three");
    assert_eq!(call(a3.egress("reviews"), b"three"), b"gcp:three");
    // Certificate times have one-second steps: wait out the last one too (bounded by it).
    while Instant::now() < expires + Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!call(a2.egress("reviews"), b"four").starts_with(b"gcp:"));
    b.wait_metric(&failures("resumed_refused"), 1.0);
    // Refused before its handshake completed, it was issued no new ticket to come back with:
    // once the other ticket of its full handshake is spent too, its next attempt is a full
    // handshake, refused for the expired certificate it presents.
    for payload in [&b"five"[..], b"six"] {
        assert!(!call(a2.egress("reviews"), payload).starts_with(b"gcp:"));
    }
    b.wait_metric(&failures("expired"), 1.0);
    assert_eq!(b.metric(&failures("resumed_refused")), 2.0);
    let logs = b.logs();
    assert!(logs.contains("expired"), "the reason is logged:\n{logs}");

    assert!(!call(a3.egress("reviews"), b"four").starts_with(b"gcp:"));
    let refused = format!(
        "federation_gateway_egress_upstream_failures_total{{egress=\"reviews\",gateway=\"{}\",reason=\"resumed_refused\"}}",
        b2.ingress
    );
    a3.wait_metric(&refused, 1.0);
}

#[test]
fn sessions_outlive_a_reload_that_keeps_the_tls_material_and_are_checked_against_the_new_route() {
    let reload = "reload: { watch_interval: 50ms }\n";
    let p = pair("", reload);
    let (a, b) = (&p.a, &p.b);
    let b_allowing = |clusters: &str| {
        gateway_b(&p.b_files, p.echo.addr, reload).replace("clusters: [aws]", clusters)
    };
    assert_eq!(call(a.egress("reviews"), b"one"), b"gcp:one");

    // A reload that changes the route but neither certificate nor bundle map (every push is
    // one, in controller mode): the session A took home still resumes.
    b.write_config(&b_allowing("clusters: [aws, azure]"));
    b.wait_event("reload", |e| e["result"] == "applied");
    assert_eq!(call(a.egress("reviews"), b"two"), b"gcp:two");
    b.wait_metric(&resumed("ingress"), 1.0);

    // The route stops allowing aws, the bundle map unchanged: A's last session is checked
    // against the route now serving the name and refused before its handshake completes;
    // A's next handshake is a full one, refused as not authorized.
    b.write_config(&b_allowing("clusters: [azure]"));
    b.wait_event("reload", |e| e["result"] == "applied");
    assert!(!call(a.egress("reviews"), b"three").starts_with(b"gcp:"));
    b.wait_metric(&failures("resumed_refused"), 1.0);
    assert!(!call(a.egress("reviews"), b"four").starts_with(b"gcp:"));
    b.wait_metric(&failures("not_authorized"), 1.0);
    assert_eq!(b.metric(&failures("resumed_refused")), 1.0);
    assert_eq!(b.metric(&resumed("ingress")), 1.0);
}

#[test]
fn a_host_name_gateway_address_is_resolved() {
    let pki = Pki::new();
    let echo = EchoBackend::start("gcp:");
    let b = Gateway::start(&gateway_b(
        &pki.gateway("b", &pki.gcp, "gcp.example"),
        echo.addr,
        "",
    ));
    let gateways = format!("{{ address: 'localhost:{}' }}", b.ingress.port());
    let a = Gateway::start(&gateway_a(
        &pki.gateway("a", &pki.aws, "aws.example"),
        &gateways,
        "",
    ));
    // Resolution runs in the background: a connection that arrives before the first answer
    // finds no address to dial, so the call waits (bounded) until `config_dump` shows one.
    let expected = format!("127.0.0.1:{}", b.ingress.port());
    let deadline = Instant::now() + PATIENCE;
    let gateway = loop {
        let (_, dump) = a.admin_get("/config_dump");
        let dump: serde_json::Value = serde_json::from_str(&dump).expect("json");
        let gateway = dump["egress"][0]["gateways"][0].clone();
        let resolved = gateway["resolved"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == &expected));
        if resolved {
            break gateway;
        }
        assert!(
            Instant::now() < deadline,
            "localhost never resolved to {expected}: {gateway}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(gateway["dns_stale"], false, "{gateway}");
    assert_eq!(call(a.egress("reviews"), b"by name"), b"gcp:by name");
}

/// Gateway A (aws, egress `reviews`) and gateway B (gcp, a terminate route to an endpoint
/// answering `gcp:<payload>`), each config with its `extra` (e.g. a reload interval).
struct Pair {
    pki: Pki,
    a_files: Files,
    b_files: Files,
    a: Gateway,
    b: Gateway,
    echo: EchoBackend,
}

fn pair(a_extra: &str, b_extra: &str) -> Pair {
    let pki = Pki::new();
    let echo = EchoBackend::start("gcp:");
    let b_files = pki.gateway("b", &pki.gcp, "gcp.example");
    let b = Gateway::start(&gateway_b(&b_files, echo.addr, b_extra));
    let a_files = pki.gateway("a", &pki.aws, "aws.example");
    let a = a_toward(&a_files, &b, a_extra);
    Pair {
        pki,
        a_files,
        b_files,
        a,
        b,
        echo,
    }
}

/// A connection through both gateways that has carried one exchange and stays open.
fn open_through(a: &Gateway) -> TcpStream {
    let mut open = TcpStream::connect(a.egress("reviews")).expect("connect");
    open.set_read_timeout(Some(PATIENCE)).expect("timeout");
    open.write_all(b"before").expect("write");
    let mut answer = [0u8; 10];
    open.read_exact(&mut answer).expect("echo");
    assert_eq!(&answer, b"gcp:before");
    open
}

/// Waits (bounded) for `open` to be closed by the other side.
fn assert_closed(mut open: TcpStream) {
    let mut rest = [0u8; 16];
    let read = open.read(&mut rest);
    assert!(matches!(read, Ok(0) | Err(_)), "closed: {read:?}");
}

#[test]
fn an_egress_connection_ends_when_its_remote_gateway_leaves_the_bundle_map() {
    // Bound whole: gateway B and the endpoint live as long as the test.
    let p = pair("reload: { watch_interval: 50ms }\n", "");
    let (pki, a_files, a) = (&p.pki, &p.a_files, &p.a);
    let open = open_through(a);

    // A stops trusting gcp.example: its open connection to B's gateway ends there.
    let aws_only = bundle_map(&[("aws.example", &pki.aws_root)]);
    write_atomically(&a_files.bundle, &aws_only.to_json());
    a.wait_event("reload", |e| e["result"] == "applied");
    assert_closed(open);
    a.wait_metric(
        "federation_gateway_egress_connections_closed_total{egress=\"reviews\",outcome=\"revoked\"}",
        1.0,
    );
}

#[test]
fn a_reloaded_bundle_refuses_new_connections_and_closes_open_ones_it_no_longer_trusts() {
    let p = pair("", "reload: { watch_interval: 50ms }\n");
    let (pki, b_files, a, b) = (&p.pki, &p.b_files, &p.a, &p.b);
    let open = open_through(a);

    // B stops trusting aws.example.
    let gcp_only = bundle_map(&[("gcp.example", &pki.gcp_root)]);
    write_atomically(&b_files.bundle, &gcp_only.to_json());
    b.wait_event("reload", |e| e["result"] == "applied");
    let answer = call(a.egress("reviews"), b"after");
    assert!(!answer.starts_with(b"gcp:"), "{answer:?}");
    b.wait_metric(&failures("unknown_trust_domain"), 1.0);

    // The connection opened before the reload came from the trust domain just removed: B
    // closes it (a's egress then closes ours), and says why.
    assert_closed(open);
    b.wait_metric(&closed("reviews", "revoked"), 1.0);

    // A broken bundle is rejected and the one in force stays.
    write_atomically(&b_files.bundle, "{ not json");
    let rejected = b.wait_event("reload", |e| e["result"] == "rejected");
    assert!(
        rejected["error"]
            .as_str()
            .is_some_and(|e| e.contains("tls.trust_bundle")),
        "{rejected}"
    );
    assert!(!call(a.egress("reviews"), b"again").starts_with(b"gcp:"));
    b.wait_metric(&failures("unknown_trust_domain"), 2.0);

    // Secrets stay out of the admin endpoint and the logs.
    let key = std::fs::read_to_string(&b_files.key).expect("key");
    let key_body = key.lines().nth(1).expect("key line");
    let (_, dump) = b.admin_get("/config_dump");
    let (_, metrics) = b.admin_get("/metrics");
    for text in [&dump, &metrics, &b.logs()] {
        assert!(!text.contains(key_body), "key material leaked");
        assert!(
            !text.contains(&*b_files.key.to_string_lossy()),
            "key path leaked"
        );
    }
}

#[test]
fn handshakes_past_the_limit_queue_and_a_stalled_peer_holds_its_slot_only_until_its_deadline() {
    let pki = Pki::new();
    let echo = EchoBackend::start("gcp:");
    // One handshake slot; a stalled handshake is cut after 1 s.
    let config = remote_gateway(
        "gcp",
        &pki.gateway("b", &pki.gcp, "gcp.example"),
        echo.addr,
        "limits: { max_concurrent_handshakes: 1 }\n",
    )
    .replace(
        "ingress: { listen: 127.0.0.1:0 }",
        "ingress: { listen: 127.0.0.1:0, hello_timeout: 1s }",
    );
    let b = Gateway::start(&config);
    // a's handshake deadline outlasts the stall, so only b's queue decides the order.
    let a = a_toward(
        &pki.gateway("a", &pki.aws, "aws.example"),
        &b,
        "upstream: { connect_timeout: 30s }\n",
    );
    let in_progress = "federation_gateway_tls_handshakes_in_progress{side=\"ingress\"}";
    let queued = "federation_gateway_tls_handshakes_queued{side=\"ingress\"}";

    // A peer that sends a routed ClientHello, then nothing: it takes the only slot.
    let mut staller = TcpStream::connect(b.ingress).expect("connect");
    staller
        .write_all(&client_hello(Some(
            "9080.reviews.default.gcp.v1.isthmus.internal",
        )))
        .expect("hello");
    b.wait_metric_eq(in_progress, 1.0);

    // A real peer's handshake waits for the slot instead of sharing the CPU with the staller.
    let egress = a.egress("reviews");
    let call = std::thread::spawn(move || call(egress, b"queued"));
    b.wait_metric_eq(queued, 1.0);
    assert_eq!(
        b.metric(in_progress),
        1.0,
        "the queued one is not in progress"
    );

    // The stalled handshake ends at its deadline (counted as refused); the waiting one then
    // gets the slot and completes.
    assert_eq!(call.join().expect("caller"), b"gcp:queued");
    b.wait_metric(&closed("reviews", "tls_refused"), 1.0);
    b.wait_metric(&closed("reviews", "forwarded"), 1.0);
    b.wait_metric_eq(queued, 0.0);
    b.wait_metric_eq(in_progress, 0.0);
    b.wait_metric(
        "federation_gateway_tls_handshake_queue_wait_seconds_count{side=\"ingress\"}",
        2.0,
    );
    a.wait_metric(
        "federation_gateway_tls_handshake_queue_wait_seconds_count{side=\"egress\"}",
        1.0,
    );
    drop(staller);
}
