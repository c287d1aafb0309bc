//! One egress connection from accept to close: remote gateway choice with failover, the mTLS
//! handshake with the chosen gateway's SNI and trust domain (or the replayed ClientHello in
//! passthrough), the splice, and the [`Record`] that counts and logs the connection once.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::Pool;
use super::gateways::Target;
use crate::config::{self, EgressMode};
use crate::drain;
use crate::metrics::{EgressLabel, EgressOutcome, GatewayReason, Metrics, Side, SideLabel};
use crate::proxy::splice::{self, Tally};
use crate::proxy::{Outcome, Shared, Snapshot, conn};
use crate::tls::{self, FailureReason};

/// One egress connection; counts and logs itself when dropped.
struct Record {
    metrics: Arc<Metrics>,
    label: EgressLabel,
    start: Instant,
    src: SocketAddr,
    /// The snapshot the connection started with: our cluster and the metric label set.
    snapshot: Arc<Snapshot>,
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

/// Opens the connection's [`Record`] and returns the connection's task: an async block rather
/// than an `async fn`, which would hold the socket and the drain watch twice in the task.
pub(super) fn handle(
    mut client: TcpStream,
    src: SocketAddr,
    pool: Arc<Pool>,
    shared: Arc<Shared>,
    mut drain: drain::Watch,
) -> impl Future<Output = ()> + Send {
    let snapshot = shared.load();
    let metrics = shared.metrics.clone();
    metrics.egress_opened.get_or_create(&pool.label).inc();
    let mut record = Record {
        metrics: metrics.clone(),
        label: pool.label.clone(),
        start: Instant::now(),
        src,
        snapshot: snapshot.clone(),
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
    async move {
        let outcome = serve(&mut client, &pool, &shared, &mut record, &mut drain).await;
        record.close(outcome);
        // The access-log line is written before the client's socket closes: whoever sees the
        // close can already find the line (as when the record was a local of an `async fn`,
        // whose arguments drop last).
        drop(record);
    }
}

/// Connects to a remote gateway and forwards; returns how the connection ended.
async fn serve(
    client: &mut TcpStream,
    pool: &Pool,
    shared: &Shared,
    record: &mut Record,
    drain: &mut drain::Watch,
) -> Outcome {
    let snapshot = record.snapshot.clone();
    let config = &snapshot.config;
    let metrics = &shared.metrics;
    let connected = match pool.config.mode {
        EgressMode::Mtls => {
            // One slot for the whole setup, failover included; it is taken before the TCP
            // connect so the remote gateway's hello deadline never runs while we queue.
            let slot = shared.handshakes.admit(Side::Egress, metrics).await;
            // Watched from before the handshake: a config put in force while it runs (after
            // the remote gateway's chain was checked) is checked against before any byte moves.
            let watch = shared.tls().map(|m| {
                let changes = m.changes();
                (m, changes)
            });
            let material = watch.as_ref().map(|(m, _)| m);
            let tls = pool.connect_mtls(config, material, metrics, record).await;
            drop(slot);
            // Split at once: the stream's TLS state (over 1.2 KB) then lives once, on the heap,
            // not also in this task or in a box kept until the connection ends.
            tls.map(|tls| {
                let chain = tls::owned_chain(tls.get_ref().1.peer_certificates());
                Upstream::Tls(tokio::io::split(tls), chain, watch)
            })
        }
        EgressMode::Passthrough => match conn::detect(client, &config.ingress).await {
            Err(outcome) => Err(outcome),
            Ok((hello, parsed)) => {
                record.sni = parsed.server_name;
                pool.connect_tcp(config, record)
                    .await
                    .map(|tcp| Upstream::Plain(tcp, hello))
            }
        },
    };
    let upstream = match connected {
        Ok(upstream) => upstream,
        Err(outcome) => return outcome,
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
    let limits = splice::Limits::of(&config.upstream);
    match upstream {
        Upstream::Tls(remote, chain, watch) => {
            let pump = splice::pump(client.split(), remote, up, down, limits, drain);
            match watch {
                Some((material, mut changes)) => {
                    // A remote gateway whose trust domain left our bundle map (an unlinked
                    // peer) gets no more bytes, as its own connections into us get none.
                    // Biased, the watch first: a change made during the handshake is already
                    // pending there.
                    let check = || material.still_trusted(&chain, tls::Usage::Server).map(drop);
                    tokio::select! {
                        biased;
                        reason = tls::revoked(&mut changes, check) => {
                            tracing::info!(
                                peer_spiffe_id = record.peer_id.as_deref(),
                                %reason,
                                "closing a connection to a gateway no longer trusted"
                            );
                            Outcome::Revoked
                        }
                        outcome = pump => outcome,
                    }
                }
                None => pump.await,
            }
        }
        Upstream::Plain(mut tcp, hello) => {
            if tcp.write_all(&hello).await.is_err() {
                Outcome::Reset
            } else {
                let n = u64::try_from(hello.len()).unwrap_or(u64::MAX);
                // Freed now rather than when the connection ends.
                drop(hello);
                up.total.fetch_add(n, Ordering::Relaxed);
                up.counter.inc_by(n);
                splice::pump_tcp(client, &mut tcp, up, down, limits, drain).await
            }
        }
    }
}

/// The connection toward the remote gateway.
enum Upstream {
    /// mTLS egress, split for the pump, with the remote gateway's verified chain and the
    /// material in force with its config changes, watched since before the handshake.
    Tls(
        (
            tokio::io::ReadHalf<tokio_rustls::client::TlsStream<TcpStream>>,
            tokio::io::WriteHalf<tokio_rustls::client::TlsStream<TcpStream>>,
        ),
        Vec<rustls_pki_types::CertificateDer<'static>>,
        Option<(tls::Material, tokio::sync::watch::Receiver<u64>)>,
    ),
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

    /// [`Self::connect_tcp`] plus the mTLS handshake with the chosen gateway's SNI and trust
    /// domain; a failed handshake also fails over.
    async fn connect_mtls(
        &self,
        config: &config::Config,
        material: Option<&tls::Material>,
        metrics: &Metrics,
        record: &mut Record,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Outcome> {
        let mut tried = Vec::new();
        let mut outcome = Outcome::UpstreamConnect;
        while let Some(index) = self.gateways.pick(&tried, Instant::now()) {
            tried.push(index);
            let Some(Target { connector, sni }) = self.gateways.list[index].tls.as_ref() else {
                continue;
            };
            let Some(tcp) = self.try_gateway(index, config, record).await else {
                continue;
            };
            record.sni = Some(sni.to_str().into_owned());
            let handshake = connector.connect(sni.clone(), tcp);
            let (reason, text) =
                match tokio::time::timeout(config.upstream.connect_timeout, handshake).await {
                    Ok(Ok(tls)) => match resumed_refusal(tls.get_ref().1, material, metrics) {
                        Some(reason) => (FailureReason::Resumed.as_str(), reason),
                        None => {
                            self.gateways.report_success(index);
                            let certs = tls.get_ref().1.peer_certificates().unwrap_or(&[]);
                            let peer = tls::Peer::from_certs(certs);
                            record.peer_id = peer.spiffe_id;
                            // The verified certificate is better evidence than the config.
                            if let Some(cluster) = peer.cluster {
                                record.dst_cluster = cluster;
                            }
                            return Ok(tls);
                        }
                    },
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
        record.dst_cluster = gateway
            .config
            .cluster
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
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

impl Record {
    /// How the connection ended (reported when the record drops).
    fn close(&mut self, outcome: Outcome) {
        self.outcome = outcome;
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        self.metrics
            .egress_closed
            .get_or_create(&EgressOutcome {
                egress: self.label.egress.clone(),
                outcome: self.outcome,
                src_cluster: self.snapshot.config.cluster.to_string(),
                dst_cluster: self.snapshot.clusters.label(Some(&self.dst_cluster)),
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
            src_cluster = self.snapshot.config.cluster.as_str(),
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

/// Why a resumed handshake with a remote gateway is refused, if it is: it verified no
/// certificate, so the chain its session recorded must verify against the bundle map in force
/// (the ticket was issued under this configuration, so its trust domain was checked then).
/// Counts the resumptions let through.
fn resumed_refusal(
    conn: &rustls::ClientConnection,
    material: Option<&tls::Material>,
    metrics: &Metrics,
) -> Option<String> {
    if !tls::resumed(conn) {
        return None;
    }
    let Some(material) = material else {
        return Some("no TLS material to check the remote gateway against".to_owned());
    };
    let chain = conn.peer_certificates().unwrap_or_default();
    if let Err(reason) = material.still_trusted(chain, tls::Usage::Server) {
        return Some(reason);
    }
    let side = SideLabel { side: Side::Egress };
    metrics.tls_sessions_resumed.get_or_create(&side).inc();
    None
}
