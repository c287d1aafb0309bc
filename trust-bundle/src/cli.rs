//! Command-line surface. Each subcommand parses its flags (clap), calls the library, and does
//! the file IO through [`files`].

mod bundle;
mod files;
mod issue;
mod show;

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use trust_bundle::ca::KeyAlgorithm;
use trust_bundle::spiffe::TrustDomain;

#[derive(Debug, Parser)]
#[command(
    name = "trust-bundle",
    version,
    about = "Roots, per-cluster intermediates, SPIFFE identities and bundles for Isthmus",
    long_about = None
)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a root CA for a trust domain.
    Root {
        #[command(subcommand)]
        action: RootAction,
    },
    /// Create a per-cluster intermediate CA.
    Intermediate {
        #[command(subcommand)]
        action: IntermediateAction,
    },
    /// Issue a leaf identity (an X509-SVID).
    Leaf {
        #[command(subcommand)]
        action: LeafAction,
    },
    /// Build, merge and convert bundles (SPIFFE JWKS, bundle map, PEM).
    Bundle {
        #[command(subcommand)]
        action: bundle::BundleAction,
    },
    /// Show certificates: role, names, validity, key usage, fingerprints and lint findings.
    Inspect(show::InspectArgs),
    /// Verify a chain against a bundle; exit 0, or explain exactly why not.
    Verify(show::VerifyArgs),
    /// Staged root rotation: prepare, activate, retire.
    Rotate {
        #[command(subcommand)]
        action: issue::RotateAction,
    },
    /// Export CA material in another mesh's layout.
    Export {
        #[command(subcommand)]
        target: issue::ExportTarget,
    },
}

#[derive(Debug, Subcommand)]
enum RootAction {
    /// Create a self-signed root CA.
    Create(issue::RootCreateArgs),
}

#[derive(Debug, Subcommand)]
enum IntermediateAction {
    /// Create an intermediate for one cluster, signed by a root.
    Create(issue::IntermediateCreateArgs),
}

#[derive(Debug, Subcommand)]
enum LeafAction {
    /// Issue a leaf identity signed by a CA directory.
    Issue(issue::LeafIssueArgs),
}

/// Output format for commands that report.
#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub(crate) enum Output {
    #[default]
    Table,
    Json,
}

/// Flags every issuing command shares.
#[derive(Debug, clap::Args)]
pub(crate) struct KeyArgs {
    /// Key algorithm of the new key.
    #[arg(long, default_value = "ecdsa-p256", value_parser = parse_key_algorithm)]
    key_type: KeyAlgorithm,
    /// Overwrite existing files in the output directory.
    #[arg(long)]
    force: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Root {
            action: RootAction::Create(a),
        } => issue::root_create(a),
        Command::Intermediate {
            action: IntermediateAction::Create(a),
        } => issue::intermediate_create(a),
        Command::Leaf {
            action: LeafAction::Issue(a),
        } => issue::leaf_issue(a),
        Command::Bundle { action } => bundle::run(action),
        Command::Inspect(a) => show::inspect(a),
        Command::Verify(a) => show::verify(a),
        Command::Rotate { action } => issue::rotate(action),
        Command::Export { target } => issue::export(target),
    }
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 10y, 30d, 24h, 90m)"))
}

pub(crate) fn parse_trust_domain(s: &str) -> Result<TrustDomain, String> {
    TrustDomain::parse(s).map_err(|e| e.to_string())
}

fn parse_key_algorithm(s: &str) -> Result<KeyAlgorithm, String> {
    s.parse()
}

pub(crate) fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}
