//! Checks that need only the controller's config file and the disk: the config itself, the
//! cluster CA and roots (expiry windows), the state directory's permissions, the registry file,
//! and whether host-name addresses (ours and the linked peers' as recorded in the state
//! directory) resolve. `federation-ctl check --config FILE` runs them without a controller
//! (before the first start, or when it will not start); the controller runs them as part of
//! its own `Check`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use trust_bundle::X509Bundle;
use trust_bundle::cert::ParsedCert;

use super::{Finding, expiry};
use crate::config::{self, ControllerConfig, HostPort, RegistryConfig};
use crate::identity::{self, ClusterCa};
use crate::state::StateDir;

/// Every local check for the config at `path`.
pub async fn run(path: &Path, now_ms: i64) -> Vec<Finding> {
    match config::load(path) {
        Ok(cfg) => {
            let mut out = vec![Finding::ok(
                "config",
                path.display().to_string(),
                "valid controller config",
            )];
            out.extend(for_config(&cfg, now_ms).await);
            out
        }
        Err(e) => vec![Finding::error(
            "config",
            path.display().to_string(),
            e.to_string(),
            "fix the field named above; `federation-ctl controller --config FILE` refuses the same errors",
        )],
    }
}

/// The local checks for a loaded config.
pub async fn for_config(cfg: &ControllerConfig, now_ms: i64) -> Vec<Finding> {
    let mut out = ca(cfg, now_ms);
    out.push(state_dir(&cfg.state_dir));
    out.push(registry(cfg));
    let mut names: Vec<(String, HostPort)> = cfg
        .gateways
        .addresses
        .iter()
        .map(|a| (format!("{} gateway", cfg.cluster), a.clone()))
        .chain(
            cfg.peering
                .advertise
                .iter()
                .map(|a| (format!("{} peering", cfg.cluster), a.clone())),
        )
        .collect();
    if let Some(state) = StateDir::read_only(&cfg.state_dir)
        && let Ok(links) = state.load_links()
    {
        for (peer, record) in links {
            names.extend(
                record
                    .gateway_addresses
                    .iter()
                    .map(|a| (format!("{peer} gateway"), a.clone())),
            );
            names.extend(
                record
                    .peering_addresses
                    .iter()
                    .map(|a| (format!("{peer} peering"), a.clone())),
            );
        }
    }
    for (whose, address) in names {
        if address.ip().is_none() {
            out.push(resolves(&whose, &address).await);
        }
    }
    out
}

/// The intermediate, the roots of our bundle and what loading the CA says.
fn ca(cfg: &ControllerConfig, now_ms: i64) -> Vec<Finding> {
    let mut out = Vec::new();
    let cluster = &cfg.cluster;
    let renew = format!(
        "issue a new one with `trust-bundle intermediate create --root ROOT_DIR --cluster {cluster} --out DIR`, point `ca:` at DIR and restart the controller"
    );
    match identity::read_ca_dir(&cfg.ca) {
        Ok(files) => match trust_bundle::bundle::parse_pem_certs(&files.cert_pem)
            .ok()
            .and_then(|c| c.into_iter().next())
            .and_then(|der| ParsedCert::parse(&der).ok())
        {
            Some(cert) => out.push(expiry(
                &format!("cluster intermediate {cluster} ({})", cfg.ca.display()),
                cert.not_after.saturating_mul(1000),
                now_ms,
                &renew,
            )),
            None => out.push(Finding::error(
                "ca",
                cfg.ca.display().to_string(),
                "cert.pem holds no readable certificate",
                &renew,
            )),
        },
        Err(e) => {
            out.push(Finding::error(
                "ca",
                cfg.ca.display().to_string(),
                e.to_string(),
                &renew,
            ));
            return out;
        }
    }
    match ClusterCa::load(
        &cfg.ca,
        cluster,
        cfg.trust_domain.as_ref(),
        cfg.trust_bundle.as_deref(),
    ) {
        Ok(ca) => {
            out.extend(roots(
                &format!("{} root", ca.trust_domain()),
                ca.bundle(),
                now_ms,
                "create a new root with `trust-bundle root create`, serve old and new side by side (`trust-bundle rotate`), then reissue the intermediates",
            ));
        }
        Err(e) => out.push(Finding::error(
            "ca",
            cfg.ca.display().to_string(),
            e.to_string(),
            "fix the CA directory as the message says",
        )),
    }
    out
}

/// An expiry finding per root of `bundle`.
pub fn roots(what: &str, bundle: &X509Bundle, now_ms: i64, renew: &str) -> Vec<Finding> {
    bundle
        .roots()
        .iter()
        .filter_map(|der| ParsedCert::parse(der).ok())
        .map(|root| {
            expiry(
                &format!("{what} {}", super::short(&root.fingerprint())),
                root.not_after.saturating_mul(1000),
                now_ms,
                renew,
            )
        })
        .collect()
}

fn state_dir(path: &Path) -> Finding {
    let subject = path.display().to_string();
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Finding::ok(
            "state-dir",
            subject,
            "does not exist yet; the controller creates it with mode 0700",
        ),
        Err(e) => Finding::error(
            "state-dir",
            subject,
            format!("cannot inspect it: {e}"),
            "make it readable by the controller's user",
        ),
        Ok(meta) if !meta.is_dir() => Finding::error(
            "state-dir",
            subject,
            "not a directory",
            "point state_dir at a directory (it is created if missing)",
        ),
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            let fix = format!("run `chmod 700 {}`", path.display());
            if mode & 0o022 != 0 {
                Finding::error(
                    "state-dir",
                    subject,
                    format!(
                        "mode {mode:03o} lets other users change links and tokens; the controller refuses to start"
                    ),
                    fix,
                )
            } else if mode & 0o077 != 0 {
                Finding::warning(
                    "state-dir",
                    subject,
                    format!("mode {mode:03o} lets other users read link records"),
                    fix,
                )
            } else {
                Finding::ok("state-dir", subject, format!("mode {mode:03o}"))
            }
        }
    }
}

fn registry(cfg: &ControllerConfig) -> Finding {
    let path = match &cfg.registry {
        RegistryConfig::File { path, .. } => path,
        RegistryConfig::Kubernetes(k) => {
            let subject = k
                .kubeconfig
                .as_ref()
                .map_or_else(|| "in-cluster".to_owned(), |p| p.display().to_string());
            return Finding::ok(
                "registry",
                subject,
                "kubernetes; `federation-ctl status` shows what the API server answers",
            );
        }
    };
    let subject = path.display().to_string();
    match std::fs::read_to_string(path) {
        Err(e) => Finding::error(
            "registry",
            subject,
            format!("cannot read it: {e}"),
            "create it (`services: []` is a valid empty registry) or fix `registry.file`",
        ),
        Ok(text) => match crate::registry::parse(&text, path) {
            Ok(doc) => Finding::ok(
                "registry",
                subject,
                format!(
                    "{} services, {} exports",
                    doc.services.len(),
                    doc.exports.len()
                ),
            ),
            Err(e) => Finding::error(
                "registry",
                subject,
                e.to_string(),
                "fix the file; the controller keeps the last good registry until then",
            ),
        },
    }
}

async fn resolves(whose: &str, address: &HostPort) -> Finding {
    let subject = format!("{whose} {address}");
    let lookup = tokio::net::lookup_host((address.host(), address.port()));
    match tokio::time::timeout(std::time::Duration::from_secs(5), lookup).await {
        Ok(Ok(addrs)) => {
            let addrs: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
            if addrs.is_empty() {
                Finding::error(
                    "resolve",
                    subject,
                    "resolves to no address",
                    "add an A/AAAA record for it, or use an IP address",
                )
            } else {
                Finding::ok(
                    "resolve",
                    subject,
                    format!("resolves to {}", addrs.join(", ")),
                )
            }
        }
        Ok(Err(e)) => Finding::error(
            "resolve",
            subject,
            format!("does not resolve: {e}"),
            "fix the DNS name (or the host's resolver), or use an IP address",
        ),
        Err(_) => Finding::error(
            "resolve",
            subject,
            "resolution timed out after 5s",
            "check the host's resolver (/etc/resolv.conf)",
        ),
    }
}
