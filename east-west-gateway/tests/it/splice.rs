//! Passthrough with `upstream.splice: auto` (splice(2)) and `off` (copying): the same
//! checksummed bulk exchanges, several MiB each way with a half-close, give the same bytes,
//! tallies and outcomes.

use std::net::SocketAddr;
use std::sync::{Arc, mpsc};

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::backend::client_hello;
use crate::support::{Gateway, PATIENCE, closed, config, join_bounded, rt};

const SNI: &str = "bulk.example";
/// Client → backend, then a half-close.
const UP: usize = 5 << 20;
/// Backend → client while the client is still sending.
const EARLY: usize = 3 << 20;
/// Backend → client after the client's half-close.
const LATE: usize = 1 << 20;
const CONNECTIONS: u64 = 3;

/// Deterministic pseudo-random bytes for connection `seed`.
fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// What one side received: length and SHA-256.
type Received = (usize, Vec<u8>);

/// Per connection, in order: (what the backend received, what the client received).
type Delivered = Vec<(Received, Received)>;

fn received(bytes: &[u8]) -> Received {
    (bytes.len(), Sha256::digest(bytes).to_vec())
}

/// A backend that, per connection, reads to EOF while sending `EARLY` bytes, then sends `LATE`
/// bytes and closes; it reports what it read, keyed by the connection's first payload byte
/// after the hello (the connection index).
fn bulk_backend(hello_len: usize) -> (SocketAddr, mpsc::Receiver<(u8, Received)>) {
    let listener = rt()
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("bind backend");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel();
    rt().spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                let mut got = Vec::with_capacity(hello_len + UP);
                let early = data(u64::MAX, EARLY);
                let both = tokio::try_join!(r.read_to_end(&mut got), w.write_all(&early));
                if both.is_err() {
                    return;
                }
                // The client has half-closed; this direction must still flow.
                let late = data(u64::MAX - 1, LATE);
                if w.write_all(&late).await.is_ok() && w.shutdown().await.is_ok() {
                    let key = got.get(hello_len).copied().unwrap_or(u8::MAX);
                    let _ = tx.send((key, received(&got)));
                }
            });
        }
    });
    (addr, rx)
}

/// One gateway with `splice` set: every connection's (backend got, client got), in connection
/// order, and the access-log byte tallies.
fn exchange(splice: &str, hello: &Arc<Vec<u8>>) -> (Delivered, Vec<(u64, u64)>) {
    let (backend, reports) = bulk_backend(hello.len());
    let gw = Gateway::start(&config(
        "",
        &format!(
            "upstream: {{ splice: {splice} }}
routes:
  - name: bulk
    hosts: [{SNI}]
    endpoints: [{{ address: {backend} }}]
"
        ),
    ));
    let ingress = gw.ingress;
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            let hello = hello.clone();
            rt().spawn(async move {
                let mut payload = data(i, UP);
                payload[0] = u8::try_from(i).expect("small index");
                let mut tcp = TcpStream::connect(ingress).await?;
                let (mut r, mut w) = tcp.split();
                let send = async {
                    w.write_all(&hello).await?;
                    w.write_all(&payload).await?;
                    w.shutdown().await
                };
                let mut got = Vec::with_capacity(EARLY + LATE);
                tokio::try_join!(send, r.read_to_end(&mut got))?;
                Ok::<_, std::io::Error>(received(&got))
            })
        })
        .collect();
    let at_clients = rt().block_on(join_bounded(tasks));
    let mut at_backend = vec![None; usize::try_from(CONNECTIONS).expect("fits")];
    for _ in 0..CONNECTIONS {
        let (key, got) = reports.recv_timeout(PATIENCE).expect("backend report");
        at_backend[usize::from(key)] = Some(got);
    }
    gw.wait_metric(&closed("bulk", "forwarded"), CONNECTIONS as f64);

    let logs = gw.logs();
    assert!(
        !logs.contains("instead of splice(2)"),
        "splice={splice}: no fallback expected on loopback TCP\n{logs}"
    );
    let mut tallies: Vec<(u64, u64)> = logs
        .lines()
        .filter(|l| l.contains("\"target\":\"access\""))
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON access log"))
        .inspect(|line| assert_eq!(line["outcome"], "forwarded", "{line}"))
        .map(|line| {
            (
                line["bytes_received"].as_u64().expect("bytes_received"),
                line["bytes_sent"].as_u64().expect("bytes_sent"),
            )
        })
        .collect();
    tallies.sort_unstable();
    let total = |name: &str| gw.metric(&format!("{name}{{route=\"bulk\"}}"));
    let expected_up = (hello.len() + UP) as f64 * CONNECTIONS as f64;
    let expected_down = (EARLY + LATE) as f64 * CONNECTIONS as f64;
    assert_eq!(
        (
            total("federation_gateway_tcp_received_bytes_total"),
            total("federation_gateway_tcp_sent_bytes_total")
        ),
        (expected_up, expected_down),
        "splice={splice}: byte metrics"
    );

    let results = at_clients
        .into_iter()
        .zip(at_backend)
        .map(|(client, backend)| {
            let client = client.unwrap_or_else(|e| panic!("splice={splice}: client failed: {e}"));
            (backend.expect("every connection reported"), client)
        })
        .collect();
    (results, tallies)
}

#[test]
fn splice_auto_and_off_deliver_the_same_checksummed_bulk_transfers() {
    let hello = Arc::new(client_hello(Some(SNI)));
    let mut expected = Vec::new();
    for i in 0..CONNECTIONS {
        let mut payload = data(i, UP);
        payload[0] = u8::try_from(i).expect("small index");
        let down = [data(u64::MAX, EARLY), data(u64::MAX - 1, LATE)].concat();
        expected.push((
            received(&[hello.as_slice(), &payload].concat()),
            received(&down),
        ));
    }
    let tallies = vec![((hello.len() + UP) as u64, (EARLY + LATE) as u64); expected.len()];

    let (spliced, spliced_tallies) = exchange("auto", &hello);
    assert!(spliced == expected, "splice=auto corrupted or lost bytes");
    assert_eq!(spliced_tallies, tallies, "splice=auto access-log tallies");

    let (copied, copied_tallies) = exchange("off", &hello);
    assert!(copied == expected, "splice=off corrupted or lost bytes");
    assert_eq!(copied_tallies, tallies, "splice=off access-log tallies");
}
