//! File IO for the CLI: atomic writes that never leave partial output, private keys with mode
//! 0600, and loading CA directories with errors that name the file.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rustls_pki_types::CertificateDer;

use trust_bundle::bundle::{self, BundleMap, X509Bundle};
use trust_bundle::ca::{Authority, PrivateKey};
use trust_bundle::rotate::Ledger;
use trust_bundle::spiffe::TrustDomain;

pub(crate) const CERT: &str = "cert.pem";
pub(crate) const KEY: &str = "key.pem";
pub(crate) const CHAIN: &str = "chain.pem";
pub(crate) const ROOT: &str = "root.pem";
pub(crate) const LEDGER: &str = "issued.json";

/// Whether a file holds a secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Public,
    Secret,
}

/// Writes every file or none. Existing files are refused unless `force`; each file is written to
/// a temporary name in the same directory, synced, then renamed into place.
pub(crate) fn write_all(
    dir: &Path,
    files: &[(&str, Vec<u8>, Mode)],
    force: bool,
) -> anyhow::Result<()> {
    let created = !dir.exists();
    if !force {
        for (name, _, _) in files {
            let path = dir.join(name);
            if path.exists() {
                bail!(
                    "{} already exists; pass --force to overwrite it",
                    path.display()
                );
            }
        }
    }
    if created {
        fs::create_dir_all(dir).with_context(|| format!("creating directory {}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("setting permissions on {}", dir.display()))?;
    }
    let result = stage_and_rename(dir, files);
    if result.is_err() && created {
        let _ = fs::remove_dir_all(dir);
    }
    result
}

fn stage_and_rename(dir: &Path, files: &[(&str, Vec<u8>, Mode)]) -> anyhow::Result<()> {
    let mut staged = Vec::with_capacity(files.len());
    for (name, bytes, mode) in files {
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
        // tempfile creates files 0600; certificates and bundles are public.
        let perm = if *mode == Mode::Secret { 0o600 } else { 0o644 };
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(perm))
            .context("setting file permissions")?;
        tmp.write_all(bytes)
            .with_context(|| format!("writing {}", dir.join(name).display()))?;
        tmp.as_file().sync_all().context("syncing file")?;
        staged.push((tmp, dir.join(name)));
    }
    for (tmp, path) in staged {
        tmp.persist(&path)
            .with_context(|| format!("renaming into {}", path.display()))?;
    }
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes one file atomically next to where it goes.
pub(crate) fn write_file(
    path: &Path,
    bytes: Vec<u8>,
    mode: Mode,
    force: bool,
) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} is not a file path", path.display()))?;
    write_all(&dir, &[(name, bytes, mode)], force)
}

pub(crate) fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

pub(crate) fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    bundle::parse_pem_certs(&read(path)?).with_context(|| format!("{}", path.display()))
}

/// Loads a CA directory written by `root create` or `intermediate create`.
pub(crate) fn load_authority(dir: &Path) -> anyhow::Result<Authority> {
    if !dir.is_dir() {
        bail!(
            "{} is not a CA directory; create one with `trust-bundle root create` or `intermediate create`",
            dir.display()
        );
    }
    let cert = first_cert(&dir.join(CERT))?;
    let key_path = dir.join(KEY);
    let key_pem = fs::read_to_string(&key_path)
        .with_context(|| format!("cannot read {}", key_path.display()))?;
    let key = PrivateKey::from_pem(&key_pem).with_context(|| format!("{}", key_path.display()))?;
    let above = if dir.join(CHAIN).exists() {
        read_certs(&dir.join(CHAIN))?.into_iter().skip(1).collect()
    } else {
        Vec::new()
    };
    let root = if dir.join(ROOT).exists() {
        first_cert(&dir.join(ROOT))?
    } else {
        cert.clone()
    };
    Authority::load(cert, key, above, root)
        .with_context(|| format!("CA directory {}", dir.display()))
}

fn first_cert(path: &Path) -> anyhow::Result<CertificateDer<'static>> {
    read_certs(path)?
        .into_iter()
        .next()
        .with_context(|| format!("{}: no certificate", path.display()))
}

pub(crate) fn load_ledger(dir: &Path) -> anyhow::Result<Ledger> {
    let path = dir.join(LEDGER);
    if !path.exists() {
        return Ok(Ledger::default());
    }
    Ledger::from_json(&read(&path)?).with_context(|| format!("{}", path.display()))
}

pub(crate) fn save_ledger(dir: &Path, ledger: &Ledger) -> anyhow::Result<()> {
    write_file(
        &dir.join(LEDGER),
        ledger.to_json().into_bytes(),
        Mode::Public,
        true,
    )
}

/// Reads a bundle in any supported form into a bundle map. A SPIFFE bundle or PEM does not name
/// its trust domain: it comes from `td`, or from the roots' own SPIFFE IDs.
pub(crate) fn read_bundle_map(path: &Path, td: Option<&TrustDomain>) -> anyhow::Result<BundleMap> {
    let bytes = read(path)?;
    let text = String::from_utf8_lossy(&bytes);
    let trimmed = text.trim_start();
    let single = if trimmed.starts_with('{') {
        if is_bundle_map(&bytes) {
            return BundleMap::from_json(&bytes).with_context(|| format!("{}", path.display()));
        }
        X509Bundle::from_spiffe_json(&bytes).with_context(|| format!("{}", path.display()))?
    } else {
        X509Bundle::from_pem(&bytes).with_context(|| format!("{}", path.display()))?
    };
    let td = match td {
        Some(td) => td.clone(),
        None => infer_trust_domain(&single).with_context(|| {
            format!(
                "{} does not say which trust domain it is for; pass --trust-domain",
                path.display()
            )
        })?,
    };
    let mut map = BundleMap::new();
    map.insert(td, single);
    Ok(map)
}

fn is_bundle_map(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v.as_object().map(|o| o.contains_key("trust_domains")))
        .unwrap_or(false)
}

/// The one trust domain every root names in its SPIFFE ID, if they agree.
fn infer_trust_domain(bundle: &X509Bundle) -> Option<TrustDomain> {
    let mut found: Option<TrustDomain> = None;
    for root in bundle.roots() {
        let parsed = trust_bundle::cert::ParsedCert::parse(root).ok()?;
        let td = trust_bundle::ca::bound_trust_domain(&parsed).ok()?;
        match &found {
            Some(f) if f != &td => return None,
            _ => found = Some(td),
        }
    }
    found
}
