//! The admin endpoint (hyper, HTTP/1.1), off the data-plane port:
//!
//! | path | answer |
//! | --- | --- |
//! | `/healthz` | 200 while the process runs |
//! | `/readyz` | 200 while accepting; 503 once draining |
//! | `/metrics` | Prometheus/OpenMetrics text |
//! | `/config_dump` | the effective config as JSON, secrets redacted, with its generation, the TLS identity (SPIFFE ID, expiry, the chain presented) and trust domains and roots in force (subjects and SHA-256 fingerprints), each egress listener's bound address and gateways' health, RTT and DNS state, and in controller mode the controller address, connection state and config version |

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::config;
use crate::proxy::Shared;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves admin requests until the task is aborted. It holds no drain watch: the admin endpoint
/// must keep answering (`/readyz` 503) while connections drain.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "admin accept failed");
                continue;
            }
        };
        let shared = shared.clone();
        let service = service_fn(move |req| {
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(respond(&req, &shared)) }
        });
        tokio::spawn(
            async move {
                if let Err(error) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(%error, "admin connection failed");
                }
            }
            .instrument(tracing::debug_span!("admin", peer = %peer)),
        );
    }
}

fn respond(req: &Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is supported\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if shared.is_ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        "/metrics" => with_type(StatusCode::OK, shared.metrics.encode(), OPENMETRICS),
        "/config_dump" => {
            let snapshot = shared.load();
            let tls = shared.tls().map(|t| {
                let own = t.own();
                serde_json::json!({
                    "spiffe_id": own.spiffe_id,
                    "expires": rfc3339(own.not_after),
                    "trust_domains": t.trust_domains(),
                    "chain": own.chain,
                    "roots": own.roots,
                })
            });
            let body = serde_json::json!({
                "generation": snapshot.generation,
                "config": config::dump(&snapshot.config),
                "tls": tls,
                "egress": shared.egress().iter().map(|h| h.status()).collect::<Vec<_>>(),
                "controller": shared.controller().map(|c| c.dump()),
            });
            with_type(StatusCode::OK, format!("{body:#}\n"), "application/json")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /healthz /readyz /metrics /config_dump\n",
        ),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    with_type(status, body.to_owned(), "text/plain; charset=utf-8")
}

fn with_type(
    status: StatusCode,
    body: String,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Unix seconds as RFC 3339 (UTC), or `null` when out of range.
fn rfc3339(unix: i64) -> Option<String> {
    let secs = u64::try_from(unix).ok()?;
    let time = std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(secs))?;
    Some(humantime::format_rfc3339_seconds(time).to_string())
}
