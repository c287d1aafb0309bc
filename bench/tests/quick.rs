//! The harness works: `bench run --quick` against every contender produces every figure of
//! every scenario, with no failed operation. Nothing here is about speed.
//!
//! It runs the `east-west-gateway`, `federation-ctl` and `trust-bundle` binaries next to this
//! test's `bench` binary (`cargo test --workspace` builds them; with `cargo test -p bench`, run
//! `cargo build -p east-west-gateway -p federation-ctl -p trust-bundle` first) and needs Envoy,
//! HAProxy and nginx (`cargo xtask deps` installs them).

use std::process::Command;

use serde_json::Value;

#[test]
fn quick_run_produces_every_figure_for_every_contender() {
    let out = tempfile::tempdir().expect("tempdir");
    let run = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["run", "--quick", "--out"])
        .arg(out.path())
        .output()
        .expect("start bench");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "bench run --quick failed:\n{stderr}");

    let json = std::fs::read_to_string(out.path().join("results.json")).expect("results.json");
    let md = std::fs::read_to_string(out.path().join("results.md")).expect("results.md");
    let results: Value = serde_json::from_str(&json).expect("results.json is JSON");
    let meta = &results["meta"];
    assert_eq!(meta["quick"], true);
    assert!(
        meta["loadavg_start"]
            .as_str()
            .is_some_and(|l| !l.is_empty()),
        "{meta}"
    );

    let rows = results["results"].as_array().expect("results array");
    let scenarios = [
        "idle passthrough connections",
        "idle terminated connections",
        "plaintext bulk",
        "passthrough 1 KiB keep-alive",
        "passthrough 1 MiB bulk",
        "passthrough new TLS connection per request",
        "mTLS terminate+originate 1 MiB bulk",
        "mTLS new connection per request",
    ];
    for scenario in scenarios {
        assert!(
            rows.iter().any(|r| r["scenario"] == scenario),
            "no rows for {scenario:?} in {json}"
        );
        assert!(
            md.contains(scenario),
            "results.md lacks {scenario:?}:\n{md}"
        );
    }
    for row in rows {
        let what = format!("{} / {}", row["scenario"], row["metric"]);
        let proxy_only = row["scenario"]
            .as_str()
            .is_some_and(|s| s.starts_with("idle"))
            || row["metric"]
                .as_str()
                .is_some_and(|m| m.starts_with("proxy CPU"));
        let mut expected = vec!["isthmus", "envoy", "haproxy", "nginx"];
        if !proxy_only {
            expected.push("direct");
        }
        // The minimal forwarder runs the router's throughput scenarios only: it has no mTLS
        // chain, and as a floor of forwarding cost it says nothing about memory.
        let routed = row["scenario"]
            .as_str()
            .is_some_and(|s| !s.starts_with("idle") && !s.starts_with("mTLS"));
        if routed {
            expected.push("minimal");
        } else {
            assert!(
                row["contenders"]["minimal"].is_null(),
                "{what}: the minimal forwarder has a figure"
            );
        }
        for name in &expected {
            let cell = &row["contenders"][name];
            let value = cell["value"].as_f64();
            assert!(
                value.is_some_and(|v| v.is_finite() && v >= 0.0),
                "{what}: {name} has no figure: {cell}"
            );
            if !proxy_only && *name != "direct" {
                assert!(
                    cell["ratio"].as_f64().is_some(),
                    "{what}: {name} has no ratio to direct: {cell}"
                );
            }
            assert_eq!(
                cell["errors"], 0,
                "{what}: {name} had failed operations:\n{stderr}"
            );
        }
    }
    control_plane_figures_exist(&results["control_plane"], &md);
}

/// Both implementations have every control-plane figure, and each row a ratio.
fn control_plane_figures_exist(control: &Value, md: &str) {
    assert!(
        md.contains("naive full-resync"),
        "results.md lacks the control-plane table:\n{md}"
    );
    let rows = control["rows"].as_array().expect("control_plane.rows");
    for (scenario, metric) in [
        (
            "control plane: initial sync",
            "until A's gateway applied every import",
        ),
        ("control plane: initial sync", "until every gateway applied"),
        (
            "control plane: initial sync",
            "A controller + gateway RSS growth per remote cluster",
        ),
        (
            "control plane: churn",
            "change → exporting gateway applied, p50",
        ),
        (
            "control plane: churn",
            "change → exporting gateway applied, p99",
        ),
        (
            "control plane: churn",
            "configs applied per change, all gateways",
        ),
        (
            "control plane: churn",
            "CPU per change, every controller and gateway",
        ),
    ] {
        let row = rows
            .iter()
            .find(|r| r["scenario"] == scenario && r["metric"] == metric)
            .unwrap_or_else(|| panic!("no control-plane row {scenario} / {metric} in {control}"));
        for mode in ["isthmus", "naive"] {
            assert!(
                row[mode]
                    .as_f64()
                    .is_some_and(|v| v.is_finite() && v >= 0.0),
                "{scenario} / {metric}: {mode} has no figure: {row}"
            );
        }
    }
}
