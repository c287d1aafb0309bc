//! The command line: `controller` runs one; every other verb calls a running controller's local
//! API (`--controller`, or `ISTHMUS_CONTROLLER`) and prints a table, JSON or YAML.
//!
//! Exit codes: 0 success, 1 a refused or failed request, 2 usage (clap), 3 the controller could
//! not be reached, 64 a bad config file.

pub mod controller;
#[cfg(feature = "kubernetes")]
mod leader;
mod output;
mod status;
mod wait;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};

use crate::api::control as pb;
use crate::api::control::control_client::ControlClient;
use crate::transport;

/// Env var naming the controller's local API socket.
pub const CONTROLLER_ENV: &str = "ISTHMUS_CONTROLLER";

/// Exit code when the controller cannot be reached.
pub const EXIT_UNREACHABLE: u8 = 3;
/// Exit code for an invalid controller config.
pub const EXIT_CONFIG: u8 = 64;
/// Exit code of a controller that lost its leader-election Lease (its pod restarts as a standby).
pub const EXIT_LEADERSHIP_LOST: u8 = 75;

/// Isthmus federation: link clusters, export services, see what is imported, diagnose.
#[derive(Debug, Parser)]
#[command(name = "federation-ctl", version)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
    /// The controller's local API socket (`api.socket` in its config): `unix:/path` or a path
    #[arg(long, global = true, value_name = "ADDR", env = CONTROLLER_ENV, hide_env_values = true)]
    pub controller: Option<String>,
    /// Output format
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run this cluster's controller
    Controller {
        /// Controller config (YAML)
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Make or redeem peering tokens
    #[command(subcommand)]
    Link(LinkCommand),
    /// Remove the link with PEER on both sides: its imports, routes and bundle go
    Unlink {
        /// The peer cluster's name
        peer: String,
    },
    /// List links with their state, last heartbeat, trust domain and counts
    Links,
    /// Export NAME.NS to every linked cluster, or to the ones named with --to
    Export {
        /// The service, NAME.NAMESPACE
        service: String,
        /// Peers that may import it (comma-separated); all linked clusters when omitted
        #[arg(long, value_delimiter = ',', value_name = "PEER,..")]
        to: Vec<String>,
    },
    /// Stop exporting NAME.NS (an export made with `export`)
    Unexport {
        /// The service, NAME.NAMESPACE
        service: String,
    },
    /// List exports (to whom) and imports (from which clusters, local listener)
    Services,
    /// One screen for this cluster: identity, gateways, links, data-path RTT, counts, warnings
    Status,
    /// Diagnose the cluster and its links; every finding has a fix, errors exit 1
    #[command(
        long_about = "Diagnose the cluster and its links; every finding has a fix, errors exit 1.\n\n\
        Checks: the config, cluster intermediate and root expiry (warns within 30 and 7 days), the \
        state directory's permissions, the registry file, host names resolving, unique cluster \
        names, trust with each linked cluster, each peer gateway reachable (TCP and mutual TLS), \
        clock skew against peers, and that a gateway is connected.\n\n\
        With --config FILE the local checks run even when the controller is not running (before \
        its first start, or when it refuses to start)."
    )]
    Check {
        /// The controller's config, for the checks that need no running controller
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Trust: the bundles of linked clusters beside ours
    #[command(subcommand)]
    Trust(TrustCommand),
    /// Where a call to an imported NAME.NS goes, and why
    Trace {
        /// The imported service, NAME.NAMESPACE
        service: String,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Print the CustomResourceDefinitions (ServiceExport, ServiceImport, ClusterLink) as a
    /// YAML stream, for `kubectl apply -f -`
    Crds,
}

#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// For each linked cluster, the bundle it serves (trust domain, sequence, roots, expiry)
    /// beside ours, differences marked
    Status,
}

#[derive(Debug, Subcommand)]
pub enum LinkCommand {
    /// Print a single-use, expiring token for another cluster's `link join`
    Token {
        /// How long the token stays valid (e.g. 10m, 1h); the controller's token_ttl by default
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<std::time::Duration>,
    },
    /// Link with the cluster that issued TOKEN
    Join {
        /// The token printed by `federation-ctl link token` on the other cluster
        token: String,
        /// How long to wait for the link to be healthy (connected, heartbeats flowing)
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
        timeout: std::time::Duration,
        /// Return once the link is made, without waiting for it to be healthy
        #[arg(long)]
        no_wait: bool,
    },
}

/// Unix ms as RFC 3339 (UTC), to the second.
pub fn format_time(ms: i64) -> String {
    output::time(ms)
}

/// A failure that maps to a specific exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

/// The process exit code for `error`.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    error.downcast_ref::<Exit>().map_or(1, |e| e.code)
}

fn socket_path(addr: &str) -> &Path {
    Path::new(addr.strip_prefix("unix:").unwrap_or(addr))
}

async fn connect(addr: Option<&str>) -> anyhow::Result<ControlClient<tonic::transport::Channel>> {
    let Some(addr) = addr else {
        return Err(Exit {
            code: EXIT_UNREACHABLE,
            message: format!(
                "no controller given: pass --controller PATH or set {CONTROLLER_ENV} to the controller's API socket (`api.socket` in its config)"
            ),
        }
        .into());
    };
    let channel = transport::unix_channel(socket_path(addr))
        .await
        .map_err(|e| Exit {
            code: EXIT_UNREACHABLE,
            message: format!("cannot reach the controller: {e}; is `federation-ctl controller` running, and is {addr} its api.socket?"),
        })?;
    Ok(ControlClient::new(channel))
}

/// A refused request, worded for the operator.
fn refused(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}

/// `crds`: the CRDs on stdout; needs no controller.
#[cfg(feature = "kubernetes")]
pub fn print_crds() -> anyhow::Result<()> {
    let yaml = crate::kube::crds_yaml().context("cannot render the CRDs as YAML")?;
    print!("{yaml}");
    Ok(())
}

/// `crds` in a build without the `kubernetes` feature.
#[cfg(not(feature = "kubernetes"))]
pub fn print_crds() -> anyhow::Result<()> {
    anyhow::bail!("this federation-ctl was built without the `kubernetes` feature; rebuild with it")
}

/// Runs one operator verb against the controller.
pub async fn run_verb(command: Command, addr: Option<&str>, out: Output) -> anyhow::Result<()> {
    match &command {
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            clap_complete::generate(
                *shell,
                &mut Args::command(),
                "federation-ctl",
                &mut std::io::stdout(),
            );
            return Ok(());
        }
        Command::Check {
            config: Some(config),
        } => {
            // The local checks stand in when the controller cannot answer.
            if let Err(unreachable) = connect(addr).await {
                let mut findings: Vec<pb::Finding> =
                    crate::diagnose::local::run(config, crate::controller::now_ms())
                        .await
                        .iter()
                        .map(|f| f.to_pb())
                        .collect();
                findings.push(
                    crate::diagnose::Finding::warning(
                        "controller",
                        addr.unwrap_or("(none given)"),
                        format!("{unreachable}; the checks of links, peers, clocks and gateways were skipped"),
                        "start `federation-ctl controller --config FILE` and check again",
                    )
                    .to_pb(),
                );
                return status::check(&findings, out);
            }
        }
        _ => {}
    }
    let mut client = connect(addr).await?;
    match command {
        Command::Completions { .. } => Ok(()),
        Command::Status => {
            let resp = client
                .get_status(pb::GetStatusRequest {})
                .await
                .map_err(refused)?
                .into_inner();
            status::status(&resp, out)
        }
        Command::Check { .. } => {
            let spinner = wait::Spinner::start(
                "checking (peer gateways are dialed)",
                wait::spinner_enabled(out),
            );
            let resp = client.check(pb::CheckRequest {}).await.map_err(refused);
            spinner.finish().await;
            status::check(&resp?.into_inner().findings, out)
        }
        Command::Trust(TrustCommand::Status) => {
            let resp = client
                .trust_status(pb::TrustStatusRequest {})
                .await
                .map_err(refused)?
                .into_inner();
            status::trust(&resp, out)
        }
        Command::Trace { service } => {
            let resp = client
                .trace(pb::TraceRequest { service })
                .await
                .map_err(refused)?
                .into_inner();
            status::trace(&resp, out)
        }
        Command::Controller { .. } | Command::Crds => bail!("`{command:?}` is not a verb"),
        Command::Link(LinkCommand::Token { ttl }) => {
            let resp = client
                .create_token(pb::CreateTokenRequest {
                    ttl_seconds: ttl.map_or(0, |d| d.as_secs().max(1)),
                })
                .await
                .map_err(refused)?
                .into_inner();
            output::token(&resp, out)
        }
        Command::Link(LinkCommand::Join {
            token,
            timeout,
            no_wait,
        }) => {
            let resp = client
                .join_link(pb::JoinLinkRequest { token })
                .await
                .map_err(refused)
                .context("link join failed")?
                .into_inner();
            let mut link = resp.link.context("the controller returned no link")?;
            if !no_wait {
                link = wait::link_healthy(&mut client, &link.peer, timeout, out).await?;
            }
            output::links(&[link], out)
        }
        Command::Unlink { peer } => {
            let resp = client
                .unlink(pb::UnlinkRequest { peer: peer.clone() })
                .await
                .map_err(refused)?
                .into_inner();
            output::unlinked(&peer, &resp, out)
        }
        Command::Links => {
            let resp = client
                .list_links(pb::ListLinksRequest {})
                .await
                .map_err(refused)?
                .into_inner();
            output::links(&resp.links, out)
        }
        Command::Export { service, to } => {
            client
                .export(pb::ExportRequest {
                    service: service.clone(),
                    to: to.clone(),
                })
                .await
                .map_err(refused)?;
            let whom = if to.is_empty() {
                "every linked cluster".to_owned()
            } else {
                to.join(", ")
            };
            output::done(&format!("exported {service} to {whom}"), out)
        }
        Command::Unexport { service } => {
            client
                .unexport(pb::UnexportRequest {
                    service: service.clone(),
                })
                .await
                .map_err(refused)?;
            output::done(&format!("unexported {service}"), out)
        }
        Command::Services => {
            let resp = client
                .list_services(pb::ListServicesRequest {})
                .await
                .map_err(refused)?
                .into_inner();
            output::services(&resp, out)
        }
    }
}
