//! `trust-bundle inspect` and `trust-bundle verify`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use rustls_pki_types::{CertificateDer, UnixTime};
use trust_bundle::bundle::BundleMap;
use trust_bundle::cert::ParsedCert;
use trust_bundle::inspect::{CertInfo, Severity};
use trust_bundle::spiffe::SpiffeId;
use trust_bundle::verify::{TrustStore, Usage, human_secs};

use super::files;
use super::{Output, now};

#[derive(Debug, clap::Args)]
pub(crate) struct InspectArgs {
    /// PEM certificate files, SPIFFE bundles or bundle maps.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Debug, clap::Args)]
pub(crate) struct VerifyArgs {
    /// The bundle to trust: a bundle map, a SPIFFE bundle or PEM roots.
    #[arg(long)]
    bundle: PathBuf,
    /// PEM chain: the leaf first, then its intermediates (a chain.pem).
    #[arg(long)]
    chain: PathBuf,
    /// Also require this exact SPIFFE ID.
    #[arg(long)]
    spiffe_id: Option<String>,
    /// Which extended key usage to require.
    #[arg(long, value_enum, default_value_t = UsageArg::Client)]
    usage: UsageArg,
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum UsageArg {
    Client,
    Server,
}

#[derive(serde::Serialize)]
struct Inspected {
    file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    trust_domain: Option<String>,
    #[serde(flatten)]
    info: CertInfo,
}

pub(crate) fn inspect(a: InspectArgs) -> anyhow::Result<()> {
    let now = now().unix_timestamp();
    let mut all = Vec::new();
    for path in &a.files {
        for (td, der) in certs_in(path)? {
            let parsed = ParsedCert::parse(&der).with_context(|| format!("{}", path.display()))?;
            all.push(Inspected {
                file: path.display().to_string(),
                trust_domain: td,
                info: CertInfo::new(&parsed, now),
            });
        }
    }
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&all)?),
        Output::Table => {
            for (i, item) in all.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print_table(item);
            }
        }
    }
    Ok(())
}

/// Certificates in a file, with the trust domain when the file is a bundle.
fn certs_in(
    path: &std::path::Path,
) -> anyhow::Result<Vec<(Option<String>, CertificateDer<'static>)>> {
    let bytes = files::read(path)?;
    if String::from_utf8_lossy(&bytes)
        .trim_start()
        .starts_with('{')
    {
        let map: BundleMap = files::read_bundle_map(path, None)?;
        return Ok(map
            .iter()
            .flat_map(|(td, b)| {
                b.roots()
                    .iter()
                    .map(move |r| (Some(td.to_string()), r.clone()))
            })
            .collect());
    }
    Ok(files::read_certs(path)?
        .into_iter()
        .map(|c| (None, c))
        .collect())
}

fn print_table(item: &Inspected) {
    let i = &item.info;
    let row = |k: &str, v: &str| println!("{k:<18} {v}");
    row("file", &item.file);
    if let Some(td) = &item.trust_domain {
        row("bundle for", td);
    }
    row("role", &format!("{:?}", i.role).to_lowercase());
    row("subject", &i.subject);
    row("issuer", &i.issuer);
    row("serial", &i.serial);
    row("spiffe id", i.spiffe_id.as_deref().unwrap_or("-"));
    if let Some(c) = &i.cluster {
        row("cluster", c);
    }
    if !i.dns_sans.is_empty() {
        row("dns names", &i.dns_sans.join(", "));
    }
    row("not before", &i.not_before);
    let left = if i.seconds_left >= 0 {
        format!("{} ({} left)", i.not_after, human_secs(i.seconds_left))
    } else {
        format!(
            "{} (EXPIRED {} ago)",
            i.not_after,
            human_secs(-i.seconds_left)
        )
    };
    row("not after", &left);
    row("key", &i.key_algorithm);
    row(
        "key usage",
        &format!(
            "{}{}",
            i.key_usage.join(", "),
            if i.key_usage_critical {
                " (critical)"
            } else {
                ""
            }
        ),
    );
    if !i.ext_key_usage.is_empty() {
        row("ext key usage", &i.ext_key_usage.join(", "));
    }
    row(
        "ca",
        &match (i.is_ca, i.path_len) {
            (true, Some(n)) => format!("yes, pathLen {n}"),
            (true, None) => "yes".to_owned(),
            (false, _) => "no".to_owned(),
        },
    );
    row("subject key id", i.subject_key_id.as_deref().unwrap_or("-"));
    row(
        "authority key id",
        i.authority_key_id.as_deref().unwrap_or("-"),
    );
    row("sha256", &i.sha256_fingerprint);
    if i.findings.is_empty() {
        row("lint", "ok");
    }
    for f in &i.findings {
        let level = match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        row("lint", &format!("{level}: {}", f.message));
    }
}

pub(crate) fn verify(a: VerifyArgs) -> anyhow::Result<()> {
    let chain = files::read_certs(&a.chain)?;
    let leaf = ParsedCert::parse(&chain[0]).with_context(|| format!("{}", a.chain.display()))?;
    // A single-trust-domain bundle file defaults to the leaf's trust domain.
    let leaf_td = trust_bundle::verify::leaf_identity(&leaf)
        .ok()
        .map(|id| id.trust_domain());
    let map = files::read_bundle_map(&a.bundle, leaf_td.as_ref())?;
    let store = TrustStore::new(&map)?;
    let usage = match a.usage {
        UsageArg::Client => Usage::Client,
        UsageArg::Server => Usage::Server,
    };
    let peer = store
        .verify(&chain, UnixTime::now(), usage)
        .with_context(|| {
            format!(
                "{} does not verify against {}",
                a.chain.display(),
                a.bundle.display()
            )
        })?;
    if let Some(expected) = &a.spiffe_id {
        let expected = SpiffeId::parse(expected).context("--spiffe-id")?;
        if expected != peer.spiffe_id {
            bail!(
                "{}: the chain is {}, not {expected}",
                a.chain.display(),
                peer.spiffe_id
            );
        }
    }
    let left = peer.not_after - now().unix_timestamp();
    match a.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "ok": true,
                "spiffe_id": peer.spiffe_id.to_string(),
                "trust_domain": peer.spiffe_id.trust_domain_str(),
                "cluster": peer.cluster,
                "seconds_left": left,
                "root_sha256": peer.root_fingerprint,
            })
        ),
        Output::Table => println!(
            "OK {} (trust domain {}{}), expires in {}, root sha256 {}",
            peer.spiffe_id,
            peer.spiffe_id.trust_domain_str(),
            peer.cluster
                .as_deref()
                .map(|c| format!(", cluster {c}"))
                .unwrap_or_default(),
            human_secs(left),
            peer.root_fingerprint
        ),
    }
    Ok(())
}
