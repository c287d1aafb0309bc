//! Passthrough: connect to an endpoint (retrying others before any byte is sent), replay the
//! buffered ClientHello (consumed while detecting it, so it is written, not spliced), then move
//! bytes both ways untouched: splice(2) when `upstream.splice` allows it ([`splice::pump_tcp`]).

use std::future::Future;
use std::sync::atomic::Ordering;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use prometheus_client::metrics::counter::Counter;

use super::balance::Active;
use super::conn::Record;
use super::splice::{self, Tally};
use super::{Outcome, RouteState};
use crate::config;
use crate::drain;
use crate::metrics::{Metrics, RouteLabel};

/// An async block rather than an `async fn`, so the task does not hold every argument twice.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn stores its arguments twice"
)]
pub(super) fn forward<'a>(
    client: &'a mut TcpStream,
    hello: Vec<u8>,
    route: &'a RouteState,
    upstream_config: &'a config::Upstream,
    metrics: &'a Metrics,
    record: &'a mut Record,
    drain: &'a mut drain::Watch,
) -> impl Future<Output = Outcome> + Send + 'a {
    async move {
        let Some((mut upstream, counted)) = open(route, upstream_config, metrics, record).await
        else {
            return Outcome::UpstreamConnect;
        };
        if upstream.write_all(&hello).await.is_err() {
            return Outcome::Reset;
        }
        let hello_len = u64::try_from(hello.len()).unwrap_or(u64::MAX);
        // Freed now rather than when the connection ends: an idle connection would keep it.
        drop(hello);
        let (up, down) = counted.tallies(record);
        up.total.fetch_add(hello_len, Ordering::Relaxed);
        up.counter.inc_by(hello_len);
        let limits = splice::Limits::of(upstream_config);
        splice::pump_tcp(client, &mut upstream, up, down, limits, drain).await
    }
}

/// What an open endpoint connection holds besides its socket: its slot in the endpoint's
/// active count and the route's byte counters.
pub(super) struct Counted<'r> {
    _active: Option<Active<'r>>,
    received: Counter,
    sent: Counter,
}

impl Counted<'_> {
    /// Where each direction's bytes are counted: client → endpoint, then endpoint → client.
    pub(super) fn tallies<'a>(&'a self, record: &'a Record) -> (Tally<'a>, Tally<'a>) {
        let up = Tally {
            total: &record.received,
            counter: &self.received,
        };
        let down = Tally {
            total: &record.sent,
            counter: &self.sent,
        };
        (up, down)
    }
}

/// Connects to one of the route's endpoints ([`connect`]) and records which one.
pub(super) async fn open<'r>(
    route: &'r RouteState,
    upstream: &config::Upstream,
    metrics: &Metrics,
    record: &mut Record,
) -> Option<(TcpStream, Counted<'r>)> {
    // Not kept while the connection lasts: the counters are taken here.
    let label = Metrics::route(Some(route.name.as_str()));
    let (stream, index) = connect(route, upstream, metrics, &label).await?;
    record.dst = route.balancer.address(index);
    let counted = Counted {
        _active: route.balancer.acquire(index),
        received: metrics.received_bytes.get_or_create_owned(&label),
        sent: metrics.sent_bytes.get_or_create_owned(&label),
    };
    Some((stream, counted))
}

/// Tries up to `connect_attempts` distinct endpoints. Nothing has been written upstream yet, so
/// a retry can never duplicate client bytes.
pub(super) async fn connect(
    route: &RouteState,
    upstream: &config::Upstream,
    metrics: &Metrics,
    label: &RouteLabel,
) -> Option<(TcpStream, usize)> {
    let mut tried = Vec::with_capacity(upstream.connect_attempts);
    while tried.len() < upstream.connect_attempts {
        let index = route.balancer.pick(&tried, Instant::now())?;
        tried.push(index);
        let address = route.balancer.address(index)?;
        let started = Instant::now();
        let result =
            tokio::time::timeout(upstream.connect_timeout, TcpStream::connect(address)).await;
        metrics
            .upstream_connect
            .get_or_create(label)
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(Ok(stream)) => {
                route.balancer.report_success(index);
                let _ = stream.set_nodelay(true);
                return Some((stream, index));
            }
            Ok(Err(error)) => {
                tracing::debug!(%address, %error, "upstream connect failed");
            }
            Err(_elapsed) => {
                tracing::debug!(%address, "upstream connect timed out");
            }
        }
        metrics.upstream_connect_failures.get_or_create(label).inc();
        if let Some(period) = route.balancer.report_failure(index, Instant::now()) {
            metrics.ejections.get_or_create(label).inc();
            tracing::info!(%address, ejected_for = ?period, route = %route.name, "endpoint ejected");
        }
    }
    None
}
