//! Load across a two-gateway chain: many concurrent connections, each with its own
//! checksummed payload, from a local client through cluster a's egress listener, mutual TLS to
//! cluster b's gateway, to a TCP echo endpoint in b, and back.
//!
//! `ISTHMUS_LOAD_CONNECTIONS` sets how many (default 500, what CI runs on 2 cores; the issue's
//! 10 000 is `ISTHMUS_LOAD_CONNECTIONS=10000`, see SECURITY.md for the figures). Every process
//! needs a descriptor per connection leg: the client one, each gateway two, the echo endpoint
//! (a Python process of its own, so the client's process holds only one) one. When a gateway's
//! open-file limit cannot hold two per connection, the test runs as many as fit and says so.
//!
//! The client opens every connection before sending on any, so all are open at once; it does
//! not pace anything. Gateway a sets up the mTLS legs to b as fast as its handshake bound
//! (`limits.max_concurrent_handshakes`, default 512) lets it; the rest queue there.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use multicloud::cluster::{GatewayLimits, Options};
use multicloud::run_ok;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::probe::{http_get, rss_kib};
use crate::world::{Result, world};

const DEFAULT_CONNECTIONS: usize = 500;
/// File descriptors a process needs beyond those of the connections (logs, listeners, the
/// controller's stream, probes, the runtime).
const SPARE_FDS: u64 = 100;

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

/// Raises this process's open-file limit (children inherit it) as far as allowed.
fn raise_nofile(want: u64) {
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
}

/// A TCP echo endpoint (Python asyncio) that echoes every connection until the client
/// half-closes, then closes; a process of its own so its descriptors do not count against ours.
const ECHO_PY: &str = r#"
import asyncio
async def echo(r, w):
    try:
        while True:
            data = await r.read(65536)
            if not data:
                break
            w.write(data)
            await w.drain()
    except OSError:
        pass
    w.close()
async def main():
    server = await asyncio.start_server(echo, "127.0.0.1", 0, backlog=4096)
    print("echo listening on port", server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
"#;

fn echo_endpoint(
    shell: &multicloud::shell::Shell,
) -> Result<(multicloud::process::Process, SocketAddr)> {
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-u", "-c", ECHO_PY]);
    let echo = shell.spawn("load-echo", Path::new("."), "load-echo", &mut cmd)?;
    let line = echo.wait_line("`echo listening`", |l| l.starts_with("echo listening"))?;
    let port = line
        .rsplit(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| echo.fail(&format!("no port in {line:?}")))?;
    Ok((echo, SocketAddr::from(([127, 0, 0, 1], port))))
}

/// Open descriptors of `pid` and its soft open-file limit.
fn fds(pid: u32) -> (u64, u64) {
    let open = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let soft = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    (open, soft)
}

/// One line of a Prometheus text exposition: the value of the first sample named `name` whose
/// labels contain `labels`.
fn sample(metrics: &str, name: &str, labels: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn concurrent_connections_across_two_gateways_lose_and_corrupt_nothing() -> Result {
    let wanted: usize = std::env::var("ISTHMUS_LOAD_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CONNECTIONS);
    raise_nofile(65_536);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    // Room for every connection plus the probes on both gateways, and handshake deadlines that
    // a loaded 2-core machine does not run into.
    let roomy = Options {
        gateway: GatewayLimits {
            max_connections: Some(wanted + 1000),
            hello_timeout: Some(Duration::from_secs(60)),
            connect_timeout: Some(Duration::from_secs(60)),
        },
        ..Options::default()
    };
    let w = world(&["a", "b"], &[roomy.clone(), roomy])?;
    let [a, b] = &w.topo.clusters[..] else {
        unreachable!()
    };
    let (echo, endpoint) = echo_endpoint(&w.topo.shell)?;
    // What fits: one descriptor per connection here and in the echo process, two in each
    // gateway, beyond what each already holds.
    let mut n = wanted;
    for (who, pid) in [
        ("a gateway", a.gateway.pid()),
        ("b gateway", b.gateway.pid()),
    ] {
        let (open, soft) = fds(pid);
        let fit = usize::try_from(soft.saturating_sub(open + SPARE_FDS) / 2).unwrap_or(usize::MAX);
        println!(
            "{who}: {open} descriptors open, open-file limit {soft}: room for {fit} connections"
        );
        n = n.min(fit);
    }
    for pid in [std::process::id(), echo.pid()] {
        let (open, soft) = fds(pid);
        n = n.min(usize::try_from(soft.saturating_sub(open + SPARE_FDS)).unwrap_or(usize::MAX));
    }
    if n < wanted {
        println!("open-file limits: running {n} connections instead of {wanted}");
    }
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
        let queued = sample(
            &http_get(a.admin, "/metrics"),
            "federation_gateway_tls_handshakes_queued",
            "side=\"egress\"",
        );
        println!(
            "all {n} open after {:?}; {queued} queued for a handshake slot in gateway a",
            started.elapsed()
        );
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
    for (who, admin, side) in [("a", a.admin, "egress"), ("b", b.admin, "ingress")] {
        let m = http_get(admin, "/metrics");
        let label = format!("side=\"{side}\"");
        let waits = sample(
            &m,
            "federation_gateway_tls_handshake_queue_wait_seconds_count",
            &label,
        );
        let waited = sample(
            &m,
            "federation_gateway_tls_handshake_queue_wait_seconds_sum",
            &label,
        );
        println!(
            "gateway {who} ({side}): {waits} handshakes, mean wait for a slot {:.2} s",
            waited / waits.max(1.0)
        );
    }
    for (i, (who, _)) in pids.iter().enumerate() {
        println!(
            "RSS {who}: {} KiB before, {} KiB with all open, {} KiB after ({:.1} KiB per connection)",
            before[i],
            peak[i],
            after[i],
            peak[i].max(after[i]).saturating_sub(before[i]) as f64 / n as f64
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
