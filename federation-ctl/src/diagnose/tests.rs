use super::*;

const DAY: i64 = 86_400_000;

#[test]
fn expiry_windows_warn_at_30_and_7_days_and_fail_when_expired() {
    let now = 1_800_000_000_000;
    let f = expiry("x", now + 60 * DAY, now, "renew");
    assert_eq!((f.severity, f.hint.as_str()), (Severity::Ok, ""));
    let f = expiry("x", now + 20 * DAY, now, "renew");
    assert_eq!(f.severity, Severity::Warning);
    assert!(f.message.contains("within 30 days"), "{f:?}");
    let f = expiry("x", now + 3 * DAY, now, "renew");
    assert!(f.message.contains("within 7 days"), "{f:?}");
    let f = expiry("x", now - 2 * DAY, now, "renew");
    assert_eq!((f.severity, f.hint.as_str()), (Severity::Error, "renew"));
    assert!(f.message.starts_with("expired 2 days ago"), "{f:?}");
}

#[test]
fn clock_skew_grades() {
    assert_eq!(clock_skew("gcp", Some(300)).severity, Severity::Ok);
    assert_eq!(clock_skew("gcp", Some(-5_000)).severity, Severity::Warning);
    let f = clock_skew("gcp", Some(-120_000));
    assert_eq!(f.severity, Severity::Error);
    assert!(f.message.contains("behind"), "{f:?}");
    assert_eq!(clock_skew("gcp", None).severity, Severity::Warning);
}

fn info(td: &str, seq: u64, fps: &[&str]) -> pb::BundleInfo {
    pb::BundleInfo {
        cluster: "peer".into(),
        trust_domain: td.into(),
        sequence: seq,
        roots: fps
            .iter()
            .map(|f| pb::RootInfo {
                fingerprint: (*f).into(),
                ..pb::RootInfo::default()
            })
            .collect(),
        ..pb::BundleInfo::default()
    }
}

#[test]
fn bundles_compare_shared_exchanged_and_conflicting() {
    let ours = info("mesh.example", 1, &["aa"]);
    let mut shared = info("mesh.example", 2, &["aa", "bb"]);
    compare_bundles(&ours, &mut shared);
    assert_eq!(shared.federation, "shared");
    assert_eq!(
        shared.differences,
        vec!["root bb only in theirs", "sequence 2 (ours 1)"]
    );
    assert_eq!(trust(&shared).severity, Severity::Ok);

    let mut other = info("onprem.example", 1, &["cc"]);
    compare_bundles(&ours, &mut other);
    assert_eq!(other.federation, "exchanged");
    assert_eq!(trust(&other).severity, Severity::Ok);

    let mut conflict = info("mesh.example", 1, &["cc"]);
    compare_bundles(&ours, &mut conflict);
    assert_eq!(conflict.federation, "conflict");
    let f = trust(&conflict);
    assert_eq!(f.severity, Severity::Error);
    assert!(!f.hint.is_empty());
}
