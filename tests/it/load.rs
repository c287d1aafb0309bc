//! Load across a two-gateway chain: many concurrent connections, each with its own
//! checksummed payload, from a local client through cluster a's egress listener, mutual TLS to
//! cluster b's gateway, to a TCP echo endpoint in b, and back.
//!
//! `ISTHMUS_LOAD_CONNECTIONS` sets how many (default 500, what CI runs on 2 cores; the issue's
//! 10 000 is `ISTHMUS_LOAD_CONNECTIONS=10000`, see SECURITY.md for the figures).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use multicloud::cluster::{GatewayLimits, Options};
use multicloud::run_ok;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::probe::rss_kib;
use crate::world::{Result, world};

const DEFAULT_CONNECTIONS: usize = 500;
/// File descriptors the test process needs beyond two per connection (client and endpoint).
const SPARE_FDS: u64 = 1000;

/// Deterministic payload for connection `i`, 1 B to 16 KiB, ending in its own 8-byte checksum
/// (FNV-1a of the rest), so a corrupted or swapped echo is caught even without the original.
fn payload(i: u64) -> Vec<u8> {
    let len = 1 + usize::try_from((i * 7919) % 16_384).expect("fits");
    let mut state = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut body: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect();
    body.extend_from_slice(&fnv(&body).to_le_bytes());
    body
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Raises this process's open-file limit (children inherit it) as far as allowed; returns the
/// soft limit now in force.
fn raise_nofile(want: u64) -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    let hard = lim.maximum.unwrap_or(u64::MAX);
    // Raising the hard limit needs privilege; try, then settle for the hard limit we have.
    lim.current = Some(want);
    lim.maximum = Some(hard.max(want));
    if setrlimit(Resource::Nofile, lim).is_err() {
        lim.current = Some(want.min(hard));
        lim.maximum = Some(hard);
        let _ = setrlimit(Resource::Nofile, lim);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// A TCP echo endpoint serving every connection until the client half-closes.
async fn echo_endpoint() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = listener.local_addr().expect("echo address");
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

#[test]
fn concurrent_connections_across_two_gateways_lose_and_corrupt_nothing() -> Result {
    let wanted: usize = std::env::var("ISTHMUS_LOAD_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CONNECTIONS);
    let limit = raise_nofile(65_536);
    let fit = usize::try_from(limit.saturating_sub(SPARE_FDS) / 2).unwrap_or(usize::MAX);
    let n = wanted.min(fit);
    if n < wanted {
        println!("open-file limit {limit}: running {n} connections instead of {wanted}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let endpoint = rt.block_on(echo_endpoint());

    // Room for every connection plus the probes on both gateways, and handshake deadlines that
    // a burst of thousands of handshakes on two busy cores does not run into.
    let roomy = Options {
        gateway: GatewayLimits {
            max_connections: Some(n + 1000),
            hello_timeout: Some(Duration::from_secs(60)),
            connect_timeout: Some(Duration::from_secs(60)),
        },
        ..Options::default()
    };
    let w = world(&["a", "b"], &[roomy.clone(), roomy])?;
    let [a, b] = &w.topo.clusters[..] else {
        unreachable!()
    };
    a.join(&b.token()?)?;
    let registry = b.dir.join("registry.yaml");
    let text = std::fs::read_to_string(&registry).expect("b's registry");
    let text = text.replace(
        "exports:",
        &format!(
            "  - name: bytes\n    namespace: default\n    ports: [{{ name: tcp, port: 9000, target_port: {} }}]\n    endpoints: [{{ address: 127.0.0.1 }}]\nexports:",
            endpoint.port()
        ),
    );
    std::fs::write(&registry, text).expect("write b's registry");
    // The registry is polled; the export is refused until the service is in it.
    let deadline = Instant::now() + multicloud::PATIENCE;
    while let Err(e) = run_ok(&mut b.ctl(&["export", "bytes.default"])?) {
        assert!(Instant::now() < deadline, "{e}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let listener = a.listener("bytes.default")?;

    let pids = [
        ("a gateway", a.gateway.pid()),
        ("b gateway", b.gateway.pid()),
    ];
    let before: Vec<u64> = pids.iter().map(|(_, p)| rss_kib(*p)).collect();
    let started = Instant::now();
    let (lost, peak) = rt.block_on(async move {
        // Bounded wait for the egress listener to carry a first round trip.
        let deadline = Instant::now() + multicloud::PATIENCE;
        while roundtrip(TcpStream::connect(listener).await, 0)
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "the bytes import never carried a call"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Open every connection first, so all of them are open at once; then send on all.
        let mut conns = Vec::with_capacity(n);
        for chunk in 0..n.div_ceil(500) {
            let batch =
                (chunk * 500..((chunk + 1) * 500).min(n)).map(|_| TcpStream::connect(listener));
            for c in futures_join(batch).await {
                conns.push(c);
            }
        }
        let peak = pids.map(|(_, p)| rss_kib(p));
        let tasks: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(i, c)| tokio::spawn(roundtrip(c, i as u64)))
            .collect();
        let mut lost = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            match tokio::time::timeout(Duration::from_secs(120), t).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => lost.push(format!("connection {i}: {e}")),
                Ok(Err(e)) => lost.push(format!("connection {i}: task {e}")),
                Err(_) => lost.push(format!("connection {i}: no echo within 120 s")),
            }
        }
        (lost, peak)
    });
    let took = started.elapsed();
    let after: Vec<u64> = pids.iter().map(|(_, p)| rss_kib(*p)).collect();
    println!("{n} concurrent connections across two gateways in {took:?}");
    for (i, (who, _)) in pids.iter().enumerate() {
        println!(
            "RSS {who}: {} KiB before, {} KiB with all open, {} KiB after",
            before[i], peak[i], after[i]
        );
    }
    if !lost.is_empty() {
        for g in [&a.gateway, &b.gateway] {
            let log = std::fs::read_to_string(g.stderr_log()).unwrap_or_default();
            let odd: Vec<&str> = log
                .lines()
                .filter(|l| !l.contains("\"outcome\":\"forwarded\"") && l.contains("outcome"))
                .take(8)
                .collect();
            println!("--- {} ---\n{}", g.name, odd.join("\n"));
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {n} connections lost or corrupted bytes:\n{}",
        lost.len(),
        lost.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
    Ok(())
}

async fn futures_join<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

/// Sends connection `i`'s payload, half-closes, and checks the echo byte for byte.
async fn roundtrip(conn: std::io::Result<TcpStream>, i: u64) -> std::result::Result<(), String> {
    let mut conn = conn.map_err(|e| format!("connect: {e}"))?;
    let sent = payload(i);
    let (mut r, mut w) = conn.split();
    let write = async {
        w.write_all(&sent).await?;
        w.shutdown().await
    };
    let mut echoed = Vec::with_capacity(sent.len());
    let (wrote, read) = tokio::join!(write, r.read_to_end(&mut echoed));
    wrote.map_err(|e| format!("write: {e}"))?;
    read.map_err(|e| format!("read after {} bytes: {e}", echoed.len()))?;
    if echoed.len() != sent.len() {
        return Err(format!(
            "{} bytes sent, {} echoed",
            sent.len(),
            echoed.len()
        ));
    }
    let (body, sum) = echoed.split_at(echoed.len() - 8);
    if echoed != sent || sum != fnv(body).to_le_bytes() {
        return Err("echo differs from the payload (checksum mismatch)".into());
    }
    Ok(())
}
