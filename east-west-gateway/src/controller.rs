//! Controller mode (`--controller ADDR`): routes, egress listeners, identity and bundle map come
//! from the federation controller's `GatewayDiscovery.Watch` stream over its local Unix socket.
//! Each `GatewayConfig` is converted into the config file's raw shape ([`convert`]), merged
//! into the bootstrap file and checked by the same validator, then applied through the same
//! path as a file reload ([`Applier`]), TLS material coming from memory. A rejected config keeps
//! the last good one.
//!
//! When the controller is unreachable or the stream breaks, the gateway keeps serving what it
//! has and reconnects with capped exponential backoff ([`Backoff`]), telling the controller the
//! version it runs.
//!
//! Stdout events: `{"event":"controller","connected":true|false,"address":..}` on each change
//! of connection state, and `{"event":"config","result":"applied","version":N,"generation":G,
//! "egress":{..},"egress_errors":{..}}` or `{"event":"config","result":"rejected","version":N,
//! "error":".."}` for each config received.

mod backoff;
mod convert;
mod report;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

pub use self::backoff::Backoff;
pub use self::report::REPORT_INTERVAL;
use crate::api::gateway_discovery_client::GatewayDiscoveryClient;
use crate::api::{GatewayConfig, WatchRequest};
use crate::apply::{self, Applier};
use crate::config::{self, Bootstrap};
use crate::metrics::ResultLabel;
use crate::telemetry;

/// Env var holding the controller address (the `--controller` flag wins).
pub const ADDRESS_ENV: &str = "EWG_CONTROLLER";
/// First reconnect delay.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A controller address that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("controller address {address:?}: {problem}; use unix:/path/to.sock or a socket path")]
pub struct AddressError {
    address: String,
    problem: &'static str,
}

/// Where the controller is and who we are to it.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The address as given (for logs, events and the config dump).
    pub address: String,
    /// The Unix socket it names.
    pub socket: PathBuf,
    /// This gateway's name in the controller's status.
    pub name: String,
}

impl Settings {
    /// `address` is `unix:/path`, `unix:///path` or a plain socket path.
    pub fn new(address: &str, name: String) -> Result<Self, AddressError> {
        let error = |problem| AddressError {
            address: address.to_owned(),
            problem,
        };
        let path = match address.split_once(':') {
            Some(("unix", rest)) => rest.strip_prefix("//").unwrap_or(rest),
            // A scheme (no slash before the colon) other than unix.
            Some((scheme, _)) if !scheme.contains('/') => {
                return Err(error("only Unix sockets are supported"));
            }
            _ => address,
        };
        if path.is_empty() {
            return Err(error("no socket path"));
        }
        Ok(Self {
            address: address.to_owned(),
            socket: PathBuf::from(path),
            name,
        })
    }
}

/// The controller connection as `/config_dump` and `/metrics` show it.
#[derive(Debug)]
pub struct Status {
    address: String,
    name: String,
    connected: AtomicBool,
    version: AtomicU64,
}

impl Status {
    /// Not connected, no config yet.
    pub fn new(settings: &Settings) -> Self {
        Self {
            address: settings.address.clone(),
            name: settings.name.clone(),
            connected: AtomicBool::new(false),
            version: AtomicU64::new(0),
        }
    }

    /// The version of the last config applied (0: none).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// For `/config_dump`.
    pub fn dump(&self) -> Value {
        json!({
            "address": self.address,
            "name": self.name,
            "connected": self.connected.load(Ordering::Relaxed),
            "version": self.version(),
        })
    }
}

/// Why a session with the controller ended.
#[derive(Debug, thiserror::Error)]
enum Disconnect {
    #[error("cannot connect: {}", chain(.0))]
    Connect(tonic::transport::Error),
    #[error("Watch refused: {0}")]
    Watch(tonic::Status),
    #[error("stream broken: {0}")]
    Stream(tonic::Status),
    #[error("stream ended by the controller")]
    Ended,
}

/// Why a controller config was not applied.
#[derive(Debug, thiserror::Error)]
enum Rejected {
    #[error(transparent)]
    Config(#[from] config::Error),
    #[error(transparent)]
    Apply(#[from] apply::Error),
}

/// The controller client: connects, applies configs, reconnects; runs until aborted.
pub(crate) struct Client {
    pub(crate) settings: Settings,
    pub(crate) bootstrap: Bootstrap,
    pub(crate) applier: Applier,
    pub(crate) status: Arc<Status>,
    /// The bound ingress address, for the report.
    pub(crate) ingress: std::net::SocketAddr,
    /// Signalled after each applied config, so the next report follows soon.
    pub(crate) applied: Arc<tokio::sync::Notify>,
}

impl Client {
    pub(crate) async fn run(mut self) {
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        let mut attempt: u64 = 0;
        loop {
            let connected_before = self.status.connected.load(Ordering::Relaxed);
            let reason = self.session(&mut backoff, &mut attempt).await;
            self.set_connected(false, Some(&reason));
            attempt += 1;
            let delay = backoff.next_delay();
            let retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
            if connected_before || matches!(reason, Disconnect::Ended | Disconnect::Stream(_)) {
                tracing::warn!(controller = %self.settings.address, attempt, retry_in_ms, error = %reason, "controller stream lost; keeping the config in force");
            } else {
                tracing::warn!(controller = %self.settings.address, attempt, retry_in_ms, error = %reason, "controller unreachable; keeping the config in force");
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// One connection: Watch, then apply each config until the stream ends.
    async fn session(&mut self, backoff: &mut Backoff, attempt: &mut u64) -> Disconnect {
        let channel = match connect(self.settings.socket.clone()).await {
            Ok(channel) => channel,
            Err(error) => return Disconnect::Connect(error),
        };
        let request = WatchRequest {
            gateway: self.settings.name.clone(),
            have_version: self.status.version(),
        };
        let mut stream = match GatewayDiscoveryClient::new(channel.clone())
            .watch(request)
            .await
        {
            Ok(response) => response.into_inner(),
            Err(status) => return Disconnect::Watch(status),
        };
        self.set_connected(true, None);
        backoff.reset();
        *attempt = 0;
        // Reports live as long as this session's stream.
        let reporter = AbortOnDrop(tokio::spawn(report::run(
            channel,
            self.settings.name.clone(),
            self.ingress,
            self.applier.shared().clone(),
            self.applied.clone(),
        )));
        let reason = loop {
            match stream.message().await {
                Ok(Some(message)) => self.apply(message).await,
                Ok(None) => break Disconnect::Ended,
                Err(status) => break Disconnect::Stream(status),
            }
        };
        drop(reporter);
        reason
    }

    async fn apply(&mut self, message: GatewayConfig) {
        let version = message.version;
        let (dynamic, inline) = convert::dynamic(message);
        let result = match self.bootstrap.merge(dynamic) {
            Ok(config) => self
                .applier
                .apply(config, inline.as_ref())
                .await
                .map_err(Rejected::from),
            Err(error) => Err(error.into()),
        };
        let metrics = &self.applier.shared().metrics;
        let mut event = Map::new();
        event.insert("event".into(), "config".into());
        match result {
            Ok(applied) => {
                self.status.version.store(version, Ordering::Relaxed);
                self.applied.notify_one();
                metrics
                    .controller_config_version
                    .set(i64::try_from(version).unwrap_or(i64::MAX));
                metrics
                    .controller_configs
                    .get_or_create(&ResultLabel { result: "applied" })
                    .inc();
                tracing::info!(
                    version,
                    generation = applied.generation,
                    egress_errors = applied.egress.failed.len(),
                    "controller config applied"
                );
                event.insert("result".into(), "applied".into());
                event.insert("version".into(), version.into());
                event.extend(applied.event_fields());
            }
            Err(error) => {
                metrics
                    .controller_configs
                    .get_or_create(&ResultLabel { result: "rejected" })
                    .inc();
                tracing::error!(version, %error, "controller config rejected; keeping the last good one");
                event.insert("result".into(), "rejected".into());
                event.insert("version".into(), version.into());
                event.insert("error".into(), error.to_string().into());
            }
        }
        telemetry::event(&event.into());
    }

    fn set_connected(&self, connected: bool, reason: Option<&Disconnect>) {
        let was = self.status.connected.swap(connected, Ordering::Relaxed);
        self.applier
            .shared()
            .metrics
            .controller_connected
            .set(i64::from(connected));
        if was == connected {
            return;
        }
        if connected {
            tracing::info!(controller = %self.settings.address, "controller connected");
        }
        let mut event = json!({
            "event": "controller",
            "connected": connected,
            "address": self.settings.address,
        });
        if let Some(reason) = reason {
            event["error"] = reason.to_string().into();
        }
        telemetry::event(&event);
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A gRPC channel over the Unix socket. The URI is required by tonic but never dialled.
async fn connect(socket: PathBuf) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { UnixStream::connect(socket).await.map(TokioIo::new) }
        }))
        .await
}

/// An error and its sources, one line (tonic's transport errors say little at the top).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let part = inner.to_string();
        // Some layers already print their source; say each thing once.
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests;
