//! Diagnostics for `federation-ctl check`, `status` and `trust status`: findings with a fix,
//! expiry windows, and bundles side by side. The sans-IO rules live here; [`local`] gathers the
//! facts that need only the config file and the disk (usable before the controller starts, or
//! when it cannot), and the controller adds what only a running controller knows (peers'
//! gateways, clocks, its gateways).

pub mod local;

use std::time::Duration;

use serde::Serialize;
use trust_bundle::X509Bundle;
use trust_bundle::cert::ParsedCert;

use crate::api::control as pb;

/// Warn when a certificate has less than this left.
pub const EXPIRY_WARN: Duration = Duration::from_secs(30 * 86_400);
/// Warn louder (still a warning; expired is the error) below this.
pub const EXPIRY_CRITICAL: Duration = Duration::from_secs(7 * 86_400);
/// Clock skew against a peer that deserves a warning, and one that is an error (certificates
/// are backdated by only a few minutes, and leases count in seconds).
pub const SKEW_WARN: Duration = Duration::from_secs(2);
pub const SKEW_ERROR: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Ok,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }
}

/// One result of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// Stable name of the check, e.g. `peer-gateway`.
    pub check: &'static str,
    pub subject: String,
    pub message: String,
    /// What to do about it; empty for `ok`.
    pub hint: String,
}

impl Finding {
    pub fn ok(check: &'static str, subject: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Ok,
            ..Self::error(check, subject, message, "")
        }
    }

    pub fn warning(
        check: &'static str,
        subject: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(check, subject, message, hint)
        }
    }

    pub fn error(
        check: &'static str,
        subject: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self {
            severity: Severity::Error,
            check,
            subject: subject.into(),
            message: message.into(),
            hint: hint.into(),
        }
    }

    pub fn to_pb(&self) -> pb::Finding {
        pb::Finding {
            severity: self.severity.as_str().to_owned(),
            check: self.check.to_owned(),
            subject: self.subject.clone(),
            message: self.message.clone(),
            hint: self.hint.clone(),
        }
    }
}

/// Days and hours, for messages.
pub fn human(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        s if s >= 2 * 86_400 => format!("{} days", s / 86_400),
        s if s >= 3600 => format!("{} hours", s / 3600),
        s if s >= 60 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}

/// The expiry finding for a certificate (`what`, e.g. "cluster intermediate aws") that is valid
/// until `not_after_ms`, at `now_ms`; `renew` says how to replace it.
pub fn expiry(what: &str, not_after_ms: i64, now_ms: i64, renew: &str) -> Finding {
    let left = not_after_ms.saturating_sub(now_ms);
    let at = crate::cli::format_time(not_after_ms);
    if left <= 0 {
        let ago = Duration::from_millis(left.unsigned_abs());
        return Finding::error(
            "expiry",
            what,
            format!("expired {} ago ({at})", human(ago)),
            renew,
        );
    }
    let left = Duration::from_millis(left.unsigned_abs());
    if left < EXPIRY_CRITICAL {
        Finding::warning(
            "expiry",
            what,
            format!("expires in {} ({at}), within 7 days", human(left)),
            renew,
        )
    } else if left < EXPIRY_WARN {
        Finding::warning(
            "expiry",
            what,
            format!("expires in {} ({at}), within 30 days", human(left)),
            renew,
        )
    } else {
        Finding::ok("expiry", what, format!("valid for {} ({at})", human(left)))
    }
}

/// The skew finding for `peer` from its last heartbeat.
pub fn clock_skew(peer: &str, skew_ms: Option<i64>) -> Finding {
    let Some(skew) = skew_ms else {
        return Finding::warning(
            "clock-skew",
            peer,
            "no heartbeat received yet, skew unknown",
            "wait for the link to connect (`federation-ctl links`), then check again",
        );
    };
    let abs = Duration::from_millis(skew.unsigned_abs());
    let text = format!(
        "{peer}'s clock is {} ms {} ours",
        skew.unsigned_abs(),
        if skew >= 0 { "ahead of" } else { "behind" }
    );
    let hint = "run NTP (chrony or systemd-timesyncd) on both clusters' hosts";
    if abs >= SKEW_ERROR {
        Finding::error("clock-skew", peer, text, hint)
    } else if abs >= SKEW_WARN {
        Finding::warning("clock-skew", peer, text, hint)
    } else {
        Finding::ok("clock-skew", peer, text)
    }
}

/// A bundle as `trust status` shows it.
pub fn bundle_info(cluster: &str, trust_domain: &str, bundle: &X509Bundle) -> pb::BundleInfo {
    let roots = bundle
        .roots()
        .iter()
        .map(|der| match ParsedCert::parse(der) {
            Ok(cert) => pb::RootInfo {
                fingerprint: cert.fingerprint(),
                subject: cert.label(),
                not_after_ms: cert.not_after.saturating_mul(1000),
            },
            Err(e) => pb::RootInfo {
                fingerprint: String::new(),
                subject: format!("(unreadable: {e})"),
                not_after_ms: 0,
            },
        })
        .collect();
    pb::BundleInfo {
        cluster: cluster.to_owned(),
        trust_domain: trust_domain.to_owned(),
        sequence: bundle.sequence,
        roots,
        differences: Vec::new(),
        federation: String::new(),
    }
}

/// How `peer`'s bundle relates to `ours`: fills `federation` ("shared" when they hold a root
/// in common in the same trust domain, "exchanged" for different trust domains, "conflict" for
/// the same trust domain without a common root) and `differences`.
pub fn compare_bundles(ours: &pb::BundleInfo, peer: &mut pb::BundleInfo) {
    let fps = |b: &pb::BundleInfo| -> Vec<String> {
        b.roots.iter().map(|r| r.fingerprint.clone()).collect()
    };
    let (mine, theirs) = (fps(ours), fps(peer));
    let only_theirs: Vec<&String> = theirs.iter().filter(|f| !mine.contains(f)).collect();
    let only_mine: Vec<&String> = mine.iter().filter(|f| !theirs.contains(f)).collect();
    let common = theirs.len() - only_theirs.len();
    let mut diffs = Vec::new();
    if peer.trust_domain != ours.trust_domain {
        peer.federation = "exchanged".to_owned();
        diffs.push(format!(
            "trust domain {} (ours {}): federated by bundle exchange",
            peer.trust_domain, ours.trust_domain
        ));
        if common > 0 {
            diffs.push(format!("{common} root(s) in common with ours"));
        }
    } else {
        peer.federation = if common > 0 { "shared" } else { "conflict" }.to_owned();
        if common == 0 {
            diffs.push(format!(
                "same trust domain {} but no root in common: neither side can verify the other",
                peer.trust_domain
            ));
        }
        for f in &only_theirs {
            diffs.push(format!("root {} only in theirs", short(f)));
        }
        for f in &only_mine {
            diffs.push(format!("root {} only in ours", short(f)));
        }
        if peer.sequence != ours.sequence {
            diffs.push(format!(
                "sequence {} (ours {})",
                peer.sequence, ours.sequence
            ));
        }
    }
    peer.differences = diffs;
}

/// The first 8 bytes of a fingerprint, enough to tell roots apart on screen.
pub fn short(fingerprint: &str) -> String {
    fingerprint.chars().take(23).collect()
}

/// The trust finding for one peer, from [`compare_bundles`]' verdict.
pub fn trust(peer: &pb::BundleInfo) -> Finding {
    let subject = peer.cluster.clone();
    match peer.federation.as_str() {
        "shared" => Finding::ok("trust", subject, "shares our root"),
        "exchanged" => Finding::ok(
            "trust",
            subject,
            format!(
                "trust domain {}: bundle held ({} root(s))",
                peer.trust_domain,
                peer.roots.len()
            ),
        ),
        _ => Finding::error(
            "trust",
            subject,
            format!(
                "{} uses our trust domain {} with roots we do not hold",
                peer.cluster, peer.trust_domain
            ),
            "give both clusters intermediates from the same root, or a trust domain of their own (`trust-bundle root create --trust-domain`), then link again",
        ),
    }
}

#[cfg(test)]
mod tests;
