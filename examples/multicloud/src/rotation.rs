//! Root rotation over a running topology: the three `trust-bundle rotate` stages a user runs,
//! each followed by a bounded wait until every gateway concerned has what the stage gives it
//! (the controllers watch their CA directory and bundle file, and tell their peers).
//!
//! 1. `prepare`: a new root in the trust domain's bundle next to the old one. Done when every
//!    gateway that trusts the domain holds both.
//! 2. `activate`, per cluster intermediate: re-issued under the new root. Done when that
//!    cluster's gateway presents a chain through the new intermediate.
//! 3. `retire`: the old root out of the bundle. Done when no gateway holds it.
//!
//! Checks read the gateways' `/config_dump` (roots in force per trust domain, the chain
//! presented) and, for what a peer actually receives, an `openssl s_client` handshake.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::topology::{Ca, Root, Topology};
use crate::{Error, Result};

impl Topology {
    /// `trust-bundle rotate prepare --root OLD --out NEW --bundle B`; waits until every gateway
    /// that trusts the domain holds the new root too. The new root.
    pub fn rotate_prepare(&mut self, old: &Root, new_dir: &str) -> Result<Root> {
        let mut cmd = self.shell.command("trust-bundle")?;
        cmd.args(["rotate", "prepare", "--root"])
            .arg(&old.dir)
            .args(["--out", new_dir, "--bundle"])
            .arg(&old.bundle);
        self.shell.run(&mut cmd)?;
        let new = Root {
            dir: PathBuf::from(new_dir),
            ..old.clone()
        };
        let fp = self.fingerprint(&new.dir.join("cert.pem"))?;
        self.wait_roots(
            &old.trust_domain,
            "holds the new root next to the old",
            |roots| roots.contains(&fp) && roots.len() >= 2,
        )?;
        self.roots.push(new.clone());
        Ok(new)
    }

    /// `trust-bundle rotate activate --root NEW --intermediate CA`; waits until the cluster's
    /// gateway presents a chain through the re-issued intermediate.
    pub fn rotate_activate(&self, new: &Root, ca: &Ca) -> Result<()> {
        let mut cmd = self.shell.command("trust-bundle")?;
        cmd.args(["rotate", "activate", "--root"])
            .arg(&new.dir)
            .arg("--intermediate")
            .arg(&ca.dir);
        self.shell.run(&mut cmd)?;
        let fp = self.fingerprint(&ca.dir.join("cert.pem"))?;
        let cluster = ca
            .dir
            .iter()
            .next()
            .and_then(|c| c.to_str())
            .unwrap_or_default();
        self.get(cluster)?.wait_gateway_tls(
            "the gateway presents a chain through the re-issued intermediate",
            |tls| tls["chain"][1]["sha256"].as_str() == Some(fp.as_str()),
        )?;
        Ok(())
    }

    /// `trust-bundle rotate retire --root OLD --bundle B --force`; waits until no gateway holds
    /// the old root. `--force`: the intermediates the old root signed are still valid on paper,
    /// but every one was re-issued and every leaf under them replaced.
    pub fn rotate_retire(&mut self, old: &Root) -> Result<()> {
        let mut cmd = self.shell.command("trust-bundle")?;
        cmd.args(["rotate", "retire", "--root"])
            .arg(&old.dir)
            .arg("--bundle")
            .arg(&old.bundle)
            .arg("--force");
        self.shell.run(&mut cmd)?;
        let fp = self.fingerprint(&old.dir.join("cert.pem"))?;
        self.wait_roots(&old.trust_domain, "no longer holds the old root", |roots| {
            !roots.is_empty() && !roots.contains(&fp)
        })?;
        self.roots.retain(|r| r.dir != old.dir);
        Ok(())
    }

    /// The SHA-256 fingerprint of a certificate file, as `trust-bundle inspect -o json` gives
    /// it.
    pub fn fingerprint(&self, cert: &Path) -> Result<String> {
        let mut cmd = self.shell.command("trust-bundle")?;
        cmd.arg("inspect").arg(cert).args(["-o", "json"]);
        let out = crate::run_ok(&mut cmd)?;
        let json: Value = serde_json::from_str(&out).map_err(|e| Error::Output {
            command: crate::shell::display(&cmd),
            detail: e.to_string(),
        })?;
        let first = if json.is_array() { &json[0] } else { &json };
        first["sha256_fingerprint"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::Output {
                command: crate::shell::display(&cmd),
                detail: format!("no sha256_fingerprint in {json}"),
            })
    }

    /// Waits until each gateway that trusts `trust_domain` has roots (fingerprints) for which
    /// `ok` holds.
    fn wait_roots(
        &self,
        trust_domain: &str,
        what: &str,
        ok: impl Fn(&[String]) -> bool,
    ) -> Result<()> {
        for cluster in &self.clusters {
            let known = cluster.config_dump()?["tls"]["roots"]
                .get(trust_domain)
                .is_some();
            if !known {
                continue;
            }
            cluster.wait_gateway_tls(
                &format!("the gateway's bundle of {trust_domain} {what}"),
                |tls| ok(&root_fingerprints(tls, trust_domain)),
            )?;
        }
        Ok(())
    }
}

/// The fingerprints of the roots a gateway's `/config_dump` `tls` section holds for
/// `trust_domain`.
pub fn root_fingerprints(tls: &Value, trust_domain: &str) -> Vec<String> {
    tls["roots"][trust_domain]
        .as_array()
        .map(|roots| {
            roots
                .iter()
                .filter_map(|r| r["sha256"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The certificates (PEM, leaf first) a TLS server at `addr` presents for `sni`, from an
/// `openssl s_client` handshake (without a client certificate: the server's chain comes before
/// it would ask for one).
pub fn presented_chain(addr: std::net::SocketAddr, sni: &str) -> Result<Vec<String>> {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        &addr.to_string(),
        "-servername",
        sni,
    ])
    .args(["-showcerts", "-verify_quiet"])
    .stdin(Stdio::null());
    let line = crate::shell::display(&cmd);
    let out = cmd.output().map_err(|source| Error::Spawn {
        command: line.clone(),
        source,
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let certs = pem_blocks(&text);
    if certs.is_empty() {
        return Err(Error::Output {
            command: line,
            detail: format!(
                "no certificate presented\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(certs)
}

/// Whether `chain` (PEM, leaf first) verifies up to the root in `root_pem` (a file), with
/// `openssl verify`; `Err` carries openssl's reason.
pub fn verify_chain(dir: &Path, root_pem: &Path, chain: &[String]) -> Result<(), String> {
    let (leaf, rest) = chain.split_first().ok_or("empty chain")?;
    let leaf_file = dir.join("presented-leaf.pem");
    let rest_file = dir.join("presented-intermediates.pem");
    std::fs::write(&leaf_file, leaf)
        .and_then(|()| std::fs::write(&rest_file, rest.concat()))
        .map_err(|e| format!("write {}: {e}", dir.display()))?;
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(root_pem)
        .arg("-untrusted")
        .arg(&rest_file)
        .arg(&leaf_file)
        .output()
        .map_err(|e| format!("openssl verify: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The base64 body of the first certificate in a PEM file: how a SPIFFE bundle's `x5c` holds
/// it, so a bundle's JSON can be searched for it.
pub fn der_base64(pem_file: &Path) -> Result<String> {
    let text = std::fs::read_to_string(pem_file)
        .map_err(Error::io(format!("read {}", pem_file.display())))?;
    pem_blocks(&text)
        .first()
        .map(|block| {
            block
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>()
        })
        .ok_or_else(|| Error::Output {
            command: format!("read {}", pem_file.display()),
            detail: "no PEM certificate".into(),
        })
}

fn pem_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.starts_with("-----BEGIN CERTIFICATE-----") {
            current = Some(String::new());
        }
        if let Some(block) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
        }
        if line.starts_with("-----END CERTIFICATE-----")
            && let Some(block) = current.take()
        {
            blocks.push(block);
        }
    }
    blocks
}
