//! The registry file, sans IO: YAML → raw serde structs (unknown fields rejected) → a validated
//! [`FileDoc`]. Every error names the file, the field path and the fix.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;

use super::RegistryError;
use crate::model::{ClusterName, Endpoint, ExportTo, LocalService, ServiceKey, ServicePort};

/// A validated registry file: services, and the exports it declares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileDoc {
    pub services: BTreeMap<ServiceKey, LocalService>,
    pub exports: BTreeMap<ServiceKey, ExportTo>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    services: Vec<RawService>,
    #[serde(default)]
    exports: Vec<RawExport>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Option<String>,
    namespace: Option<String>,
    #[serde(default)]
    ports: Vec<RawPort>,
    #[serde(default)]
    endpoints: Vec<RawEndpoint>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    name: Option<String>,
    // Wide integers, so 0 and 70000 get our message rather than serde's.
    port: Option<i64>,
    target_port: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    address: Option<String>,
    zone: Option<String>,
    weight: Option<i64>,
    ready: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExport {
    service: Option<String>,
    to: Option<Vec<String>>,
}

struct Cx<'a> {
    file: &'a Path,
}

/// Parses and validates registry file text; `file` names the file in errors.
pub fn parse(text: &str, file: &Path) -> Result<FileDoc, RegistryError> {
    let cx = Cx { file };
    if text.trim().is_empty() {
        // An editor that truncates before writing would otherwise withdraw every export.
        return Err(cx.invalid(
            "(file)",
            "the file is empty",
            "write `services: []` for an empty registry",
        ));
    }
    let raw: RawFile = serde_yaml_ng::from_str(text).map_err(|e| RegistryError::Yaml {
        file: file.to_owned(),
        message: e.to_string(),
    })?;
    let mut doc = FileDoc::default();
    let mut first_at: BTreeMap<ServiceKey, usize> = BTreeMap::new();
    for (i, s) in raw.services.into_iter().enumerate() {
        let at = format!("services[{i}]");
        let svc = cx.service(&at, s)?;
        if let Some(first) = first_at.get(&svc.key) {
            return Err(cx.invalid(
                &at,
                format!("{} is declared twice (first at services[{first}])", svc.key),
                "merge the two entries into one",
            ));
        }
        first_at.insert(svc.key.clone(), i);
        doc.services.insert(svc.key.clone(), svc);
    }
    for (i, e) in raw.exports.into_iter().enumerate() {
        let at = format!("exports[{i}]");
        let (key, to) = cx.export(&at, e)?;
        if !doc.services.contains_key(&key) {
            return Err(cx.invalid(
                &format!("{at}.service"),
                format!("{key} is not a service in this file"),
                "declare it under `services:` or fix the name",
            ));
        }
        if doc.exports.contains_key(&key) {
            return Err(cx.invalid(
                &at,
                format!("{key} is exported twice"),
                "keep one entry; list every peer in its `to:`",
            ));
        }
        doc.exports.insert(key, to);
    }
    Ok(doc)
}

impl Cx<'_> {
    fn invalid(
        &self,
        field: &str,
        problem: impl ToString,
        fix: impl Into<String>,
    ) -> RegistryError {
        RegistryError::Invalid {
            file: self.file.to_owned(),
            field: field.to_owned(),
            problem: problem.to_string(),
            fix: fix.into(),
        }
    }

    fn service(&self, at: &str, s: RawService) -> Result<LocalService, RegistryError> {
        let name = s.name.ok_or_else(|| {
            self.invalid(
                &format!("{at}.name"),
                "missing",
                "name the service, e.g. `name: echo`",
            )
        })?;
        let namespace = s.namespace.ok_or_else(|| {
            self.invalid(
                &format!("{at}.namespace"),
                "missing",
                "give its namespace, e.g. `namespace: default` (services are name.namespace across clusters)",
            )
        })?;
        let key = ServiceKey::new(&name, &namespace).map_err(|e| {
            let field = if ServiceKey::new(&name, "default").is_err() {
                "name"
            } else {
                "namespace"
            };
            self.invalid(&format!("{at}.{field}"), e, "use an RFC 1123 label")
        })?;
        if s.ports.is_empty() {
            return Err(self.invalid(
                &format!("{at}.ports"),
                "no ports",
                "add at least one, e.g. `ports: [{ name: http, port: 8080 }]`",
            ));
        }
        let mut ports: Vec<ServicePort> = Vec::with_capacity(s.ports.len());
        for (j, p) in s.ports.into_iter().enumerate() {
            let pat = format!("{at}.ports[{j}]");
            let port = self.port(&pat, p)?;
            if let Some(k) = ports.iter().position(|q| q.name == port.name) {
                return Err(self.invalid(
                    &format!("{pat}.name"),
                    format!("port name {:?} is used twice (also ports[{k}])", port.name),
                    "give every port of a service its own name",
                ));
            }
            if let Some(k) = ports.iter().position(|q| q.port == port.port) {
                return Err(self.invalid(
                    &format!("{pat}.port"),
                    format!("port {} is used twice (also ports[{k}])", port.port),
                    "give every port of a service its own number",
                ));
            }
            ports.push(port);
        }
        let mut endpoints: Vec<Endpoint> = Vec::with_capacity(s.endpoints.len());
        for (j, e) in s.endpoints.into_iter().enumerate() {
            let eat = format!("{at}.endpoints[{j}]");
            let ep = self.endpoint(&eat, e)?;
            if let Some(k) = endpoints.iter().position(|q| q.address == ep.address) {
                return Err(self.invalid(
                    &format!("{eat}.address"),
                    format!("{} is listed twice (also endpoints[{k}])", ep.address),
                    "list each endpoint once; use weight for a bigger share",
                ));
            }
            endpoints.push(ep);
        }
        Ok(LocalService {
            key,
            ports,
            endpoints,
        })
    }

    fn port(&self, at: &str, p: RawPort) -> Result<ServicePort, RegistryError> {
        let name = p.name.ok_or_else(|| {
            self.invalid(
                &format!("{at}.name"),
                "missing",
                "name the port, e.g. `name: http`",
            )
        })?;
        ClusterName::parse(&name).map_err(|_| {
            self.invalid(
                &format!("{at}.name"),
                format!("{name:?} is not an RFC 1123 label"),
                "use lowercase letters, digits and '-', e.g. http or grpc-web",
            )
        })?;
        let number = |field: &str, v: i64| {
            u16::try_from(v).ok().filter(|n| *n != 0).ok_or_else(|| {
                self.invalid(
                    &format!("{at}.{field}"),
                    format!("{v} is not a port"),
                    "use 1-65535",
                )
            })
        };
        let port = match p.port {
            Some(v) => number("port", v)?,
            None => {
                return Err(self.invalid(
                    &format!("{at}.port"),
                    "missing",
                    "give the service port, e.g. `port: 8080`",
                ));
            }
        };
        let target_port = p
            .target_port
            .map(|v| number("target_port", v))
            .transpose()?;
        Ok(ServicePort {
            name,
            port,
            target_port,
        })
    }

    fn endpoint(&self, at: &str, e: RawEndpoint) -> Result<Endpoint, RegistryError> {
        let text = e.address.ok_or_else(|| {
            self.invalid(
                &format!("{at}.address"),
                "missing",
                "give the endpoint's IP, e.g. `address: 10.0.0.7`",
            )
        })?;
        let address: IpAddr = text.parse().map_err(|_| {
            self.invalid(
                &format!("{at}.address"),
                format!("{text:?} is not an IP address"),
                "write the endpoint's IP without a port (the port comes from the service's ports)",
            )
        })?;
        let zone = match e.zone {
            Some(z) if valid_zone(&z) => Some(z),
            Some(z) => {
                return Err(self.invalid(
                    &format!("{at}.zone"),
                    format!("{z:?} is not a zone name"),
                    "use 1-63 letters, digits, '-', '_' or '.', e.g. us-east-1a",
                ));
            }
            None => None,
        };
        let weight = match e.weight {
            None => 1,
            Some(w) => u32::try_from(w).ok().filter(|w| *w > 0).ok_or_else(|| {
                self.invalid(
                    &format!("{at}.weight"),
                    format!("{w} is not a weight"),
                    "use 1 or more; set `ready: false` to take an endpoint out of rotation",
                )
            })?,
        };
        Ok(Endpoint {
            address,
            ready: e.ready.unwrap_or(true),
            zone,
            weight,
        })
    }

    fn export(&self, at: &str, e: RawExport) -> Result<(ServiceKey, ExportTo), RegistryError> {
        let text = e.service.ok_or_else(|| {
            self.invalid(
                &format!("{at}.service"),
                "missing",
                "name the service as NAME.NAMESPACE, e.g. `service: echo.default`",
            )
        })?;
        let key = ServiceKey::parse(&text)
            .map_err(|err| self.invalid(&format!("{at}.service"), err, "write NAME.NAMESPACE"))?;
        let to = match e.to {
            None => ExportTo::All,
            Some(list) if list.is_empty() => {
                return Err(self.invalid(
                    &format!("{at}.to"),
                    "an empty list exports to nobody",
                    "list peer clusters, or remove `to:` to export to every linked cluster",
                ));
            }
            Some(list) => {
                let mut peers = BTreeSet::new();
                for (j, p) in list.iter().enumerate() {
                    let field = format!("{at}.to[{j}]");
                    let peer = ClusterName::parse(p)
                        .map_err(|err| self.invalid(&field, err, "list peer cluster names"))?;
                    if !peers.insert(peer) {
                        return Err(self.invalid(
                            &field,
                            format!("{p} is listed twice"),
                            "list it once",
                        ));
                    }
                }
                ExportTo::Peers(peers)
            }
        };
        Ok((key, to))
    }
}

fn valid_zone(z: &str) -> bool {
    !z.is_empty()
        && z.len() <= 63
        && z.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}
