//! The HTTPS shell: TLS, bearer-token authentication, routing of API paths to the [`Store`],
//! and the discovery documents.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch as signal;
use tokio::task::JoinHandle;

use crate::error::ApiError;
use crate::resource::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{PatchKind, Store, WriteOptions};
use crate::tls::{self, TlsError};
use crate::{now, watch};

/// The largest request body accepted, as on the API server.
const MAX_BODY: usize = 3 * 1024 * 1024;

/// How to run a stand-in.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where to listen (port 0 picks one).
    pub listen: SocketAddr,
    /// How many events the watch history keeps; a watch from further back gets `410 Gone`.
    pub history: usize,
    /// How often a watch that asked for bookmarks gets one.
    pub bookmark_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            history: 1000,
            bookmark_interval: Duration::from_secs(5),
        }
    }
}

/// Why a stand-in did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// State shared by every connection.
pub(crate) struct Shared {
    store: Mutex<Store>,
    token: String,
    pub(crate) addr: SocketAddr,
    pub(crate) bookmark_interval: Duration,
    /// Bumped to end every open watch (a forced disconnect).
    pub(crate) disconnect: signal::Sender<u64>,
}

impl Shared {
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock cannot leave the store half-written (writes commit
        // last), so a poisoned lock is still usable.
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A running stand-in API server.
pub struct StandIn {
    shared: Arc<Shared>,
    ca_pem: String,
    task: JoinHandle<()>,
}

impl StandIn {
    /// Binds, generates the certificates and a token, and serves until dropped.
    pub async fn start(options: Options) -> Result<Self, StartError> {
        let listener =
            TcpListener::bind(options.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: options.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: options.listen,
            source,
        })?;
        let material = tls::generate(addr.ip())?;
        let token: String = {
            use rand::Rng as _;
            let bytes: [u8; 24] = rand::rng().random();
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        };
        let (disconnect, _) = signal::channel(0);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(options.history, &now())),
            token,
            addr,
            bookmark_interval: options.bookmark_interval,
            disconnect,
        });
        let acceptor = tokio_rustls::TlsAcceptor::from(material.server);
        let task = tokio::spawn(serve(listener, acceptor, shared.clone()));
        Ok(Self {
            shared,
            ca_pem: material.ca_pem,
            task,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `https://addr`.
    pub fn url(&self) -> String {
        format!("https://{}", self.shared.addr)
    }

    /// The CA certificate (PEM) that signed the server's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A kubeconfig for this server (it holds the bearer token: keep it private).
    pub fn kubeconfig(&self) -> String {
        tls::kubeconfig(self.shared.addr, &self.ca_pem, &self.shared.token)
    }

    /// Writes the kubeconfig to `path`, mode 0600, atomically.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), TlsError> {
        tls::write_private(path, &self.kubeconfig())
    }

    /// Ends every open watch stream, as a restarting API server or a dropped connection would.
    pub fn disconnect_watches(&self) {
        self.shared.disconnect.send_modify(|n| *n += 1);
    }

    /// Forgets the watch history: a watch resuming from any earlier resourceVersion gets
    /// `410 Gone` and must relist.
    pub fn compact(&self) {
        self.shared.store().compact();
    }

    /// The objects of `group/version` `plural` (in `namespace`, or all), as a list would show.
    pub fn objects(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        namespace: Option<&str>,
    ) -> Vec<Value> {
        let store = self.shared.store();
        let Some(rt) = store.find(group, version, plural).cloned() else {
            return Vec::new();
        };
        store
            .list(
                &rt,
                namespace,
                &LabelSelector::default(),
                &FieldSelector::default(),
            )
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
        self.disconnect_watches();
    }
}

async fn serve(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor, shared: Arc<Shared>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(error) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service);
            if let Err(error) = conn.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
}

pub(crate) type Body = BoxBody<Bytes, Infallible>;

pub(crate) fn json_response(code: u16, value: &Value) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(value.to_string())).boxed());
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn error_response(error: &ApiError) -> Response<Body> {
    json_response(error.code, &error.status())
}

/// Decoded query parameters.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: Option<&str>) -> Self {
        let decode = |s: &str| {
            let bytes = s.as_bytes();
            let mut out = Vec::with_capacity(bytes.len());
            let mut i = 0;
            while i < bytes.len() {
                match bytes[i] {
                    b'+' => out.push(b' '),
                    b'%' => match bytes
                        .get(i + 1..i + 3)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                    {
                        Some(b) => {
                            out.push(b);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    },
                    b => out.push(b),
                }
                i += 1;
            }
            String::from_utf8_lossy(&out).into_owned()
        };
        Self(
            query
                .unwrap_or_default()
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k), decode(v))
                })
                .collect(),
        )
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

fn authorized(shared: &Shared, req: &Request<Incoming>) -> bool {
    let Some(given) = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    // Constant-time: the comparison does not reveal how much of the token matched.
    given.len() == shared.token.len()
        && given
            .bytes()
            .zip(shared.token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().trim_end_matches('/').to_owned();
    if matches!(path.as_str(), "/healthz" | "/livez" | "/readyz") {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")).boxed());
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        return resp;
    }
    if !authorized(shared, &req) {
        return error_response(&ApiError::unauthorized());
    }
    let method = req.method().clone();
    let query = Query::parse(req.uri().query());
    tracing::debug!(%method, path, query = req.uri().query().unwrap_or_default(), "request");
    match route(shared, req, &path, &query).await {
        Ok(resp) => resp,
        Err(error) => {
            tracing::debug!(%method, path, code = error.code, message = %error.message, "refused");
            error_response(&error)
        }
    }
}

/// Where an API path points.
struct Target {
    rt: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

async fn route(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    path: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    let get = req.method() == Method::GET;
    match segs.as_slice() {
        ["version"] if get => return Ok(json_response(200, &version())),
        ["api"] if get => return Ok(json_response(200, &watch::api_versions(shared.addr))),
        ["apis"] if get => return Ok(json_response(200, &group_list(&shared.store()))),
        ["openapi", "v2"] if get => return Ok(watch::openapi_v2()),
        ["apis", group] if get => {
            return group_list(&shared.store())["groups"]
                .as_array()
                .and_then(|gs| gs.iter().find(|g| g["name"] == *group))
                .map(|g| {
                    let mut g = g.clone();
                    g["kind"] = json!("APIGroup");
                    g["apiVersion"] = json!("v1");
                    json_response(200, &g)
                })
                .ok_or_else(|| ApiError::no_route(path));
        }
        ["api", version] if get => return resource_list(&shared.store(), "", version, path),
        ["apis", group, version] if get => {
            return resource_list(&shared.store(), group, version, path);
        }
        ["standin", "compact"] if req.method() == Method::POST => {
            shared.store().compact();
            return Ok(json_response(200, &json!({"compacted": true})));
        }
        ["standin", "disconnect-watches"] if req.method() == Method::POST => {
            shared.disconnect.send_modify(|n| *n += 1);
            return Ok(json_response(200, &json!({"disconnected": true})));
        }
        _ => {}
    }
    let target = resolve(&shared.store(), &segs).ok_or_else(|| ApiError::no_route(path))?;
    let ns = target.namespace.clone().unwrap_or_default();
    if target.rt.namespaced
        && target.namespace.is_none()
        && (target.name.is_some() || req.method() != Method::GET)
    {
        return Err(ApiError::no_route(path));
    }
    let opts = write_options(&req, query);
    let method = req.method().clone();
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let now = now();
    let Target {
        rt, name, status, ..
    } = target;
    match (method, name) {
        (Method::GET, None) if query.flag("watch") => {
            watch::watch(shared, &rt, target.namespace.as_deref(), query)
        }
        (Method::GET, None) => watch::list(shared, &rt, target.namespace.as_deref(), query),
        (Method::GET, Some(name)) => Ok(json_response(200, &shared.store().get(&rt, &ns, &name)?)),
        (Method::POST, None) => {
            let body = read_body(req).await?;
            let created = shared.store().create(&rt, &ns, body, &opts, &now)?;
            Ok(json_response(201, &crate::store::as_version(&created, &rt)))
        }
        (Method::PUT, Some(name)) => {
            let body = read_body(req).await?;
            let updated = shared
                .store()
                .update(&rt, &ns, &name, body, status, &opts, &now)?;
            Ok(json_response(200, &crate::store::as_version(&updated, &rt)))
        }
        (Method::PATCH, Some(name)) => {
            let kind = PatchKind::from_content_type(&content_type).ok_or_else(|| {
                ApiError::unsupported_media(format!(
                    "the body of a PATCH must be one of application/merge-patch+json, application/strategic-merge-patch+json, application/json-patch+json or application/apply-patch+yaml, not {content_type:?}"
                ))
            })?;
            if kind == PatchKind::Apply && query.get("fieldManager").is_none_or(str::is_empty) {
                return Err(ApiError::bad_request(
                    "server-side apply needs a fieldManager query parameter",
                ));
            }
            let body = read_body(req).await?;
            let patched = shared
                .store()
                .patch(&rt, &ns, &name, kind, &body, status, &opts, &now)?;
            Ok(json_response(200, &crate::store::as_version(&patched, &rt)))
        }
        (Method::DELETE, Some(name)) => {
            let body = read_body(req).await.unwrap_or(Value::Null);
            let precondition = body["preconditions"]["resourceVersion"]
                .as_str()
                .map(str::to_owned);
            let mut opts = opts;
            opts.orphan |=
                body["propagationPolicy"] == "Orphan" || body["orphanDependents"] == true;
            opts.dry_run |= body["dryRun"].as_array().is_some_and(|a| !a.is_empty());
            let deleted =
                shared
                    .store()
                    .delete(&rt, &ns, &name, precondition.as_deref(), &opts, &now)?;
            Ok(json_response(200, &crate::store::as_version(&deleted, &rt)))
        }
        (Method::DELETE, None) => {
            let (labels, fields) = watch::selectors(query)?;
            let mut store = shared.store();
            let victims = store.list(&rt, target.namespace.as_deref(), &labels, &fields);
            let mut items = Vec::new();
            for (key, _) in victims {
                items.push(store.delete(&rt, &key.2, &key.3, None, &opts, &now)?);
            }
            Ok(json_response(
                200,
                &json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": {}, "items": items}),
            ))
        }
        (method, _) => Err(ApiError::method_not_allowed(format!(
            "{method} is not supported on {path}"
        ))),
    }
}

fn write_options(req: &Request<Incoming>, query: &Query) -> WriteOptions {
    let agent = req
        .headers()
        .get(hyper::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown");
    let manager = query
        .get("fieldManager")
        .filter(|m| !m.is_empty())
        .map_or_else(
            || agent.split('/').next().unwrap_or("unknown").to_owned(),
            str::to_owned,
        );
    WriteOptions {
        manager,
        dry_run: query.get("dryRun").is_some_and(|v| !v.is_empty()),
        force: query.flag("force"),
        orphan: query.get("propagationPolicy") == Some("Orphan"),
    }
}

async fn read_body(req: Request<Incoming>) -> Result<Value, ApiError> {
    let bytes = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            ApiError::bad_request(format!(
                "cannot read the request body (at most {MAX_BODY} bytes): {e}"
            ))
        })?
        .to_bytes();
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes).or_else(|json_err| {
        serde_yaml_ng::from_slice(&bytes).map_err(|yaml_err| {
            ApiError::bad_request(format!(
                "the request body is neither JSON ({json_err}) nor YAML ({yaml_err})"
            ))
        })
    })
}

fn resolve(store: &Store, segs: &[&str]) -> Option<Target> {
    let (group, version, rest) = match segs {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let find = |plural: &str| store.find(group, version, plural).cloned();
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..] if find(plural).is_some_and(|t| t.namespaced) => (
            Some((*ns).to_owned()),
            std::iter::once(*plural)
                .chain(tail.iter().copied())
                .collect::<Vec<_>>(),
        ),
        _ => (None, rest.to_vec()),
    };
    let (rt, name, status) = match rest.as_slice() {
        [plural] => (find(plural)?, None, false),
        [plural, name] => (find(plural)?, Some((*name).to_owned()), false),
        [plural, name, "status"] => {
            let rt = find(plural)?;
            rt.status_subresource.then_some(())?;
            (rt, Some((*name).to_owned()), true)
        }
        _ => return None,
    };
    Some(Target {
        rt,
        namespace,
        name,
        status,
    })
}

fn version() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0+kube-standin",
        "gitCommit": "", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64",
    })
}

fn group_list(store: &Store) -> Value {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for t in store.types().iter().filter(|t| !t.group.is_empty()) {
        match groups.iter_mut().find(|(g, _)| *g == t.group) {
            Some((_, versions)) if !versions.contains(&t.version) => {
                versions.push(t.version.clone())
            }
            Some(_) => {}
            None => groups.push((t.group.clone(), vec![t.version.clone()])),
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(name, versions)| {
            let gv = |v: &String| json!({"groupVersion": format!("{name}/{v}"), "version": v});
            json!({
                "name": name,
                "versions": versions.iter().map(gv).collect::<Vec<_>>(),
                "preferredVersion": gv(&versions[0]),
            })
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource_list(
    store: &Store,
    group: &str,
    version: &str,
    path: &str,
) -> Result<Response<Body>, ApiError> {
    let types: Vec<&ResourceType> = store
        .types()
        .iter()
        .filter(|t| t.group == group && t.version == version)
        .collect();
    if types.is_empty() {
        return Err(ApiError::no_route(path));
    }
    let resources: Vec<Value> = types.iter().flat_map(|t| t.api_resources()).collect();
    let gv = types[0].api_version();
    Ok(json_response(
        200,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    ))
}
