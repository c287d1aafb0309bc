//! `trust-bundle bundle build|merge|convert`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Subcommand, ValueEnum};
use trust_bundle::bundle::{BundleMap, X509Bundle};
use trust_bundle::spiffe::TrustDomain;

use super::files::{self, Mode};
use super::{parse_duration, parse_trust_domain};

#[derive(Debug, Subcommand)]
pub(crate) enum BundleAction {
    /// Build a bundle for one trust domain from root certificates.
    Build {
        #[arg(long, value_parser = parse_trust_domain)]
        trust_domain: TrustDomain,
        /// PEM file(s) with root certificates (repeatable).
        #[arg(long = "root", required = true)]
        roots: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Map)]
        format: Format,
        /// spiffe_refresh_hint: how often consumers should re-fetch.
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        refresh_hint: Duration,
        /// Accept intermediates that carry no SPIFFE trust-domain ID under these roots (for
        /// foreign meshes whose CAs lack one); a bound intermediate must still match.
        #[arg(long)]
        allow_unbound_intermediates: bool,
        #[arg(long)]
        force: bool,
    },
    /// Merge bundles: trust domain by trust domain, de-duplicated by public key.
    Merge {
        /// Input files: bundle maps, SPIFFE bundles or PEM.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Trust domain for inputs that do not name one (SPIFFE bundles, PEM).
        #[arg(long, value_parser = parse_trust_domain)]
        trust_domain: Option<TrustDomain>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Map)]
        format: Format,
        #[arg(long)]
        force: bool,
    },
    /// Convert a bundle between formats.
    Convert {
        input: PathBuf,
        #[arg(long, value_parser = parse_trust_domain)]
        trust_domain: Option<TrustDomain>,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum)]
        format: Format,
        #[arg(long)]
        force: bool,
    },
}

/// Bundle file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// SPIFFE bundle map: {"trust_domains": {TD: bundle}}.
    Map,
    /// SPIFFE bundle (JWK set) of a single trust domain.
    Spiffe,
    /// PEM roots of a single trust domain.
    Pem,
}

pub(crate) fn run(action: BundleAction) -> anyhow::Result<()> {
    match action {
        BundleAction::Build {
            trust_domain,
            roots,
            out,
            format,
            refresh_hint,
            allow_unbound_intermediates,
            force,
        } => {
            let mut certs = Vec::new();
            for path in &roots {
                certs.extend(files::read_certs(path)?);
            }
            let mut bundle = X509Bundle::new(certs).context("building the bundle")?;
            bundle.refresh_hint = Some(refresh_hint.as_secs());
            if allow_unbound_intermediates {
                bundle.binding = trust_bundle::bundle::BindingPolicy::IfPresent;
            }
            let mut map = BundleMap::new();
            map.insert(trust_domain, bundle);
            write(&out, &map, format, force)
        }
        BundleAction::Merge {
            inputs,
            trust_domain,
            out,
            format,
            force,
        } => {
            let maps = inputs
                .iter()
                .map(|p| files::read_bundle_map(p, trust_domain.as_ref()))
                .collect::<anyhow::Result<Vec<_>>>()?;
            write(&out, &BundleMap::merge(&maps), format, force)
        }
        BundleAction::Convert {
            input,
            trust_domain,
            out,
            format,
            force,
        } => {
            let map = files::read_bundle_map(&input, trust_domain.as_ref())?;
            write(&out, &map, format, force)
        }
    }
}

fn write(
    out: &std::path::Path,
    map: &BundleMap,
    format: Format,
    force: bool,
) -> anyhow::Result<()> {
    let text = match format {
        Format::Map => map.to_json(),
        Format::Spiffe | Format::Pem => {
            let mut iter = map.iter();
            let (Some((_, bundle)), None) = (iter.next(), iter.next()) else {
                bail!(
                    "--format {format:?} holds one trust domain, but there are {}; use --format map",
                    map.len()
                );
            };
            if format == Format::Spiffe {
                bundle.to_spiffe_json()
            } else {
                bundle.to_pem()
            }
        }
    };
    files::write_file(out, text.into_bytes(), Mode::Public, force)?;
    for (td, bundle) in map.iter() {
        println!(
            "{}: trust domain {td}, {} root(s), sequence {}",
            out.display(),
            bundle.roots().len(),
            bundle.sequence
        );
    }
    Ok(())
}
