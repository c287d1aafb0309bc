use rustls_pki_types::UnixTime;
use trust_bundle::test_util;
use trust_bundle::verify::{TrustStore, Usage};

use super::*;

const DAY: Duration = Duration::from_secs(86_400);

fn cluster(s: &str) -> ClusterName {
    ClusterName::parse(s).unwrap()
}

fn td(s: &str) -> TrustDomain {
    TrustDomain::parse(s).unwrap()
}

/// Writes `ca` as `trust-bundle intermediate create --out DIR` does.
fn write_ca(dir: &Path, ca: &Authority) {
    std::fs::create_dir_all(dir).unwrap();
    let c = &ca.credential;
    std::fs::write(dir.join(CA_CERT), pem_cert(&c.cert)).unwrap();
    std::fs::write(dir.join(CA_KEY), c.key.to_pem()).unwrap();
    let chain: String = c.chain.iter().map(|d| pem_cert(d)).collect();
    std::fs::write(dir.join(CA_CHAIN), chain).unwrap();
    std::fs::write(dir.join(CA_ROOT), pem_cert(&c.root)).unwrap();
}

struct Pki {
    _tmp: tempfile::TempDir,
    root: Authority,
    dir: PathBuf,
}

/// A root for aws.example and an intermediate for `cluster_name` under it, on disk.
fn pki(cluster_name: &str) -> Pki {
    let tmp = tempfile::tempdir().unwrap();
    let root = test_util::root("aws.example");
    let inter = test_util::intermediate(&root, cluster_name, None);
    let dir = tmp.path().join("ca");
    write_ca(&dir, &inter);
    Pki {
        _tmp: tmp,
        root,
        dir,
    }
}

fn load(
    p: &Pki,
    name: &str,
    td_name: Option<&str>,
    bundle: Option<&Path>,
) -> Result<ClusterCa, IdentityError> {
    ClusterCa::load(&p.dir, &cluster(name), td_name.map(td).as_ref(), bundle)
}

#[test]
fn issues_controller_and_gateway_identities_that_verify() {
    let p = pki("aws");
    let ca = load(&p, "aws", Some("aws.example"), None).unwrap();
    assert_eq!(ca.trust_domain().as_str(), "aws.example");
    assert_eq!(
        ca.bundle().roots(),
        std::slice::from_ref(&p.root.credential.cert)
    );
    let store = TrustStore::new(&ca.bundle_map()).unwrap();
    let now = SystemTime::now();
    for (role, id) in [
        (
            Role::Controller,
            "spiffe://aws.example/isthmus/cluster/aws/controller",
        ),
        (
            Role::Gateway,
            "spiffe://aws.example/isthmus/cluster/aws/gateway",
        ),
    ] {
        let ident = ca.issue(role, DAY, now).unwrap();
        assert_eq!(ident.spiffe_id.as_str(), id);
        assert_eq!(ca.spiffe_id(role), ident.spiffe_id);
        let chain = &ident.credential.chain;
        assert_eq!(chain.len(), 2, "leaf then intermediate");
        assert_eq!(chain[0], ident.credential.cert);
        let peer = store.verify(chain, UnixTime::now(), Usage::Client).unwrap();
        assert_eq!(peer.spiffe_id.as_str(), id);
        assert_eq!(peer.cluster.as_deref(), Some("aws"));
        // Half-life renewal.
        assert_eq!(
            ident.not_after.duration_since(ident.issued_at).unwrap(),
            DAY
        );
        assert_eq!(
            ident.renew_at.duration_since(ident.issued_at).unwrap(),
            DAY / 2
        );
        assert!(!ident.needs_renewal(ident.issued_at));
        assert!(ident.needs_renewal(ident.renew_at));
        // PEM forms: the chain parses back in order; the key matches the leaf.
        let pems = bundle::parse_pem_certs(ident.chain_pem().as_bytes()).unwrap();
        assert_eq!(&pems, chain);
        let key = PrivateKey::from_pem(&ident.key_pem()).unwrap();
        assert_eq!(
            ParsedCert::parse(&chain[0]).unwrap().spki,
            key.public_spki()
        );
        assert!(ident.key_pem().starts_with("-----BEGIN PRIVATE KEY-----"));
        // The key never shows in Debug.
        let shown = format!("{ident:?}");
        let key_body = ident.key_pem().lines().nth(1).unwrap().to_owned();
        assert!(!shown.contains(&key_body), "{shown}");
    }
}

#[test]
fn the_trust_domain_defaults_to_the_cas_and_must_match_it() {
    let p = pki("aws");
    assert_eq!(
        load(&p, "aws", None, None).unwrap().trust_domain().as_str(),
        "aws.example"
    );
    let err = load(&p, "aws", Some("gcp.example"), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bound to trust domain aws.example"), "{err}");
    assert!(err.contains("trust_domain: gcp.example"), "{err}");
    assert!(err.contains(&p.dir.display().to_string()), "{err}");
}

#[test]
fn a_ca_made_for_another_cluster_is_refused() {
    let p = pki("gcp");
    let err = load(&p, "aws", None, None).unwrap_err().to_string();
    assert!(err.contains("created for cluster gcp (L=gcp)"), "{err}");
    assert!(err.contains("this controller is cluster aws"), "{err}");
    assert!(err.contains("--cluster aws"), "{err}");
}

#[test]
fn a_root_ca_directory_is_refused() {
    let p = pki("aws");
    let root_dir = p.dir.with_file_name("root");
    write_ca(&root_dir, &p.root);
    let err = ClusterCa::load(&root_dir, &cluster("aws"), None, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("holds a root CA") && err.contains("intermediate create"),
        "{err}"
    );
}

#[test]
fn missing_or_broken_files_are_named() {
    let p = pki("aws");
    let err = ClusterCa::load(&p.dir.join("nope"), &cluster("aws"), None, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not a directory") && err.contains("intermediate create"),
        "{err}"
    );

    std::fs::remove_file(p.dir.join(CA_KEY)).unwrap();
    let err = load(&p, "aws", None, None).unwrap_err().to_string();
    assert!(
        err.contains("key.pem") && err.contains("CA directory from"),
        "{err}"
    );

    let p = pki("aws");
    std::fs::write(p.dir.join(CA_CERT), "garbage").unwrap();
    let err = load(&p, "aws", None, None).unwrap_err().to_string();
    assert!(err.contains("cert.pem"), "{err}");

    // A key from another CA.
    let p = pki("aws");
    let other = test_util::intermediate(&p.root, "aws", None);
    std::fs::write(p.dir.join(CA_KEY), other.credential.key.to_pem()).unwrap();
    let err = load(&p, "aws", None, None).unwrap_err().to_string();
    assert!(err.contains("does not belong"), "{err}");
}

#[test]
fn ca_files_debug_hides_the_key() {
    let p = pki("aws");
    let files = read_ca_dir(&p.dir).unwrap();
    let key = std::fs::read_to_string(p.dir.join(CA_KEY)).unwrap();
    let shown = format!("{files:?}");
    assert!(shown.contains("redacted"));
    assert!(!shown.contains(key.lines().nth(1).unwrap()), "{shown}");
}

#[test]
fn the_bundle_file_may_be_pem_spiffe_or_a_map_and_must_hold_our_root() {
    let p = pki("aws");
    // During a rotation the bundle holds the old and the new root.
    let next = test_util::root("aws.example");
    let both =
        X509Bundle::new([p.root.credential.cert.clone(), next.credential.cert.clone()]).unwrap();
    let dir = p.dir.parent().unwrap();
    let mut map = BundleMap::new();
    map.insert(td("aws.example"), both.clone());
    map.insert(
        td("gcp.example"),
        X509Bundle::new([test_util::root("gcp.example").credential.cert.clone()]).unwrap(),
    );
    for (name, text) in [
        ("bundle.pem", both.to_pem()),
        ("bundle.json", both.to_spiffe_json()),
        ("map.json", map.to_json()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let ca = load(&p, "aws", None, Some(&path)).unwrap();
        assert_eq!(ca.bundle().roots().len(), 2, "{name}");
    }

    let only_next = dir.join("next.pem");
    std::fs::write(&only_next, pem_cert(&next.credential.cert)).unwrap();
    let err = load(&p, "aws", None, Some(&only_next))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not contain the root") && err.contains("next.pem"),
        "{err}"
    );

    let mut gcp_only = BundleMap::new();
    gcp_only.insert(
        td("gcp.example"),
        X509Bundle::new([next.credential.cert.clone()]).unwrap(),
    );
    let path = dir.join("gcp-map.json");
    std::fs::write(&path, gcp_only.to_json()).unwrap();
    let err = load(&p, "aws", None, Some(&path)).unwrap_err().to_string();
    assert!(
        err.contains("no entry for our trust domain aws.example"),
        "{err}"
    );

    let err = load(&p, "aws", None, Some(&dir.join("missing.json")))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing.json") && err.contains("cannot read"),
        "{err}"
    );
    let garbage = dir.join("garbage.json");
    std::fs::write(&garbage, "{ nope").unwrap();
    assert!(load(&p, "aws", None, Some(&garbage)).is_err());
}

#[test]
fn leaves_never_outlive_the_intermediate() {
    let p = pki("aws");
    let ca = load(&p, "aws", None, None).unwrap();
    // test_util intermediates live 30 days; ask for 60.
    let now = SystemTime::now();
    let ident = ca.issue(Role::Gateway, 60 * DAY, now).unwrap();
    assert!(ident.not_after <= ca.not_after());
    let lifetime = ident.not_after.duration_since(ident.issued_at).unwrap();
    assert!(lifetime < 31 * DAY && lifetime > 29 * DAY, "{lifetime:?}");
    assert_eq!(
        ident.renew_at.duration_since(ident.issued_at).unwrap(),
        lifetime / 2
    );
    let parsed = ParsedCert::parse(&ident.credential.cert).unwrap();
    assert!(parsed.not_after <= ca.authority.parsed().not_after);

    // Thirty seconds before the intermediate expires there is nothing left to issue.
    let late = ca.not_after() - Duration::from_secs(30);
    let err = ca.issue(Role::Gateway, DAY, late).unwrap_err().to_string();
    assert!(
        err.contains("too soon") && err.contains("renew it"),
        "{err}"
    );
}
