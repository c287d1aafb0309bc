//! Peering messages from untrusted bytes, as a peer controller sends them on the `Link` stream
//! and in `Join`: protobuf decoding and the conversion into the model never panic; whatever
//! converts survives a model → wire → model round trip unchanged; and a converted feed update
//! applies to a peer's imports without panicking.
//!
//! The first byte picks the message type, the rest is its protobuf encoding.

#![no_main]

use federation_ctl::api::peering as pb;
use federation_ctl::controller::convert;
use federation_ctl::model::{ClusterName, FeedUpdate, PeerImports};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    let ours = ClusterName::parse("ours").expect("a valid cluster name");
    match kind % 3 {
        0 => {
            let Ok(msg) = pb::LinkMessage::decode(bytes) else {
                return;
            };
            link_message(msg);
        }
        1 => {
            let Ok(req) = pb::JoinRequest::decode(bytes) else {
                return;
            };
            peer_info(req.joiner, &ours);
        }
        _ => {
            let Ok(resp) = pb::JoinResponse::decode(bytes) else {
                return;
            };
            peer_info(resp.acceptor, &ours);
        }
    }
});

fn link_message(msg: pb::LinkMessage) {
    use pb::link_message::Kind;
    let update = match msg.kind {
        Some(Kind::Snapshot(s)) => convert::snapshot_from_pb(s),
        Some(Kind::Delta(d)) => convert::delta_from_pb(d),
        Some(Kind::Info(info)) => {
            let ours = ClusterName::parse("ours").expect("a valid cluster name");
            peer_info(Some(info), &ours);
            return;
        }
        _ => return,
    };
    let Ok(update) = update else {
        return;
    };
    let wire = convert::message(convert::update_to_pb(&update));
    let back = match wire.kind {
        Some(Kind::Snapshot(s)) => convert::snapshot_from_pb(s),
        Some(Kind::Delta(d)) => convert::delta_from_pb(d),
        other => panic!("an update encoded as {other:?}"),
    }
    .unwrap_or_else(|e| panic!("an update we encoded is refused: {e}"));
    assert_eq!(back, update, "wire round trip changed the update");

    let peer = ClusterName::parse("peer").expect("a valid cluster name");
    let mut imports = PeerImports::new(peer, 0);
    if let FeedUpdate::Delta { from, .. } = &update {
        // A delta needs a snapshot at its base version first.
        let base = FeedUpdate::Snapshot {
            version: *from,
            services: Vec::new(),
        };
        imports.apply(&base, 0).expect("a snapshot always applies");
    }
    imports
        .apply(&update, 0)
        .unwrap_or_else(|e| panic!("an update at the version we have is refused: {e}"));
    match &update {
        FeedUpdate::Snapshot { version, services } => {
            assert_eq!(imports.version(), Some(*version));
            assert!(imports.services().len() <= services.len());
        }
        FeedUpdate::Delta { to, upserts, .. } => {
            assert_eq!(imports.version(), Some(*to));
            for s in upserts {
                assert!(
                    imports.services().contains_key(&s.key),
                    "an upsert went missing"
                );
            }
        }
    }
}

fn peer_info(info: Option<pb::PeerInfo>, ours: &ClusterName) {
    if let Ok(claims) = convert::check_info(info, ours) {
        assert_ne!(&claims.cluster, ours, "a peer named like us was accepted");
        for id in &claims.gateway_ids {
            assert_eq!(
                id.trust_domain(),
                claims.trust_domain,
                "a gateway ID outside the peer's trust domain was accepted"
            );
        }
    }
}
