//! Control-plane scenarios: real controllers and gateways (see `control/world.rs`), each
//! scenario run once with Isthmus's sync and once with the naive full-resync implementation of
//! the same model (the same binaries with `FEDERATION_SYNC=full-resync`), in the same run.
//!
//! - **initial sync**: every peer joins the hub at once (`link join`, tokens made beforehand);
//!   measured from the joins' start until the hub's gateway reports a config holding an
//!   egress listener for every imported service (its stdout `config` event, timestamped on
//!   arrival), and until every peer's gateway applied its routes; the hub's controller and
//!   gateway RSS growth divided by the number of peers; pushes to the hub's gateway; CPU.
//! - **churn**: one peer service's endpoint set replaced once a second (its registry file
//!   rewritten atomically; the file is polled every 100 ms, which is part of the latency);
//!   change-to-applied latency at the exporting gateway (the one routing to those endpoints),
//!   gateway pushes per change across every gateway, CPU per change of every process.

mod proc;
mod report;
mod world;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

pub(crate) use self::report::ControlResults;
use self::report::Metric;
use self::world::{Bins, Mode, PATIENCE, Shape, World};
use crate::procs::{cpu_seconds, rss_kib};
use crate::report::Better;

/// Scenario names, for `--only`.
pub(crate) const SCENARIOS: [&str; 2] = [SYNC, CHURN];
const SYNC: &str = "control plane: initial sync";
const CHURN: &str = "control plane: churn";

/// The size of a run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) shape: Shape,
    pub(crate) changes: usize,
    /// Time for memory to settle after the sync, and for late pushes after the churn.
    pub(crate) settle: Duration,
}

impl Plan {
    pub(crate) fn new(quick: bool) -> Self {
        if quick {
            Self {
                shape: Shape {
                    peers: 2,
                    services: 10,
                    endpoints: 20,
                },
                changes: 3,
                settle: Duration::from_millis(300),
            }
        } else {
            Self {
                shape: Shape {
                    peers: 10,
                    services: 300,
                    endpoints: 4000,
                },
                changes: 30,
                settle: Duration::from_secs(1),
            }
        }
    }
}

const fn metric(
    scenario: &'static str,
    metric: &'static str,
    unit: &'static str,
    better: Better,
    target: Option<&'static str>,
) -> Metric {
    Metric {
        scenario,
        metric,
        unit,
        better,
        target,
    }
}

const HUB_APPLIED: Metric = metric(
    SYNC,
    "until A's gateway applied every import",
    "ms",
    Better::Lower,
    Some("≤ 2000"),
);
const ALL_APPLIED: Metric = metric(
    SYNC,
    "until every gateway applied",
    "ms",
    Better::Lower,
    Some("≤ 2000"),
);
const HUB_PUSHES: Metric = metric(
    SYNC,
    "configs applied by A's gateway",
    "count",
    Better::Lower,
    None,
);
const MEM_PER_PEER: Metric = metric(
    SYNC,
    "A controller + gateway RSS growth per remote cluster",
    "MB",
    Better::Lower,
    Some("≤ 20"),
);
const CTL_MEM_PER_PEER: Metric = metric(
    SYNC,
    "A controller RSS growth per remote cluster",
    "MB",
    Better::Lower,
    None,
);
const GW_MEM_PER_PEER: Metric = metric(
    SYNC,
    "A gateway RSS growth per remote cluster",
    "MB",
    Better::Lower,
    None,
);
const HUB_RSS: Metric = metric(
    SYNC,
    "A controller + gateway RSS after sync",
    "MB",
    Better::Lower,
    None,
);
const SYNC_CPU: Metric = metric(
    SYNC,
    "CPU of every controller and gateway, joins to settled",
    "CPU-s",
    Better::Lower,
    None,
);
const CHURN_P50: Metric = metric(
    CHURN,
    "change → exporting gateway applied, p50",
    "ms",
    Better::Lower,
    None,
);
const CHURN_P99: Metric = metric(
    CHURN,
    "change → exporting gateway applied, p99",
    "ms",
    Better::Lower,
    Some("≤ 250"),
);
const CHURN_PUSHES: Metric = metric(
    CHURN,
    "configs applied per change, all gateways",
    "count",
    Better::Lower,
    None,
);
const CHURN_CPU: Metric = metric(
    CHURN,
    "CPU per change, every controller and gateway",
    "CPU-ms",
    Better::Lower,
    None,
);

/// Runs both scenarios for both implementations.
pub(crate) fn run(
    gateway: &Path,
    work: &Path,
    plan: &Plan,
    only: &[String],
) -> anyhow::Result<ControlResults> {
    let started = Instant::now();
    let bins = Bins::next_to(gateway)?;
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| name.contains(o.as_str()));
    let mut results = ControlResults::new(plan.shape, plan.changes);
    for mode in [Mode::Isthmus, Mode::Naive] {
        let dir = work.join(match mode {
            Mode::Isthmus => "control-isthmus",
            Mode::Naive => "control-naive",
        });
        let world = World::start(&bins, &dir, plan.shape, mode)
            .with_context(|| format!("starting the {mode:?} control-plane world"))?;
        // The churn needs the links the sync makes.
        initial_sync(&world, mode, plan, &mut results).context(SYNC)?;
        if wanted(CHURN) {
            churn(&world, mode, plan, &mut results).context(CHURN)?;
        }
    }
    results.duration_s = started.elapsed().as_secs_f64();
    Ok(results)
}

fn mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn initial_sync(
    world: &World,
    mode: Mode,
    plan: &Plan,
    results: &mut ControlResults,
) -> anyhow::Result<()> {
    let hub = &world.hub;
    let (ctl0, gw0) = (
        rss_kib(&[hub.controller.pid()]),
        rss_kib(&[hub.gateway.pid()]),
    );
    let all = world.all_pids();
    let cpu0 = cpu_seconds(&all);
    for c in std::iter::once(hub).chain(&world.peers) {
        c.gateway.drain();
    }
    let t0 = world.link_all()?;
    let want = plan.shape.peers * plan.shape.services;
    let deadline = Instant::now() + PATIENCE;
    let mut pushes = 0usize;
    let hub_done = loop {
        let (at, e) = hub.gateway.next(deadline, "config with every import")?;
        if !proc::applied(&e) {
            continue;
        }
        pushes += 1;
        let bound = e["egress"].as_object().map_or(0, |m| m.len());
        let failed = e["egress_errors"].as_object().map_or(0, |m| m.len());
        if failed > 0 {
            bail!(
                "A's gateway could not bind {failed} egress listener(s): {}",
                e["egress_errors"]
            );
        }
        if bound == want {
            break at;
        }
    };
    let mut last = hub_done;
    for peer in &world.peers {
        let (at, _) = peer.gateway.wait("config", PATIENCE, proc::applied)?;
        last = last.max(at);
    }
    std::thread::sleep(plan.settle);
    // Late pushes (the naive publisher's) count too.
    pushes += hub
        .gateway
        .drain()
        .iter()
        .filter(|(_, e)| proc::applied(e))
        .count();
    let cpu = cpu_seconds(&all) - cpu0;
    let (ctl1, gw1) = (
        rss_kib(&[hub.controller.pid()]),
        rss_kib(&[hub.gateway.pid()]),
    );
    check_routes(world)?;
    let peers = plan.shape.peers as f64;
    let per_peer = |before: u64, after: u64| Some(mb(after.saturating_sub(before)) / peers);
    let ms = |at: Instant| Some(at.duration_since(t0).as_secs_f64() * 1000.0);
    results.record(HUB_APPLIED, mode, ms(hub_done));
    results.record(ALL_APPLIED, mode, ms(last));
    results.record(HUB_PUSHES, mode, Some(pushes as f64));
    results.record(MEM_PER_PEER, mode, per_peer(ctl0 + gw0, ctl1 + gw1));
    results.record(CTL_MEM_PER_PEER, mode, per_peer(ctl0, ctl1));
    results.record(GW_MEM_PER_PEER, mode, per_peer(gw0, gw1));
    results.record(HUB_RSS, mode, Some(mb(ctl1 + gw1)));
    results.record(SYNC_CPU, mode, Some(cpu));
    Ok(())
}

/// The first peer's gateway serves a route for its last service (the config the sync
/// measured is complete, not just the first of several).
fn check_routes(world: &World) -> anyhow::Result<()> {
    let peer = &world.peers[0];
    let dump = world::http_get(peer.admin, "/config_dump")?;
    let last = format!("svc-{:03}", world.shape.services - 1);
    if !dump.contains(&last) {
        bail!(
            "{}'s gateway config has no route for {last} after the sync; see {}",
            peer.name,
            peer.dir.display()
        );
    }
    Ok(())
}

/// The endpoint set of change `k`: 10–16 addresses in a /24 of its own (10.P.200+k.0), so
/// every change differs and the last one can be found in the gateway's config.
fn churn_set(peer: usize, k: usize, seed: &mut u64) -> Vec<Ipv4Addr> {
    // xorshift: reproducible, and no dependency for a coin toss.
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    let n = 10 + (*seed % 7) as u8;
    (1..=n)
        .map(|i| Ipv4Addr::new(10, (peer + 1) as u8, 200 + (k % 50) as u8, i))
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn churn(
    world: &World,
    mode: Mode,
    plan: &Plan,
    results: &mut ControlResults,
) -> anyhow::Result<()> {
    let peer = &world.peers[0];
    let registry = peer.dir.join("registry.yaml");
    let gateways: Vec<&world::Cluster> = std::iter::once(&world.hub).chain(&world.peers).collect();
    let applied_in =
        |events: Vec<proc::Event>| events.iter().filter(|(_, e)| proc::applied(e)).count();
    for c in &gateways {
        c.gateway.drain();
    }
    let mut pushes = 0usize;
    let all = world.all_pids();
    let cpu0 = cpu_seconds(&all);
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut latencies = Vec::new();
    let mut missed = 0usize;
    let mut last_set = Vec::new();
    let start = Instant::now();
    for k in 0..plan.changes {
        let tick = start + Duration::from_secs(k as u64);
        std::thread::sleep(tick.saturating_duration_since(Instant::now()));
        let set = churn_set(0, k, &mut seed);
        let yaml = world::registry_yaml(&world.shape, 0, Some(&set));
        let t0 = Instant::now();
        world::write_atomic(&registry, &yaml)?;
        last_set = set;
        // Bounded by the next change: a push later than that is a miss.
        let deadline = tick + Duration::from_secs(1);
        loop {
            match peer.gateway.next(deadline, "config") {
                Ok((at, e)) if proc::applied(&e) => {
                    pushes += 1;
                    if at >= t0 {
                        latencies.push(at.duration_since(t0).as_secs_f64() * 1000.0);
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    missed += 1;
                    break;
                }
            }
        }
    }
    std::thread::sleep(plan.settle);
    let cpu = cpu_seconds(&all) - cpu0;
    for c in &gateways {
        pushes += applied_in(c.gateway.drain());
    }
    let marker = last_set.last().map(ToString::to_string).unwrap_or_default();
    let dump = world::http_get(peer.admin, "/config_dump")?;
    if !dump.contains(&marker) {
        bail!(
            "{}'s gateway does not route to the last endpoint set ({marker}) after the churn",
            peer.name
        );
    }
    latencies.sort_by(f64::total_cmp);
    let changes = plan.changes as f64;
    results.record(CHURN_P50, mode, percentile(&latencies, 50.0));
    results.record(CHURN_P99, mode, percentile(&latencies, 99.0));
    results.record(CHURN_PUSHES, mode, Some(pushes as f64 / changes));
    results.record(CHURN_CPU, mode, Some(cpu * 1000.0 / changes));
    results
        .missed_changes
        .insert(format!("{mode:?}").to_lowercase(), missed);
    Ok(())
}
