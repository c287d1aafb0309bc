//! Rendering of the operator views: `status`, `check`, `trust status` and `trace`. Each table
//! is a pure function of the controller's answer (times count from the answer's own clock where
//! it has one), so fixed data renders the same text every time; JSON and YAML print the answer
//! with the proto's field names.

use super::Output;
use super::output::{emit, imports_cell, table, time};
use crate::api::control as pb;

/// `12s ago` against `now_ms`; `never` for 0.
fn ago(ms: i64, now_ms: i64) -> String {
    if ms <= 0 {
        return "never".to_owned();
    }
    format!("{}s ago", (now_ms.saturating_sub(ms) / 1000).max(0))
}

fn rtt(measured: bool, p50_us: u64, p99_us: u64) -> (String, String) {
    if !measured {
        return ("-".to_owned(), "-".to_owned());
    }
    let ms = |us: u64| format!("{:.2}ms", us as f64 / 1000.0);
    (ms(p50_us), ms(p99_us))
}

fn yes(b: bool, yes: &str, no: &str) -> String {
    if b { yes } else { no }.to_owned()
}

pub(super) fn status_table(s: &pb::GetStatusResponse) -> String {
    let mut out = format!(
        "CLUSTER  {}  trust domain {}\nIDENTITY {}  expires {}\nCA       expires {}\n",
        s.cluster,
        s.trust_domain,
        s.spiffe_id,
        time(s.identity_expires_at_ms),
        time(s.ca_expires_at_ms),
    );
    out += &format!(
        "CONFIG   version {}  exports {}  imports {}  dns {}\n",
        s.config_version,
        s.exports,
        s.imports,
        if s.dns_listen.is_empty() {
            "off".to_owned()
        } else {
            format!("{} (zone {})", s.dns_listen, s.dns_zone)
        }
    );
    if !s.leader.is_empty() {
        out += &format!("LEADER   {} (holds the leader-election Lease)\n", s.leader);
    }
    out += "\nGATEWAYS\n";
    let rows: Vec<Vec<String>> = s
        .gateways
        .iter()
        .map(|g| {
            vec![
                g.name.clone(),
                yes(g.ready, "ready", "not ready"),
                g.ingress.clone(),
                g.config_version.to_string(),
                ago(g.last_report_ms, s.now_ms),
            ]
        })
        .collect();
    out += &table(&["NAME", "READY", "INGRESS", "CONFIG", "REPORTED"], &rows);
    out += "\nLINKS\n";
    let rows: Vec<Vec<String>> = s
        .links
        .iter()
        .map(|l| {
            vec![
                l.peer.clone(),
                l.state.clone(),
                ago(l.last_heartbeat_ms, s.now_ms),
                if l.clock_skew_ms == 0 {
                    "-".to_owned()
                } else {
                    format!("{:+}ms", l.clock_skew_ms)
                },
                l.exports_to_peer.to_string(),
                imports_cell(l),
            ]
        })
        .collect();
    out += &table(
        &["PEER", "STATE", "HEARTBEAT", "SKEW", "EXPORTS", "IMPORTS"],
        &rows,
    );
    out += "\nDATA PATH (probes through the remote gateway)\n";
    let rows: Vec<Vec<String>> = s
        .paths
        .iter()
        .map(|p| {
            let (p50, p99) = rtt(p.measured, p.rtt_p50_us, p.rtt_p99_us);
            vec![
                p.cluster.clone(),
                p.gateway_address.clone(),
                yes(p.healthy, "healthy", "unhealthy"),
                p50,
                p99,
                p.measured_by.clone(),
            ]
        })
        .collect();
    out += &table(
        &[
            "CLUSTER",
            "GATEWAY",
            "HEALTH",
            "RTT P50",
            "RTT P99",
            "MEASURED BY",
        ],
        &rows,
    );
    if !s.warnings.is_empty() {
        out += "\nWARNINGS\n";
        for w in &s.warnings {
            out += &format!("! {w}\n");
        }
    }
    out
}

pub(super) fn status(s: &pb::GetStatusResponse, out: Output) -> anyhow::Result<()> {
    emit(s, out, || status_table(s))
}

pub(super) fn check_table(findings: &[pb::Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let mark = match f.severity.as_str() {
            "error" => "ERROR",
            "warning" => "WARN ",
            _ => "ok   ",
        };
        out += &format!("{mark} {:<20} {}: {}\n", f.check, f.subject, f.message);
        if !f.hint.is_empty() && f.severity != "ok" {
            out += &format!("      fix: {}\n", f.hint);
        }
    }
    let count = |sev: &str| findings.iter().filter(|f| f.severity == sev).count();
    out += &format!(
        "\n{} errors, {} warnings, {} ok\n",
        count("error"),
        count("warning"),
        count("ok")
    );
    out
}

pub(super) fn check(findings: &[pb::Finding], out: Output) -> anyhow::Result<()> {
    emit(&findings, out, || check_table(findings))?;
    let errors = findings.iter().filter(|f| f.severity == "error").count();
    if errors > 0 {
        return Err(super::Exit {
            code: 1,
            message: format!("check found {errors} error(s); each has a fix above"),
        }
        .into());
    }
    Ok(())
}

pub(super) fn trust_table(t: &pb::TrustStatusResponse) -> String {
    let mut rows = Vec::new();
    let mut push = |b: &pb::BundleInfo, who: String| {
        let diff_mark = if b.differences.is_empty() { "" } else { " *" };
        for (i, r) in b.roots.iter().enumerate() {
            rows.push(vec![
                if i == 0 {
                    who.clone() + diff_mark
                } else {
                    String::new()
                },
                if i == 0 {
                    b.trust_domain.clone()
                } else {
                    String::new()
                },
                if i == 0 {
                    b.sequence.to_string()
                } else {
                    String::new()
                },
                crate::diagnose::short(&r.fingerprint),
                time(r.not_after_ms),
                if i == 0 {
                    b.federation.clone()
                } else {
                    String::new()
                },
            ]);
        }
        if b.roots.is_empty() {
            rows.push(vec![
                who + diff_mark,
                b.trust_domain.clone(),
                b.sequence.to_string(),
                "(none)".to_owned(),
                String::new(),
                b.federation.clone(),
            ]);
        }
    };
    if let Some(ours) = &t.ours {
        push(ours, format!("{} (us)", ours.cluster));
    }
    for p in &t.peers {
        push(p, p.cluster.clone());
    }
    let mut out = table(
        &[
            "CLUSTER",
            "TRUST DOMAIN",
            "SEQ",
            "ROOT SHA-256",
            "EXPIRES",
            "FEDERATION",
        ],
        &rows,
    );
    let differing: Vec<&pb::BundleInfo> = t
        .peers
        .iter()
        .filter(|p| !p.differences.is_empty())
        .collect();
    if !differing.is_empty() {
        out += "\n* differs from ours:\n";
        for p in differing {
            for d in &p.differences {
                out += &format!("  {}: {d}\n", p.cluster);
            }
        }
    }
    out
}

pub(super) fn trust(t: &pb::TrustStatusResponse, out: Output) -> anyhow::Result<()> {
    emit(t, out, || trust_table(t))
}

pub(super) fn trace_table(t: &pb::TraceResponse) -> String {
    let mut out = format!("SERVICE  {}\n", t.service);
    if t.dns_name.is_empty() {
        out += "DNS      off (no `dns` section in the controller config)\n";
    } else {
        out += &format!("DNS      {}\n", t.dns_name);
        for a in &t.dns_answers {
            out += &format!("           {a}\n");
        }
    }
    for p in &t.ports {
        out += &format!("\nPORT {} ({})\n", p.name, p.port);
        if p.listener.is_empty() {
            out += "  no egress listener yet: the gateway config is being rebuilt\n";
            continue;
        }
        out += &format!(
            "  listener {}  egress {}  mode {}\n",
            p.listener, p.egress, p.mode
        );
        let rows: Vec<Vec<String>> = p
            .candidates
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (p50, p99) = rtt(c.measured, c.rtt_p50_us, c.rtt_p99_us);
                vec![
                    format!("{}", i + 1),
                    c.cluster.clone(),
                    c.priority.to_string(),
                    format!(
                        "{} ({} ready)",
                        yes(c.source_healthy, "healthy", "unhealthy"),
                        c.ready_endpoints
                    ),
                    c.gateway_address.clone(),
                    match (c.reported, c.gateway_healthy) {
                        (false, _) => "-".to_owned(),
                        (true, up) => yes(up, "up", "down"),
                    },
                    p50,
                    p99,
                    c.sni.clone(),
                ]
            })
            .collect();
        out += &table(
            &[
                "  #", "CLUSTER", "PRIO", "SOURCE", "GATEWAY", "PROBE", "RTT P50", "RTT P99", "SNI",
            ],
            &rows
                .into_iter()
                .map(|mut r| {
                    r[0] = format!("  {}", r[0]);
                    r
                })
                .collect::<Vec<_>>(),
        );
    }
    out
}

pub(super) fn trace(t: &pb::TraceResponse, out: Output) -> anyhow::Result<()> {
    emit(t, out, || trace_table(t))
}

#[cfg(test)]
mod tests;
