use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;

use super::*;
use crate::config;
use crate::egress::Pool;
use crate::metrics::Metrics;

/// Listeners importing services behind one remote gateway.
const LISTENERS: usize = 10;
/// Probe rounds to observe before counting connections.
const ROUNDS: u64 = 5;
/// Bound on every wait below; a hang fails with a message rather than blocking the suite.
const WAIT: Duration = Duration::from_secs(10);

#[test]
fn quantiles_are_nearest_rank() {
    let window: VecDeque<Duration> = (1..=100).map(Duration::from_millis).collect();
    assert_eq!(
        quantiles(&window),
        (Duration::from_millis(50), Duration::from_millis(99))
    );
    let one: VecDeque<Duration> = [Duration::from_millis(7)].into();
    assert_eq!(
        quantiles(&one),
        (Duration::from_millis(7), Duration::from_millis(7))
    );
}

/// A remote gateway stand-in that counts the connections it accepts.
async fn counting_listener() -> (std::net::SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("local address");
    let accepted = Arc::new(AtomicU64::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            drop(stream);
        }
    });
    (address, accepted)
}

fn config(remote: std::net::SocketAddr) -> config::Config {
    let mut text = String::from("cluster: a\negress:\n");
    for i in 0..LISTENERS {
        text.push_str(&format!(
            "  - name: e{i}
    listen: 127.0.0.1:0
    service: {{ name: s{i}, namespace: default, port: 80 }}
    mode: passthrough
    probe: {{ interval: 10ms, timeout: 5s }}
    gateways: [{{ address: '{remote}', priority: 0 }}]
"
        ));
    }
    config::parse(&text).expect("valid config")
}

async fn wait_for_rounds(probed: &Probed, at_least: u64) {
    let reached = async {
        while probed.rounds.load(Ordering::Relaxed) < at_least {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(WAIT, reached)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{at_least} probe rounds not reached within {WAIT:?} (at {})",
                probed.rounds.load(Ordering::Relaxed)
            )
        });
}

#[tokio::test]
async fn listeners_naming_one_remote_gateway_share_one_probe() {
    let (remote, accepted) = counting_listener().await;
    let config = config(remote);
    let metrics = Arc::new(Metrics::new());
    let probes = Registry::default();
    let mut pools = Vec::new();
    for e in &config.egress {
        let pool = Pool::build(e, &config.upstream, None, &metrics, None, &probes)
            .await
            .expect("pool");
        pools.push(pool);
    }
    let probed = pools[0].gateways.list[0].probe.clone();
    for pool in &pools {
        assert!(
            Arc::ptr_eq(&pool.gateways.list[0].probe, &probed),
            "{} has a probe of its own",
            pool.label.egress
        );
    }

    wait_for_rounds(&probed, ROUNDS).await;
    // Connections first: each accepted one belongs to a round that is counted by now or is
    // still under way, so one probe per round allows at most one more connection than rounds.
    let connections = accepted.load(Ordering::Relaxed);
    let rounds = probed.rounds.load(Ordering::Relaxed);
    assert!(
        connections <= rounds + 2,
        "{connections} connections for {rounds} probe rounds of {LISTENERS} listeners: \
         the remote gateway is probed per listener, not once per interval"
    );

    // Every listener reads the shared result: health, RTT, and its own metric series.
    let text = metrics.encode();
    for pool in &pools {
        let status = &pool.probes()[0];
        assert!(status.healthy && status.rtt.is_some(), "{status:?}");
        let series = format!(
            "federation_gateway_remote_gateway_healthy{{egress=\"{}\",gateway=\"{remote}\"}} 1",
            pool.label.egress
        );
        assert!(text.contains(&series), "{series} missing from\n{text}");
    }

    // A retired pool's series are dropped and not recreated by later rounds.
    let retired = pools.pop().expect("pools");
    retired.retire(None);
    let after = probed.rounds.load(Ordering::Relaxed);
    wait_for_rounds(&probed, after + 2).await;
    let gone = format!("egress=\"{}\"", retired.label.egress);
    let text = metrics.encode();
    assert!(!text.contains(&gone), "{gone} still in\n{text}");
}

#[tokio::test]
async fn shared_death_and_revival_reach_every_listener() {
    // A port nobody listens on: probes are refused.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let remote = closed.local_addr().expect("local address");
    drop(closed);
    let config = config(remote);
    let metrics = Arc::new(Metrics::new());
    let probes = Registry::default();
    let mut pools = Vec::new();
    for e in config.egress.iter().take(2) {
        let pool = Pool::build(e, &config.upstream, None, &metrics, None, &probes)
            .await
            .expect("pool");
        pools.push(pool);
    }
    let probed = pools[0].gateways.list[0].probe.clone();
    wait_for_rounds(&probed, u64::from(config.egress[0].probe.unhealthy_after)).await;
    let text = metrics.encode();
    for pool in &pools {
        assert!(
            !pool.probes()[0].healthy,
            "{} still healthy",
            pool.label.egress
        );
        let series = format!(
            "federation_gateway_remote_gateway_healthy{{egress=\"{}\",gateway=\"{remote}\"}} 0",
            pool.label.egress
        );
        assert!(text.contains(&series), "{series} missing from\n{text}");
    }

    // The gateway comes back on the same port: one success revives it for both.
    let _listener = TcpListener::bind(remote).await.expect("rebind");
    let revived = async {
        while !pools.iter().all(|p| p.probes()[0].healthy) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(WAIT, revived)
        .await
        .unwrap_or_else(|_| panic!("not revived for every listener within {WAIT:?}"));
}
