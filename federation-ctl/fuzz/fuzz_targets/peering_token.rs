//! Peering tokens from untrusted text: decoding never panics, and a decoded token survives a
//! round trip: issuing a token from what was decoded and decoding that gives the same token,
//! which the issuing book redeems exactly once.
//!
//! A checksum is SHA-256, which mutation never hits, so an input starting with `{` is taken as
//! the payload JSON and wrapped in a correctly checksummed token: the payload's field checks get
//! fuzzed too, not only the framing.

#![no_main]

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use federation_ctl::model::ClusterName;
use federation_ctl::token::{Issuer, JoinToken, TOKEN_PREFIX, TokenBook};
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng as _;
use sha2::{Digest as _, Sha256};

/// The checksum's length in the token text (the first bytes of the payload's SHA-256).
const CHECKSUM_BYTES: usize = 8;

fuzz_target!(|data: &[u8]| {
    let text = if data.first() == Some(&b'{') {
        let digest = Sha256::digest(data);
        format!(
            "{TOKEN_PREFIX}{}.{}",
            B64URL.encode(data),
            B64URL.encode(&digest[..CHECKSUM_BYTES])
        )
    } else {
        match std::str::from_utf8(data) {
            Ok(s) => s.to_owned(),
            Err(_) => return,
        }
    };
    let Ok(token) = JoinToken::decode(&text) else {
        return;
    };
    assert!(
        token.check_fresh(token.expires_at_ms).is_ok(),
        "a token is fresh until its expiry"
    );
    if let Some(after) = token.expires_at_ms.checked_add(1) {
        assert!(
            token.check_fresh(after).is_err(),
            "a token is stale after its expiry"
        );
    }

    // Round trip: encode what was decoded, decode it again.
    let mut book = TokenBook::new();
    let issuer = Issuer {
        cluster: &token.cluster,
        trust_domain: &token.trust_domain,
        peering_addresses: &token.peering_addresses,
        bundle_json: &token.bundle_json,
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(data.len() as u64);
    let now_ms = 1_000;
    let (text2, _record) = book
        .issue(&issuer, now_ms, Duration::from_secs(60), &mut rng)
        .unwrap_or_else(|e| panic!("cannot issue a token from a decoded one: {e}"));
    let again = JoinToken::decode(text2.expose())
        .unwrap_or_else(|e| panic!("an issued token does not decode: {e}"));
    assert_eq!(again.cluster, token.cluster);
    assert_eq!(again.trust_domain, token.trust_domain);
    assert_eq!(again.peering_addresses, token.peering_addresses);
    assert_eq!(again.bundle, token.bundle);
    assert_eq!(again.bundle_json, token.bundle_json);
    assert_eq!(again.expires_at_ms, now_ms + 60_000);

    // The secret never shows in the token's Debug, nor in an error about it.
    let secret_b64 = B64URL.encode(again.secret.as_bytes());
    assert!(
        !format!("{again:?}").contains(&secret_b64),
        "Debug shows the secret"
    );

    let joiner = ClusterName::parse("joiner").expect("a valid cluster name");
    book.redeem(
        &again.token_id,
        again.secret.as_bytes(),
        &again.digest,
        &joiner,
        now_ms,
    )
    .unwrap_or_else(|e| panic!("a fresh token is refused: {e}"));
    let replay = book
        .redeem(
            &again.token_id,
            again.secret.as_bytes(),
            &again.digest,
            &joiner,
            now_ms,
        )
        .expect_err("a token redeemed twice");
    assert!(
        !replay.to_string().contains(&secret_b64),
        "an error shows the secret"
    );
});
