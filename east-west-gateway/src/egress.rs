//! Egress listeners: a local client connects to `listen`; the gateway picks a remote gateway
//! ([`gateways`]: healthy first, lowest priority, weight within it), and either
//! - `mtls`: originates mutual TLS with the service's SNI, verifying the remote gateway against
//!   the bundle map and the expected trust domain, then splices the client's plain TCP into it;
//! - `passthrough`: peeks the client's own ClientHello and sends its bytes untouched to the
//!   remote gateway's ingress, so the client's end-to-end TLS survives.
//!
//! A remote gateway that refuses the connection or fails the handshake is ejected and the next
//! one tried; nothing of the client's has been sent by then, so failover never duplicates bytes.
//! Listeners, gateways, probes and resolvers are fixed at startup; certificates and bundles
//! reload underneath them (the TLS handles are shared).

mod gateways;
mod probe;
mod resolve;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustls_pki_types::ServerName;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use self::gateways::{Gateway, Gateways};
use crate::config::{self, EgressMode};
use crate::drain;
use crate::metrics::{EgressLabel, EgressOutcome, GatewayReason, Metrics};
use crate::proxy::splice::{self, Tally};
use crate::proxy::{Outcome, conn};
use crate::tls::{self, FailureReason};

/// Why egress could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An mTLS egress listener exists but the gateway has no TLS material.
    #[error("egress {0}: mtls needs the tls section")]
    NoIdentity(String),
    /// The client configuration could not be built.
    #[error("egress {egress}: {source}")]
    Tls {
        /// The listener.
        egress: String,
        /// The TLS error.
        source: tls::Error,
    },
    /// The SNI is not a valid server name (config validation normally catches this).
    #[error("egress {egress}: invalid sni {sni:?}")]
    Sni {
        /// The listener.
        egress: String,
        /// The configured SNI.
        sni: String,
    },
}

/// One egress listener's runtime: its config, remote gateways and TLS client.
pub struct Pool {
    config: config::Egress,
    gateways: Gateways,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    label: EgressLabel,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("egress", &self.label.egress)
            .field("gateways", &self.gateways)
            .finish_non_exhaustive()
    }
}

/// The background tasks (probes, resolvers) of every pool; aborted on shutdown.
pub type Tasks = Vec<JoinHandle<()>>;

/// Builds the pools, resolves host names once, and starts probes and re-resolution.
pub async fn build(
    config: &config::Config,
    material: Option<&tls::Material>,
    metrics: &Arc<Metrics>,
) -> Result<(Vec<Arc<Pool>>, Tasks), Error> {
    let mut pools = Vec::with_capacity(config.egress.len());
    let mut tasks = Vec::new();
    let needs_dns = config.egress.iter().any(|e| {
        e.gateways.iter().any(|g| {
            let host = g.address.rsplit_once(':').map_or("", |(h, _)| h);
            host.trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_err()
        })
    });
    let resolver = match needs_dns.then(resolve::resolver).transpose() {
        Ok(resolver) => resolver,
        Err(error) => {
            tracing::error!(%error, "host-name gateways stay unresolved");
            None
        }
    };
    for e in &config.egress {
        let name = e.name.to_string();
        let tls = match &e.mode {
            EgressMode::Passthrough => None,
            EgressMode::Mtls { sni, trust_domain } => {
                let material = material.ok_or_else(|| Error::NoIdentity(name.clone()))?;
                let client = material
                    .client_config(trust_domain)
                    .map_err(|source| Error::Tls {
                        egress: name.clone(),
                        source,
                    })?;
                let sni = ServerName::try_from(sni.clone()).map_err(|_| Error::Sni {
                    egress: name.clone(),
                    sni: sni.clone(),
                })?;
                Some((tokio_rustls::TlsConnector::from(client), sni))
            }
        };
        let list: Vec<Arc<Gateway>> = e
            .gateways
            .iter()
            .map(|g| Arc::new(Gateway::new(&name, g, metrics)))
            .collect();
        for gateway in &list {
            tasks.extend(resolve::start(gateway, resolver.as_ref(), metrics).await);
            tasks.push(tokio::spawn(probe::run(
                gateway.clone(),
                e.probe.clone(),
                metrics.clone(),
            )));
        }
        pools.push(Arc::new(Pool {
            config: e.clone(),
            gateways: Gateways::new(list, &config.upstream),
            tls,
            label: EgressLabel { egress: name },
            metrics: metrics.clone(),
        }));
    }
    Ok((pools, tasks))
}

/// Accepts on one egress listener until the drain starts.
pub(crate) async fn serve(
    listener: TcpListener,
    pool: Arc<Pool>,
    shared: Arc<crate::proxy::Shared>,
    mut drain: drain::Watch,
) {
    loop {
        let accepted = tokio::select! {
            () = drain.stopped() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "egress accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let span = tracing::info_span!("egress", egress = %pool.label.egress, peer = %peer);
        tokio::spawn(
            handle(stream, peer, pool.clone(), shared.clone(), drain.clone()).instrument(span),
        );
    }
}

impl Pool {
    /// The listener's configured address.
    pub fn listen(&self) -> SocketAddr {
        self.config.listen
    }

    /// Runtime state for `/config_dump`: per gateway health, RTT and name resolution.
    pub fn status(&self) -> Value {
        let gateways: Vec<Value> = self
            .gateways
            .list
            .iter()
            .map(|g| {
                let dns = g.dns();
                let rtt = g.rtt();
                json!({
                    "address": g.config.address,
                    "priority": g.config.priority,
                    "weight": g.config.weight,
                    "healthy": g.is_alive(),
                    "rtt_p50_ms": rtt.map(|r| r.0.as_secs_f64() * 1e3),
                    "rtt_p99_ms": rtt.map(|r| r.1.as_secs_f64() * 1e3),
                    "resolved": g.addresses().iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "resolved_at": dns.resolved_at.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
                    "dns_ttl": dns.ttl.map(|t| humantime::format_duration(t).to_string()),
                    "dns_error": dns.last_error,
                    "dns_stale": dns.stale,
                })
            })
            .collect();
        json!({ "name": self.label.egress, "gateways": gateways })
    }
}

/// One egress connection; counts and logs itself when dropped.
struct Record {
    metrics: Arc<Metrics>,
    label: EgressLabel,
    start: Instant,
    src: SocketAddr,
    src_cluster: String,
    dst_cluster: String,
    gateway: Option<String>,
    dst: Option<SocketAddr>,
    peer_id: Option<String>,
    sni: Option<String>,
    tls_error: Option<String>,
    outcome: Outcome,
    received: AtomicU64,
    sent: AtomicU64,
}

async fn handle(
    mut client: TcpStream,
    src: SocketAddr,
    pool: Arc<Pool>,
    shared: Arc<crate::proxy::Shared>,
    mut drain: drain::Watch,
) {
    let snapshot = shared.load();
    let config = &snapshot.config;
    let metrics = shared.metrics.clone();
    metrics.egress_opened.get_or_create(&pool.label).inc();
    let mut record = Record {
        metrics: metrics.clone(),
        label: pool.label.clone(),
        start: Instant::now(),
        src,
        src_cluster: config.cluster.to_string(),
        dst_cluster: pool
            .config
            .cluster
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        gateway: None,
        dst: None,
        peer_id: None,
        sni: None,
        tls_error: None,
        outcome: Outcome::Reset,
        received: AtomicU64::new(0),
        sent: AtomicU64::new(0),
    };
    let connected = match &pool.tls {
        Some((connector, sni)) => {
            record.sni = Some(sni.to_str().into_owned());
            pool.connect_mtls(connector, sni, config, &mut record)
                .await
                .map(|tls| Upstream::Tls(Box::new(tls)))
        }
        None => match conn::detect(&mut client, &config.ingress).await {
            Err(outcome) => Err(outcome),
            Ok((hello, parsed)) => {
                record.sni = parsed.server_name;
                pool.connect_tcp(config, &mut record)
                    .await
                    .map(|tcp| Upstream::Plain(tcp, hello))
            }
        },
    };
    let upstream = match connected {
        Ok(upstream) => upstream,
        Err(outcome) => {
            record.outcome = outcome;
            return;
        }
    };
    let received = metrics
        .egress_received_bytes
        .get_or_create_owned(&pool.label);
    let sent = metrics.egress_sent_bytes.get_or_create_owned(&pool.label);
    let up = Tally {
        total: &record.received,
        counter: &received,
    };
    let down = Tally {
        total: &record.sent,
        counter: &sent,
    };
    let limits = splice::Limits {
        buffer_bytes: config.upstream.buffer_bytes,
        idle_timeout: config.upstream.idle_timeout,
    };
    record.outcome = match upstream {
        Upstream::Tls(tls) => {
            let (client, remote) = (client.split(), tokio::io::split(*tls));
            splice::pump(client, remote, up, down, limits, &mut drain).await
        }
        Upstream::Plain(mut tcp, hello) => {
            if tcp.write_all(&hello).await.is_err() {
                Outcome::Reset
            } else {
                let n = u64::try_from(hello.len()).unwrap_or(u64::MAX);
                up.total.fetch_add(n, Ordering::Relaxed);
                up.counter.inc_by(n);
                splice::pump(client.split(), tcp.split(), up, down, limits, &mut drain).await
            }
        }
    };
}

/// The connection toward the remote gateway.
enum Upstream {
    /// mTLS egress.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// Passthrough egress, with the client's buffered ClientHello still to send.
    Plain(TcpStream, Vec<u8>),
}

impl Pool {
    /// Connects to the best remote gateway, failing over on connect errors.
    async fn connect_tcp(
        &self,
        config: &config::Config,
        record: &mut Record,
    ) -> Result<TcpStream, Outcome> {
        let mut tried = Vec::new();
        while let Some(index) = self.gateways.pick(&tried, Instant::now()) {
            tried.push(index);
            if let Some(tcp) = self.try_gateway(index, config, record).await {
                self.gateways.report_success(index);
                return Ok(tcp);
            }
        }
        Err(Outcome::UpstreamConnect)
    }

    /// [`Self::connect_tcp`] plus the mTLS handshake; a failed handshake also fails over.
    async fn connect_mtls(
        &self,
        connector: &tokio_rustls::TlsConnector,
        sni: &ServerName<'static>,
        config: &config::Config,
        record: &mut Record,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Outcome> {
        let mut tried = Vec::new();
        let mut outcome = Outcome::UpstreamConnect;
        while let Some(index) = self.gateways.pick(&tried, Instant::now()) {
            tried.push(index);
            let Some(tcp) = self.try_gateway(index, config, record).await else {
                continue;
            };
            let handshake = connector.connect(sni.clone(), tcp);
            let (reason, text) =
                match tokio::time::timeout(config.upstream.connect_timeout, handshake).await {
                    Ok(Ok(tls)) => {
                        self.gateways.report_success(index);
                        let certs = tls.get_ref().1.peer_certificates().unwrap_or(&[]);
                        let peer = tls::Peer::from_certs(certs);
                        record.peer_id = peer.spiffe_id;
                        if let Some(cluster) = peer.cluster {
                            record.dst_cluster = cluster;
                        }
                        return Ok(tls);
                    }
                    Ok(Err(error)) => (
                        FailureReason::of(&error).as_str(),
                        trust_bundle::tls::explain_io(&error),
                    ),
                    Err(_elapsed) => ("timeout", "handshake timed out".to_owned()),
                };
            self.failed(index, reason);
            tracing::debug!(gateway = %self.gateways.list[index].config.address, reason, error = %text, "remote gateway handshake failed");
            record.tls_error = Some(text);
            outcome = Outcome::TlsRefused;
        }
        Err(outcome)
    }

    /// One gateway: each of its addresses until one accepts.
    async fn try_gateway(
        &self,
        index: usize,
        config: &config::Config,
        record: &mut Record,
    ) -> Option<TcpStream> {
        let gateway = self.gateways.list.get(index)?;
        record.gateway = Some(gateway.config.address.clone());
        for address in gateway.addresses() {
            let connect = TcpStream::connect(address);
            match tokio::time::timeout(config.upstream.connect_timeout, connect).await {
                Ok(Ok(tcp)) => {
                    let _ = tcp.set_nodelay(true);
                    record.dst = Some(address);
                    return Some(tcp);
                }
                Ok(Err(error)) => {
                    tracing::debug!(%address, %error, "remote gateway connect failed");
                }
                Err(_elapsed) => tracing::debug!(%address, "remote gateway connect timed out"),
            }
        }
        self.failed(index, "connect");
        None
    }

    fn failed(&self, index: usize, reason: &'static str) {
        let Some(gateway) = self.gateways.list.get(index) else {
            return;
        };
        let metrics = &self.metrics;
        metrics
            .egress_failures
            .get_or_create(&GatewayReason {
                egress: gateway.label.egress.clone(),
                gateway: gateway.label.gateway.clone(),
                reason,
            })
            .inc();
        self.gateways.report_failure(index, Instant::now(), metrics);
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        self.metrics
            .egress_closed
            .get_or_create(&EgressOutcome {
                egress: self.label.egress.clone(),
                outcome: self.outcome,
            })
            .inc();
        let dst = self.dst.map(|d| d.to_string()).unwrap_or_default();
        tracing::info!(
            target: "access",
            egress = %self.label.egress,
            src = %self.src,
            gateway = self.gateway.as_deref().unwrap_or(""),
            dst = dst.as_str(),
            sni = self.sni.as_deref().unwrap_or(""),
            peer_spiffe_id = self.peer_id.as_deref().unwrap_or(""),
            src_cluster = self.src_cluster.as_str(),
            dst_cluster = self.dst_cluster.as_str(),
            tls_error = self.tls_error.as_deref().unwrap_or(""),
            outcome = self.outcome.as_str(),
            bytes_received = self.received.load(Ordering::Relaxed),
            bytes_sent = self.sent.load(Ordering::Relaxed),
            duration_ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX),
            "egress connection closed",
        );
    }
}
