//! The trust quickstart: one root, an intermediate per cluster, a workload identity, a bundle
//! map, and the refusals that make the trust-domain binding worth having.

use anyhow::ensure;

use super::Session;

/// The binaries this demo runs.
pub(super) const BINS: &[&str] = &["trust-bundle"];

pub(super) fn run(s: &Session) -> anyhow::Result<()> {
    s.say("A root of trust for the trust domain mesh.example.");
    s.ok("trust-bundle root create --trust-domain mesh.example --out root")?;

    s.say("One intermediate per cluster. gcp may issue only for its own trust domain.");
    s.ok("trust-bundle intermediate create --root root --cluster aws --out aws")?;
    s.ok(
        "trust-bundle intermediate create --root root --cluster gcp \
         --trust-domain gcp.mesh.example --out gcp",
    )?;

    s.say("Workload identities: reviews from aws, ratings from gcp.");
    s.ok("trust-bundle leaf issue --ca aws \
          --spiffe-id spiffe://mesh.example/ns/default/sa/reviews --out reviews")?;
    s.ok("trust-bundle leaf issue --ca gcp \
          --spiffe-id spiffe://gcp.mesh.example/ns/default/sa/ratings --out ratings")?;

    s.say("A bundle per trust domain, merged into one SPIFFE bundle map.");
    s.ok(
        "trust-bundle bundle build --trust-domain mesh.example --root root/cert.pem \
         --out mesh.example.json",
    )?;
    s.ok(
        "trust-bundle bundle build --trust-domain gcp.mesh.example --root root/cert.pem \
         --out gcp.mesh.example.json",
    )?;
    s.ok(
        "trust-bundle bundle merge mesh.example.json gcp.mesh.example.json \
         --out bundle-map.json",
    )?;
    s.cat("bundle-map.json")?;

    s.say("What the reviews certificate says about itself.");
    s.ok("trust-bundle inspect reviews/cert.pem")?;

    s.say("Both identities verify against the bundle map.");
    let out = s.ok(
        "trust-bundle verify --bundle bundle-map.json --chain reviews/chain.pem \
         --spiffe-id spiffe://mesh.example/ns/default/sa/reviews",
    )?;
    ensure!(
        out.contains("spiffe://mesh.example/ns/default/sa/reviews"),
        "verify did not name the reviews identity"
    );
    s.ok("trust-bundle verify --bundle bundle-map.json --chain ratings/chain.pem")?;

    s.say("Refused: the gcp intermediate cannot mint a mesh.example identity ...");
    s.refused(
        "trust-bundle leaf issue --ca gcp \
         --spiffe-id spiffe://mesh.example/ns/default/sa/ratings --out forged",
        "bound to \"gcp.mesh.example\"",
    )?;
    s.say("... and a gcp identity does not pass for a mesh.example one.");
    s.refused(
        "trust-bundle verify --bundle bundle-map.json --chain ratings/chain.pem \
         --spiffe-id spiffe://mesh.example/ns/default/sa/ratings",
        "not spiffe://mesh.example/ns/default/sa/ratings",
    )?;

    s.say("Refused: a foreign root with the same trust domain name anchors nothing we issued.");
    s.ok("trust-bundle root create --trust-domain mesh.example --out foreign-root")?;
    s.ok(
        "trust-bundle bundle build --trust-domain mesh.example --root foreign-root/cert.pem \
         --out foreign.json",
    )?;
    s.refused(
        "trust-bundle verify --bundle foreign.json --chain reviews/chain.pem",
        "unknown issuer",
    )
}
