//! Peering messages ⇄ model types. Everything from the wire is validated here: a peer that
//! sends a malformed name gets an error, never a panic or a half-applied update.

use std::collections::BTreeSet;

use crate::api::peering as pb;
use crate::model::{ExportedService, FeedUpdate, NameError, ServiceKey, ServicePort};

/// Why a peer's message was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    #[error("{0}")]
    Name(#[from] NameError),
    #[error("port {name:?} of {service} is {port}; ports are 1-65535")]
    Port {
        service: String,
        name: String,
        port: u32,
    },
}

pub(crate) fn exported_to_pb(s: &ExportedService) -> pb::ExportedService {
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

pub(crate) fn exported_from_pb(s: pb::ExportedService) -> Result<ExportedService, WireError> {
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

pub(crate) fn update_to_pb(u: &FeedUpdate) -> pb::link_message::Kind {
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

pub(crate) fn snapshot_from_pb(s: pb::ExportSnapshot) -> Result<FeedUpdate, WireError> {
    Ok(FeedUpdate::Snapshot {
        version: s.version,
        services: s
            .services
            .into_iter()
            .map(exported_from_pb)
            .collect::<Result<_, _>>()?,
    })
}

pub(crate) fn delta_from_pb(d: pb::ExportDelta) -> Result<FeedUpdate, WireError> {
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

pub(crate) fn message(kind: pb::link_message::Kind) -> pb::LinkMessage {
    pb::LinkMessage { kind: Some(kind) }
}
