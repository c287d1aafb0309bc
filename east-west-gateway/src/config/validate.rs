//! `RawConfig` → `Config`: defaults, parsing of addresses, durations and names, and
//! cross-field checks (unique names, unique patterns).

mod egress;
mod fields;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use self::egress::egress_listener;
use self::fields::{address, duration, invalid, label, positive, service, spiffe_id, trust_domain};
use super::raw::{Origin, RawAuthorize, RawConfig, RawEndpoint, RawRoute, RawTls};
use super::{
    Admin, Authorization, Config, DEFAULT_ADMIN_LISTEN, DEFAULT_BUFFER_BYTES,
    DEFAULT_CLUSTER_DOMAIN, DEFAULT_CONNECT_ATTEMPTS, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_DRAIN_TIMEOUT, DEFAULT_EJECTION_BASE, DEFAULT_EJECTION_MAX, DEFAULT_HELLO_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT, DEFAULT_INGRESS_LISTEN, DEFAULT_MAX_CONCURRENT_HANDSHAKES,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_WATCH_INTERVAL, Egress, EgressMode, Endpoint, Error, Ingress,
    Limits, Mode, Route, Splice, Tls, TlsFiles, Upstream,
};
use crate::names;
use crate::route::{self, Pattern};

pub(super) fn validate(raw: RawConfig) -> Result<Config, Error> {
    let cluster = label(
        "cluster",
        raw.cluster.as_deref(),
        "set it to this cluster's name, e.g. `cluster: aws-east`",
    )?;
    let cluster_domain = raw
        .cluster_domain
        .unwrap_or_else(|| DEFAULT_CLUSTER_DOMAIN.to_owned());
    names::check_host_name(&cluster_domain).map_err(|e| {
        invalid(
            "cluster_domain",
            e,
            "use a DNS suffix such as cluster.local",
        )
    })?;

    let ingress = Ingress {
        listen: address(
            "ingress.listen",
            raw.ingress.listen.as_deref(),
            DEFAULT_INGRESS_LISTEN,
        )?,
        hello_timeout: duration(
            "ingress.hello_timeout",
            raw.ingress.hello_timeout.as_deref(),
            DEFAULT_HELLO_TIMEOUT,
        )?,
        max_hello_bytes: positive(
            "ingress.max_hello_bytes",
            raw.ingress.max_hello_bytes,
            crate::sni::DEFAULT_MAX_HELLO_BYTES,
        )?,
        max_connections: positive(
            "ingress.max_connections",
            raw.ingress.max_connections,
            DEFAULT_MAX_CONNECTIONS,
        )?,
    };
    if ingress.max_hello_bytes < 512 {
        return Err(invalid(
            "ingress.max_hello_bytes",
            format!(
                "{} bytes cannot hold a real ClientHello",
                ingress.max_hello_bytes
            ),
            "use at least 512; the default is 16384",
        ));
    }
    let admin = Admin {
        listen: address(
            "admin.listen",
            raw.admin.listen.as_deref(),
            DEFAULT_ADMIN_LISTEN,
        )?,
    };
    let u = &raw.upstream;
    let upstream = Upstream {
        connect_timeout: duration(
            "upstream.connect_timeout",
            u.connect_timeout.as_deref(),
            DEFAULT_CONNECT_TIMEOUT,
        )?,
        idle_timeout: duration(
            "upstream.idle_timeout",
            u.idle_timeout.as_deref(),
            DEFAULT_IDLE_TIMEOUT,
        )?,
        connect_attempts: positive(
            "upstream.connect_attempts",
            u.connect_attempts,
            DEFAULT_CONNECT_ATTEMPTS,
        )?,
        ejection_base: duration(
            "upstream.ejection_base",
            u.ejection_base.as_deref(),
            DEFAULT_EJECTION_BASE,
        )?,
        ejection_max: duration(
            "upstream.ejection_max",
            u.ejection_max.as_deref(),
            DEFAULT_EJECTION_MAX,
        )?,
        buffer_bytes: positive(
            "upstream.buffer_bytes",
            u.buffer_bytes,
            DEFAULT_BUFFER_BYTES,
        )?,
        splice: match u.splice.as_deref() {
            Some("auto") => Splice::Auto,
            None | Some("off") => Splice::Off,
            Some(other) => {
                return Err(invalid(
                    "upstream.splice",
                    format!("unknown value {other:?}"),
                    "use `off` (copy, the default) or `auto` (splice(2) for plain TCP legs on Linux)",
                ));
            }
        },
    };
    if upstream.ejection_max < upstream.ejection_base {
        return Err(invalid(
            "upstream.ejection_max",
            "shorter than upstream.ejection_base",
            "make ejection_max at least ejection_base",
        ));
    }
    let limits = Limits {
        max_concurrent_handshakes: positive(
            "limits.max_concurrent_handshakes",
            raw.limits.max_concurrent_handshakes,
            DEFAULT_MAX_CONCURRENT_HANDSHAKES,
        )?,
    };
    let drain_timeout = duration(
        "drain_timeout",
        raw.drain_timeout.as_deref(),
        DEFAULT_DRAIN_TIMEOUT,
    )?;
    let watch_interval = Some(duration(
        "reload.watch_interval",
        raw.reload.watch_interval.as_deref(),
        DEFAULT_WATCH_INTERVAL,
    )?)
    .filter(|d| !d.is_zero());
    let tls = match (raw.tls, raw.origin) {
        (Some(files), _) => Some(Tls::Files(tls(files)?)),
        (None, Origin::Controller { tls: true }) => Some(Tls::Controller),
        (None, _) => None,
    };

    let mut route_names = HashSet::new();
    let mut patterns = route::Builder::new(cluster.clone(), cluster_domain.clone());
    let mut routes = Vec::with_capacity(raw.routes.len());
    for (i, r) in raw.routes.into_iter().enumerate() {
        let at = format!("routes[{i}]");
        let route = route(&at, r)?;
        if route.name.as_str() == crate::metrics::UNMATCHED {
            return Err(invalid(
                format!("{at}.name"),
                "\"unmatched\" is reserved for the metric label of unrouted connections",
                "pick another name",
            ));
        }
        if !route_names.insert(route.name.clone()) {
            return Err(invalid(
                format!("{at}.name"),
                format!("{:?} is used by an earlier route", route.name.as_str()),
                "give every route a unique name",
            ));
        }
        for p in &route.patterns {
            patterns.insert(p.clone(), ()).map_err(|e| {
                invalid(&at, e, "each host or service may appear in only one route")
            })?;
        }
        routes.push(route);
    }

    let mut egress_names = HashSet::new();
    let mut egress = Vec::with_capacity(raw.egress.len());
    for (i, e) in raw.egress.into_iter().enumerate() {
        let at = format!("egress[{i}]");
        let listener = egress_listener(&at, e)?;
        if !egress_names.insert(listener.name.clone()) {
            return Err(invalid(
                format!("{at}.name"),
                "name is used by an earlier egress listener",
                "give every egress listener a unique name",
            ));
        }
        egress.push(listener);
    }

    require_tls(&routes, &egress, tls.as_ref(), raw.origin)?;
    Ok(Config {
        cluster,
        cluster_domain,
        ingress,
        admin,
        upstream,
        limits,
        drain_timeout,
        watch_interval,
        tls,
        routes,
        egress,
    })
}

/// Terminate routes and mTLS egress present the gateway's identity: they need `tls`.
fn require_tls(
    routes: &[Route],
    egress: &[Egress],
    tls: Option<&Tls>,
    origin: Origin,
) -> Result<(), Error> {
    if tls.is_some() {
        return Ok(());
    }
    let user = routes
        .iter()
        .position(|r| matches!(r.mode, Mode::Terminate(_)))
        .map(|i| format!("routes[{i}] (mode: terminate)"))
        .or_else(|| {
            egress
                .iter()
                .position(|e| e.mode == EgressMode::Mtls)
                .map(|i| format!("egress[{i}] (mode: mtls)"))
        });
    match user {
        None => Ok(()),
        Some(user) => Err(invalid(
            "tls",
            format!("missing, but {user} needs the gateway's certificate"),
            match origin {
                Origin::File => "add tls: { cert_chain, private_key, trust_bundle }",
                Origin::Controller { .. } => {
                    "the controller must send `identity` and `bundle_map_json` with this config"
                }
            },
        )),
    }
}

fn route(at: &str, r: RawRoute) -> Result<Route, Error> {
    let name = label(
        &format!("{at}.name"),
        r.name.as_deref(),
        "name the route with a DNS label, e.g. `name: reviews`",
    )?;
    let mut patterns = Vec::new();
    for (j, host) in r.hosts.iter().enumerate() {
        patterns.push(Pattern::host(host).map_err(|e| {
            invalid(
                format!("{at}.hosts[{j}]"),
                e,
                "write an exact lowercase DNS name or `*.suffix`",
            )
        })?);
    }
    for (j, s) in r.services.into_iter().enumerate() {
        let field = format!("{at}.services[{j}]");
        let subset = s
            .subset
            .as_deref()
            .map(|v| {
                label(
                    &format!("{field}.subset"),
                    Some(v),
                    "use the DestinationRule subset name",
                )
            })
            .transpose()?;
        patterns.push(Pattern::Service {
            service: service(&field, &s)?,
            subset,
        });
    }
    if patterns.is_empty() {
        return Err(invalid(
            at,
            "route matches nothing",
            "add `hosts:` or `services:`",
        ));
    }
    let mode = match r.mode.as_deref() {
        None | Some("passthrough") => {
            if r.authorize.is_some() {
                return Err(invalid(
                    format!("{at}.authorize"),
                    "authorization needs a terminated TLS session",
                    "remove `authorize` or set `mode: terminate`",
                ));
            }
            Mode::Passthrough
        }
        Some("terminate") => {
            let raw = r.authorize.ok_or_else(|| invalid(format!("{at}.authorize"), "missing", "terminate routes must say which peers may connect: trust_domains, clusters or spiffe_ids"))?;
            Mode::Terminate(authorization(&format!("{at}.authorize"), raw)?)
        }
        Some(other) => {
            return Err(invalid(
                format!("{at}.mode"),
                format!("unknown mode {other:?}"),
                "use `passthrough` or `terminate`",
            ));
        }
    };
    if r.max_connections == Some(0) {
        return Err(invalid(
            format!("{at}.max_connections"),
            "0 would refuse every connection",
            "remove it for no per-route limit, or set a positive number",
        ));
    }
    if r.endpoints.is_empty() {
        return Err(invalid(
            format!("{at}.endpoints"),
            "route has no endpoints",
            "add at least one `- address: IP:PORT`",
        ));
    }
    let endpoints = r
        .endpoints
        .into_iter()
        .enumerate()
        .map(|(j, e)| endpoint(&format!("{at}.endpoints[{j}]"), e))
        .collect::<Result<_, _>>()?;
    Ok(Route {
        name,
        patterns,
        mode,
        max_connections: r.max_connections,
        endpoints,
    })
}

fn endpoint(at: &str, e: RawEndpoint) -> Result<Endpoint, Error> {
    let text = e.address.ok_or_else(|| {
        invalid(
            format!("{at}.address"),
            "missing",
            "write the endpoint as IP:PORT",
        )
    })?;
    let address: SocketAddr = text.parse().map_err(|_| {
        invalid(
            format!("{at}.address"),
            format!("{text:?} is not IP:PORT"),
            "endpoints are IP:PORT, e.g. 10.0.0.7:9080 or [fd00::7]:9080",
        )
    })?;
    if address.port() == 0 {
        return Err(invalid(
            format!("{at}.address"),
            "port 0",
            "use the endpoint's real port",
        ));
    }
    let weight = positive(&format!("{at}.weight"), e.weight, 1)?;
    Ok(Endpoint { address, weight })
}

fn authorization(at: &str, a: RawAuthorize) -> Result<Authorization, Error> {
    for (j, td) in a.trust_domains.iter().enumerate() {
        trust_domain(&format!("{at}.trust_domains[{j}]"), td)?;
    }
    let clusters = a
        .clusters
        .iter()
        .enumerate()
        .map(|(j, c)| {
            label(
                &format!("{at}.clusters[{j}]"),
                Some(c),
                "use a cluster name",
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    for (j, id) in a.spiffe_ids.iter().enumerate() {
        spiffe_id(&format!("{at}.spiffe_ids[{j}]"), id)?;
    }
    if a.trust_domains.is_empty() && clusters.is_empty() && a.spiffe_ids.is_empty() {
        return Err(invalid(
            at,
            "allows nobody",
            "list trust_domains, clusters or spiffe_ids",
        ));
    }
    Ok(Authorization {
        trust_domains: a.trust_domains,
        clusters,
        spiffe_ids: a.spiffe_ids,
    })
}

fn tls(t: RawTls) -> Result<TlsFiles, Error> {
    let path = |field: &str, v: Option<String>| -> Result<PathBuf, Error> {
        v.filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| invalid(format!("tls.{field}"), "missing", "give a PEM file path"))
    };
    Ok(TlsFiles {
        cert_chain: path("cert_chain", t.cert_chain)?,
        private_key: path("private_key", t.private_key)?,
        trust_bundle: path("trust_bundle", t.trust_bundle)?,
    })
}
