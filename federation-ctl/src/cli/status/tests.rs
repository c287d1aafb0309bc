//! Snapshot tests: fixed data through the same renderers the verbs use, and the help text,
//! against the checked-in files in `snapshots/`. `UPDATE_SNAPSHOTS=1 cargo test -p
//! federation-ctl --lib snapshot` rewrites them; review the diff before committing.

use std::path::PathBuf;

use clap::CommandFactory as _;

use super::*;
use crate::cli::Args;

fn snapshot(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/cli/status/snapshots")
        .join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).expect("write snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "snapshot {} missing ({e}); run with UPDATE_SNAPSHOTS=1 to create it",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "snapshot {name} differs; run with UPDATE_SNAPSHOTS=1 to accept.\n--- expected\n{expected}\n--- actual\n{actual}"
    );
}

const NOW: i64 = 1_800_000_000_000;

fn link(peer: &str, state: &str, heartbeat_ago_ms: i64, skew: i64) -> pb::Link {
    pb::Link {
        peer: peer.into(),
        trust_domain: "mesh.example".into(),
        role: "joiner".into(),
        state: state.into(),
        last_heartbeat_ms: if heartbeat_ago_ms < 0 {
            0
        } else {
            NOW - heartbeat_ago_ms
        },
        linked_at_ms: NOW - 3_600_000,
        exports_to_peer: 1,
        imports_from_peer: 2,
        lease_live: state == "connected",
        clock_skew_ms: skew,
        ..pb::Link::default()
    }
}

#[test]
fn snapshot_status_table() {
    let status = pb::GetStatusResponse {
        cluster: "aws".into(),
        trust_domain: "mesh.example".into(),
        spiffe_id: "spiffe://mesh.example/isthmus/cluster/aws/controller".into(),
        identity_expires_at_ms: NOW + 86_400_000,
        ca_expires_at_ms: NOW + 20 * 86_400_000,
        gateways: vec![pb::GatewayStatus {
            name: "aws-gw-1".into(),
            ready: true,
            last_report_ms: NOW - 400,
            config_version: 7,
            ingress: "127.0.10.1:15443".into(),
            reporting: true,
        }],
        links: vec![
            link("gcp", "connected", 300, 12),
            link("onprem", "disconnected", 40_000, 0),
        ],
        paths: vec![
            pb::PathStatus {
                cluster: "gcp".into(),
                gateway_address: "127.0.20.1:15443".into(),
                healthy: true,
                measured: true,
                rtt_p50_us: 180,
                rtt_p99_us: 950,
                measured_by: "aws-gw-1".into(),
            },
            pb::PathStatus {
                cluster: "onprem".into(),
                gateway_address: "127.0.30.1:15443".into(),
                measured_by: "aws-gw-1".into(),
                ..pb::PathStatus::default()
            },
        ],
        exports: 1,
        imports: 2,
        warnings: vec![
            "link onprem is disconnected".into(),
            "cluster intermediate expires 2027-01-04T08:00:00Z".into(),
        ],
        now_ms: NOW,
        dns_listen: "127.0.10.1:15053".into(),
        dns_zone: "clusterset.local".into(),
        config_version: 7,
        leader: "isthmus-controller-6d4f9-x2kq7".into(),
    };
    snapshot("status", &status_table(&status));
}

#[test]
fn snapshot_check_table() {
    let findings: Vec<pb::Finding> = [
        crate::diagnose::Finding::ok("config", "aws/controller.yaml", "valid controller config"),
        crate::diagnose::expiry(
            "cluster intermediate aws (aws/ca)",
            NOW - 2 * 86_400_000,
            NOW,
            "issue a new one with `trust-bundle intermediate create`",
        ),
        crate::diagnose::Finding::error(
            "peer-gateway",
            "gcp 127.0.20.1:15443",
            "cannot connect: Connection refused (os error 111)",
            "check that gcp's gateway runs",
        ),
        crate::diagnose::clock_skew("gcp", Some(-4_200)),
    ]
    .iter()
    .map(|f| f.to_pb())
    .collect();
    snapshot("check", &check_table(&findings));
}

fn root(fp: &str, days: i64) -> pb::RootInfo {
    pb::RootInfo {
        fingerprint: fp.into(),
        subject: "CN=root".into(),
        not_after_ms: NOW + days * 86_400_000,
    }
}

#[test]
fn snapshot_trust_table() {
    let ours = pb::BundleInfo {
        cluster: "aws".into(),
        trust_domain: "mesh.example".into(),
        sequence: 1,
        roots: vec![root("AA:BB:CC:DD:EE:FF:00:11:22:33", 3650)],
        ..pb::BundleInfo::default()
    };
    let mut gcp = pb::BundleInfo {
        cluster: "gcp".into(),
        sequence: 2,
        roots: vec![
            root("AA:BB:CC:DD:EE:FF:00:11:22:33", 3650),
            root("99:88:77:66:55:44:33:22:11:00", 3650),
        ],
        ..ours.clone()
    };
    crate::diagnose::compare_bundles(&ours, &mut gcp);
    let mut onprem = pb::BundleInfo {
        cluster: "onprem".into(),
        trust_domain: "onprem.example".into(),
        sequence: 1,
        roots: vec![root("12:34:56:78:9A:BC:DE:F0:12:34", 365)],
        ..pb::BundleInfo::default()
    };
    crate::diagnose::compare_bundles(&ours, &mut onprem);
    let t = pb::TrustStatusResponse {
        ours: Some(ours),
        peers: vec![gcp, onprem],
    };
    snapshot("trust", &trust_table(&t));
}

#[test]
fn snapshot_trace_table() {
    let candidate = |cluster: &str, priority, healthy, address: &str| pb::TraceCandidate {
        cluster: cluster.into(),
        priority,
        source_healthy: healthy,
        ready_endpoints: u32::from(healthy),
        gateway_address: address.into(),
        sni: format!("8080.echo.default.{cluster}.v1.isthmus.internal"),
        trust_domain: "mesh.example".into(),
        gateway_healthy: healthy,
        measured: healthy,
        rtt_p50_us: 210,
        rtt_p99_us: 1_400,
        reported: true,
    };
    let t = pb::TraceResponse {
        service: "echo.default".into(),
        dns_name: "echo.default.svc.clusterset.local".into(),
        dns_answers: vec![
            "A 127.0.0.1".into(),
            "SRV 0 1 25100 echo.default.svc.clusterset.local.".into(),
        ],
        ports: vec![pb::TracePort {
            name: "http".into(),
            port: 8080,
            listener: "127.0.0.1:25100".into(),
            egress: "echo-default-http".into(),
            mode: "mtls".into(),
            candidates: vec![
                candidate("gcp", 0, true, "127.0.20.1:15443"),
                candidate("onprem", 1, false, "127.0.30.1:15443"),
                pb::TraceCandidate {
                    reported: false,
                    ..candidate("edge", 2, false, "edge.example:15443")
                },
            ],
        }],
    };
    snapshot("trace", &trace_table(&t));
}

#[test]
fn snapshot_help_text() {
    let mut cmd = Args::command().term_width(100);
    snapshot("help", &cmd.render_long_help().to_string());
    cmd.build();
    for verb in ["check", "trace", "status", "completions"] {
        let sub = cmd
            .find_subcommand_mut(verb)
            .unwrap_or_else(|| panic!("{verb} exists"));
        snapshot(&format!("help-{verb}"), &sub.render_long_help().to_string());
    }
    let join = cmd
        .find_subcommand_mut("link")
        .and_then(|l| l.find_subcommand_mut("join"))
        .expect("link join exists");
    snapshot("help-link-join", &join.render_long_help().to_string());
}
