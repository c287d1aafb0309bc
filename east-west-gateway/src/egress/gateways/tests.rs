use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::config;
use crate::egress::probe::Registry;
use crate::metrics::Metrics;

fn upstream() -> config::Upstream {
    config::Upstream {
        connect_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(60),
        connect_attempts: 3,
        ejection_base: Duration::from_secs(1),
        ejection_max: Duration::from_secs(30),
        buffer_bytes: 1 << 16,
        splice: config::Splice::Auto,
    }
}

/// Probes that never run here (nothing subscribes): the tests feed results by hand.
fn probe() -> config::Probe {
    config::Probe {
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        unhealthy_after: 2,
    }
}

fn gateways(specs: &[(&str, u32)], metrics: &Metrics) -> Gateways {
    let probes = Registry::default();
    let list = specs
        .iter()
        .map(|(address, priority)| {
            let g = Gateway::new(
                "e",
                &config::RemoteGateway {
                    address: (*address).to_owned(),
                    priority: *priority,
                    weight: 1,
                    cluster: None,
                    mtls: None,
                },
                probes.get(address, &probe()),
            );
            let ip = address.parse().expect("socket address");
            g.set_addresses(vec![ip], metrics);
            Arc::new(g)
        })
        .collect();
    Gateways::new(list, &upstream())
}

#[tokio::test]
async fn lowest_priority_wins_and_failover_follows_priority() {
    let metrics = Metrics::new();
    let g = gateways(&[("127.0.0.2:1", 1), ("127.0.0.1:1", 0)], &metrics);
    let now = Instant::now();
    assert_eq!(g.pick(&[], now), Some(1));
    assert_eq!(g.pick(&[1], now), Some(0));
    assert_eq!(g.pick(&[0, 1], now), None);
}

#[tokio::test]
async fn dead_and_ejected_gateways_are_skipped_until_nothing_else_is_left() {
    let metrics = Metrics::new();
    let g = gateways(&[("127.0.0.1:1", 0), ("127.0.0.2:1", 1)], &metrics);
    let now = Instant::now();
    g.list[0].probe.failed(&metrics);
    assert_eq!(g.pick(&[], now), Some(0), "one failure is not death");
    g.list[0].probe.failed(&metrics);
    assert_eq!(g.pick(&[], now), Some(1), "dead after two");
    g.report_failure(1, now, &metrics);
    assert_eq!(
        g.pick(&[], now),
        Some(0),
        "all unusable: priority order again"
    );
    g.list[0]
        .probe
        .succeeded(Duration::from_millis(3), &metrics);
    assert_eq!(g.pick(&[], now), Some(0));
    assert!(g.list[0].is_alive());
    assert_eq!(
        g.list[0].rtt(),
        Some((Duration::from_millis(3), Duration::from_millis(3)))
    );
}
