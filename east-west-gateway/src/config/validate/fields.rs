//! Field-level parsing shared by every section: each helper names the field in its error.

use std::net::SocketAddr;
use std::time::Duration;

use super::super::raw::RawService;
use super::super::{Error, Label, ServiceRef};

pub(super) fn invalid(
    field: impl Into<String>,
    problem: impl ToString,
    fix: impl Into<String>,
) -> Error {
    Error::Invalid {
        field: field.into(),
        problem: problem.to_string(),
        fix: fix.into(),
    }
}

pub(super) fn label(field: &str, value: Option<&str>, fix: &str) -> Result<Label, Error> {
    let value = value.ok_or_else(|| invalid(field, "missing", fix))?;
    Label::new(value).map_err(|e| invalid(field, e, fix))
}

pub(super) fn address(
    field: &str,
    value: Option<&str>,
    default: &str,
) -> Result<SocketAddr, Error> {
    let text = value.unwrap_or(default);
    text.parse().map_err(|_| {
        invalid(
            field,
            format!("{text:?} is not IP:PORT"),
            "write e.g. 0.0.0.0:15443; port 0 picks a free port",
        )
    })
}

pub(super) fn duration(
    field: &str,
    value: Option<&str>,
    default: Duration,
) -> Result<Duration, Error> {
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

pub(super) fn positive<T: Copy + Default + PartialEq + std::fmt::Display>(
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
pub(super) fn trust_domain(field: &str, td: &str) -> Result<(), Error> {
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
pub(super) fn spiffe_id(field: &str, id: &str) -> Result<(), Error> {
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

pub(super) fn service(at: &str, s: &RawService) -> Result<ServiceRef, Error> {
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
    let port = match s.port.map(u16::try_from) {
        Some(Ok(p)) if p > 0 => p,
        bad => {
            let problem = match (bad, s.port) {
                (Some(Err(_)), Some(n)) => format!("{n} is above 65535"),
                _ => "missing or 0".to_owned(),
            };
            return Err(invalid(
                format!("{at}.port"),
                problem,
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
