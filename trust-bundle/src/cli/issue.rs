//! Issuing commands: root, intermediate and leaf creation, staged rotation, and exports.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use trust_bundle::bundle::{BundleMap, pem_cert};
use trust_bundle::ca::{
    self, Authority, Credential, DEFAULT_INTERMEDIATE_VALIDITY, IntermediateParams, LeafParams,
    RootParams,
};
use trust_bundle::cert::ParsedCert;
use trust_bundle::rotate::LedgerEntry;
use trust_bundle::spiffe::{SpiffeId, TrustDomain};

use super::files::{self, CERT, CHAIN, KEY, Mode, ROOT};
use super::{KeyArgs, now, parse_duration, parse_trust_domain};

#[derive(Debug, clap::Args)]
pub(crate) struct RootCreateArgs {
    /// The SPIFFE trust domain the root anchors, e.g. mesh.example.
    #[arg(long, value_parser = parse_trust_domain)]
    trust_domain: TrustDomain,
    /// Directory to write cert.pem and key.pem into.
    #[arg(long)]
    out: PathBuf,
    /// How long the root is valid.
    #[arg(long, default_value = "10y", value_parser = parse_duration)]
    validity: Duration,
    #[command(flatten)]
    key: KeyArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct IntermediateCreateArgs {
    /// The root CA directory that signs the intermediate.
    #[arg(long)]
    root: PathBuf,
    /// The cluster this intermediate serves (recorded in its subject).
    #[arg(long)]
    cluster: String,
    /// The one trust domain it may issue for; the root's by default.
    #[arg(long, value_parser = parse_trust_domain)]
    trust_domain: Option<TrustDomain>,
    /// Directory to write cert.pem, key.pem, chain.pem and root.pem into.
    #[arg(long)]
    out: PathBuf,
    /// How long the intermediate is valid; it may not outlive the root.
    #[arg(long, default_value = "30d", value_parser = parse_duration)]
    validity: Duration,
    #[command(flatten)]
    key: KeyArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct LeafIssueArgs {
    /// The CA directory that signs the leaf (usually a cluster intermediate).
    #[arg(long)]
    ca: PathBuf,
    /// The identity, e.g. spiffe://mesh.example/ns/default/sa/reviews.
    #[arg(long)]
    spiffe_id: String,
    /// Additional DNS names (repeatable).
    #[arg(long = "dns")]
    dns: Vec<String>,
    /// Directory to write cert.pem, key.pem, chain.pem and root.pem into.
    #[arg(long)]
    out: PathBuf,
    /// How long the leaf is valid; it may not outlive its issuer.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    validity: Duration,
    #[command(flatten)]
    key: KeyArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RotateAction {
    /// Create the new root and publish it in the bundle next to the old one.
    Prepare {
        /// The current root CA directory.
        #[arg(long)]
        root: PathBuf,
        /// Directory for the new root.
        #[arg(long)]
        out: PathBuf,
        /// Bundle file (map, SPIFFE or PEM) to add the new root to; rewritten in place.
        #[arg(long)]
        bundle: PathBuf,
        /// Also write cross-signed.pem: the new root signed by the old one, for peers that have
        /// not received the new bundle yet.
        #[arg(long)]
        cross_sign: bool,
        #[arg(long, default_value = "10y", value_parser = parse_duration)]
        validity: Duration,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Re-issue a cluster intermediate under the new root (replaces its files atomically).
    Activate {
        /// The new root CA directory.
        #[arg(long)]
        root: PathBuf,
        /// The intermediate CA directory to re-issue.
        #[arg(long)]
        intermediate: PathBuf,
        /// Validity of the re-issued intermediate.
        #[arg(long, default_value = "30d", value_parser = parse_duration)]
        validity: Duration,
    },
    /// Remove the old root from the bundle; refused while anything it issued is still valid.
    Retire {
        /// The old root CA directory.
        #[arg(long)]
        root: PathBuf,
        /// Bundle file to remove it from; rewritten in place.
        #[arg(long)]
        bundle: PathBuf,
        /// Retire even though certificates issued under the old root are still valid.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ExportTarget {
    /// Istio's plug-in CA `cacerts` layout: ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem.
    Istio {
        /// The intermediate CA directory to export.
        #[arg(long)]
        ca: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        force: bool,
    },
}

pub(crate) fn root_create(a: RootCreateArgs) -> anyhow::Result<()> {
    let root = Authority::create_root(
        &RootParams {
            trust_domain: a.trust_domain,
            validity: a.validity,
            algorithm: a.key.key_type,
        },
        now(),
    )?;
    write_credential(&a.out, &root.credential, false, a.key.force)?;
    report("root", &root.credential.cert, &a.out);
    Ok(())
}

pub(crate) fn intermediate_create(a: IntermediateCreateArgs) -> anyhow::Result<()> {
    let root = files::load_authority(&a.root)?;
    let params = IntermediateParams {
        cluster: a.cluster,
        trust_domain: a.trust_domain,
        validity: a.validity,
        algorithm: a.key.key_type,
    };
    let inter = root.create_intermediate(&params, now())?;
    record(&a.root, "intermediate", &inter.credential.cert)?;
    write_credential(&a.out, &inter.credential, true, a.key.force)?;
    report("intermediate", &inter.credential.cert, &a.out);
    Ok(())
}

pub(crate) fn leaf_issue(a: LeafIssueArgs) -> anyhow::Result<()> {
    let ca = files::load_authority(&a.ca)?;
    let spiffe_id = SpiffeId::parse_workload(&a.spiffe_id).context("--spiffe-id")?;
    let leaf = ca.issue_leaf(
        &LeafParams {
            spiffe_id,
            dns_names: a.dns,
            validity: a.validity,
            algorithm: a.key.key_type,
        },
        now(),
    )?;
    record(&a.ca, "leaf", &leaf.cert)?;
    write_credential(&a.out, &leaf, true, a.key.force)?;
    report("leaf", &leaf.cert, &a.out);
    Ok(())
}

pub(crate) fn rotate(action: RotateAction) -> anyhow::Result<()> {
    match action {
        RotateAction::Prepare {
            root,
            out,
            bundle,
            cross_sign,
            validity,
            key,
        } => {
            let old = files::load_authority(&root)?;
            if !old.is_root() {
                bail!("{} is not a root CA directory", root.display());
            }
            let new = Authority::create_root(
                &RootParams {
                    trust_domain: old.trust_domain().clone(),
                    validity,
                    algorithm: key.key_type,
                },
                now(),
            )?;
            let mut map = files::read_bundle_map(&bundle, Some(old.trust_domain()))?;
            let entry = map.get_mut(old.trust_domain()).with_context(|| {
                format!(
                    "{} has no bundle for trust domain {}",
                    bundle.display(),
                    old.trust_domain()
                )
            })?;
            entry.add_root(new.credential.cert.clone())?;
            let sequence = entry.sequence;
            let mut extra = Vec::new();
            if cross_sign {
                let cross = old.cross_sign(&new, now())?;
                record(&root, "cross-signed root", &cross)?;
                extra.push((
                    "cross-signed.pem",
                    pem_cert(&cross).into_bytes(),
                    Mode::Public,
                ));
            }
            let mut set = credential_files(&new.credential, false);
            set.extend(extra);
            files::write_all(&out, &set, key.force)?;
            write_bundle_like(&bundle, &map, old.trust_domain())?;
            println!(
                "prepared: new root in {}; {} now carries both roots (sequence {sequence}). Distribute it, then run `trust-bundle rotate activate`.",
                out.display(),
                bundle.display()
            );
            Ok(())
        }
        RotateAction::Activate {
            root,
            intermediate,
            validity,
        } => {
            let new_root = files::load_authority(&root)?;
            let current = files::load_authority(&intermediate)?;
            let params = IntermediateParams {
                cluster: current
                    .cluster()
                    .context("the intermediate records no cluster (no L= in its subject)")?
                    .to_owned(),
                trust_domain: Some(current.trust_domain().clone()),
                validity: if validity.is_zero() {
                    DEFAULT_INTERMEDIATE_VALIDITY
                } else {
                    validity
                },
                algorithm: Default::default(),
            };
            let inter = new_root.create_intermediate(&params, now())?;
            record(&root, "intermediate", &inter.credential.cert)?;
            write_credential(&intermediate, &inter.credential, true, true)?;
            report(
                "intermediate (under the new root)",
                &inter.credential.cert,
                &intermediate,
            );
            Ok(())
        }
        RotateAction::Retire {
            root,
            bundle,
            force,
        } => {
            let old = files::load_authority(&root)?;
            let ledger = files::load_ledger(&root)?;
            if let Err(e) = ledger.check_retire(now().unix_timestamp()) {
                if !force {
                    return Err(e).context(format!("refusing to retire {}", root.display()));
                }
                eprintln!("warning: {e}; retiring anyway (--force)");
            }
            let mut map = files::read_bundle_map(&bundle, Some(old.trust_domain()))?;
            let entry = map.get_mut(old.trust_domain()).with_context(|| {
                format!(
                    "{} has no bundle for {}",
                    bundle.display(),
                    old.trust_domain()
                )
            })?;
            let fp = ParsedCert::parse(&old.credential.cert)?.fingerprint();
            if entry.remove_root(&fp) == 0 {
                bail!(
                    "{} does not contain the root in {}",
                    bundle.display(),
                    root.display()
                );
            }
            if entry.is_empty() {
                bail!(
                    "retiring would leave trust domain {} with no root; prepare the new root first",
                    old.trust_domain()
                );
            }
            let sequence = entry.sequence;
            write_bundle_like(&bundle, &map, old.trust_domain())?;
            println!(
                "retired root {fp} from {} (sequence {sequence})",
                bundle.display()
            );
            Ok(())
        }
    }
}

pub(crate) fn export(target: ExportTarget) -> anyhow::Result<()> {
    match target {
        ExportTarget::Istio { ca, out, force } => {
            let auth = files::load_authority(&ca)?;
            if auth.is_root() {
                bail!(
                    "{} is a root; Istio's cacerts wants a cluster intermediate (create one with `trust-bundle intermediate create`)",
                    ca.display()
                );
            }
            let cred = &auth.credential;
            let mut chain: String = cred.chain.iter().map(|c| pem_cert(c)).collect();
            chain.push_str(&pem_cert(&cred.root));
            files::write_all(
                &out,
                &[
                    (
                        "ca-cert.pem",
                        pem_cert(&cred.cert).into_bytes(),
                        Mode::Public,
                    ),
                    ("ca-key.pem", cred.key.to_pem().into_bytes(), Mode::Secret),
                    (
                        "root-cert.pem",
                        pem_cert(&cred.root).into_bytes(),
                        Mode::Public,
                    ),
                    ("cert-chain.pem", chain.into_bytes(), Mode::Public),
                ],
                force,
            )?;
            println!(
                "wrote Istio cacerts to {} (kubectl create secret generic cacerts -n istio-system --from-file={0})",
                out.display()
            );
            Ok(())
        }
    }
}

fn credential_files(cred: &Credential, with_chain: bool) -> Vec<(&'static str, Vec<u8>, Mode)> {
    let mut set = vec![
        (CERT, pem_cert(&cred.cert).into_bytes(), Mode::Public),
        (KEY, cred.key.to_pem().into_bytes(), Mode::Secret),
    ];
    if with_chain {
        let chain: String = cred.chain.iter().map(|c| pem_cert(c)).collect();
        set.push((CHAIN, chain.into_bytes(), Mode::Public));
        set.push((ROOT, pem_cert(&cred.root).into_bytes(), Mode::Public));
    }
    set
}

fn write_credential(
    dir: &Path,
    cred: &Credential,
    with_chain: bool,
    force: bool,
) -> anyhow::Result<()> {
    files::write_all(dir, &credential_files(cred, with_chain), force)
}

/// Records an issuance in the CA's ledger before the certificate is handed out, so a failed
/// write can only over-count (which delays a retirement) and never under-count.
fn record(
    ca_dir: &Path,
    role: &str,
    cert: &rustls_pki_types::CertificateDer<'_>,
) -> anyhow::Result<()> {
    let parsed = ParsedCert::parse(cert)?;
    let mut ledger = files::load_ledger(ca_dir)?;
    ledger.record(LedgerEntry {
        serial: parsed.serial_hex.clone(),
        role: role.to_owned(),
        subject: parsed.label(),
        not_after: parsed.not_after,
    });
    files::save_ledger(ca_dir, &ledger)
}

/// Rewrites a bundle file in the form it had: a map stays a map, a single bundle stays single.
fn write_bundle_like(path: &Path, map: &BundleMap, td: &TrustDomain) -> anyhow::Result<()> {
    let original = files::read(path)?;
    let text = String::from_utf8_lossy(&original);
    let bytes = if text.contains("\"trust_domains\"") {
        map.to_json()
    } else if text.trim_start().starts_with('{') {
        map.get(td).map(|b| b.to_spiffe_json()).unwrap_or_default()
    } else {
        map.get(td).map(|b| b.to_pem()).unwrap_or_default()
    };
    files::write_file(path, bytes.into_bytes(), Mode::Public, true)
}

fn report(role: &str, cert: &rustls_pki_types::CertificateDer<'_>, dir: &Path) {
    match ParsedCert::parse(cert) {
        Ok(p) => println!(
            "created {role} {} in {} (valid until {}, sha256 {})",
            p.uris.first().cloned().unwrap_or_else(|| p.label()),
            dir.display(),
            ca::rfc3339(ca::ts(p.not_after)),
            p.fingerprint()
        ),
        Err(_) => println!("created {role} in {}", dir.display()),
    }
}
