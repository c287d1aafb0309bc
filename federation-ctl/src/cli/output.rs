//! Rendering: aligned tables for people, JSON or YAML (stable field names) for scripts.

use serde::Serialize;

use super::Output;
use crate::api::control as pb;

#[derive(Serialize)]
struct TokenView<'a> {
    token: &'a str,
    token_id: &'a str,
    expires_at: String,
}

#[derive(Serialize)]
struct LinkView {
    peer: String,
    trust_domain: String,
    role: String,
    state: String,
    last_heartbeat: Option<String>,
    linked_at: String,
    exports_to_peer: u32,
    imports_from_peer: u32,
    lease_live: bool,
    peering_addresses: Vec<String>,
    gateway_addresses: Vec<String>,
    last_error: Option<String>,
}

#[derive(Serialize)]
struct ServicesView {
    exports: Vec<ExportView>,
    imports: Vec<ImportView>,
    conflicts: Vec<ConflictView>,
}

#[derive(Serialize)]
struct ExportView {
    service: String,
    to: Vec<String>,
    source: String,
    ready_endpoints: u32,
    total_endpoints: u32,
    ports: Vec<PortView>,
    exported_at: String,
}

#[derive(Serialize)]
struct PortView {
    name: String,
    port: u32,
}

#[derive(Serialize)]
struct ImportView {
    service: String,
    ports: Vec<PortView>,
    sources: Vec<SourceView>,
    listeners: Vec<String>,
}

#[derive(Serialize)]
struct SourceView {
    cluster: String,
    priority: u32,
    ready_endpoints: u32,
    healthy: bool,
}

#[derive(Serialize)]
struct ConflictView {
    service: String,
    port_name: String,
    winner: String,
    loser: String,
    detail: String,
}

#[derive(Serialize)]
struct Message<'a> {
    message: &'a str,
}

pub(super) fn time(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| ms.to_string())
}

fn ago(ms: i64) -> String {
    if ms <= 0 {
        return "never".to_owned();
    }
    let secs = (crate::controller::now_ms().saturating_sub(ms) / 1000).max(0);
    format!("{}s ago", secs)
}

pub(super) fn emit<T: Serialize>(
    value: &T,
    out: Output,
    table: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    let text = match out {
        Output::Table => table(),
        Output::Json => serde_json::to_string_pretty(value)? + "\n",
        Output::Yaml => serde_yaml_ng::to_string(value)?,
    };
    print!("{text}");
    Ok(())
}

/// Left-aligned columns, two spaces apart.
pub(super) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.len());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        s.truncate(s.trim_end().len());
        s + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

pub(super) fn token(resp: &pb::CreateTokenResponse, out: Output) -> anyhow::Result<()> {
    let view = TokenView {
        token: &resp.token,
        token_id: &resp.token_id,
        expires_at: time(resp.expires_at_ms),
    };
    // The table form is the bare token, so `$(federation-ctl link token)` just works.
    emit(&view, out, || format!("{}\n", resp.token))
}

pub(super) fn links(links: &[pb::Link], out: Output) -> anyhow::Result<()> {
    let views: Vec<LinkView> = links
        .iter()
        .map(|l| LinkView {
            peer: l.peer.clone(),
            trust_domain: l.trust_domain.clone(),
            role: l.role.clone(),
            state: l.state.clone(),
            last_heartbeat: (l.last_heartbeat_ms > 0).then(|| time(l.last_heartbeat_ms)),
            linked_at: time(l.linked_at_ms),
            exports_to_peer: l.exports_to_peer,
            imports_from_peer: l.imports_from_peer,
            lease_live: l.lease_live,
            peering_addresses: l.peering_addresses.clone(),
            gateway_addresses: l.gateway_addresses.clone(),
            last_error: (!l.last_error.is_empty()).then(|| l.last_error.clone()),
        })
        .collect();
    emit(&views, out, || {
        let rows: Vec<Vec<String>> = links
            .iter()
            .map(|l| {
                vec![
                    l.peer.clone(),
                    l.state.clone(),
                    ago(l.last_heartbeat_ms),
                    l.trust_domain.clone(),
                    l.role.clone(),
                    l.exports_to_peer.to_string(),
                    imports_cell(l),
                    l.gateway_addresses.join(","),
                ]
            })
            .collect();
        table(
            &[
                "PEER",
                "STATE",
                "HEARTBEAT",
                "TRUST DOMAIN",
                "ROLE",
                "EXPORTS",
                "IMPORTS",
                "GATEWAYS",
            ],
            &rows,
        )
    })
}

/// A link's import count, marked when the lease that keeps them lapsed.
pub(super) fn imports_cell(l: &pb::Link) -> String {
    let expired = !l.lease_live && l.imports_from_peer > 0;
    format!(
        "{}{}",
        l.imports_from_peer,
        if expired { " (lease expired)" } else { "" }
    )
}

pub(super) fn unlinked(peer: &str, resp: &pb::UnlinkResponse, out: Output) -> anyhow::Result<()> {
    let text = format!(
        "unlinked {peer}: {} imports removed; {}",
        resp.imports_removed,
        if resp.peer_notified {
            "the peer was told and drops its side"
        } else {
            "the peer was not connected and drops its side when it next calls"
        }
    );
    done(&text, out)
}

pub(super) fn done(text: &str, out: Output) -> anyhow::Result<()> {
    emit(&Message { message: text }, out, || format!("{text}\n"))
}

fn ports(ports: &[pb::Port]) -> Vec<PortView> {
    ports
        .iter()
        .map(|p| PortView {
            name: p.name.clone(),
            port: p.port,
        })
        .collect()
}

pub(super) fn services(resp: &pb::ListServicesResponse, out: Output) -> anyhow::Result<()> {
    let view = ServicesView {
        exports: resp
            .exports
            .iter()
            .map(|e| ExportView {
                service: e.service.clone(),
                to: e.to.clone(),
                source: e.source.clone(),
                ready_endpoints: e.ready_endpoints,
                total_endpoints: e.total_endpoints,
                ports: ports(&e.ports),
                exported_at: time(e.exported_at_ms),
            })
            .collect(),
        imports: resp
            .imports
            .iter()
            .map(|i| ImportView {
                service: i.service.clone(),
                ports: ports(&i.ports),
                sources: i
                    .sources
                    .iter()
                    .map(|s| SourceView {
                        cluster: s.cluster.clone(),
                        priority: s.priority,
                        ready_endpoints: s.ready_endpoints,
                        healthy: s.lease_live && s.ready_endpoints > 0,
                    })
                    .collect(),
                listeners: i.listeners.clone(),
            })
            .collect(),
        conflicts: resp
            .conflicts
            .iter()
            .map(|c| ConflictView {
                service: c.service.clone(),
                port_name: c.port_name.clone(),
                winner: c.winner.clone(),
                loser: c.loser.clone(),
                detail: c.detail.clone(),
            })
            .collect(),
    };
    emit(&view, out, || {
        let mut text = String::from("EXPORTS\n");
        let rows: Vec<Vec<String>> = view
            .exports
            .iter()
            .map(|e| {
                vec![
                    e.service.clone(),
                    if e.to.is_empty() {
                        "all".to_owned()
                    } else {
                        e.to.join(",")
                    },
                    format!("{}/{}", e.ready_endpoints, e.total_endpoints),
                    e.ports
                        .iter()
                        .map(|p| format!("{}:{}", p.name, p.port))
                        .collect::<Vec<_>>()
                        .join(","),
                    e.source.clone(),
                ]
            })
            .collect();
        text += &table(&["SERVICE", "TO", "READY", "PORTS", "SOURCE"], &rows);
        text += "\nIMPORTS\n";
        let rows: Vec<Vec<String>> = view
            .imports
            .iter()
            .map(|i| {
                vec![
                    i.service.clone(),
                    i.sources
                        .iter()
                        .map(|s| {
                            format!(
                                "{}({})",
                                s.cluster,
                                if s.healthy { "healthy" } else { "unhealthy" }
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(","),
                    i.ports
                        .iter()
                        .zip(&i.listeners)
                        .map(|(p, l)| format!("{}:{} -> {l}", p.name, p.port))
                        .collect::<Vec<_>>()
                        .join(","),
                ]
            })
            .collect();
        text += &table(&["SERVICE", "FROM", "LISTENERS"], &rows);
        for c in &view.conflicts {
            text += &format!(
                "\nwarning: conflict on {} port {}: {}\n",
                c.service, c.port_name, c.detail
            );
        }
        text
    })
}
