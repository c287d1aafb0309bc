//! Sans IO: the `Conflict` condition of a local ServiceExport, from what this cluster exports
//! and what its peers export of the same service (the imports it receives from them).
//!
//! KEP-1645: when exports of one service define it incompatibly, precedence goes by export
//! creation time, oldest first, and `Conflict=True` is set on *every* export of the service,
//! the oldest included (its definition is the one used). Here the properties that can clash
//! are the port definitions (the gateways carry TCP only, so a port is a name and a number);
//! [`model::resolve_ports`] decides, the same function importing clusters merge with, so the
//! condition says what the importers do.
//!
//! A cluster only hears of the exports its peers send it, so a clash between two peers that
//! do not both export to this cluster, or between peers this cluster is not linked to, is not
//! seen here.

use std::collections::BTreeMap;

use super::local::Want;
use super::mcs::CONDITION_CONFLICT;
use crate::model::{self, ClusterName, Conflict, Exporter, ImportedService, ServiceKey};

/// Conflicts named in the message; the rest are counted.
const MESSAGE_CONFLICTS: usize = 3;

/// The `Conflict` condition the local export of `key` should carry, given this cluster's
/// registry and the services imported from peers.
pub fn wanted(
    registry: &model::Registry,
    imports: &BTreeMap<ServiceKey, ImportedService>,
    cluster: &ClusterName,
    key: &ServiceKey,
) -> Want {
    let conflicts = conflicts(registry, imports, cluster, key);
    if conflicts.is_empty() {
        return Want {
            type_: CONDITION_CONFLICT,
            status: "False",
            reason: "NoConflicts",
            message: "no linked cluster exports this service with other port definitions"
                .to_owned(),
        };
    }
    let mut parts: Vec<String> = conflicts
        .iter()
        .take(MESSAGE_CONFLICTS)
        .map(|c| describe(c, cluster))
        .collect();
    if conflicts.len() > MESSAGE_CONFLICTS {
        parts.push(format!("and {} more", conflicts.len() - MESSAGE_CONFLICTS));
    }
    let ours_lost = conflicts.iter().any(|c| &c.loser == cluster);
    let outcome = if ours_lost {
        "the oldest export's definition is used, so this cluster gets no traffic on the ports it defines otherwise; align the Service's ports with it"
    } else {
        "the oldest export's definition is used; align the other clusters' Services with it"
    };
    Want {
        type_: CONDITION_CONFLICT,
        status: "True",
        reason: "PortConflict",
        message: format!("{}; {outcome}", parts.join("; ")),
    }
}

/// The port conflicts between this cluster's export of `key` and its peers', oldest export
/// first. None when `key` is not exported here.
fn conflicts(
    registry: &model::Registry,
    imports: &BTreeMap<ServiceKey, ImportedService>,
    cluster: &ClusterName,
    key: &ServiceKey,
) -> Vec<Conflict> {
    let (Some(export), Some(import)) = (registry.exports.get(key), imports.get(key)) else {
        return Vec::new();
    };
    let ours = registry
        .services
        .get(key)
        .map(|s| s.ports.as_slice())
        .unwrap_or_default();
    let mut exporters: Vec<Exporter<'_>> = vec![Exporter {
        cluster,
        exported_at_ms: export.created_at_ms,
        ports: ours,
    }];
    // A peer cannot be this cluster; should one claim our name, ours is the export that counts.
    exporters.extend(
        import
            .sources
            .iter()
            .filter(|s| &s.cluster != cluster)
            .map(|s| Exporter {
                cluster: &s.cluster,
                exported_at_ms: s.exported_at_ms,
                ports: &s.ports,
            }),
    );
    model::resolve_ports(key, &mut exporters).1
}

/// One conflict in words, from this cluster's point of view.
fn describe(c: &Conflict, cluster: &ClusterName) -> String {
    let who = |c2: &ClusterName| {
        if c2 == cluster {
            format!("this cluster ({c2})")
        } else {
            format!("cluster {c2}")
        }
    };
    format!(
        "port {}: {} defines it as {}, while {}'s older export defines it as {}",
        c.port_name,
        who(&c.loser),
        c.losing_port,
        who(&c.winner),
        c.winning_port
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ExportTo, ImportSource, LocalExport, LocalService, ServicePort};

    fn key() -> ServiceKey {
        ServiceKey::parse("echo.default").unwrap()
    }

    fn name(s: &str) -> ClusterName {
        ClusterName::parse(s).unwrap()
    }

    fn local(port: u16, created_at_ms: i64) -> model::Registry {
        let mut r = model::Registry::default();
        r.services.insert(
            key(),
            LocalService {
                key: key(),
                ports: vec![ServicePort::new("http", port)],
                endpoints: Vec::new(),
            },
        );
        r.exports.insert(
            key(),
            LocalExport {
                key: key(),
                to: ExportTo::All,
                created_at_ms,
            },
        );
        r
    }

    fn imported(sources: &[(&str, u16, i64)]) -> BTreeMap<ServiceKey, ImportedService> {
        let sources = sources
            .iter()
            .map(|(cluster, port, at)| ImportSource {
                cluster: name(cluster),
                priority: 0,
                ready_endpoints: 1,
                zones: Default::default(),
                exported_at_ms: *at,
                ports: vec![ServicePort::new("http", *port)],
            })
            .collect();
        let import = ImportedService {
            key: key(),
            ports: Vec::new(),
            sources,
        };
        BTreeMap::from([(key(), import)])
    }

    /// The condition of cluster `us`'s export (`http` = `port`, created at `at`) when peers
    /// export (cluster, port, created at).
    fn condition(us: &str, port: u16, at: i64, peers: &[(&str, u16, i64)]) -> Want {
        wanted(&local(port, at), &imported(peers), &name(us), &key())
    }

    /// Asserts status `True`, reason `PortConflict`, and every one of `says` in the message.
    fn assert_conflict(w: &Want, says: &[&str]) {
        assert_eq!(
            (w.type_, w.status, w.reason),
            ("Conflict", "True", "PortConflict")
        );
        for text in says {
            assert!(w.message.contains(text), "{text:?} not in {:?}", w.message);
        }
    }

    #[test]
    fn no_peer_export_or_the_same_ports_is_no_conflict() {
        let none = wanted(&local(8080, 10), &BTreeMap::new(), &name("a"), &key());
        assert_eq!((none.type_, none.status), ("Conflict", "False"));
        let same = condition("a", 8080, 10, &[("b", 8080, 5)]);
        assert_eq!(same.status, "False", "{}", same.message);
    }

    #[test]
    fn an_older_peer_with_another_port_makes_ours_lose() {
        assert_conflict(
            &condition("a", 9090, 20, &[("b", 8080, 10)]),
            &[
                "port http: this cluster (a) defines it as 9090, while cluster b's older export defines it as 8080",
                "this cluster gets no traffic",
            ],
        );
    }

    #[test]
    fn the_oldest_export_is_marked_too_as_the_kep_says() {
        assert_conflict(
            &condition("a", 8080, 10, &[("b", 9090, 20)]),
            &[
                "cluster b defines it as 9090, while this cluster (a)'s older export defines it as 8080",
                "align the other clusters",
            ],
        );
    }

    #[test]
    fn equal_ages_break_ties_by_cluster_name_as_importers_do() {
        assert_conflict(
            &condition("b", 9090, 10, &[("a", 8080, 10)]),
            &["this cluster (b) defines it as 9090"],
        );
    }

    #[test]
    fn a_clash_between_peers_marks_our_export_too() {
        assert_conflict(
            &condition("a", 8080, 30, &[("b", 8080, 10), ("c", 9090, 20)]),
            &["cluster c defines it as 9090, while cluster b's"],
        );
    }

    #[test]
    fn an_export_without_service_or_peer_claiming_our_name_does_not_panic() {
        let mut r = local(8080, 10);
        r.services.clear();
        let w = wanted(&r, &imported(&[("b", 9090, 5)]), &name("a"), &key());
        assert_eq!(w.status, "False", "no ports of ours, nothing to clash");
        let w = condition("a", 8080, 10, &[("a", 9090, 5)]);
        assert_eq!(w.status, "False", "a peer named like us is ignored");
        let unexported = ServiceKey::parse("other.default").unwrap();
        let w = wanted(
            &local(8080, 10),
            &imported(&[("b", 9090, 5)]),
            &name("a"),
            &unexported,
        );
        assert_eq!(w.status, "False");
    }

    #[test]
    fn many_conflicts_are_counted_not_listed() {
        let sources: Vec<(String, u16, i64)> = (0..6)
            .map(|i| (format!("p{i}"), 9000 + i, i64::from(i) + 100))
            .collect();
        let refs: Vec<(&str, u16, i64)> = sources
            .iter()
            .map(|(c, p, a)| (c.as_str(), *p, *a))
            .collect();
        assert_conflict(&condition("a", 8080, 10, &refs), &["and 3 more"]);
    }
}
