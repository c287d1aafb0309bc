//! The local API socket: the operator's `Control` service and the gateways' `GatewayDiscovery`
//! stream. The socket is created owner-only (0600) inside the state directory's parent
//! permissions, so only the controller's user can mutate state or read the gateway's key.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context as _;
use east_west_gateway::api as gw;
use east_west_gateway::api::gateway_discovery_server::{GatewayDiscovery, GatewayDiscoveryServer};
use tokio_stream::wrappers::{UnixListenerStream, WatchStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::{Shared, convert, now_ms};
use crate::api::control as pb;
use crate::api::control::control_server::{Control, ControlServer};
use crate::model::{ClusterName, ExportTo, ServiceKey};
use crate::registry::ExportOrigin;
use crate::state::LinkRole;
use crate::token::Issuer;

/// Binds the local API socket (replacing a stale one) and serves both services on it.
pub(crate) async fn serve_api(shared: &Arc<Shared>) -> anyhow::Result<PathBuf> {
    let path = shared.cfg.api.socket.clone();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot replace {}", path.display())),
    }
    let listener = tokio::net::UnixListener::bind(&path)
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make {} owner-only", path.display()))?;
    let control = ControlServer::new(ControlService {
        shared: shared.clone(),
    });
    let discovery = GatewayDiscoveryServer::new(DiscoveryService {
        shared: shared.clone(),
    });
    tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .add_service(control)
            .add_service(discovery)
            .serve_with_incoming(UnixListenerStream::new(listener))
            .await;
        if let Err(error) = result {
            tracing::error!(error = %crate::transport::source_chain(&error), "local API stopped");
        }
    });
    Ok(path)
}

// === GatewayDiscovery ===

struct DiscoveryService {
    shared: Arc<Shared>,
}

type ConfigStream = Pin<Box<dyn Stream<Item = Result<gw::GatewayConfig, Status>> + Send>>;

#[tonic::async_trait]
impl GatewayDiscovery for DiscoveryService {
    type WatchStream = ConfigStream;

    async fn watch(
        &self,
        request: Request<gw::WatchRequest>,
    ) -> Result<Response<ConfigStream>, Status> {
        let req = request.into_inner();
        tracing::info!(gateway = %req.gateway, have_version = req.have_version, "gateway watching");
        let stream = WatchStream::new(self.shared.gateway_config.subscribe())
            .filter(|c| c.version > 0)
            .map(|c| Ok((*c).clone()));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn report(
        &self,
        request: Request<gw::GatewayReport>,
    ) -> Result<Response<gw::ReportAck>, Status> {
        let report = request.into_inner();
        if report.gateway.is_empty() || report.gateway.len() > 253 {
            return Err(Status::invalid_argument(
                "a report needs the gateway's name (1 to 253 bytes), as given to Watch",
            ));
        }
        self.shared.reports.record(report, now_ms());
        Ok(Response::new(gw::ReportAck {}))
    }
}

// === Control ===

struct ControlService {
    shared: Arc<Shared>,
}

fn cluster_arg(s: &str) -> Result<ClusterName, Status> {
    ClusterName::parse(s).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn service_arg(s: &str) -> Result<ServiceKey, Status> {
    ServiceKey::parse(s).map_err(|e| Status::invalid_argument(e.to_string()))
}

#[tonic::async_trait]
impl Control for ControlService {
    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let shared = &self.shared;
        let ttl = match request.into_inner().ttl_seconds {
            0 => shared.cfg.token_ttl,
            s => std::time::Duration::from_secs(s),
        };
        let bundle_json = shared.ca.bundle().to_spiffe_json();
        let issuer = Issuer {
            cluster: &shared.cfg.cluster,
            trust_domain: shared.ca.trust_domain(),
            peering_addresses: &shared.peering_addresses,
            bundle_json: &bundle_json,
        };
        let mut core = shared.lock();
        core.tokens
            .purge(now_ms(), crate::token::DEFAULT_PURGE_GRACE);
        let (text, record) = core
            .tokens
            .issue(&issuer, now_ms(), ttl, &mut rand::rng())
            .map_err(|e| Status::internal(e.to_string()))?;
        shared
            .state
            .save_tokens(&core.tokens)
            .map_err(|e| Status::unavailable(format!("cannot record the token: {e}")))?;
        tracing::info!(token_id = %record.token_id, expires_at_ms = record.expires_at_ms, "peering token issued");
        Ok(Response::new(pb::CreateTokenResponse {
            token: text.expose().to_owned(),
            token_id: record.token_id.clone(),
            expires_at_ms: record.expires_at_ms,
        }))
    }

    async fn join_link(
        &self,
        request: Request<pb::JoinLinkRequest>,
    ) -> Result<Response<pb::JoinLinkResponse>, Status> {
        let token = request.into_inner().token;
        let record = super::join_link(&self.shared, token.trim()).await?;
        let link = self.link_view(&record.peer);
        tracing::info!(peer = %record.peer, "linked");
        Ok(Response::new(pb::JoinLinkResponse { link }))
    }

    async fn unlink(
        &self,
        request: Request<pb::UnlinkRequest>,
    ) -> Result<Response<pb::UnlinkResponse>, Status> {
        let peer = cluster_arg(&request.into_inner().peer)?;
        let Some((imports, tx)) = self.shared.remove_link(&peer, "unlinked by the operator") else {
            return Err(Status::not_found(format!(
                "{} has no link with {peer}; `federation-ctl links` lists them",
                self.shared.cfg.cluster
            )));
        };
        let mut notified = false;
        if let Some(tx) = tx {
            let msg = convert::message(crate::api::peering::link_message::Kind::Unlinked(
                crate::api::peering::Unlinked {
                    reason: format!("{} unlinked {peer}", self.shared.cfg.cluster),
                },
            ));
            notified = tx.send(msg).await.is_ok();
        }
        Ok(Response::new(pb::UnlinkResponse {
            peer_notified: notified,
            imports_removed: u32::try_from(imports).unwrap_or(u32::MAX),
        }))
    }

    async fn list_links(
        &self,
        _request: Request<pb::ListLinksRequest>,
    ) -> Result<Response<pb::ListLinksResponse>, Status> {
        let peers: Vec<ClusterName> = self.shared.lock().links.keys().cloned().collect();
        let links = peers.iter().filter_map(|p| self.link_view(p)).collect();
        Ok(Response::new(pb::ListLinksResponse { links }))
    }

    async fn export(
        &self,
        request: Request<pb::ExportRequest>,
    ) -> Result<Response<pb::ExportResponse>, Status> {
        let req = request.into_inner();
        let key = service_arg(&req.service)?;
        let to = if req.to.is_empty() {
            ExportTo::All
        } else {
            ExportTo::Peers(
                req.to
                    .iter()
                    .map(|c| cluster_arg(c))
                    .collect::<Result<BTreeSet<_>, _>>()?,
            )
        };
        self.shared
            .registry
            .export(key, to)
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        Ok(Response::new(pb::ExportResponse {}))
    }

    async fn unexport(
        &self,
        request: Request<pb::UnexportRequest>,
    ) -> Result<Response<pb::UnexportResponse>, Status> {
        let key = service_arg(&request.into_inner().service)?;
        self.shared
            .registry
            .unexport(&key)
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        Ok(Response::new(pb::UnexportResponse {}))
    }

    async fn list_services(
        &self,
        _request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        let lease = self.shared.cfg.lease();
        let now = now_ms();
        let core = self.shared.lock();
        let exports = core
            .registry
            .exports
            .values()
            .map(|e| {
                let service = core.registry.services.get(&e.key);
                pb::Export {
                    service: e.key.to_string(),
                    to: match &e.to {
                        ExportTo::All => Vec::new(),
                        ExportTo::Peers(p) => p.iter().map(|c| c.to_string()).collect(),
                    },
                    source: match self.shared.registry.export_origin(&e.key) {
                        Some(ExportOrigin::Cli) => "cli",
                        _ => "registry",
                    }
                    .to_owned(),
                    ready_endpoints: service.map_or(0, |s| {
                        u32::try_from(s.endpoints.iter().filter(|e| e.ready).count())
                            .unwrap_or(u32::MAX)
                    }),
                    total_endpoints: service
                        .map_or(0, |s| u32::try_from(s.endpoints.len()).unwrap_or(u32::MAX)),
                    ports: service
                        .map(|s| {
                            s.ports
                                .iter()
                                .map(|p| pb::Port {
                                    name: p.name.clone(),
                                    port: u32::from(p.port),
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    exported_at_ms: e.created_at_ms,
                }
            })
            .collect();
        let imports = core
            .imports
            .values()
            .map(|i| pb::Import {
                service: i.key.to_string(),
                ports: i
                    .ports
                    .iter()
                    .map(|p| pb::Port {
                        name: p.name.clone(),
                        port: u32::from(p.port),
                    })
                    .collect(),
                sources: i
                    .sources
                    .iter()
                    .map(|s| pb::ImportSource {
                        cluster: s.cluster.to_string(),
                        priority: s.priority,
                        ready_endpoints: s.ready_endpoints,
                        lease_live: core
                            .links
                            .get(&s.cluster)
                            .is_some_and(|l| lease.is_live(l.imports.last_heard_ms, now)),
                    })
                    .collect(),
                listeners: i
                    .ports
                    .iter()
                    .map(|p| {
                        core.egress
                            .get(&i.key, &p.name)
                            .map(|port| {
                                std::net::SocketAddr::new(
                                    self.shared.cfg.gateways.egress.address,
                                    port,
                                )
                                .to_string()
                            })
                            .unwrap_or_default()
                    })
                    .collect(),
            })
            .collect();
        let conflicts = core
            .conflicts
            .iter()
            .map(|c| pb::Conflict {
                service: c.key.to_string(),
                port_name: c.port_name.clone(),
                winner: c.winner.to_string(),
                loser: c.loser.to_string(),
                detail: format!(
                    "{} exports port {:?} as {}, {} as {}; the oldest export ({}) wins",
                    c.winner, c.port_name, c.winning_port, c.loser, c.losing_port, c.winner
                ),
            })
            .collect();
        Ok(Response::new(pb::ListServicesResponse {
            exports,
            imports,
            conflicts,
        }))
    }

    async fn get_status(
        &self,
        _request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        let peers: Vec<ClusterName> = self.shared.lock().links.keys().cloned().collect();
        let links = peers.iter().filter_map(|p| self.link_view(p)).collect();
        Ok(Response::new(self.shared.status(links)))
    }

    async fn check(
        &self,
        _request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        let findings = self.shared.check().await;
        Ok(Response::new(pb::CheckResponse {
            findings: findings.iter().map(|f| f.to_pb()).collect(),
        }))
    }

    async fn trust_status(
        &self,
        _request: Request<pb::TrustStatusRequest>,
    ) -> Result<Response<pb::TrustStatusResponse>, Status> {
        Ok(Response::new(self.shared.trust_status()))
    }

    async fn trace(
        &self,
        request: Request<pb::TraceRequest>,
    ) -> Result<Response<pb::TraceResponse>, Status> {
        let key = service_arg(&request.into_inner().service)?;
        self.shared
            .trace(&key)
            .map(Response::new)
            .map_err(Status::not_found)
    }
}

impl ControlService {
    fn link_view(&self, peer: &ClusterName) -> Option<pb::Link> {
        let lease = self.shared.cfg.lease();
        let now = now_ms();
        let core = self.shared.lock();
        let link = core.links.get(peer)?;
        let exports_to_peer = core.registry.exports_for(peer).len();
        Some(pb::Link {
            peer: peer.to_string(),
            trust_domain: link.record.trust_domain.to_string(),
            role: match link.record.role {
                LinkRole::Joiner => "joiner",
                LinkRole::Acceptor => "acceptor",
            }
            .to_owned(),
            state: link.state.as_str().to_owned(),
            last_heartbeat_ms: link.imports.last_heard_ms.max(0),
            linked_at_ms: link.record.linked_at_ms,
            exports_to_peer: u32::try_from(exports_to_peer).unwrap_or(u32::MAX),
            imports_from_peer: u32::try_from(link.imports.services().len()).unwrap_or(u32::MAX),
            lease_live: link.imports.version().is_some()
                && lease.is_live(link.imports.last_heard_ms, now),
            peering_addresses: link
                .record
                .peering_addresses
                .iter()
                .map(|a| a.to_string())
                .collect(),
            gateway_addresses: link
                .record
                .gateway_addresses
                .iter()
                .map(|a| a.to_string())
                .collect(),
            last_error: link.last_error.clone(),
            clock_skew_ms: link.clock_skew_ms.unwrap_or(0),
        })
    }
}
