//! The gateway's report to its controller (`GatewayDiscovery.Report`): readiness, the config
//! version in force and each remote gateway's probe health and RTT, sent every
//! [`REPORT_INTERVAL`] while the watch stream is up. A failed report is only logged: the watch
//! stream decides whether the controller is there.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tonic::transport::Channel;

use crate::api::gateway_discovery_client::GatewayDiscoveryClient;
use crate::api::{EgressReport, GatewayReport, ProbeReport};
use crate::proxy::Shared;

/// How often a connected gateway reports.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// After a config is applied, the next report goes this soon: long enough for the new egress
/// pools' first probes (sent at once) to answer on a LAN, so operators see them measured.
const AFTER_APPLY: Duration = Duration::from_millis(100);

/// What the gateway reports now.
pub(crate) fn build(name: &str, ingress: SocketAddr, shared: &Shared) -> GatewayReport {
    let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    GatewayReport {
        gateway: name.to_owned(),
        ready: shared.is_ready(),
        config_version: shared.controller().map_or(0, |c| c.version()),
        ingress: ingress.to_string(),
        egress: shared
            .egress()
            .iter()
            .map(|h| EgressReport {
                name: h.name.clone(),
                listen: h.address.to_string(),
                gateways: h
                    .probes()
                    .into_iter()
                    .map(|p| ProbeReport {
                        address: p.address,
                        cluster: p.cluster,
                        priority: p.priority,
                        healthy: p.healthy,
                        measured: p.rtt.is_some(),
                        rtt_p50_us: p.rtt.map_or(0, |r| micros(r.0)),
                        rtt_p99_us: p.rtt.map_or(0, |r| micros(r.1)),
                        sni: p.sni,
                    })
                    .collect(),
            })
            .collect(),
        sent_at_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
    }
}

/// Reports every [`REPORT_INTERVAL`], and shortly after each applied config, until aborted.
pub(crate) async fn run(
    channel: Channel,
    name: String,
    ingress: SocketAddr,
    shared: Arc<Shared>,
    applied: Arc<tokio::sync::Notify>,
) {
    let mut client = GatewayDiscoveryClient::new(channel);
    let mut ticks = tokio::time::interval(REPORT_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = applied.notified() => tokio::time::sleep(AFTER_APPLY).await,
        }
        let report = build(&name, ingress, &shared);
        if let Err(status) = client.report(report).await {
            tracing::debug!(%status, "report to the controller failed");
        }
    }
}
