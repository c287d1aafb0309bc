//! The data-plane scenarios, in priority order, and the interleaved runner: for each scenario,
//! each repetition runs every contender once, in the same order, so drift in machine load
//! touches all of them alike.

use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;

use crate::contender::{Name, Running};
use crate::load::{self, Dial, Sample, Window, Workload};
use crate::pki::{self, Pki};
use crate::report::{Better, Results};

/// Concurrent connections of the request scenarios (as `wrk -c16`).
const CONNS: usize = 16;
const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

/// Where a scenario's traffic enters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// A ClientHello naming the plaintext sink, then plaintext, through the SNI router.
    Plain,
    /// TLS to the backend through the SNI router (passthrough).
    Tls,
    /// The mTLS chain (direct: mTLS to the backend).
    Chain,
}

/// A throughput/rate scenario.
pub(crate) struct Scenario {
    pub(crate) id: &'static str,
    entry: Entry,
    workload: Workload,
}

pub(crate) const SCENARIOS: &[Scenario] = &[
    Scenario {
        id: "plaintext bulk",
        entry: Entry::Plain,
        workload: Workload::Stream,
    },
    Scenario {
        id: "passthrough 1 KiB keep-alive",
        entry: Entry::Tls,
        workload: Workload::KeepAlive {
            conns: CONNS,
            size: KIB,
        },
    },
    Scenario {
        id: "passthrough 1 MiB bulk",
        entry: Entry::Tls,
        workload: Workload::KeepAlive {
            conns: CONNS,
            size: MIB,
        },
    },
    Scenario {
        id: "passthrough new TLS connection per request",
        entry: Entry::Tls,
        workload: Workload::NewConnection {
            conns: CONNS,
            size: KIB,
        },
    },
    Scenario {
        id: "mTLS terminate+originate 1 MiB bulk",
        entry: Entry::Chain,
        workload: Workload::KeepAlive {
            conns: 1,
            size: MIB,
        },
    },
    Scenario {
        id: "mTLS new connection per request",
        entry: Entry::Chain,
        workload: Workload::NewConnection {
            conns: CONNS,
            size: KIB,
        },
    },
];

/// The memory scenarios: (id, entry).
const IDLE: &[(&str, Entry)] = &[
    ("idle passthrough connections", Entry::Tls),
    ("idle terminated connections", Entry::Chain),
];

/// What the load generator needs to reach each entry.
pub(crate) struct Clients {
    tls: Arc<ClientConfig>,
    mtls: Arc<ClientConfig>,
    hello: Vec<u8>,
}

impl Clients {
    pub(crate) fn new(pki: &Pki) -> anyhow::Result<Self> {
        let tls = pki.client_config(false)?;
        Ok(Self {
            hello: pki::client_hello(&tls, pki::PLAIN_NAME)?,
            mtls: pki.client_config(true)?,
            tls,
        })
    }

    /// How to reach `entry` of `c`, if `c` has it (the minimal forwarder has no chain).
    fn dial(&self, entry: Entry, c: &Running) -> Option<Dial> {
        let e = &c.endpoints;
        let tls_name = || ServerName::try_from(pki::TLS_NAME).expect("a valid DNS name");
        Some(match entry {
            Entry::Plain => Dial {
                addr: e.plain,
                tls: None,
                preamble: self.hello.clone(),
            },
            Entry::Tls => Dial {
                addr: e.tls,
                tls: Some((self.tls.clone(), tls_name())),
                preamble: vec![],
            },
            Entry::Chain => Dial {
                addr: e.chain?,
                tls: e.chain_is_tls.then(|| (self.mtls.clone(), tls_name())),
                preamble: vec![],
            },
        })
    }
}

fn pids(entry: Entry, c: &Running) -> &[u32] {
    match entry {
        Entry::Plain | Entry::Tls => &c.endpoints.router_pids,
        Entry::Chain => &c.endpoints.chain_pids,
    }
}

/// How much to run.
#[derive(Clone, Copy)]
pub(crate) struct Plan<'a> {
    pub(crate) window: Window,
    pub(crate) reps: usize,
    /// Connections opened by the idle-memory scenarios.
    pub(crate) idle_n: usize,
    /// Scenario name filters; empty runs all.
    pub(crate) only: &'a [String],
}

/// Runs the memory scenarios first (on fresh processes), then every throughput scenario.
pub(crate) fn run_all(
    runtime: &tokio::runtime::Runtime,
    contenders: &mut [Running],
    clients: &Clients,
    plan: &Plan<'_>,
    results: &mut Results,
) -> anyhow::Result<()> {
    let Plan {
        window,
        reps,
        idle_n,
        only,
    } = *plan;
    let selected = |id: &str| only.is_empty() || only.iter().any(|o| id.contains(o.as_str()));
    for &(id, entry) in IDLE.iter().filter(|(id, _)| selected(id)) {
        // The minimal forwarder is a floor of forwarding cost, not of memory: it keeps its
        // buffers while idle.
        let measured = |c: &&mut Running| !matches!(c.name, Name::Direct | Name::Minimal);
        for c in contenders.iter_mut().filter(measured) {
            c.check_alive()?;
            let Some(dial) = clients.dial(entry, c) else {
                continue;
            };
            eprintln!("bench: {id}: {} ({idle_n} connections)", c.name);
            let (kib, errors) = runtime.block_on(load::idle_memory(&dial, idle_n, pids(entry, c)));
            results.record(
                id,
                "memory per connection",
                "KiB",
                Better::Lower,
                c.name,
                0,
                Some(kib),
            );
            results.errors(id, c.name, errors);
        }
    }
    for scenario in SCENARIOS.iter().filter(|s| selected(s.id)) {
        for rep in 0..reps {
            for c in contenders.iter_mut() {
                c.check_alive()?;
                let Some(dial) = clients.dial(scenario.entry, c) else {
                    continue;
                };
                eprintln!("bench: {} [{}/{reps}]: {}", scenario.id, rep + 1, c.name);
                let sample = runtime.block_on(load::run(
                    &dial,
                    scenario.workload,
                    window,
                    pids(scenario.entry, c),
                ));
                record(results, scenario, c.name, rep, &sample);
                results.errors(scenario.id, c.name, sample.errors);
            }
        }
    }
    Ok(())
}

fn record(results: &mut Results, s: &Scenario, name: Name, rep: usize, sample: &Sample) {
    let id = s.id;
    let per = |n: f64| (n > 0.0).then_some(n);
    let gb = sample.bytes as f64 / 1e9;
    let proxy = name != Name::Direct;
    let mut put =
        |metric, unit, better, value| results.record(id, metric, unit, better, name, rep, value);
    match s.workload {
        Workload::Stream => {
            put(
                "throughput",
                "Gb/s",
                Better::Higher,
                per(gb * 8.0 / sample.secs),
            );
        }
        Workload::KeepAlive { size, .. } if size >= MIB => {
            put("throughput", "GB/s", Better::Higher, per(gb / sample.secs));
        }
        Workload::KeepAlive { .. } | Workload::NewConnection { .. } => {
            let unit = if matches!(s.workload, Workload::NewConnection { .. }) {
                "conn/s"
            } else {
                "req/s"
            };
            put(
                "rate",
                unit,
                Better::Higher,
                per(sample.ops as f64 / sample.secs),
            );
            put(
                "latency p50",
                "µs",
                Better::Lower,
                sample.percentile_us(0.50),
            );
            put(
                "latency p99",
                "µs",
                Better::Lower,
                sample.percentile_us(0.99),
            );
        }
    }
    if proxy {
        let bulk = matches!(s.workload, Workload::Stream)
            || matches!(s.workload, Workload::KeepAlive { size, .. } if size >= MIB);
        if bulk {
            put(
                "proxy CPU per GB",
                "CPU-s",
                Better::Lower,
                per(gb).map(|g| sample.cpu_s / g),
            );
        } else {
            let tenk = sample.ops as f64 / 1e4;
            put(
                "proxy CPU per 10k requests",
                "CPU-s",
                Better::Lower,
                per(tenk).map(|k| sample.cpu_s / k),
            );
        }
    }
}
