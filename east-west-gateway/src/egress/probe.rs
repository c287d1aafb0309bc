//! Active probes: a TCP connect to a remote gateway every `probe.interval`, timed for the RTT
//! window. `probe.unhealthy_after` consecutive failures mark it dead; one success revives it.
//! A TCP connect (not a TLS handshake) keeps probes cheap for the remote gateway and out of its
//! access log; TLS problems show up as connection failures and passive ejection instead.

use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior};

use super::gateways::Gateway;
use crate::config;
use crate::metrics::Metrics;

/// Probes `gateway` until the task is aborted.
pub(crate) async fn run(gateway: Arc<Gateway>, probe: config::Probe, metrics: Arc<Metrics>) {
    let mut ticks = tokio::time::interval(probe.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match once(&gateway, &probe).await {
            Some(rtt) => gateway.probe_succeeded(rtt, &metrics),
            None => gateway.probe_failed(probe.unhealthy_after, &metrics),
        }
    }
}

/// Tries the gateway's addresses in turn; the first that accepts gives the RTT.
async fn once(gateway: &Gateway, probe: &config::Probe) -> Option<std::time::Duration> {
    for address in gateway.addresses() {
        let started = Instant::now();
        if let Ok(Ok(_stream)) =
            tokio::time::timeout(probe.timeout, TcpStream::connect(address)).await
        {
            return Some(started.elapsed());
        }
    }
    None
}
