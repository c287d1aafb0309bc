//! `egress[]`: listeners, probes and remote gateways. A gateway's `cluster`, `sni` and
//! `trust_domain` override the listener's, which are defaults; after validation every gateway of
//! an mTLS listener carries its own SNI and expected trust domain.

use std::time::Duration;

use super::super::raw::{RawEgress, RawGateway, RawProbe};
use super::super::{
    DEFAULT_PROBE_INTERVAL, DEFAULT_PROBE_TIMEOUT, DEFAULT_UNHEALTHY_AFTER, Egress, EgressMode,
    Error, Label, MtlsTarget, Probe, RemoteGateway, ServiceRef,
};
use super::fields::{address, duration, invalid, label, positive, service, trust_domain};
use crate::names::{self, NativeName};

/// The listener-level values gateways inherit.
struct Defaults<'a> {
    at: &'a str,
    service: &'a ServiceRef,
    cluster: Option<&'a Label>,
    sni: Option<&'a str>,
    trust_domain: Option<&'a str>,
}

/// A gateway's own `sni` and `trust_domain`.
struct Override<'a> {
    sni: Option<&'a str>,
    trust_domain: Option<&'a str>,
}

pub(super) fn egress_listener(at: &str, e: RawEgress) -> Result<Egress, Error> {
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
    let cluster = cluster(&format!("{at}.cluster"), e.cluster.as_deref())?;
    let mode = match e.mode.as_deref() {
        None | Some("mtls") => EgressMode::Mtls,
        Some("passthrough") => {
            if e.sni.is_some() || e.trust_domain.is_some() {
                return Err(passthrough_only(at));
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
    if let Some(sni) = &e.sni {
        check_sni(&format!("{at}.sni"), sni)?;
    }
    if let Some(td) = &e.trust_domain {
        trust_domain(&format!("{at}.trust_domain"), td)?;
    }
    let probe = probe(&format!("{at}.probe"), e.probe)?;
    if e.gateways.is_empty() {
        return Err(invalid(
            format!("{at}.gateways"),
            "no remote gateways",
            "add at least one `- address: HOST:PORT`",
        ));
    }
    let defaults = Defaults {
        at,
        service: &service,
        cluster: cluster.as_ref(),
        sni: e.sni.as_deref(),
        trust_domain: e.trust_domain.as_deref(),
    };
    let gateways = e
        .gateways
        .into_iter()
        .enumerate()
        .map(|(j, g)| gateway(&format!("{at}.gateways[{j}]"), g, mode, &defaults))
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

fn gateway(
    at: &str,
    g: RawGateway,
    mode: EgressMode,
    defaults: &Defaults<'_>,
) -> Result<RemoteGateway, Error> {
    let RawGateway {
        address,
        priority,
        weight,
        cluster: own_cluster,
        sni,
        trust_domain: own_trust_domain,
    } = g;
    let own = Override {
        sni: sni.as_deref(),
        trust_domain: own_trust_domain.as_deref(),
    };
    let address =
        address.ok_or_else(|| invalid(format!("{at}.address"), "missing", "write HOST:PORT"))?;
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
    let own_cluster = cluster(&format!("{at}.cluster"), own_cluster.as_deref())?;
    let mtls = match mode {
        EgressMode::Passthrough => {
            if own.sni.is_some() || own.trust_domain.is_some() {
                return Err(passthrough_only(at));
            }
            None
        }
        EgressMode::Mtls => Some(mtls_target(at, &own, own_cluster.as_ref(), defaults)?),
    };
    Ok(RemoteGateway {
        address,
        priority: priority.unwrap_or(0),
        weight: positive(&format!("{at}.weight"), weight, 1)?,
        cluster: own_cluster.or_else(|| defaults.cluster.cloned()),
        mtls,
    })
}

/// The most specific setting wins: the gateway's `sni`, the name derived from the gateway's
/// `cluster`, the listener's `sni`, then the name derived from the listener's `cluster`.
fn mtls_target(
    at: &str,
    g: &Override<'_>,
    own_cluster: Option<&Label>,
    defaults: &Defaults<'_>,
) -> Result<MtlsTarget, Error> {
    let derived = |cluster: &Label| {
        NativeName {
            service: defaults.service.clone(),
            cluster: cluster.clone(),
        }
        .to_string()
    };
    let sni = if let Some(sni) = g.sni {
        check_sni(&format!("{at}.sni"), sni)?;
        sni.to_owned()
    } else if let Some(cluster) = own_cluster {
        derived(cluster)
    } else if let Some(sni) = defaults.sni {
        sni.to_owned()
    } else if let Some(cluster) = defaults.cluster {
        derived(cluster)
    } else {
        return Err(invalid(
            at,
            format!(
                "no SNI: neither this gateway nor {} sets `cluster` or `sni`",
                defaults.at
            ),
            "set `cluster:` on the listener or on the gateway (the native SNI name is derived \
             from it), or an explicit `sni:`",
        ));
    };
    let trust_domain_text = match (g.trust_domain, defaults.trust_domain) {
        (Some(td), _) => {
            trust_domain(&format!("{at}.trust_domain"), td)?;
            td.to_owned()
        }
        (None, Some(td)) => td.to_owned(),
        (None, None) => {
            return Err(invalid(
                format!("{at}.trust_domain"),
                format!(
                    "missing, and {}.trust_domain is not set either",
                    defaults.at
                ),
                "name the trust domain the remote gateway's certificate must be in, on the \
                 gateway or once for the whole listener",
            ));
        }
    };
    Ok(MtlsTarget {
        sni,
        trust_domain: trust_domain_text,
    })
}

fn cluster(field: &str, value: Option<&str>) -> Result<Option<Label>, Error> {
    value
        .map(|c| label(field, Some(c), "use the remote cluster's name"))
        .transpose()
}

fn check_sni(field: &str, sni: &str) -> Result<(), Error> {
    names::check_host_name(sni).map_err(|err| invalid(field, err, "use a lowercase DNS name"))
}

fn passthrough_only(at: &str) -> Error {
    invalid(
        at,
        "sni and trust_domain apply to mtls egress only",
        "remove them: passthrough forwards the client's own TLS and SNI",
    )
}
