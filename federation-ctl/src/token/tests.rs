use std::sync::OnceLock;

use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;

const HOUR: Duration = Duration::from_secs(3600);
const NOW: i64 = 1_800_000_000_000;

fn cluster(s: &str) -> ClusterName {
    ClusterName::parse(s).unwrap()
}

fn bundle_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let root = trust_bundle::test_util::root("aws.example");
        X509Bundle::new([root.credential.cert.clone()])
            .unwrap()
            .to_spiffe_json()
    })
}

fn issue_with(
    book: &mut TokenBook,
    name: &str,
    addrs: &[&str],
    now: i64,
    ttl: Duration,
    seed: u64,
) -> (TokenText, TokenRecord) {
    let name = cluster(name);
    let td = TrustDomain::parse("aws.example").unwrap();
    let addrs: Vec<HostPort> = addrs.iter().map(|a| HostPort::parse(a).unwrap()).collect();
    let issuer = Issuer {
        cluster: &name,
        trust_domain: &td,
        peering_addresses: &addrs,
        bundle_json: bundle_json(),
    };
    book.issue(&issuer, now, ttl, &mut StdRng::seed_from_u64(seed))
        .unwrap()
}

fn issue(book: &mut TokenBook) -> (TokenText, TokenRecord) {
    issue_with(book, "aws", &["127.0.0.1:15050"], NOW, HOUR, 7)
}

fn redeem(book: &mut TokenBook, t: &JoinToken, joiner: &str, now: i64) -> Result<(), RedeemError> {
    book.redeem(
        &t.token_id,
        t.secret.as_bytes(),
        &t.digest,
        &cluster(joiner),
        now,
    )
    .map(|_| ())
}

/// Re-encodes a payload with a valid checksum: what a deliberate tamperer would send.
fn reencode(text: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let body = text.strip_prefix(TOKEN_PREFIX).unwrap();
    let (payload, _) = body.split_once('.').unwrap();
    let mut v: serde_json::Value =
        serde_json::from_slice(&B64URL.decode(payload).unwrap()).unwrap();
    edit(&mut v);
    let bytes = serde_json::to_vec(&v).unwrap();
    let sum = Sha256::digest(&bytes);
    format!(
        "{TOKEN_PREFIX}{}.{}",
        B64URL.encode(&bytes),
        B64URL.encode(&sum[..CHECKSUM_BYTES])
    )
}

#[test]
fn issued_tokens_decode_to_what_was_issued() {
    let mut book = TokenBook::new();
    let (text, record) = issue_with(
        &mut book,
        "aws",
        &["127.0.0.1:15050", "ctl.aws.example:15050"],
        NOW,
        HOUR,
        1,
    );
    assert!(text.expose().starts_with(TOKEN_PREFIX));
    let t = JoinToken::decode(&format!("  {}\n", text.expose())).unwrap();
    assert_eq!(t.token_id, record.token_id);
    assert_eq!(t.token_id.len(), 32);
    assert_eq!(t.cluster, cluster("aws"));
    assert_eq!(t.trust_domain.as_str(), "aws.example");
    let addrs: Vec<String> = t.peering_addresses.iter().map(|a| a.to_string()).collect();
    assert_eq!(addrs, ["127.0.0.1:15050", "ctl.aws.example:15050"]);
    assert_eq!(t.bundle_json, bundle_json());
    assert_eq!(t.bundle.roots().len(), 1);
    assert_eq!(t.expires_at_ms, NOW + 3_600_000);
    assert_eq!(record.expires_at_ms, t.expires_at_ms);
    assert_eq!(record.created_at_ms, NOW);
    assert_eq!(t.digest, record.payload_sha256);
    assert_eq!(t.secret.digest(), record.secret_sha256);
    assert_eq!(book.get(&t.token_id), Some(&record));
    assert_eq!(book.outstanding(NOW), 1);
    assert!(t.check_fresh(NOW + 3_600_000).is_ok());
    let late = t.check_fresh(NOW + 3_600_001).unwrap_err().to_string();
    assert!(late.contains("expired") && late.contains("link token") && late.contains("aws"));
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let mut book = TokenBook::new();
    let (text, _) = issue(&mut book);
    let t = JoinToken::decode(text.expose()).unwrap();
    let b64 = B64URL.encode(t.secret.as_bytes());
    let hexed = hex::encode(t.secret.as_bytes());
    for shown in [
        format!("{t:?}"),
        format!("{text:?}"),
        format!("{:?}", t.secret),
        format!("{book:?}"),
    ] {
        assert!(!shown.contains(&b64) && !shown.contains(&hexed), "{shown}");
        assert!(!shown.contains(text.expose()));
    }
    assert!(format!("{t:?}").contains("Secret(redacted)"));
}

#[test]
fn a_token_is_redeemed_once() {
    let mut book = TokenBook::new();
    let (text, _) = issue(&mut book);
    let t = JoinToken::decode(text.expose()).unwrap();
    redeem(&mut book, &t, "gcp", NOW + 10).unwrap();
    let r = book.get(&t.token_id).unwrap();
    assert_eq!(
        (r.used_by.clone(), r.used_at_ms),
        (Some(cluster("gcp")), Some(NOW + 10))
    );
    assert_eq!(book.outstanding(NOW + 10), 0);
    let again = redeem(&mut book, &t, "onprem", NOW + 20).unwrap_err();
    assert!(
        matches!(&again, RedeemError::Used { by, at_ms, .. } if by == &cluster("gcp") && *at_ms == NOW + 10)
    );
    let msg = again.to_string();
    assert!(
        msg.contains("already used by cluster gcp") && msg.contains("single-use"),
        "{msg}"
    );
}

#[test]
fn redemption_refusals_say_why() {
    let mut book = TokenBook::new();
    let (text, _) = issue(&mut book);
    let t = JoinToken::decode(text.expose()).unwrap();
    let joiner = cluster("gcp");

    let unknown = book
        .redeem(
            &"0".repeat(32),
            t.secret.as_bytes(),
            &t.digest,
            &joiner,
            NOW,
        )
        .unwrap_err();
    assert!(
        unknown
            .to_string()
            .contains("not issued by this cluster, or was already purged")
    );
    let weird = book
        .redeem("x\ny", &[], &[], &joiner, NOW)
        .unwrap_err()
        .to_string();
    assert!(!weird.contains('\n'), "{weird}");

    let wrong = book
        .redeem(&t.token_id, &[0u8; 32], &t.digest, &joiner, NOW)
        .unwrap_err();
    assert!(matches!(wrong, RedeemError::WrongSecret { .. }), "{wrong}");
    let short = book
        .redeem(&t.token_id, &[], &t.digest, &joiner, NOW)
        .unwrap_err();
    assert!(matches!(short, RedeemError::WrongSecret { .. }));

    let mut digest = t.digest;
    digest[31] ^= 1;
    let tampered = book
        .redeem(&t.token_id, t.secret.as_bytes(), &digest, &joiner, NOW)
        .unwrap_err();
    assert!(
        tampered
            .to_string()
            .contains("differs from the one this cluster issued")
    );

    let expired = redeem(&mut book, &t, "gcp", NOW + 3_600_001).unwrap_err();
    assert!(matches!(expired, RedeemError::Expired { at_ms, .. } if at_ms == NOW + 3_600_000));
    assert!(
        expired
            .to_string()
            .contains("expired at 2027-01-15T09:00:00Z"),
        "{expired}"
    );

    // None of the refusals used the token up.
    redeem(&mut book, &t, "gcp", NOW).unwrap();
}

#[test]
fn an_edited_payload_with_a_fixed_checksum_is_refused_by_the_acceptor() {
    let mut book = TokenBook::new();
    let (text, _) = issue(&mut book);
    let forged = reencode(text.expose(), |v| {
        v["peering_addresses"] = serde_json::json!(["10.6.6.6:15050"]);
        v["expires_at_ms"] = serde_json::json!(i64::MAX);
    });
    let t = JoinToken::decode(&forged).expect("decodes locally");
    let err = redeem(&mut book, &t, "gcp", NOW).unwrap_err();
    assert!(matches!(err, RedeemError::Tampered { .. }), "{err}");
}

#[test]
fn corrupted_and_foreign_texts_are_refused_locally() {
    let mut book = TokenBook::new();
    let (text, _) = issue(&mut book);
    let text = text.expose();
    let truncated = JoinToken::decode(&text[..text.len() - 3]).unwrap_err();
    assert!(matches!(truncated, TokenError::Corrupted(_)));
    let mid = text.len() / 2;
    let typo = format!(
        "{}{}{}",
        &text[..mid],
        if &text[mid..=mid] == "A" { "B" } else { "A" },
        &text[mid + 1..]
    );
    let msg = JoinToken::decode(&typo).unwrap_err().to_string();
    assert_eq!(
        msg,
        "token is corrupted: checksum mismatch; copy the whole token"
    );
    let no_sum = text.rsplit_once('.').unwrap().0;
    assert!(matches!(
        JoinToken::decode(no_sum),
        Err(TokenError::Corrupted(_))
    ));

    assert_eq!(
        JoinToken::decode("hello").unwrap_err(),
        TokenError::NotAToken
    );
    assert_eq!(JoinToken::decode("").unwrap_err(), TokenError::NotAToken);
    assert!(matches!(
        JoinToken::decode(&text.replacen("isthmus1.", "isthmus2.", 1)),
        Err(TokenError::UnsupportedVersion { .. })
    ));
    let v2 = reencode(text, |v| v["version"] = serde_json::json!(2));
    assert!(matches!(
        JoinToken::decode(&v2),
        Err(TokenError::UnsupportedVersion { .. })
    ));
    let huge = format!("{TOKEN_PREFIX}{}", "A".repeat(MAX_TOKEN_BYTES));
    assert_eq!(JoinToken::decode(&huge).unwrap_err(), TokenError::TooLarge);
}

#[test]
fn bad_fields_behind_a_good_checksum_are_named() {
    let mut book = TokenBook::new();
    let (text, _) = issue(&mut book);
    for (field, value) in [
        ("cluster", serde_json::json!("AWS")),
        ("trust_domain", serde_json::json!("Bad TD")),
        ("token_id", serde_json::json!("xyz")),
        ("peering_addresses", serde_json::json!([])),
        ("peering_addresses", serde_json::json!(["nope"])),
        ("bundle", serde_json::json!("{}")),
        ("secret", serde_json::json!("c2hvcnQ")),
    ] {
        let edited = reencode(text.expose(), |v| v[field] = value.clone());
        match JoinToken::decode(&edited) {
            Err(TokenError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    let extra = reencode(text.expose(), |v| v["extra"] = serde_json::json!(1));
    assert!(matches!(
        JoinToken::decode(&extra),
        Err(TokenError::Invalid {
            field: "payload",
            ..
        })
    ));
}

#[test]
fn used_and_expired_records_are_purged_after_the_grace_period() {
    let mut book = TokenBook::new();
    let (a, _) = issue_with(&mut book, "aws", &["127.0.0.1:1"], NOW, HOUR, 1);
    let (_b, b_rec) = issue_with(&mut book, "aws", &["127.0.0.1:1"], NOW, HOUR, 2);
    let (_c, c_rec) = issue_with(&mut book, "aws", &["127.0.0.1:1"], NOW, 30 * HOUR, 3);
    let a = JoinToken::decode(a.expose()).unwrap();
    redeem(&mut book, &a, "gcp", NOW + 1).unwrap();
    let grace = Duration::from_secs(60);
    assert!(book.purge(NOW + 60_001, grace).is_empty());
    assert_eq!(book.purge(NOW + 60_002, grace), [a.token_id.as_str()]);
    // b expires at NOW + 1h and goes a minute later; c is still redeemable.
    assert!(book.purge(NOW + 3_660_000, grace).is_empty());
    assert_eq!(book.purge(NOW + 3_660_001, grace), [b_rec.token_id]);
    assert_eq!(
        book.records().map(|r| &r.token_id).collect::<Vec<_>>(),
        [&c_rec.token_id]
    );
    let gone = redeem(&mut book, &a, "gcp", NOW + 3_660_001).unwrap_err();
    assert!(matches!(gone, RedeemError::Unknown { .. }));
}

#[test]
fn the_book_round_trips_through_json_and_checks_itself() {
    let mut book = TokenBook::new();
    let (text, _) = issue(&mut book);
    issue_with(&mut book, "aws", &["127.0.0.1:1"], NOW, HOUR, 9);
    let t = JoinToken::decode(text.expose()).unwrap();
    redeem(&mut book, &t, "gcp", NOW).unwrap();
    let json = serde_json::to_string_pretty(&book).unwrap();
    assert!(!json.contains(&B64URL.encode(t.secret.as_bytes())));
    let back: TokenBook = serde_json::from_str(&json).unwrap();
    assert_eq!(back, book);
    back.check().unwrap();
    let bad = json.replacen(&t.token_id, "zz", 1);
    let bad: TokenBook = serde_json::from_str(&bad).unwrap();
    assert!(bad.check().is_err());
    assert!(
        serde_json::from_str::<TokenBook>(&json.replacen(
            "\"payload_sha256\": \"",
            "\"payload_sha256\": \"x",
            1
        ))
        .is_err()
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn decode_never_panics(text in "\\PC{0,300}") {
        let _ = JoinToken::decode(&text);
    }

    #[test]
    fn decode_never_panics_behind_the_prefix(body in "[A-Za-z0-9_.=-]{0,300}") {
        let _ = JoinToken::decode(&format!("{TOKEN_PREFIX}{body}"));
    }

    #[test]
    fn encode_then_decode_round_trips(
        name in "[a-z][a-z0-9-]{0,20}[a-z0-9]",
        ports in proptest::collection::vec(1u16.., 1..4),
        now in -1_000_000_000_000i64..4_000_000_000_000,
        ttl_s in 1u64..1_000_000,
        seed in any::<u64>(),
    ) {
        let mut book = TokenBook::new();
        let addrs: Vec<String> = ports.iter().map(|p| format!("10.0.0.1:{p}")).collect();
        let addr_refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        let (text, record) = issue_with(&mut book, &name, &addr_refs, now, Duration::from_secs(ttl_s), seed);
        let t = JoinToken::decode(text.expose()).unwrap();
        prop_assert_eq!(t.cluster.as_str(), name.as_str());
        prop_assert_eq!(t.peering_addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(), addrs);
        prop_assert_eq!(t.expires_at_ms, now + i64::try_from(ttl_s).unwrap() * 1000);
        prop_assert_eq!(t.digest, record.payload_sha256);
        prop_assert!(redeem(&mut book, &t, "joiner", now).is_ok());
    }

    #[test]
    fn any_single_character_change_is_refused(
        seed in any::<u64>(),
        pos in any::<proptest::sample::Index>(),
        replacement in "[A-Za-z0-9_.=+/ -]",
    ) {
        let mut book = TokenBook::new();
        let (text, _) = issue_with(&mut book, "aws", &["127.0.0.1:15050"], NOW, HOUR, seed);
        let text = text.expose();
        let i = pos.index(text.len());
        prop_assume!(&text[i..=i] != replacement.as_str());
        let changed = format!("{}{}{}", &text[..i], replacement, &text[i + 1..]);
        prop_assert!(JoinToken::decode(&changed).is_err(), "position {}", i);
    }
}
