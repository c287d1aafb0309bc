//! Peering tokens, sans IO: what `link token` prints on the acceptor and `link join` redeems on
//! the joiner. Randomness and time are parameters.
//!
//! Text form: `isthmus1.` + base64url(payload JSON) + `.` + base64url(first 8 bytes of
//! SHA-256(payload JSON)). The checksum only catches truncation and typos locally; security comes
//! from the acceptor, which keeps a [`TokenRecord`] per issued token and refuses a redemption
//! whose secret, payload digest, expiry or use does not match.
//!
//! The payload carries no private key: the acceptor's cluster, trust domain, peering addresses and
//! SPIFFE bundle (so the joiner can verify the acceptor), a 32-byte one-time secret and the expiry.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use trust_bundle::{TrustDomain, X509Bundle};

use crate::config::HostPort;
use crate::model::ClusterName;

/// What every token starts with; the digit is the format version.
pub const TOKEN_PREFIX: &str = "isthmus1.";
/// The payload version this build reads and writes.
pub const TOKEN_VERSION: u32 = 1;
/// Longer input is refused before decoding (a bundle with a few roots is a few KiB).
pub const MAX_TOKEN_BYTES: usize = 256 * 1024;
/// How long used and expired records are kept, so a late retry gets "already used" or
/// "expired" rather than "unknown".
pub const DEFAULT_PURGE_GRACE: Duration = Duration::from_secs(24 * 3600);

const CHECKSUM_BYTES: usize = 8;

/// Why a token text was refused on the joiner's side. Never quotes the token (it holds a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "this is not an Isthmus peering token (tokens start with `{TOKEN_PREFIX}`); copy the whole output of `federation-ctl link token`"
    )]
    NotAToken,
    #[error(
        "token format {found:?} is not supported by this federation-ctl (it reads `{TOKEN_PREFIX}`); make the token with a matching version"
    )]
    UnsupportedVersion { found: String },
    #[error("token is larger than {MAX_TOKEN_BYTES} bytes; copy only the token")]
    TooLarge,
    #[error("token is corrupted: {0}; copy the whole token")]
    Corrupted(&'static str),
    #[error(
        "token field {field} is invalid: {problem}; the acceptor made a token this version cannot use"
    )]
    Invalid {
        field: &'static str,
        problem: String,
    },
    #[error("token expired at {}; run `federation-ctl link token` on {cluster} for a new one", format_ms(*at_ms))]
    Expired { cluster: ClusterName, at_ms: i64 },
    #[error("cannot encode the token: {0}")]
    Encode(String),
}

/// Why the acceptor refused to redeem a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedeemError {
    #[error(
        "token {token_id} was not issued by this cluster, or was already purged; run `federation-ctl link token` for a new one"
    )]
    Unknown { token_id: String },
    #[error(
        "token {token_id} was already used by cluster {by} at {}; tokens are single-use: run `federation-ctl link token` for a new one",
        format_ms(*at_ms)
    )]
    Used {
        token_id: String,
        by: ClusterName,
        at_ms: i64,
    },
    #[error(
        "token {token_id} expired at {}; run `federation-ctl link token` for a new one",
        format_ms(*at_ms)
    )]
    Expired { token_id: String, at_ms: i64 },
    #[error(
        "token {token_id} differs from the one this cluster issued (payload digest mismatch); use the token exactly as printed"
    )]
    Tampered { token_id: String },
    #[error("token {token_id}: the secret does not match; use the token exactly as printed")]
    WrongSecret { token_id: String },
}

/// The 32-byte one-time secret. Its `Debug` never shows it.
#[derive(Clone)]
pub struct Secret([u8; 32]);

/// A token's text. Holds the secret, so its `Debug` is redacted; print it with [`Self::expose`]
/// only where the operator asked for it (`link token`).
#[derive(Clone, PartialEq, Eq)]
pub struct TokenText(String);

/// What the acceptor puts in its tokens about itself.
#[derive(Debug, Clone, Copy)]
pub struct Issuer<'a> {
    pub cluster: &'a ClusterName,
    pub trust_domain: &'a TrustDomain,
    pub peering_addresses: &'a [HostPort],
    /// Our SPIFFE bundle (JWKS JSON).
    pub bundle_json: &'a str,
}

/// A decoded, checksum-verified token: what the joiner needs to dial and verify the acceptor.
#[derive(Debug, Clone)]
pub struct JoinToken {
    pub token_id: String,
    pub cluster: ClusterName,
    pub trust_domain: TrustDomain,
    pub peering_addresses: Vec<HostPort>,
    /// The acceptor's bundle, parsed; `bundle_json` as received, for the link record.
    pub bundle: X509Bundle,
    pub bundle_json: String,
    pub secret: Secret,
    pub expires_at_ms: i64,
    /// SHA-256 of the payload bytes: sent as `JoinRequest.token_digest`.
    pub digest: [u8; 32],
}

/// What the acceptor remembers about a token it issued. No secret: only its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    pub token_id: String,
    #[serde(with = "hex32")]
    pub payload_sha256: [u8; 32],
    #[serde(with = "hex32")]
    pub secret_sha256: [u8; 32],
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_by: Option<ClusterName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_at_ms: Option<i64>,
}

/// The acceptor's issued tokens (persisted by the state directory as `tokens.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBook {
    tokens: BTreeMap<String, TokenRecord>,
}

/// The payload exactly as encoded. Field names are the wire format: never rename.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    version: u32,
    token_id: String,
    cluster: String,
    trust_domain: String,
    peering_addresses: Vec<String>,
    bundle: String,
    secret: String,
    expires_at_ms: i64,
}

// === impl Secret ===

impl Secret {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// SHA-256 of the secret, what the acceptor stores.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.0).into()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

// === impl TokenText ===

impl TokenText {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenText(redacted)")
    }
}

// === impl JoinToken ===

impl JoinToken {
    /// Decodes and checks a token: prefix, size, checksum, then every field. Never panics.
    pub fn decode(text: &str) -> Result<Self, TokenError> {
        // Terminals and chat tools add surrounding whitespace; nothing inside may differ.
        let text = text.trim();
        if text.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge);
        }
        let Some(body) = text.strip_prefix(TOKEN_PREFIX) else {
            return Err(match text.split_once('.') {
                Some((p, _)) if p.starts_with("isthmus") && p.len() <= 16 => {
                    TokenError::UnsupportedVersion {
                        found: format!("{p}."),
                    }
                }
                _ => TokenError::NotAToken,
            });
        };
        let (payload_b64, sum_b64) = body
            .split_once('.')
            .ok_or(TokenError::Corrupted("the checksum part is missing"))?;
        let payload = B64URL
            .decode(payload_b64)
            .map_err(|_| TokenError::Corrupted("the payload is not valid base64url"))?;
        let sum = B64URL
            .decode(sum_b64)
            .map_err(|_| TokenError::Corrupted("the checksum is not valid base64url"))?;
        let digest: [u8; 32] = Sha256::digest(&payload).into();
        if sum.len() != CHECKSUM_BYTES || !bool::from(sum.ct_eq(&digest[..CHECKSUM_BYTES])) {
            return Err(TokenError::Corrupted("checksum mismatch"));
        }
        let p: Payload = serde_json::from_slice(&payload).map_err(|e| TokenError::Invalid {
            field: "payload",
            problem: e.to_string(),
        })?;
        Self::from_payload(p, digest)
    }

    fn from_payload(p: Payload, digest: [u8; 32]) -> Result<Self, TokenError> {
        let invalid = |field: &'static str, problem: String| TokenError::Invalid { field, problem };
        if p.version != TOKEN_VERSION {
            return Err(TokenError::UnsupportedVersion {
                found: format!("payload version {}", p.version),
            });
        }
        check_token_id(&p.token_id).map_err(|e| invalid("token_id", e))?;
        let cluster =
            ClusterName::parse(&p.cluster).map_err(|e| invalid("cluster", e.to_string()))?;
        let trust_domain = TrustDomain::parse(&p.trust_domain)
            .map_err(|e| invalid("trust_domain", e.to_string()))?;
        if p.peering_addresses.is_empty() {
            return Err(invalid("peering_addresses", "empty".into()));
        }
        let peering_addresses = p
            .peering_addresses
            .iter()
            .map(|a| HostPort::parse(a))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("peering_addresses", e))?;
        let bundle = X509Bundle::from_spiffe_json(p.bundle.as_bytes())
            .map_err(|e| invalid("bundle", e.to_string()))?;
        let secret: [u8; 32] = B64URL
            .decode(&p.secret)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| invalid("secret", "not 32 bytes of base64url".into()))?;
        Ok(Self {
            token_id: p.token_id,
            cluster,
            trust_domain,
            peering_addresses,
            bundle,
            bundle_json: p.bundle,
            secret: Secret(secret),
            expires_at_ms: p.expires_at_ms,
            digest,
        })
    }

    /// Refuses an expired token before dialing (the acceptor checks again).
    pub fn check_fresh(&self, now_ms: i64) -> Result<(), TokenError> {
        if now_ms > self.expires_at_ms {
            return Err(TokenError::Expired {
                cluster: self.cluster.clone(),
                at_ms: self.expires_at_ms,
            });
        }
        Ok(())
    }
}

// === impl TokenBook ===

impl TokenBook {
    pub fn new() -> Self {
        Self::default()
    }

    /// Issues a token valid for `ttl` from `now_ms` and records it.
    pub fn issue(
        &mut self,
        issuer: &Issuer<'_>,
        now_ms: i64,
        ttl: Duration,
        rng: &mut impl rand::CryptoRng,
    ) -> Result<(TokenText, TokenRecord), TokenError> {
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        let secret = Secret(secret);
        let expires_at_ms =
            now_ms.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let payload = Payload {
            version: TOKEN_VERSION,
            token_id: hex::encode(id),
            cluster: issuer.cluster.to_string(),
            trust_domain: issuer.trust_domain.to_string(),
            peering_addresses: issuer
                .peering_addresses
                .iter()
                .map(|a| a.to_string())
                .collect(),
            bundle: issuer.bundle_json.to_owned(),
            secret: B64URL.encode(secret.as_bytes()),
            expires_at_ms,
        };
        let bytes = serde_json::to_vec(&payload).map_err(|e| TokenError::Encode(e.to_string()))?;
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        let text = format!(
            "{TOKEN_PREFIX}{}.{}",
            B64URL.encode(&bytes),
            B64URL.encode(&digest[..CHECKSUM_BYTES])
        );
        let record = TokenRecord {
            token_id: payload.token_id,
            payload_sha256: digest,
            secret_sha256: secret.digest(),
            created_at_ms: now_ms,
            expires_at_ms,
            used_by: None,
            used_at_ms: None,
        };
        self.tokens.insert(record.token_id.clone(), record.clone());
        Ok((TokenText(text), record))
    }

    /// Redeems a token once for `joiner`. On success the record is marked used; persist the book
    /// before answering the joiner, so a crash cannot let the token be used twice.
    pub fn redeem(
        &mut self,
        token_id: &str,
        secret: &[u8],
        payload_digest: &[u8],
        joiner: &ClusterName,
        now_ms: i64,
    ) -> Result<&TokenRecord, RedeemError> {
        let id = || token_id.to_owned();
        let Some(record) = self.tokens.get_mut(token_id) else {
            return Err(RedeemError::Unknown {
                token_id: printable_id(token_id),
            });
        };
        // Proof of possession first, so only the token's holder learns who used it.
        let secret_digest: [u8; 32] = Sha256::digest(secret).into();
        if !bool::from(secret_digest.ct_eq(&record.secret_sha256)) {
            return Err(RedeemError::WrongSecret { token_id: id() });
        }
        if !bool::from(payload_digest.ct_eq(&record.payload_sha256)) {
            return Err(RedeemError::Tampered { token_id: id() });
        }
        if let (Some(by), Some(at_ms)) = (&record.used_by, record.used_at_ms) {
            return Err(RedeemError::Used {
                token_id: id(),
                by: by.clone(),
                at_ms,
            });
        }
        if now_ms > record.expires_at_ms {
            return Err(RedeemError::Expired {
                token_id: id(),
                at_ms: record.expires_at_ms,
            });
        }
        record.used_by = Some(joiner.clone());
        record.used_at_ms = Some(now_ms);
        Ok(record)
    }

    /// Drops records used or expired more than `grace` ago; returns their ids.
    pub fn purge(&mut self, now_ms: i64, grace: Duration) -> Vec<String> {
        let grace = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        let done = |r: &TokenRecord| {
            let ended = match r.used_at_ms {
                Some(used) => used.min(r.expires_at_ms),
                None => r.expires_at_ms,
            };
            now_ms.saturating_sub(ended) > grace
        };
        let gone: Vec<String> = self
            .tokens
            .values()
            .filter(|r| done(r))
            .map(|r| r.token_id.clone())
            .collect();
        for id in &gone {
            self.tokens.remove(id);
        }
        gone
    }

    pub fn get(&self, token_id: &str) -> Option<&TokenRecord> {
        self.tokens.get(token_id)
    }

    pub fn records(&self) -> impl Iterator<Item = &TokenRecord> {
        self.tokens.values()
    }

    /// Tokens that could still be redeemed.
    pub fn outstanding(&self, now_ms: i64) -> usize {
        self.tokens
            .values()
            .filter(|r| r.used_by.is_none() && now_ms <= r.expires_at_ms)
            .count()
    }

    /// Checks a book read back from disk: keys match ids, ids are well formed, use is complete.
    pub fn check(&self) -> Result<(), String> {
        for (key, r) in &self.tokens {
            if key != &r.token_id {
                return Err(format!("entry {key:?} holds token {:?}", r.token_id));
            }
            check_token_id(key).map_err(|e| format!("token {key:?}: {e}"))?;
            if r.used_by.is_some() != r.used_at_ms.is_some() {
                return Err(format!(
                    "token {key}: used_by and used_at_ms must be set together"
                ));
            }
        }
        Ok(())
    }
}

fn check_token_id(id: &str) -> Result<(), String> {
    if id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err("must be 32 lowercase hex digits".into())
    }
}

/// A token id from the network, safe to echo in a message.
fn printable_id(id: &str) -> String {
    if check_token_id(id).is_ok() {
        id.to_owned()
    } else {
        format!("{:?}", id.chars().take(40).collect::<String>())
    }
}

/// Unix milliseconds as RFC 3339 (UTC), for messages.
pub(crate) fn format_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{ms} ms after the Unix epoch"))
}

/// `[u8; 32]` as lowercase hex in JSON.
mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&text, &mut out)
            .map_err(|_| D::Error::custom("expected 64 hex digits (a SHA-256)"))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
