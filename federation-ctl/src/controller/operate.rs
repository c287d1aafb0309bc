//! The operator views: `status`, `trust status`, `trace` and `check`, built from the controller's
//! state, the gateway config it publishes and its gateways' reports; and the DNS server for
//! imports. Everything here reads: nothing changes federation state.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use east_west_gateway::names::{Label, NativeName, ServiceRef};
use tokio::net::TcpStream;
use trust_bundle::tls::{Authorizer, IdentityHandle};

use super::{LinkState, Shared, now_ms};
use crate::api::control as pb;
use crate::config::Dns;
use crate::diagnose::{self, Finding};
use crate::dns::{self, ServiceRecords, Zone};
use crate::identity::Role;
use crate::model::{ClusterName, ServiceKey};

/// How long `check` waits for a peer gateway's TCP connect and TLS handshake.
const DIAL_TIMEOUT: Duration = Duration::from_secs(3);

/// Starts the DNS server for imports; returns where it listens.
pub(crate) async fn serve_dns(shared: &Arc<Shared>, cfg: &Dns) -> anyhow::Result<SocketAddr> {
    let zone = Zone {
        zone: cfg.zone.clone(),
        ttl: cfg.ttl,
    };
    let weak = Arc::downgrade(shared);
    let lookup = move |key: &ServiceKey| weak.upgrade().and_then(|s| s.dns_records(key));
    let address = dns::serve(cfg.listen, zone, Arc::new(lookup)).await?;
    tracing::info!(%address, zone = %cfg.zone, "DNS for imports listening");
    Ok(address)
}

impl Shared {
    /// The live import `key` as DNS shows it: the egress address and each port's listener.
    pub(crate) fn dns_records(&self, key: &ServiceKey) -> Option<ServiceRecords> {
        let core = self.lock();
        let import = core.imports.get(key)?;
        let ports: Vec<(String, u16)> = import
            .ports
            .iter()
            .filter_map(|p| Some((p.name.clone(), core.egress.get(key, &p.name)?)))
            .collect();
        (!ports.is_empty()).then_some(ServiceRecords {
            address: self.cfg.gateways.egress.address,
            ports,
        })
    }

    fn zone(&self) -> Option<Zone> {
        self.cfg.dns.as_ref().map(|d| Zone {
            zone: d.zone.clone(),
            ttl: d.ttl,
        })
    }

    pub(crate) fn status(&self, links: Vec<pb::Link>) -> pb::GetStatusResponse {
        let now = now_ms();
        let gateway_id = self
            .gateway_identity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let controller_expiry = self.identity.current();
        let controller_not_after = controller_expiry
            .cert
            .first()
            .and_then(|c| trust_bundle::cert::ParsedCert::parse(c).ok())
            .map_or(0, |c| c.not_after.saturating_mul(1000));
        let mut warnings = Vec::new();
        let gateways: Vec<pb::GatewayStatus> = self
            .reports
            .all()
            .into_iter()
            .map(|r| {
                let reporting = r.is_current(now);
                if !reporting {
                    warnings.push(format!(
                        "gateway {} has not reported for {}s",
                        r.report.gateway,
                        now.saturating_sub(r.at_ms) / 1000
                    ));
                } else if !r.report.ready {
                    warnings.push(format!(
                        "gateway {} is not ready (draining)",
                        r.report.gateway
                    ));
                }
                pb::GatewayStatus {
                    name: r.report.gateway.clone(),
                    ready: reporting && r.report.ready,
                    last_report_ms: r.at_ms,
                    config_version: r.report.config_version,
                    ingress: r.report.ingress.clone(),
                    reporting,
                }
            })
            .collect();
        if gateways.iter().all(|g| !g.reporting) {
            warnings.push(format!(
                "no gateway is connected; start `east-west-gateway --controller {}`",
                self.cfg.api.socket.display()
            ));
        }
        let mut paths: Vec<pb::PathStatus> = Vec::new();
        for r in self.reports.all().into_iter().filter(|r| r.is_current(now)) {
            for e in &r.report.egress {
                for g in &e.gateways {
                    if paths
                        .iter()
                        .any(|p| p.gateway_address == g.address && p.cluster == g.cluster)
                    {
                        continue;
                    }
                    if !g.healthy {
                        warnings.push(format!(
                            "{}'s gateway {} fails our gateway's probes",
                            g.cluster, g.address
                        ));
                    }
                    paths.push(pb::PathStatus {
                        cluster: g.cluster.clone(),
                        gateway_address: g.address.clone(),
                        healthy: g.healthy,
                        measured: g.measured,
                        rtt_p50_us: g.rtt_p50_us,
                        rtt_p99_us: g.rtt_p99_us,
                        measured_by: r.report.gateway.clone(),
                    });
                }
            }
        }
        paths.sort_by(|a, b| {
            (&a.cluster, &a.gateway_address).cmp(&(&b.cluster, &b.gateway_address))
        });
        for link in &links {
            if link.state != LinkState::Connected.as_str() {
                warnings.push(format!("link {} is {}", link.peer, link.state));
            }
            if link.imports_from_peer > 0 && !link.lease_live {
                warnings.push(format!(
                    "imports from {} are withdrawn: its lease expired",
                    link.peer
                ));
            }
        }
        let (exports, imports, conflicts) = {
            let core = self.lock();
            (
                core.registry.exports.len(),
                core.imports.len(),
                core.conflicts.len(),
            )
        };
        if conflicts > 0 {
            warnings.push(format!(
                "{conflicts} import port conflict(s); `federation-ctl services` shows them"
            ));
        }
        for (what, not_after) in [
            ("cluster intermediate", self.ca.load().not_after()),
            ("gateway identity", gateway_id.not_after),
        ] {
            let ms = system_ms(not_after);
            if ms.saturating_sub(now) < diagnose::EXPIRY_WARN.as_millis() as i64 {
                warnings.push(format!("{what} expires {}", crate::cli::format_time(ms)));
            }
        }
        pb::GetStatusResponse {
            cluster: self.cfg.cluster.to_string(),
            trust_domain: self.ca.load().trust_domain().to_string(),
            spiffe_id: self.ca.load().spiffe_id(Role::Controller).to_string(),
            identity_expires_at_ms: controller_not_after,
            ca_expires_at_ms: system_ms(self.ca.load().not_after()),
            gateways,
            links,
            paths,
            exports: u32::try_from(exports).unwrap_or(u32::MAX),
            imports: u32::try_from(imports).unwrap_or(u32::MAX),
            warnings,
            now_ms: now,
            dns_listen: self.dns.get().map(|a| a.to_string()).unwrap_or_default(),
            dns_zone: self
                .cfg
                .dns
                .as_ref()
                .map(|d| d.zone.clone())
                .unwrap_or_default(),
            config_version: self.gateway_config.borrow().version,
            leader: self
                .cfg
                .leader_election
                .as_ref()
                .map(|l| l.identity.clone())
                .unwrap_or_default(),
        }
    }

    pub(crate) fn trust_status(&self) -> pb::TrustStatusResponse {
        let ours = diagnose::bundle_info(
            self.cfg.cluster.as_str(),
            self.ca.load().trust_domain().as_str(),
            self.ca.load().bundle(),
        );
        let records: Vec<_> = self
            .lock()
            .links
            .values()
            .map(|l| l.record.clone())
            .collect();
        let peers = records
            .iter()
            .map(|r| {
                let mut info = match r.bundle() {
                    Ok(bundle) => {
                        diagnose::bundle_info(r.peer.as_str(), r.trust_domain.as_str(), &bundle)
                    }
                    Err(e) => pb::BundleInfo {
                        cluster: r.peer.to_string(),
                        trust_domain: r.trust_domain.to_string(),
                        differences: vec![format!("its stored bundle is unreadable: {e}")],
                        ..pb::BundleInfo::default()
                    },
                };
                diagnose::compare_bundles(&ours, &mut info);
                info
            })
            .collect();
        pb::TrustStatusResponse {
            ours: Some(ours),
            peers,
        }
    }

    pub(crate) fn trace(&self, key: &ServiceKey) -> Result<pb::TraceResponse, String> {
        let now = now_ms();
        let zone = self.zone();
        let dns_name = zone.as_ref().map(|z| z.name_of(key)).unwrap_or_default();
        let mut dns_answers = Vec::new();
        if let Some(z) = &zone {
            let imports = |k: &ServiceKey| self.dns_records(k);
            for qtype in [
                hickory_server::proto::rr::RecordType::A,
                hickory_server::proto::rr::RecordType::AAAA,
                hickory_server::proto::rr::RecordType::SRV,
            ] {
                match z.answer(&dns_name, qtype, &imports) {
                    dns::Answer::Records(recs) => {
                        dns_answers.extend(recs.iter().map(ToString::to_string));
                    }
                    dns::Answer::NxDomain => {
                        dns_answers = vec!["NXDOMAIN".to_owned()];
                        break;
                    }
                    dns::Answer::Refused => {}
                }
            }
        }
        let (import, lease) = {
            let core = self.lock();
            let lease = self.cfg.lease();
            let live: Vec<(ClusterName, bool)> = core
                .links
                .iter()
                .map(|(p, l)| (p.clone(), lease.is_live(l.imports.last_heard_ms, now)))
                .collect();
            (core.imports.get(key).cloned(), live)
        };
        let Some(import) = import else {
            return Err(format!(
                "{key} is not imported here: no linked cluster exports it to {} (or their leases expired); `federation-ctl services` lists the imports",
                self.cfg.cluster
            ));
        };
        let config = self.gateway_config.borrow().clone();
        let mut ports = Vec::new();
        for port in &import.ports {
            let egress = config.egress.iter().find(|e| {
                e.service.as_ref().is_some_and(|s| {
                    s.name == key.name()
                        && s.namespace == key.namespace()
                        && s.port == u32::from(port.port)
                })
            });
            let Some(egress) = egress else {
                ports.push(pb::TracePort {
                    name: port.name.clone(),
                    port: u32::from(port.port),
                    ..pb::TracePort::default()
                });
                continue;
            };
            let mut gateways = egress.gateways.clone();
            gateways.sort_by_key(|g| g.priority);
            let candidates = gateways
                .iter()
                .map(|g| {
                    let source = import
                        .sources
                        .iter()
                        .find(|s| s.cluster.as_str() == g.cluster);
                    let live = lease
                        .iter()
                        .any(|(p, live)| p.as_str() == g.cluster && *live);
                    let probe = self.reports.probe(&egress.name, &g.address, now);
                    let sni = match (&probe, g.sni.is_empty()) {
                        (Some(p), _) if !p.sni.is_empty() => p.sni.clone(),
                        (_, false) => g.sni.clone(),
                        _ => native_sni(key, port.port, &g.cluster),
                    };
                    pb::TraceCandidate {
                        cluster: g.cluster.clone(),
                        priority: g.priority,
                        source_healthy: live && source.is_some_and(|s| s.ready_endpoints > 0),
                        ready_endpoints: source.map_or(0, |s| s.ready_endpoints),
                        gateway_address: g.address.clone(),
                        sni,
                        trust_domain: g.trust_domain.clone(),
                        gateway_healthy: probe.as_ref().is_some_and(|p| p.healthy),
                        measured: probe.as_ref().is_some_and(|p| p.measured),
                        rtt_p50_us: probe.as_ref().map_or(0, |p| p.rtt_p50_us),
                        rtt_p99_us: probe.as_ref().map_or(0, |p| p.rtt_p99_us),
                        reported: probe.is_some(),
                    }
                })
                .collect();
            ports.push(pb::TracePort {
                name: port.name.clone(),
                port: u32::from(port.port),
                listener: egress.listen.clone(),
                egress: egress.name.clone(),
                mode: if egress.mode.is_empty() {
                    "mtls".to_owned()
                } else {
                    egress.mode.clone()
                },
                candidates,
            });
        }
        Ok(pb::TraceResponse {
            service: key.to_string(),
            dns_name,
            dns_answers,
            ports,
        })
    }

    /// Every check: the local ones on our config, then what only a running controller knows.
    pub(crate) async fn check(&self) -> Vec<Finding> {
        let now = now_ms();
        let mut out = diagnose::local::for_config(&self.cfg, now).await;
        let gateway_id = self
            .gateway_identity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        out.push(diagnose::expiry(
            "gateway identity",
            system_ms(gateway_id.not_after),
            now,
            "the controller renews it at half-life; if it does not, its log says why",
        ));
        let trust = self.trust_status();
        let (links, imports) = {
            let core = self.lock();
            let links: Vec<_> = core
                .links
                .values()
                .map(|l| (l.record.clone(), l.clock_skew_ms, l.state))
                .collect();
            (links, core.imports.clone())
        };
        if links.is_empty() {
            out.push(Finding::warning(
                "links",
                self.cfg.cluster.as_str(),
                "no linked cluster",
                "link one: `federation-ctl link token` on the other cluster, then `federation-ctl link join TOKEN` here",
            ));
        }
        if links.iter().any(|(r, _, _)| r.peer == self.cfg.cluster) {
            out.push(Finding::error(
                "cluster-names",
                self.cfg.cluster.as_str(),
                "a linked cluster has our own name",
                "cluster names must be unique among linked clusters: rename one (`cluster:` in its config, with a CA created for that name) and link again",
            ));
        } else {
            out.push(Finding::ok(
                "cluster-names",
                self.cfg.cluster.as_str(),
                format!("unique among {} linked cluster(s)", links.len() + 1),
            ));
        }
        for peer in &trust.peers {
            out.push(diagnose::trust(peer));
            out.extend(diagnose::local::roots(
                &format!("{} root", peer.cluster),
                &match links
                    .iter()
                    .find(|(r, _, _)| r.peer.as_str() == peer.cluster)
                    .and_then(|(r, _, _)| r.bundle().ok())
                {
                    Some(b) => b,
                    None => continue,
                },
                now,
                &format!(
                    "{} must rotate its root; its new bundle reaches us over the link",
                    peer.cluster
                ),
            ));
        }
        let identity = IdentityHandle::from_credential(&gateway_id.credential).ok();
        for (record, skew, state) in &links {
            let peer = &record.peer;
            if *state == LinkState::Connected {
                out.push(diagnose::clock_skew(peer.as_str(), *skew));
            } else {
                out.push(Finding::warning(
                    "link",
                    peer.as_str(),
                    format!("link is {}", state.as_str()),
                    format!(
                        "check that {peer}'s controller runs and its peering address {} is reachable from here",
                        record
                            .peering_addresses
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            // An SNI the peer gateway routes: one of the services we import from it.
            let sni = imports.values().find_map(|i| {
                i.sources.iter().find(|s| &s.cluster == peer).and_then(|s| {
                    s.ports
                        .first()
                        .map(|p| native_sni(&i.key, p.port, peer.as_str()))
                })
            });
            for address in &record.gateway_addresses {
                out.push(
                    self.dial_gateway(
                        peer,
                        &record.trust_domain,
                        &address.to_string(),
                        sni.as_deref(),
                        identity.clone(),
                    )
                    .await,
                );
            }
        }
        let reporting = self.reports.all().iter().any(|r| r.is_current(now));
        out.push(if reporting {
            Finding::ok(
                "gateways",
                self.cfg.cluster.as_str(),
                "a gateway is connected and reporting",
            )
        } else {
            Finding::warning(
                "gateways",
                self.cfg.cluster.as_str(),
                "no gateway is connected to this controller",
                format!(
                    "start `east-west-gateway --controller {} --config GATEWAY.yaml`",
                    self.cfg.api.socket.display()
                ),
            )
        });
        out
    }

    /// TCP connect to a peer's gateway, then (when we import something from it, so its gateway
    /// routes the SNI) a TLS handshake as our gateway, verifying it against the bundle we hold
    /// for the peer.
    async fn dial_gateway(
        &self,
        peer: &ClusterName,
        trust_domain: &trust_bundle::TrustDomain,
        address: &str,
        sni: Option<&str>,
        identity: Option<IdentityHandle>,
    ) -> Finding {
        let subject = format!("{peer} {address}");
        let unreachable_hint = format!(
            "check that {peer}'s gateway runs and listens on {address}, and that firewalls between the clusters allow it; if it moved, fix `gateways.addresses` in {peer}'s controller config"
        );
        let tcp = match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(address)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Finding::error(
                    "peer-gateway",
                    subject,
                    format!("cannot connect: {e}"),
                    unreachable_hint,
                );
            }
            Err(_) => {
                return Finding::error(
                    "peer-gateway",
                    subject,
                    format!("no answer within {}s", DIAL_TIMEOUT.as_secs()),
                    unreachable_hint,
                );
            }
        };
        let (Some(sni), Some(identity)) = (sni, identity) else {
            return Finding::ok(
                "peer-gateway",
                subject,
                format!("TCP connect ok (TLS not tried: nothing is imported from {peer} yet)"),
            );
        };
        let config = match trust_bundle::tls::client_config(
            identity,
            self.trust.clone(),
            Authorizer::trust_domains([trust_domain.clone()]),
        ) {
            Ok(c) => c,
            Err(e) => {
                return Finding::error(
                    "peer-gateway",
                    subject,
                    format!("cannot build a TLS client: {e}"),
                    "this is a bug; the controller's log may say more",
                );
            }
        };
        let Ok(name) = rustls_pki_types::ServerName::try_from(sni.to_owned()) else {
            return Finding::ok("peer-gateway", subject, "TCP connect ok");
        };
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        match tokio::time::timeout(DIAL_TIMEOUT, connector.connect(name, tcp)).await {
            Ok(Ok(_)) => Finding::ok(
                "peer-gateway",
                subject,
                format!("TCP and mutual TLS ok (SNI {sni}, trust domain {trust_domain})"),
            ),
            Ok(Err(e)) => {
                let why = trust_bundle::tls::explain_io(&e);
                if why.starts_with("peer certificate refused") {
                    Finding::error(
                        "peer-gateway-trust",
                        subject,
                        format!(
                            "{peer}'s gateway presents a certificate we cannot verify against the bundle we hold for {trust_domain}: {why}; it is issued under a root that is not federated yet"
                        ),
                        format!(
                            "have {peer} serve that root in its bundle (`trust_bundle:` in its controller config, e.g. during `trust-bundle rotate`) so it reaches us over the link, or reissue {peer}'s intermediate from a root we hold; `federation-ctl trust status` shows the roots we hold"
                        ),
                    )
                } else {
                    Finding::error(
                        "peer-gateway",
                        subject,
                        format!("TCP ok, TLS handshake failed: {why}"),
                        format!(
                            "{peer}'s gateway log says why it refused us; `federation-ctl trust status` shows the bundles on both sides"
                        ),
                    )
                }
            }
            Err(_) => Finding::error(
                "peer-gateway",
                subject,
                format!(
                    "TLS handshake did not finish within {}s",
                    DIAL_TIMEOUT.as_secs()
                ),
                unreachable_hint,
            ),
        }
    }
}

/// The native SNI our gateway sends for `key`'s `port` in `cluster`.
fn native_sni(key: &ServiceKey, port: u16, cluster: &str) -> String {
    ServiceRef::new(key.name(), key.namespace(), port)
        .ok()
        .zip(Label::new(cluster).ok())
        .map(|(service, cluster)| NativeName { service, cluster }.to_string())
        .unwrap_or_default()
}

fn system_ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
