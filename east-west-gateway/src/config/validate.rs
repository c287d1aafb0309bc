//! `RawConfig` → `Config`: defaults, parsing of addresses, durations and names, and
//! cross-field checks (unique names, unique patterns).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::raw::{
    RawAuthorize, RawConfig, RawEgress, RawEndpoint, RawGateway, RawProbe, RawRoute, RawService,
    RawTls,
};
use super::{
    Admin, Authorization, Config, DEFAULT_ADMIN_LISTEN, DEFAULT_BUFFER_BYTES,
    DEFAULT_CLUSTER_DOMAIN, DEFAULT_CONNECT_ATTEMPTS, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_DRAIN_TIMEOUT, DEFAULT_EJECTION_BASE, DEFAULT_EJECTION_MAX, DEFAULT_HELLO_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT, DEFAULT_INGRESS_LISTEN, DEFAULT_MAX_CONNECTIONS, DEFAULT_PROBE_INTERVAL,
    DEFAULT_PROBE_TIMEOUT, DEFAULT_UNHEALTHY_AFTER, DEFAULT_WATCH_INTERVAL, Egress, EgressMode,
    Endpoint, Error, Ingress, Label, Mode, Probe, RemoteGateway, Route, ServiceRef, Tls, Upstream,
};
use crate::names::{self, NativeName};
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
    };
    if upstream.ejection_max < upstream.ejection_base {
        return Err(invalid(
            "upstream.ejection_max",
            "shorter than upstream.ejection_base",
            "make ejection_max at least ejection_base",
        ));
    }
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
    let tls = raw.tls.map(tls).transpose()?;

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

    require_tls(&routes, &egress, tls.as_ref())?;
    Ok(Config {
        cluster,
        cluster_domain,
        ingress,
        admin,
        upstream,
        drain_timeout,
        watch_interval,
        tls,
        routes,
        egress,
    })
}

/// Terminate routes and mTLS egress present the gateway's identity: they need `tls`.
fn require_tls(routes: &[Route], egress: &[Egress], tls: Option<&Tls>) -> Result<(), Error> {
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
                .position(|e| matches!(e.mode, EgressMode::Mtls { .. }))
                .map(|i| format!("egress[{i}] (mode: mtls)"))
        });
    match user {
        None => Ok(()),
        Some(user) => Err(invalid(
            "tls",
            format!("missing, but {user} needs the gateway's certificate"),
            "add tls: { cert_chain, private_key, trust_bundle }",
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

fn service(at: &str, s: &RawService) -> Result<ServiceRef, Error> {
    let name = label(
        &format!("{at}.name"),
        s.name.as_deref(),
        "use the Kubernetes service name",
    )?;
    let namespace = label(
        &format!("{at}.namespace"),
        s.namespace.as_deref(),
        "use the service's namespace",
    )?;
    let port = match s.port {
        Some(p) if p > 0 => p,
        _ => {
            return Err(invalid(
                format!("{at}.port"),
                "missing or 0",
                "use the service port number, e.g. 9080",
            ));
        }
    };
    Ok(ServiceRef {
        name,
        namespace,
        port,
    })
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

fn egress_listener(at: &str, e: RawEgress) -> Result<Egress, Error> {
    let name = label(
        &format!("{at}.name"),
        e.name.as_deref(),
        "name the listener with a DNS label",
    )?;
    let listen_text = e.listen.ok_or_else(|| {
        invalid(
            format!("{at}.listen"),
            "missing",
            "give the local IP:PORT clients connect to",
        )
    })?;
    let listen = address(&format!("{at}.listen"), Some(&listen_text), "")?;
    let raw_service = e.service.ok_or_else(|| {
        invalid(
            format!("{at}.service"),
            "missing",
            "name the imported service: {name, namespace, port}",
        )
    })?;
    let service = service(&format!("{at}.service"), &raw_service)?;
    let cluster = e
        .cluster
        .as_deref()
        .map(|c| {
            label(
                &format!("{at}.cluster"),
                Some(c),
                "use the remote cluster's name",
            )
        })
        .transpose()?;
    let mode = match e.mode.as_deref() {
        None | Some("mtls") => {
            let sni = match (e.sni, &cluster) {
                (Some(sni), _) => {
                    names::check_host_name(&sni).map_err(|err| {
                        invalid(format!("{at}.sni"), err, "use a lowercase DNS name")
                    })?;
                    sni
                }
                (None, Some(cluster)) => NativeName {
                    service: service.clone(),
                    cluster: cluster.clone(),
                }
                .to_string(),
                (None, None) => {
                    return Err(invalid(
                        format!("{at}.cluster"),
                        "neither cluster nor sni is set",
                        "set `cluster:` (the native SNI name is derived) or an explicit `sni:`",
                    ));
                }
            };
            let trust_domain_text = e.trust_domain.ok_or_else(|| {
                invalid(
                    format!("{at}.trust_domain"),
                    "missing",
                    "name the trust domain the remote gateway's certificate must be in",
                )
            })?;
            trust_domain(&format!("{at}.trust_domain"), &trust_domain_text)?;
            EgressMode::Mtls {
                sni,
                trust_domain: trust_domain_text,
            }
        }
        Some("passthrough") => {
            if e.sni.is_some() || e.trust_domain.is_some() {
                return Err(invalid(
                    at,
                    "sni and trust_domain apply to mtls egress only",
                    "remove them: passthrough forwards the client's own TLS and SNI",
                ));
            }
            EgressMode::Passthrough
        }
        Some(other) => {
            return Err(invalid(
                format!("{at}.mode"),
                format!("unknown mode {other:?}"),
                "use `mtls` or `passthrough`",
            ));
        }
    };
    let probe = probe(&format!("{at}.probe"), e.probe)?;
    if e.gateways.is_empty() {
        return Err(invalid(
            format!("{at}.gateways"),
            "no remote gateways",
            "add at least one `- address: HOST:PORT`",
        ));
    }
    let gateways = e
        .gateways
        .into_iter()
        .enumerate()
        .map(|(j, g)| gateway(&format!("{at}.gateways[{j}]"), g))
        .collect::<Result<_, _>>()?;
    Ok(Egress {
        name,
        listen,
        service,
        cluster,
        mode,
        probe,
        gateways,
    })
}

fn probe(at: &str, p: Option<RawProbe>) -> Result<Probe, Error> {
    let p = p.unwrap_or(RawProbe {
        interval: None,
        timeout: None,
        unhealthy_after: None,
    });
    let probe = Probe {
        interval: duration(
            &format!("{at}.interval"),
            p.interval.as_deref(),
            DEFAULT_PROBE_INTERVAL,
        )?,
        timeout: duration(
            &format!("{at}.timeout"),
            p.timeout.as_deref(),
            DEFAULT_PROBE_TIMEOUT,
        )?,
        unhealthy_after: positive(
            &format!("{at}.unhealthy_after"),
            p.unhealthy_after,
            DEFAULT_UNHEALTHY_AFTER,
        )?,
    };
    if probe.interval < Duration::from_millis(10) || probe.timeout.is_zero() {
        return Err(invalid(
            at,
            "interval under 10ms or zero timeout",
            "use e.g. `interval: 1s, timeout: 1s`",
        ));
    }
    Ok(probe)
}

fn gateway(at: &str, g: RawGateway) -> Result<RemoteGateway, Error> {
    let address = g
        .address
        .ok_or_else(|| invalid(format!("{at}.address"), "missing", "write HOST:PORT"))?;
    let bad = || {
        invalid(
            format!("{at}.address"),
            format!("{address:?} is not HOST:PORT"),
            "write an IP or DNS name and a port, e.g. gw.gcp.example:15443",
        )
    };
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = host
        .trim_matches(['[', ']'])
        .parse::<std::net::IpAddr>()
        .is_ok()
        || names::check_host_name(host).is_ok();
    if !host_ok || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad());
    }
    Ok(RemoteGateway {
        address,
        priority: g.priority.unwrap_or(0),
        weight: positive(&format!("{at}.weight"), g.weight, 1)?,
    })
}

fn tls(t: RawTls) -> Result<Tls, Error> {
    let path = |field: &str, v: Option<String>| -> Result<PathBuf, Error> {
        v.filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| invalid(format!("tls.{field}"), "missing", "give a PEM file path"))
    };
    Ok(Tls {
        cert_chain: path("cert_chain", t.cert_chain)?,
        private_key: path("private_key", t.private_key)?,
        trust_bundle: path("trust_bundle", t.trust_bundle)?,
    })
}

// === field helpers ===

fn invalid(field: impl Into<String>, problem: impl ToString, fix: impl Into<String>) -> Error {
    Error::Invalid {
        field: field.into(),
        problem: problem.to_string(),
        fix: fix.into(),
    }
}

fn label(field: &str, value: Option<&str>, fix: &str) -> Result<Label, Error> {
    let value = value.ok_or_else(|| invalid(field, "missing", fix))?;
    Label::new(value).map_err(|e| invalid(field, e, fix))
}

fn address(field: &str, value: Option<&str>, default: &str) -> Result<SocketAddr, Error> {
    let text = value.unwrap_or(default);
    text.parse().map_err(|_| {
        invalid(
            field,
            format!("{text:?} is not IP:PORT"),
            "write e.g. 0.0.0.0:15443; port 0 picks a free port",
        )
    })
}

fn duration(field: &str, value: Option<&str>, default: Duration) -> Result<Duration, Error> {
    match value {
        None => Ok(default),
        Some(text) => humantime::parse_duration(text).map_err(|e| {
            invalid(
                field,
                format!("{text:?}: {e}"),
                "write a duration such as 500ms, 5s or 1h",
            )
        }),
    }
}

fn positive<T: Copy + Default + PartialEq + std::fmt::Display>(
    field: &str,
    value: Option<T>,
    default: T,
) -> Result<T, Error> {
    match value {
        Some(v) if v == T::default() => Err(invalid(
            field,
            "0 is not allowed",
            format!("use a positive number (default {default})"),
        )),
        Some(v) => Ok(v),
        None => Ok(default),
    }
}

/// SPIFFE trust domain: lowercase letters, digits, `.`, `-`, `_` (SPIFFE-ID spec §2.1).
fn trust_domain(field: &str, td: &str) -> Result<(), Error> {
    let ok = !td.is_empty()
        && td.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        });
    if !ok {
        return Err(invalid(
            field,
            format!("{td:?} is not a trust domain"),
            "use lowercase letters, digits, '.', '-' and '_', without spiffe://",
        ));
    }
    Ok(())
}

/// `spiffe://<trust domain>/<path>` with a non-empty path of non-empty segments
/// (SPIFFE-ID spec §2.2).
fn spiffe_id(field: &str, id: &str) -> Result<(), Error> {
    let parsed = id
        .strip_prefix("spiffe://")
        .and_then(|rest| rest.split_once('/'));
    let valid_path = |path: &str| {
        path.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        })
    };
    match parsed {
        Some((td, path)) if valid_path(path) => trust_domain(field, td),
        _ => Err(invalid(
            field,
            format!("{id:?} is not a SPIFFE ID"),
            "write spiffe://<trust-domain>/<path>, e.g. spiffe://gcp.example/ns/default/sa/reviews",
        )),
    }
}
