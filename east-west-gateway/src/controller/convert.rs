//! `GatewayConfig` → the config file's raw shape, field by field, so the one validator checks
//! it. Proto3 has no "unset": an empty string or a zero weight means "not given" (the file's
//! default applies); a zero port or priority is passed on as written.

use crate::api;
use crate::config::Dynamic;
use crate::config::raw::{RawAuthorize, RawEgress, RawEndpoint, RawGateway, RawRoute, RawService};
use crate::tls::Inline;

/// The routes, egress and cluster of `message`, and its TLS material if it has any.
pub(super) fn dynamic(message: api::GatewayConfig) -> (Dynamic, Option<Inline>) {
    let api::GatewayConfig {
        version: _,
        routes,
        egress,
        identity,
        bundle_map_json,
        cluster,
    } = message;
    // A half-sent identity still counts, so staging names what is missing.
    let inline = (identity.is_some() || !bundle_map_json.is_empty()).then(|| {
        let identity = identity.unwrap_or_default();
        Inline {
            cert_chain_pem: identity.cert_chain_pem,
            private_key_pem: identity.private_key_pem,
            bundle_map_json,
        }
    });
    let dynamic = Dynamic {
        cluster: given(cluster),
        routes: routes.into_iter().map(route).collect(),
        egress: egress.into_iter().map(egress_listener).collect(),
        tls: inline.is_some(),
    };
    (dynamic, inline)
}

fn route(r: api::Route) -> RawRoute {
    RawRoute {
        name: given(r.name),
        hosts: r.hosts,
        services: r.services.into_iter().map(service).collect(),
        mode: given(r.mode),
        max_connections: None,
        // An empty Authorize message is no authorize section.
        authorize: r
            .authorize
            .filter(|a| {
                !(a.trust_domains.is_empty() && a.clusters.is_empty() && a.spiffe_ids.is_empty())
            })
            .map(|a| RawAuthorize {
                trust_domains: a.trust_domains,
                clusters: a.clusters,
                spiffe_ids: a.spiffe_ids,
            }),
        endpoints: r
            .endpoints
            .into_iter()
            .map(|e| RawEndpoint {
                address: given(e.address),
                weight: nonzero(e.weight),
            })
            .collect(),
    }
}

fn egress_listener(e: api::Egress) -> RawEgress {
    RawEgress {
        name: given(e.name),
        listen: given(e.listen),
        mode: given(e.mode),
        probe: None,
        service: e.service.map(service),
        cluster: None,
        sni: None,
        trust_domain: None,
        gateways: e
            .gateways
            .into_iter()
            .map(|g| RawGateway {
                address: given(g.address),
                priority: Some(g.priority),
                weight: nonzero(g.weight),
                cluster: given(g.cluster),
                sni: given(g.sni),
                trust_domain: given(g.trust_domain),
            })
            .collect(),
    }
}

fn service(s: api::ServiceRef) -> RawService {
    RawService {
        name: given(s.name),
        namespace: given(s.namespace),
        port: Some(s.port),
        subset: None,
    }
}

fn given(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

fn nonzero(n: u32) -> Option<u32> {
    (n != 0).then_some(n)
}
