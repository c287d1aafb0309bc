//! DNS for imported services: the controller answers `NAME.NS.svc.<zone>` (MCS's clusterset
//! names, zone `clusterset.local` by default) so clients find the local egress listener of an
//! import by name.
//!
//! - `A`/`AAAA NAME.NS.svc.<zone>`: the gateways' egress address (`gateways.egress.address`);
//! - `SRV NAME.NS.svc.<zone>`: one record per port, with the local listener's port;
//! - `SRV _PORTNAME._tcp.NAME.NS.svc.<zone>`: that port only.
//!
//! A name in the zone that is not a live import is NXDOMAIN; a name outside the zone is
//! REFUSED (this is not a recursive resolver: CoreDNS or the node's resolver forwards only the
//! zone here). [`Zone::answer`] is sans-IO; [`serve`] is the hickory-server shell, on UDP and
//! TCP.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::model::ServiceKey;

/// How long a TCP client may stay idle.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the zone knows about one import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecords {
    /// Where local clients connect.
    pub address: IpAddr,
    /// Port name and local listener port.
    pub ports: Vec<(String, u16)>,
}

/// The imports the zone answers for: the live import `key`, or `None`.
pub trait Imports: Send + Sync {
    fn records(&self, key: &ServiceKey) -> Option<ServiceRecords>;
}

impl<F> Imports for F
where
    F: Fn(&ServiceKey) -> Option<ServiceRecords> + Send + Sync,
{
    fn records(&self, key: &ServiceKey) -> Option<ServiceRecords> {
        self(key)
    }
}

/// One answer record, before it is encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rec {
    A(std::net::Ipv4Addr),
    Aaaa(std::net::Ipv6Addr),
    Srv { port: u16, target: String },
}

impl std::fmt::Display for Rec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::A(ip) => write!(f, "A {ip}"),
            Self::Aaaa(ip) => write!(f, "AAAA {ip}"),
            Self::Srv { port, target } => write!(f, "SRV 0 1 {port} {target}"),
        }
    }
}

/// What to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// NOERROR with these records (possibly none: the name exists, not with that type).
    Records(Vec<Rec>),
    NxDomain,
    /// Not our zone.
    Refused,
}

/// The zone and its TTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// Lowercase, without leading or trailing dots.
    pub zone: String,
    pub ttl: Duration,
}

impl Zone {
    /// `NAME.NS.svc.<zone>` for `key`.
    pub fn name_of(&self, key: &ServiceKey) -> String {
        format!("{}.{}.svc.{}", key.name(), key.namespace(), self.zone)
    }

    /// The answer to `qtype` for `qname` (any case, trailing dot optional).
    pub fn answer(&self, qname: &str, qtype: RecordType, imports: &dyn Imports) -> Answer {
        let qname = qname.trim_end_matches('.').to_ascii_lowercase();
        let Some(inside) = qname
            .strip_suffix(&self.zone)
            .and_then(|rest| rest.strip_suffix('.').or(rest.is_empty().then_some("")))
        else {
            return Answer::Refused;
        };
        // The zone apex and `svc.<zone>` exist but hold nothing we serve.
        if inside.is_empty() || inside == "svc" {
            return Answer::Records(Vec::new());
        }
        let Some(service) = inside.strip_suffix(".svc") else {
            return Answer::NxDomain;
        };
        let labels: Vec<&str> = service.split('.').collect();
        let (port_name, name, namespace) = match labels.as_slice() {
            [name, namespace] => (None, *name, *namespace),
            [port, proto, name, namespace] if proto.eq_ignore_ascii_case("_tcp") => {
                match port.strip_prefix('_') {
                    Some(port) => (Some(port), *name, *namespace),
                    None => return Answer::NxDomain,
                }
            }
            _ => return Answer::NxDomain,
        };
        let Ok(key) = ServiceKey::new(name, namespace) else {
            return Answer::NxDomain;
        };
        let Some(records) = imports.records(&key) else {
            return Answer::NxDomain;
        };
        let ports: Vec<u16> = records
            .ports
            .iter()
            .filter(|(n, _)| port_name.is_none_or(|p| p == n))
            .map(|(_, port)| *port)
            .collect();
        if ports.is_empty() {
            return Answer::NxDomain;
        }
        let target = format!("{}.", self.name_of(&key));
        let out = match (qtype, records.address) {
            (RecordType::A, IpAddr::V4(ip)) if port_name.is_none() => vec![Rec::A(ip)],
            (RecordType::AAAA, IpAddr::V6(ip)) if port_name.is_none() => vec![Rec::Aaaa(ip)],
            (RecordType::SRV, _) => ports
                .into_iter()
                .map(|port| Rec::Srv {
                    port,
                    target: target.clone(),
                })
                .collect(),
            _ => Vec::new(),
        };
        Answer::Records(out)
    }
}

/// The hickory request handler over a [`Zone`].
struct Handler {
    zone: Zone,
    imports: Arc<dyn Imports>,
}

impl Handler {
    fn encode(&self, name: &Name, recs: Vec<Rec>) -> Vec<Record> {
        let ttl = u32::try_from(self.zone.ttl.as_secs()).unwrap_or(u32::MAX);
        recs.into_iter()
            .filter_map(|rec| {
                let data = match rec {
                    Rec::A(ip) => RData::A(A(ip)),
                    Rec::Aaaa(ip) => RData::AAAA(AAAA(ip)),
                    Rec::Srv { port, target } => {
                        RData::SRV(SRV::new(0, 1, port, Name::from_ascii(&target).ok()?))
                    }
                };
                Some(Record::from_rdata(name.clone(), ttl, data))
            })
            .collect()
    }
}

#[tonic::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let failed = |code| {
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = code;
            ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            })
        };
        let Ok(info) = request.request_info() else {
            let msg = builder.error_msg(&request.metadata, ResponseCode::FormErr);
            return response
                .send_response(msg)
                .await
                .unwrap_or_else(|_| failed(ResponseCode::FormErr));
        };
        let query = info.query.original();
        let answer = self.zone.answer(
            &query.name().to_ascii(),
            query.query_type(),
            self.imports.as_ref(),
        );
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        let (code, records) = match answer {
            Answer::Records(recs) => (ResponseCode::NoError, self.encode(query.name(), recs)),
            Answer::NxDomain => (ResponseCode::NXDomain, Vec::new()),
            Answer::Refused => {
                metadata.authoritative = false;
                (ResponseCode::Refused, Vec::new())
            }
        };
        tracing::debug!(name = %query.name(), qtype = %query.query_type(), ?code, answers = records.len(), "dns query");
        metadata.response_code = code;
        let msg = builder.build(metadata, records.iter(), [], [], []);
        response
            .send_response(msg)
            .await
            .unwrap_or_else(|_| failed(ResponseCode::ServFail))
    }
}

/// Why the DNS server could not start.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen for DNS on {address} ({protocol}): {error}; change `dns.listen` in the controller config"
)]
pub struct BindError {
    pub address: SocketAddr,
    pub protocol: &'static str,
    pub error: std::io::Error,
}

/// Attempts at finding a port free for both UDP and TCP when `dns.listen` has port 0.
const BIND_ATTEMPTS: usize = 20;

/// Binds UDP and TCP on `listen` (port 0: one free port for both) and serves `zone` until the
/// runtime stops. Returns the bound address.
pub async fn serve(
    listen: SocketAddr,
    zone: Zone,
    imports: Arc<dyn Imports>,
) -> Result<SocketAddr, BindError> {
    let err = |protocol, error| BindError {
        address: listen,
        protocol,
        error,
    };
    // Port 0: the UDP port the kernel picks may be taken for TCP; try another.
    let attempts = if listen.port() == 0 { BIND_ATTEMPTS } else { 1 };
    let mut attempt = 0;
    let (udp, tcp, address) = loop {
        attempt += 1;
        let udp = tokio::net::UdpSocket::bind(listen)
            .await
            .map_err(|e| err("udp", e))?;
        let address = udp.local_addr().map_err(|e| err("udp", e))?;
        match tokio::net::TcpListener::bind(address).await {
            Ok(tcp) => break (udp, tcp, address),
            Err(e) if attempt < attempts => {
                tracing::debug!(%address, error = %e, "DNS port taken for TCP; picking another");
            }
            Err(e) => return Err(err("tcp", e)),
        }
    };
    let mut server = hickory_server::Server::new(Handler { zone, imports });
    server.register_socket(udp);
    server.register_listener(tcp, TCP_TIMEOUT, 64);
    tokio::spawn(async move {
        if let Err(error) = server.block_until_done().await {
            tracing::error!(%error, "DNS server stopped");
        }
    });
    Ok(address)
}

#[cfg(test)]
mod tests;
