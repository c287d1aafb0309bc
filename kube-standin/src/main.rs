//! `kube-standin`: an in-repo Kubernetes API server for tests and demos (see the library docs).
//! Prints one `ready` event line on stdout; logs on stderr (`KUBE_STANDIN_LOG`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use kube_standin::{Options, StandIn};

/// An in-repo Kubernetes API server: discovery, list/watch, CRUD, server-side apply, CRDs.
#[derive(Debug, Parser)]
#[command(name = "kube-standin", version)]
struct Args {
    /// Address to listen on (port 0 picks one)
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    listen: SocketAddr,
    /// Where to write the kubeconfig (CA and bearer token; written mode 0600)
    #[arg(long, value_name = "FILE")]
    kubeconfig_out: PathBuf,
    /// Watch history length in events; older resourceVersions get 410 Gone
    #[arg(long, default_value_t = 1000)]
    history: usize,
    /// Interval between watch bookmarks (e.g. 5s)
    #[arg(long, default_value = "5s", value_parser = humantime_secs)]
    bookmark_interval: Duration,
}

fn humantime_secs(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit (ms, s)"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        _ => Err(format!("{s:?}: the unit must be ms or s")),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KUBE_STANDIN_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let standin = StandIn::start(Options {
        listen: args.listen,
        history: args.history,
        bookmark_interval: args.bookmark_interval,
    })
    .await?;
    standin
        .write_kubeconfig(&args.kubeconfig_out)
        .context("cannot write the kubeconfig")?;
    println!(
        "{}",
        serde_json::json!({
            "event": "ready",
            "address": standin.addr().to_string(),
            "kubeconfig": args.kubeconfig_out.display().to_string(),
        })
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    println!("{}", serde_json::json!({"event": "stopped"}));
    Ok(())
}
