//! The peering port: token redemption (`Join`) and link streams (`Link`), and the joiner's
//! dialer that keeps its links' streams up.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls_pki_types::UnixTime;
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use trust_bundle::tls::{self, Authorizer, TrustHandle};
use trust_bundle::verify::Usage;
use trust_bundle::{BundleMap, TrustStore};

use super::session::{self, SessionEnd};
use super::{Link, LinkState, Shared, convert, now_ms};
use crate::api::peering as pb;
use crate::api::peering::peering_client::PeeringClient;
use crate::api::peering::peering_server::{Peering, PeeringServer};
use crate::identity::{self, Role};
use crate::model::{ClusterName, PeerImports};
use crate::state::{LinkRecord, LinkRole};
use crate::token::JoinToken;
use crate::transport::{self, PeerConn};

const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Serves the peering API on `listener` with TLS; client certificates are optional at the TLS
/// layer (token redemption has none) and required by `Link`.
pub(crate) fn serve(shared: &Arc<Shared>, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    let mut config = tls::server_config_client_auth_optional(
        shared.identity.clone(),
        shared.trust.clone(),
        Authorizer::any(),
    )?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let incoming = transport::tls_incoming(listener, Arc::new(config));
    let service = PeeringServer::new(PeeringService {
        shared: shared.clone(),
    });
    tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(service)
            .serve_with_incoming(incoming)
            .await;
        if let Err(error) = result {
            tracing::error!(error = %transport::source_chain(&error), "peering server stopped");
        }
    });
    Ok(())
}

struct PeeringService {
    shared: Arc<Shared>,
}

type LinkStream = Pin<Box<dyn Stream<Item = Result<pb::LinkMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Peering for PeeringService {
    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let remote = request.extensions().get::<PeerConn>().map(|c| c.remote);
        let req = request.into_inner();
        match accept_join(&self.shared, req) {
            Ok(peer) => {
                tracing::info!(%peer, ?remote, "link accepted");
                Ok(Response::new(pb::JoinResponse {
                    acceptor: Some(self.shared.our_info()),
                }))
            }
            Err(status) => {
                tracing::warn!(?remote, reason = status.message(), "join refused");
                Err(status)
            }
        }
    }

    type LinkStream = LinkStream;

    async fn link(
        &self,
        request: Request<Streaming<pb::LinkMessage>>,
    ) -> Result<Response<LinkStream>, Status> {
        let conn = request.extensions().get::<PeerConn>().cloned();
        let Some(conn) = conn.filter(|c| !c.chain.is_empty()) else {
            return Err(Status::unauthenticated(
                "a link stream needs the peer controller's client certificate",
            ));
        };
        let now = UnixTime::since_unix_epoch(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        );
        let peer_id = self
            .shared
            .trust
            .load()
            .verify(&conn.chain, now, Usage::Client)
            .map_err(|e| Status::unauthenticated(format!("client certificate refused: {e}")))?;
        let peer = {
            let core = self.shared.lock();
            core.links
                .values()
                .find(|l| {
                    identity::spiffe_id(&l.record.trust_domain, &l.record.peer, Role::Controller)
                        == peer_id.spiffe_id
                })
                .map(|l| l.record.peer.clone())
        };
        let Some(peer) = peer else {
            return Err(Status::not_found(format!(
                "{} is not linked with cluster {}; link again with a new token",
                peer_id.spiffe_id, self.shared.cfg.cluster
            )));
        };
        let (id, rx) =
            session::open(&self.shared, &peer).map_err(|e| Status::not_found(e.to_string()))?;
        tracing::info!(%peer, remote = %conn.remote, "peer dialed in");
        tokio::spawn(session::run(
            self.shared.clone(),
            peer,
            id,
            request.into_inner(),
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(Ok))))
    }
}

/// Redeems a token for the joiner and records the link (acceptor side).
fn accept_join(shared: &Arc<Shared>, req: pb::JoinRequest) -> Result<ClusterName, Status> {
    let claims =
        convert::check_info(req.joiner, &shared.cfg.cluster).map_err(Status::invalid_argument)?;
    let record = LinkRecord {
        peer: claims.cluster.clone(),
        trust_domain: claims.trust_domain,
        role: LinkRole::Acceptor,
        bundle_json: claims.bundle_json,
        peering_addresses: claims.peering,
        gateway_addresses: claims.gateways,
        gateway_spiffe_ids: claims.gateway_ids,
        linked_at_ms: now_ms(),
        bundle_sequence: 0,
    };
    {
        let mut core = shared.lock();
        if core.links.contains_key(&claims.cluster) {
            return Err(Status::already_exists(format!(
                "cluster {} is already linked with {}; run `federation-ctl unlink {}` on {} first",
                shared.cfg.cluster, claims.cluster, claims.cluster, shared.cfg.cluster
            )));
        }
        core.tokens
            .redeem(
                &req.token_id,
                &req.secret,
                &req.token_digest,
                &claims.cluster,
                now_ms(),
            )
            .map_err(|e| Status::permission_denied(e.to_string()))?;
        // The token is spent on disk before the joiner hears yes: a crash here cannot let it
        // be used twice.
        shared
            .state
            .save_tokens(&core.tokens)
            .map_err(|e| Status::unavailable(format!("cannot record the token as used: {e}")))?;
        shared
            .state
            .save_link(&record)
            .map_err(|e| Status::unavailable(format!("cannot record the link: {e}")))?;
        let priority = shared.cfg.priority_of(&claims.cluster);
        core.links.insert(
            claims.cluster.clone(),
            Link::new(record, PeerImports::new(claims.cluster.clone(), priority)),
        );
    }
    shared
        .refresh_trust()
        .map_err(|e| Status::internal(format!("peer bundle unusable: {e}")))?;
    shared.changed.notify_one();
    Ok(claims.cluster)
}

/// Redeems `token` at the acceptor and records the link (joiner side); starts its dialer.
pub async fn join_link(shared: &Arc<Shared>, token: &str) -> Result<LinkRecord, Status> {
    let token = JoinToken::decode(token).map_err(|e| Status::invalid_argument(e.to_string()))?;
    token
        .check_fresh(now_ms())
        .map_err(|e| Status::failed_precondition(e.to_string()))?;
    if token.cluster == shared.cfg.cluster {
        return Err(Status::invalid_argument(format!(
            "this token was issued by {} itself; run `link join` on the other cluster",
            token.cluster
        )));
    }
    if shared.lock().links.contains_key(&token.cluster) {
        return Err(Status::already_exists(format!(
            "already linked with {}; `federation-ctl unlink {}` first to link again",
            token.cluster, token.cluster
        )));
    }
    // The acceptor is verified against the bundle in the token only: that is what the token's
    // issuer vouched for.
    let mut map = BundleMap::new();
    map.insert(token.trust_domain.clone(), token.bundle.clone());
    let store = TrustStore::new(&map)
        .map_err(|e| Status::invalid_argument(format!("the token's bundle is unusable: {e}")))?;
    let acceptor_id = identity::spiffe_id(&token.trust_domain, &token.cluster, Role::Controller);
    let mut config = tls::client_config_server_auth_only(
        TrustHandle::new(store),
        Authorizer::exact([acceptor_id]),
    )
    .map_err(|e| Status::internal(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let addrs: Vec<String> = token
        .peering_addresses
        .iter()
        .map(|a| a.to_string())
        .collect();
    let channel = transport::tls_connect(addrs, Arc::new(config))
        .await
        .map_err(|e| Status::unavailable(format!("cannot reach {}: {e}", token.cluster)))?;
    let response = PeeringClient::new(channel)
        .join(pb::JoinRequest {
            token_id: token.token_id.clone(),
            secret: token.secret.as_bytes().to_vec(),
            token_digest: token.digest.to_vec(),
            joiner: Some(shared.our_info()),
        })
        .await
        .map_err(|s| {
            Status::new(
                s.code(),
                format!("{} refused the join: {}", token.cluster, s.message()),
            )
        })?
        .into_inner();
    let claims = convert::check_info(response.acceptor, &shared.cfg.cluster)
        .map_err(|e| Status::internal(format!("{} answered with bad info: {e}", token.cluster)))?;
    if claims.cluster != token.cluster || claims.trust_domain != token.trust_domain {
        return Err(Status::internal(format!(
            "the acceptor says it is {} in {}, but the token named {} in {}",
            claims.cluster, claims.trust_domain, token.cluster, token.trust_domain
        )));
    }
    let record = LinkRecord {
        peer: claims.cluster.clone(),
        trust_domain: claims.trust_domain,
        role: LinkRole::Joiner,
        bundle_json: claims.bundle_json,
        peering_addresses: claims.peering,
        gateway_addresses: claims.gateways,
        gateway_spiffe_ids: claims.gateway_ids,
        linked_at_ms: now_ms(),
        bundle_sequence: 0,
    };
    shared
        .state
        .save_link(&record)
        .map_err(|e| Status::unavailable(format!("cannot record the link: {e}")))?;
    let stop = {
        let mut core = shared.lock();
        let priority = shared.cfg.priority_of(&record.peer);
        let mut link = Link::new(
            record.clone(),
            PeerImports::new(record.peer.clone(), priority),
        );
        link.state = LinkState::Connecting;
        let stop = link.stop.subscribe();
        core.links.insert(record.peer.clone(), link);
        stop
    };
    shared
        .refresh_trust()
        .map_err(|e| Status::internal(format!("peer bundle unusable: {e}")))?;
    spawn_dialer(shared, record.peer.clone(), stop);
    shared.changed.notify_one();
    Ok(record)
}

/// Keeps a joiner link's stream up: dial, run the session, back off, redial; until unlinked.
pub(crate) fn spawn_dialer(
    shared: &Arc<Shared>,
    peer: ClusterName,
    mut stop: watch::Receiver<bool>,
) {
    let shared = shared.clone();
    tokio::spawn(async move {
        let mut backoff = BACKOFF_FIRST;
        loop {
            if *stop.borrow() {
                return;
            }
            let started = tokio::time::Instant::now();
            // Not cancelled by `stop`: a session that is up when the link is removed must get
            // to deliver the `Unlinked` message queued for the peer; it ends right after.
            let end = dial_once(&shared, &peer).await;
            match &end {
                SessionEnd::NotLinked(_) | SessionEnd::Unlinked(_) => return,
                other => {
                    let mut core = shared.lock();
                    if let Some(link) = core.links.get_mut(&peer)
                        && link.session.is_none()
                    {
                        link.state = LinkState::Connecting;
                        link.last_error = other.to_string();
                    }
                }
            }
            // A session that stayed up a while starts the backoff afresh.
            if started.elapsed() > BACKOFF_MAX {
                backoff = BACKOFF_FIRST;
            }
            tracing::debug!(%peer, reason = %end, ?backoff, "redialing");
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    });
}

async fn dial_once(shared: &Arc<Shared>, peer: &ClusterName) -> SessionEnd {
    let Some(record) = shared.lock().links.get(peer).map(|l| l.record.clone()) else {
        return SessionEnd::NotLinked(peer.clone());
    };
    let expected = identity::spiffe_id(&record.trust_domain, &record.peer, Role::Controller);
    let config = tls::client_config(
        shared.identity.clone(),
        shared.trust.clone(),
        Authorizer::exact([expected]),
    );
    let mut config = match config {
        Ok(c) => c,
        Err(e) => return SessionEnd::Stream(e.to_string()),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let addrs = record
        .peering_addresses
        .iter()
        .map(|a| a.to_string())
        .collect();
    let channel = match transport::tls_connect(addrs, Arc::new(config)).await {
        Ok(c) => c,
        Err(e) => return SessionEnd::Stream(e.to_string()),
    };
    let (id, rx) = match session::open(shared, peer) {
        Ok(opened) => opened,
        Err(end) => return end,
    };
    let response = PeeringClient::new(channel)
        .link(ReceiverStream::new(rx))
        .await;
    match response {
        Ok(inbound) => session::run(shared.clone(), peer.clone(), id, inbound.into_inner()).await,
        Err(status) if status.code() == tonic::Code::NotFound => {
            // The acceptor no longer knows us: it unlinked while we were away.
            let reason = status.message().to_owned();
            shared.remove_link(peer, &format!("the peer no longer has this link: {reason}"));
            SessionEnd::Unlinked(reason)
        }
        Err(status) => {
            let mut core = shared.lock();
            if let Some(link) = core.links.get_mut(peer)
                && link.session.as_ref().is_some_and(|s| s.id == id)
            {
                link.session = None;
            }
            SessionEnd::Stream(status.message().to_owned())
        }
    }
}
