//! A small PKI for tests: one root, per-cluster intermediates, leaves, and the bundle map.

use std::time::Duration;

use time::OffsetDateTime;

use crate::bundle::{BundleMap, X509Bundle};
use crate::ca::{Authority, Credential, IntermediateParams, KeyAlgorithm, LeafParams, RootParams};
use crate::spiffe::{SpiffeId, TrustDomain};

/// A root for `td`, valid for a year.
pub fn root(td: &str) -> Authority {
    Authority::create_root(
        &RootParams {
            trust_domain: TrustDomain::parse(td).expect("valid trust domain"),
            validity: Duration::from_secs(365 * 86_400),
            algorithm: KeyAlgorithm::EcdsaP256,
        },
        OffsetDateTime::now_utc(),
    )
    .expect("root")
}

/// A cluster intermediate under `root`, bound to `td` (the root's when `None`).
pub fn intermediate(root: &Authority, cluster: &str, td: Option<&str>) -> Authority {
    root.create_intermediate(
        &IntermediateParams {
            cluster: cluster.to_owned(),
            trust_domain: td.map(|t| TrustDomain::parse(t).expect("valid trust domain")),
            validity: Duration::from_secs(30 * 86_400),
            algorithm: KeyAlgorithm::EcdsaP256,
        },
        OffsetDateTime::now_utc(),
    )
    .expect("intermediate")
}

/// A leaf for `id` issued by `ca`, valid for a day.
pub fn leaf(ca: &Authority, id: &str) -> Credential {
    leaf_issued(
        ca,
        id,
        OffsetDateTime::now_utc(),
        Duration::from_secs(86_400),
    )
}

/// A leaf for `id` issued by `ca` that expires `left` from now (at most ten seconds, the
/// shortest validity issued: it is issued in the past).
pub fn leaf_expiring_in(ca: &Authority, id: &str, left: Duration) -> Credential {
    let validity = Duration::from_secs(10);
    let issued = OffsetDateTime::now_utc() + left - validity;
    leaf_issued(ca, id, issued, validity)
}

fn leaf_issued(ca: &Authority, id: &str, now: OffsetDateTime, validity: Duration) -> Credential {
    ca.issue_leaf(
        &LeafParams {
            spiffe_id: SpiffeId::parse(id).expect("valid id"),
            dns_names: vec![],
            validity,
            algorithm: KeyAlgorithm::EcdsaP256,
        },
        now,
    )
    .expect("leaf")
}

/// A bundle map trusting `root` for each of `tds`.
pub fn bundle_map(entries: &[(&str, &Authority)]) -> BundleMap {
    let mut map = BundleMap::new();
    for (td, root) in entries {
        let td = TrustDomain::parse(td).expect("valid trust domain");
        let bundle = X509Bundle::new([root.credential.cert.clone()]).expect("bundle");
        match map.get_mut(&td) {
            Some(existing) => {
                existing
                    .add_root(root.credential.cert.clone())
                    .expect("root");
            }
            None => {
                map.insert(td, bundle);
            }
        }
    }
    map
}

/// A leaf for any SPIFFE ID signed by `ca`'s key, bypassing the issuance check that the ID is in
/// the CA's trust domain: what a compromised or misused intermediate could produce.
pub fn forge_leaf(ca: &Authority, id: &str) -> Credential {
    ca.issue_leaf_unchecked(id)
}
