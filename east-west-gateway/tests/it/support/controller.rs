//! A fake federation controller: a real tonic `GatewayDiscovery` server on a Unix socket. Every
//! Watch stream sends the latest config pushed with [`Controller::send`], then each new one.
//! Dropping it unlinks the socket and ends every stream, as a controller crash would.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::mpsc;

use east_west_gateway::api::gateway_discovery_server::{GatewayDiscovery, GatewayDiscoveryServer};
use east_west_gateway::api::{GatewayConfig, GatewayReport, ReportAck, WatchRequest};
use tokio::sync::watch;
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::{Request, Response, Status};

use super::{PATIENCE, rt};

type ConfigStream = Pin<Box<dyn Stream<Item = Result<GatewayConfig, Status>> + Send>>;

/// A running fake controller.
pub(crate) struct Controller {
    socket: PathBuf,
    configs: watch::Sender<Option<GatewayConfig>>,
    stop: watch::Sender<bool>,
    requests: mpsc::Receiver<WatchRequest>,
    reports: watch::Receiver<Option<GatewayReport>>,
}

struct Service {
    reports: watch::Sender<Option<GatewayReport>>,
    configs: watch::Receiver<Option<GatewayConfig>>,
    stop: watch::Receiver<bool>,
    requests: mpsc::Sender<WatchRequest>,
}

impl Controller {
    /// Serves on `socket` (which must not exist).
    pub(crate) fn start(socket: &Path) -> Self {
        let (configs, configs_rx) = watch::channel(None);
        let (stop, stop_rx) = watch::channel(false);
        let (requests_tx, requests) = mpsc::channel();
        let (reports_tx, reports) = watch::channel(None);
        let listener = {
            let _guard = rt().enter();
            tokio::net::UnixListener::bind(socket).expect("bind controller socket")
        };
        let service = Service {
            reports: reports_tx,
            configs: configs_rx,
            stop: stop_rx.clone(),
            requests: requests_tx,
        };
        let mut shutdown = stop_rx;
        rt().spawn(async move {
            let result = tonic::transport::Server::builder()
                .add_service(GatewayDiscoveryServer::new(service))
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
                    let _ = shutdown.wait_for(|stop| *stop).await;
                })
                .await;
            if let Err(error) = result {
                eprintln!("fake controller: {error}");
            }
        });
        Self {
            socket: socket.to_owned(),
            configs,
            stop,
            requests,
            reports,
        }
    }

    /// The first report (the latest one received, then each new one) that satisfies `done`.
    pub(crate) fn report_where(&self, done: impl Fn(&GatewayReport) -> bool) -> GatewayReport {
        let mut reports = self.reports.clone();
        let found = rt().block_on(async move {
            let wait = reports.wait_for(|r| r.as_ref().is_some_and(&done));
            match tokio::time::timeout(PATIENCE, wait).await {
                Ok(Ok(report)) => report.clone(),
                _ => None,
            }
        });
        found.unwrap_or_else(|| {
            panic!(
                "no matching report from the gateway within {PATIENCE:?}; last: {:?}",
                self.reports.borrow()
            )
        })
    }

    /// Sends `config` on every stream, now and to gateways that connect later.
    pub(crate) fn send(&self, config: GatewayConfig) {
        self.configs.send_replace(Some(config));
    }

    /// The next Watch request a gateway made.
    pub(crate) fn request(&self) -> WatchRequest {
        self.requests
            .recv_timeout(PATIENCE)
            .expect("a gateway called Watch in time")
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        // Unlink first, so the gateway's next attempt cannot reach this server again.
        let _ = std::fs::remove_file(&self.socket);
        self.stop.send_replace(true);
    }
}

#[tonic::async_trait]
impl GatewayDiscovery for Service {
    type WatchStream = ConfigStream;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let _ = self.requests.send(request.into_inner());
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let (mut configs, mut stop) = (self.configs.clone(), self.stop.clone());
        configs.mark_changed();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.wait_for(|stop| *stop) => return,
                    changed = configs.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                }
                let latest = configs.borrow_and_update().clone();
                if let Some(config) = latest
                    && tx.send(Ok(config)).await.is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn report(&self, request: Request<GatewayReport>) -> Result<Response<ReportAck>, Status> {
        self.reports.send_replace(Some(request.into_inner()));
        Ok(Response::new(ReportAck {}))
    }
}
