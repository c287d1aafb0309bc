//! Many concurrent connections with checksummed payloads through passthrough.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::backend::{EchoBackend, client_hello};
use crate::support::{Gateway, PATIENCE, closed, config, join_bounded, rt};

/// Sends a ClientHello for `sni` plus `payload` through the gateway to an echo backend,
/// half-closes, and returns the payload part of the echo (after the `tag_len`-byte tag and the
/// echoed hello, both checked).
pub(crate) fn echo_roundtrip(gw: SocketAddr, sni: &str, payload: &[u8], tag_len: usize) -> Vec<u8> {
    let hello = client_hello(Some(sni));
    let mut tcp = TcpStream::connect(gw).expect("connect gateway");
    tcp.set_read_timeout(Some(PATIENCE)).expect("timeout");
    tcp.write_all(&hello).expect("send hello");
    tcp.write_all(payload).expect("send payload");
    tcp.shutdown(Shutdown::Write).expect("half-close");
    let mut echoed = Vec::new();
    tcp.read_to_end(&mut echoed).expect("read echo");
    assert!(
        echoed.len() >= tag_len + hello.len(),
        "short echo: {} bytes",
        echoed.len()
    );
    assert_eq!(
        &echoed[tag_len..tag_len + hello.len()],
        &hello[..],
        "hello replayed untouched"
    );
    echoed[tag_len + hello.len()..].to_vec()
}

/// Deterministic pseudo-random payload for connection `i`.
fn payload(i: u64) -> Vec<u8> {
    let len = 1 + usize::try_from((i * 7919) % 65_536).expect("fits");
    let mut state = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

#[test]
fn a_thousand_concurrent_connections_lose_and_corrupt_nothing() {
    const CONNECTIONS: u64 = 1000;
    let echo = EchoBackend::start("");
    let gw = Gateway::start(&config(
        "",
        &format!(
            "upstream: {{ connect_timeout: 20s }}
routes:
  - name: bulk
    hosts: [bulk.example]
    endpoints: [{{ address: {} }}]
",
            echo.addr
        ),
    ));
    let hello = Arc::new(client_hello(Some("bulk.example")));
    let all_open = Arc::new(tokio::sync::Barrier::new(
        usize::try_from(CONNECTIONS).expect("fits"),
    ));
    let ingress = gw.ingress;
    let results = rt().block_on(async move {
        let tasks: Vec<_> = (0..CONNECTIONS)
            .map(|i| {
                let (hello, all_open) = (hello.clone(), all_open.clone());
                tokio::spawn(async move {
                    let data = payload(i);
                    let mut tcp = tokio::net::TcpStream::connect(ingress).await?;
                    tcp.write_all(&hello).await?;
                    // Every connection is open and routed before any payload moves.
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
                    let mut expected = Sha256::new();
                    expected.update(&hello[..]);
                    expected.update(&data);
                    Ok::<_, std::io::Error>((
                        echoed.len() == hello.len() + data.len(),
                        Sha256::digest(&echoed) == expected.finalize(),
                    ))
                })
            })
            .collect();
        join_bounded(tasks).await
    });
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    if !failed.is_empty() {
        let (_, metrics) = gw.admin_get("/metrics");
        let closed: Vec<&str> = metrics
            .lines()
            .filter(|l| l.contains("connections_closed_total{"))
            .collect();
        panic!(
            "{} connections failed, first: {}; gateway closed: {closed:?}",
            failed.len(),
            failed[0]
        );
    }
    let bad_len = results
        .iter()
        .filter(|r| matches!(r, Ok((false, _))))
        .count();
    let bad_sum = results
        .iter()
        .filter(|r| matches!(r, Ok((_, false))))
        .count();
    assert_eq!((bad_len, bad_sum), (0, 0), "lost or corrupted connections");
    gw.wait_metric(&closed("bulk", "forwarded"), 1000.0);
    assert_eq!(gw.metric("federation_gateway_tcp_connections_active"), 0.0);
}
