//! Peering messages ⇄ model types. Everything from the wire is validated here: a peer that
//! sends a malformed name gets an error, never a panic or a half-applied update.

use std::collections::BTreeSet;

use trust_bundle::X509Bundle;
use trust_bundle::spiffe::{SpiffeId, TrustDomain};

use crate::api::peering as pb;
use crate::config::HostPort;
use crate::model::{ClusterName, ExportedService, FeedUpdate, NameError, ServiceKey, ServicePort};

/// Why a peer's message was refused.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Name(#[from] NameError),
    #[error("port {name:?} of {service} is {port}; ports are 1-65535")]
    Port {
        service: String,
        name: String,
        port: u32,
    },
}

pub fn exported_to_pb(s: &ExportedService) -> pb::ExportedService {
    pb::ExportedService {
        name: s.key.name().to_owned(),
        namespace: s.key.namespace().to_owned(),
        ports: s
            .ports
            .iter()
            .map(|p| pb::Port {
                name: p.name.clone(),
                port: u32::from(p.port),
            })
            .collect(),
        ready_endpoints: s.ready_endpoints,
        total_endpoints: s.total_endpoints,
        zones: s.zones.iter().cloned().collect(),
        exported_at_ms: s.exported_at_ms,
    }
}

pub fn exported_from_pb(s: pb::ExportedService) -> Result<ExportedService, WireError> {
    let key = ServiceKey::new(&s.name, &s.namespace)?;
    let ports = s
        .ports
        .into_iter()
        .map(|p| match u16::try_from(p.port) {
            Ok(port) if port != 0 => Ok(ServicePort::new(p.name, port)),
            _ => Err(WireError::Port {
                service: key.to_string(),
                name: p.name,
                port: p.port,
            }),
        })
        .collect::<Result<_, _>>()?;
    Ok(ExportedService {
        key,
        ports,
        ready_endpoints: s.ready_endpoints,
        total_endpoints: s.total_endpoints,
        zones: s.zones.into_iter().collect::<BTreeSet<_>>(),
        exported_at_ms: s.exported_at_ms,
    })
}

pub fn update_to_pb(u: &FeedUpdate) -> pb::link_message::Kind {
    match u {
        FeedUpdate::Snapshot { version, services } => {
            pb::link_message::Kind::Snapshot(pb::ExportSnapshot {
                version: *version,
                services: services.iter().map(exported_to_pb).collect(),
            })
        }
        FeedUpdate::Delta {
            from,
            to,
            upserts,
            removals,
        } => pb::link_message::Kind::Delta(pb::ExportDelta {
            from: *from,
            to: *to,
            upserts: upserts.iter().map(exported_to_pb).collect(),
            removals: removals
                .iter()
                .map(|k| pb::ServiceKey {
                    name: k.name().to_owned(),
                    namespace: k.namespace().to_owned(),
                })
                .collect(),
        }),
    }
}

pub fn snapshot_from_pb(s: pb::ExportSnapshot) -> Result<FeedUpdate, WireError> {
    Ok(FeedUpdate::Snapshot {
        version: s.version,
        services: s
            .services
            .into_iter()
            .map(exported_from_pb)
            .collect::<Result<_, _>>()?,
    })
}

pub fn delta_from_pb(d: pb::ExportDelta) -> Result<FeedUpdate, WireError> {
    Ok(FeedUpdate::Delta {
        from: d.from,
        to: d.to,
        upserts: d
            .upserts
            .into_iter()
            .map(exported_from_pb)
            .collect::<Result<_, _>>()?,
        removals: d
            .removals
            .into_iter()
            .map(|k| ServiceKey::new(&k.name, &k.namespace))
            .collect::<Result<_, _>>()?,
    })
}

pub fn message(kind: pb::link_message::Kind) -> pb::LinkMessage {
    pb::LinkMessage { kind: Some(kind) }
}

/// Parses a peer's gateway SPIFFE IDs; each must belong to the peer's trust domain.
pub fn parse_gateway_ids(ids: &[String], trust_domain: &str) -> Result<Vec<SpiffeId>, String> {
    ids.iter()
        .map(|id| {
            let parsed =
                SpiffeId::parse(id).map_err(|e| format!("gateway SPIFFE ID {id:?}: {e}"))?;
            if parsed.trust_domain().as_str() != trust_domain {
                return Err(format!(
                    "gateway SPIFFE ID {id} is outside the peer's trust domain {trust_domain}"
                ));
            }
            Ok(parsed)
        })
        .collect()
}

/// The peer's self-description, checked.
#[derive(Debug)]
pub struct PeerClaims {
    pub cluster: ClusterName,
    pub trust_domain: TrustDomain,
    pub bundle_json: String,
    pub peering: Vec<HostPort>,
    pub gateways: Vec<HostPort>,
    pub gateway_ids: Vec<SpiffeId>,
}

pub fn check_info(info: Option<pb::PeerInfo>, ours: &ClusterName) -> Result<PeerClaims, String> {
    let info = info.ok_or("the request carries no peer info")?;
    let cluster = ClusterName::parse(&info.cluster).map_err(|e| e.to_string())?;
    if &cluster == ours {
        return Err(format!(
            "the peer is also named {ours}; cluster names must be unique across linked clusters"
        ));
    }
    let trust_domain =
        TrustDomain::parse(&info.trust_domain).map_err(|e| format!("peer trust domain: {e}"))?;
    X509Bundle::from_spiffe_json(info.bundle_json.as_bytes())
        .map_err(|e| format!("peer bundle: {e}"))?;
    let parse = |addrs: &[String]| -> Result<Vec<HostPort>, String> {
        addrs
            .iter()
            .map(|a| HostPort::parse(a).map_err(|e| format!("address {a:?}: {e}")))
            .collect()
    };
    Ok(PeerClaims {
        peering: parse(&info.peering_addresses)?,
        gateways: parse(&info.gateway_addresses)?,
        gateway_ids: parse_gateway_ids(&info.gateway_spiffe_ids, trust_domain.as_str())?,
        cluster,
        trust_domain,
        bundle_json: info.bundle_json,
    })
}
