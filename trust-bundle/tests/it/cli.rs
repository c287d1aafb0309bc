//! The `trust-bundle` binary, checked with real openssl.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_trust-bundle");

fn tb(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run trust-bundle")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = tb(dir, args);
    assert!(
        out.status.success(),
        "trust-bundle {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that must fail; returns its stderr, checked to be one line.
fn fails(dir: &Path, args: &[&str]) -> String {
    let out = tb(dir, args);
    assert!(
        !out.status.success(),
        "trust-bundle {args:?} unexpectedly succeeded"
    );
    let err = String::from_utf8_lossy(&out.stderr).trim_end().to_owned();
    assert_eq!(err.lines().count(), 1, "error is not one line: {err}");
    assert!(err.starts_with("trust-bundle: "), "{err}");
    err
}

fn openssl(dir: &Path, args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed (cargo xtask deps)")
}

struct Pki {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

/// root (mesh.example) → aws intermediate → reviews leaf, via the CLI.
fn pki() -> Pki {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    ok(
        &dir,
        &[
            "root",
            "create",
            "--trust-domain",
            "mesh.example",
            "--out",
            "root",
        ],
    );
    ok(
        &dir,
        &[
            "intermediate",
            "create",
            "--root",
            "root",
            "--cluster",
            "aws",
            "--out",
            "aws",
        ],
    );
    ok(
        &dir,
        &[
            "leaf",
            "issue",
            "--ca",
            "aws",
            "--spiffe-id",
            "spiffe://mesh.example/ns/default/sa/reviews",
            "--dns",
            "reviews.default.svc",
            "--out",
            "leaf",
        ],
    );
    Pki { _tmp: tmp, dir }
}

#[test]
fn openssl_verifies_the_chain_and_sees_the_extensions() {
    let p = pki();
    let out = openssl(
        &p.dir,
        &[
            "verify",
            "-CAfile",
            "root/cert.pem",
            "-untrusted",
            "aws/cert.pem",
            "leaf/cert.pem",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // chain.pem is the leaf followed by its intermediate, root excluded.
    let out = openssl(
        &p.dir,
        &[
            "verify",
            "-CAfile",
            "root/cert.pem",
            "-untrusted",
            "leaf/chain.pem",
            "leaf/chain.pem",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let text = |f: &str| {
        String::from_utf8(openssl(&p.dir, &["x509", "-in", f, "-noout", "-text"]).stdout).unwrap()
    };
    let leaf = text("leaf/cert.pem");
    assert!(
        leaf.contains("URI:spiffe://mesh.example/ns/default/sa/reviews"),
        "{leaf}"
    );
    assert!(leaf.contains("DNS:reviews.default.svc"), "{leaf}");
    assert!(
        leaf.contains("X509v3 Key Usage: critical\n                Digital Signature\n"),
        "{leaf}"
    );
    assert!(
        leaf.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{leaf}"
    );
    assert!(leaf.contains("CA:FALSE"), "{leaf}");
    let inter = text("aws/cert.pem");
    assert!(inter.contains("CA:TRUE, pathlen:0"), "{inter}");
    assert!(
        inter.contains("X509v3 Key Usage: critical\n                Certificate Sign, CRL Sign"),
        "{inter}"
    );
    assert!(inter.contains("URI:spiffe://mesh.example"), "{inter}");
    assert!(inter.contains("L = aws"), "{inter}");
    let root = text("root/cert.pem");
    assert!(
        root.contains("X509v3 Basic Constraints: critical\n                CA:TRUE\n"),
        "{root}"
    );
    assert!(root.contains("CN = mesh.example root CA "), "{root}");
    assert!(root.contains("X509v3 Subject Key Identifier"), "{root}");
    assert!(inter.contains("X509v3 Authority Key Identifier"), "{inter}");
}

#[test]
fn key_files_are_private_and_never_overwritten_without_force() {
    let p = pki();
    for dir in ["root", "aws", "leaf"] {
        let mode = std::fs::metadata(p.dir.join(dir).join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{dir}/key.pem");
        let mode = std::fs::metadata(p.dir.join(dir).join("cert.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644, "{dir}/cert.pem");
    }
    let before = std::fs::read(p.dir.join("root/key.pem")).unwrap();
    let err = fails(
        &p.dir,
        &[
            "root",
            "create",
            "--trust-domain",
            "mesh.example",
            "--out",
            "root",
        ],
    );
    assert!(err.contains("already exists; pass --force"), "{err}");
    assert_eq!(std::fs::read(p.dir.join("root/key.pem")).unwrap(), before);
    ok(
        &p.dir,
        &[
            "root",
            "create",
            "--trust-domain",
            "mesh.example",
            "--out",
            "root",
            "--force",
        ],
    );
    assert_ne!(std::fs::read(p.dir.join("root/key.pem")).unwrap(), before);
}

#[test]
fn verify_explains_success_and_failure() {
    let p = pki();
    ok(
        &p.dir,
        &[
            "bundle",
            "build",
            "--trust-domain",
            "mesh.example",
            "--root",
            "root/cert.pem",
            "--out",
            "bundle.json",
        ],
    );
    let out = ok(
        &p.dir,
        &[
            "verify",
            "--bundle",
            "bundle.json",
            "--chain",
            "leaf/chain.pem",
        ],
    );
    assert!(
        out.starts_with("OK spiffe://mesh.example/ns/default/sa/reviews"),
        "{out}"
    );
    assert!(out.contains("cluster aws"), "{out}");
    ok(
        &p.dir,
        &[
            "verify",
            "--bundle",
            "root/cert.pem",
            "--chain",
            "leaf/chain.pem",
            "--spiffe-id",
            "spiffe://mesh.example/ns/default/sa/reviews",
        ],
    );
    let err = fails(
        &p.dir,
        &[
            "verify",
            "--bundle",
            "bundle.json",
            "--chain",
            "leaf/chain.pem",
            "--spiffe-id",
            "spiffe://mesh.example/ns/default/sa/other",
        ],
    );
    assert!(
        err.contains("not spiffe://mesh.example/ns/default/sa/other"),
        "{err}"
    );

    // A foreign root: the chain leads nowhere in this bundle.
    ok(
        &p.dir,
        &[
            "root",
            "create",
            "--trust-domain",
            "mesh.example",
            "--out",
            "other",
        ],
    );
    let err = fails(
        &p.dir,
        &[
            "verify",
            "--bundle",
            "other/cert.pem",
            "--chain",
            "leaf/chain.pem",
        ],
    );
    assert!(err.contains("unknown issuer"), "{err}");
    // Without the intermediate the path cannot be built either.
    let err = fails(
        &p.dir,
        &[
            "verify",
            "--bundle",
            "bundle.json",
            "--chain",
            "leaf/cert.pem",
        ],
    );
    assert!(err.contains("unknown issuer"), "{err}");
}

#[test]
fn bundle_build_merge_convert_round_trip() {
    let p = pki();
    ok(
        &p.dir,
        &[
            "root",
            "create",
            "--trust-domain",
            "onprem.example",
            "--out",
            "onprem",
        ],
    );
    ok(
        &p.dir,
        &[
            "bundle",
            "build",
            "--trust-domain",
            "mesh.example",
            "--root",
            "root/cert.pem",
            "--out",
            "mesh.json",
            "--format",
            "spiffe",
        ],
    );
    ok(
        &p.dir,
        &[
            "bundle",
            "build",
            "--trust-domain",
            "onprem.example",
            "--root",
            "onprem/cert.pem",
            "--out",
            "onprem.pem",
            "--format",
            "pem",
        ],
    );
    ok(
        &p.dir,
        &[
            "bundle",
            "merge",
            "mesh.json",
            "onprem.pem",
            "--out",
            "map.json",
        ],
    );
    let map: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.dir.join("map.json")).unwrap()).unwrap();
    let tds = map["trust_domains"].as_object().unwrap();
    assert_eq!(tds.len(), 2, "{map}");
    let key = &tds["mesh.example"]["keys"][0];
    assert_eq!(key["use"], "x509-svid");
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["x5c"].as_array().unwrap().len(), 1);
    assert_eq!(tds["mesh.example"]["spiffe_sequence"], 1);

    // Merging a bundle with itself changes nothing; adding a root bumps the sequence.
    ok(
        &p.dir,
        &[
            "bundle",
            "merge",
            "map.json",
            "map.json",
            "--out",
            "same.json",
        ],
    );
    assert_eq!(
        std::fs::read(p.dir.join("same.json")).unwrap(),
        std::fs::read(p.dir.join("map.json")).unwrap()
    );
    ok(
        &p.dir,
        &[
            "root",
            "create",
            "--trust-domain",
            "mesh.example",
            "--out",
            "root2",
        ],
    );
    ok(
        &p.dir,
        &[
            "bundle",
            "merge",
            "map.json",
            "root2/cert.pem",
            "--trust-domain",
            "mesh.example",
            "--out",
            "bumped.json",
        ],
    );
    let bumped: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.dir.join("bumped.json")).unwrap()).unwrap();
    assert_eq!(
        bumped["trust_domains"]["mesh.example"]["spiffe_sequence"],
        2
    );
    assert_eq!(
        bumped["trust_domains"]["mesh.example"]["keys"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    ok(
        &p.dir,
        &[
            "bundle",
            "convert",
            "mesh.json",
            "--trust-domain",
            "mesh.example",
            "--format",
            "pem",
            "--out",
            "mesh.pem",
        ],
    );
    assert_eq!(
        std::fs::read_to_string(p.dir.join("mesh.pem")).unwrap(),
        std::fs::read_to_string(p.dir.join("root/cert.pem")).unwrap()
    );
    let err = fails(
        &p.dir,
        &[
            "bundle", "convert", "map.json", "--format", "pem", "--out", "x.pem",
        ],
    );
    assert!(err.contains("use --format map"), "{err}");
}

#[test]
fn inspect_reports_roles_and_lints() {
    let p = pki();
    let out = ok(
        &p.dir,
        &[
            "inspect",
            "-o",
            "json",
            "root/cert.pem",
            "aws/cert.pem",
            "leaf/cert.pem",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let roles: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["root", "intermediate", "leaf"]);
    let leaf = &v[2];
    assert_eq!(
        leaf["spiffe_id"],
        "spiffe://mesh.example/ns/default/sa/reviews"
    );
    assert_eq!(leaf["cluster"], "aws");
    assert_eq!(leaf["key_usage"], serde_json::json!(["digitalSignature"]));
    assert_eq!(leaf["key_usage_critical"], true);
    assert!(leaf["seconds_left"].as_i64().unwrap() > 23 * 3600);
    assert_eq!(leaf["findings"], serde_json::json!([]));
    assert_eq!(v[1]["path_len"], 0);
    let days = v[0]["seconds_left"].as_i64().unwrap() / 86_400;
    assert!(
        (3649..=3653).contains(&days),
        "ten-year root, got {days} days"
    );
    assert_eq!(
        v[0]["sha256_fingerprint"].as_str().unwrap().len(),
        32 * 3 - 1
    );
    let table = ok(&p.dir, &["inspect", "leaf/cert.pem"]);
    assert!(
        table.contains("spiffe id          spiffe://mesh.example/ns/default/sa/reviews"),
        "{table}"
    );
    assert!(table.contains("lint               ok"), "{table}");

    // A certificate that breaks the SPIFFE rules is flagged.
    let out = openssl(
        &p.dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "bad.key",
            "-out",
            "bad.pem",
            "-subj",
            "/CN=bad",
            "-days",
            "1",
            "-addext",
            "basicConstraints=CA:FALSE",
            "-addext",
            "subjectAltName=URI:spiffe://mesh.example/a,URI:spiffe://mesh.example/b",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = ok(&p.dir, &["inspect", "bad.pem"]);
    assert!(table.contains("error: 2 URI SANs"), "{table}");
    assert!(table.contains("error: keyUsage is missing"), "{table}");
}

#[test]
fn export_istio_writes_cacerts() {
    let p = pki();
    ok(
        &p.dir,
        &["export", "istio", "--ca", "aws", "--out", "cacerts"],
    );
    for f in [
        "ca-cert.pem",
        "ca-key.pem",
        "root-cert.pem",
        "cert-chain.pem",
    ] {
        assert!(p.dir.join("cacerts").join(f).exists(), "{f}");
    }
    let mode = std::fs::metadata(p.dir.join("cacerts/ca-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let out = openssl(
        &p.dir,
        &[
            "verify",
            "-CAfile",
            "cacerts/root-cert.pem",
            "cacerts/ca-cert.pem",
        ],
    );
    assert!(out.status.success());
    let chain = std::fs::read_to_string(p.dir.join("cacerts/cert-chain.pem")).unwrap();
    assert_eq!(
        chain.matches("BEGIN CERTIFICATE").count(),
        2,
        "intermediate + root"
    );
    let err = fails(&p.dir, &["export", "istio", "--ca", "root", "--out", "x"]);
    assert!(err.contains("is a root"), "{err}");
}

#[test]
fn rotation_via_the_cli() {
    let p = pki();
    ok(
        &p.dir,
        &[
            "bundle",
            "build",
            "--trust-domain",
            "mesh.example",
            "--root",
            "root/cert.pem",
            "--out",
            "bundle.json",
        ],
    );
    ok(
        &p.dir,
        &[
            "rotate",
            "prepare",
            "--root",
            "root",
            "--out",
            "root2",
            "--bundle",
            "bundle.json",
            "--cross-sign",
        ],
    );
    assert!(p.dir.join("root2/cross-signed.pem").exists());
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.dir.join("bundle.json")).unwrap()).unwrap();
    assert_eq!(
        v["trust_domains"]["mesh.example"]["keys"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(v["trust_domains"]["mesh.example"]["spiffe_sequence"], 2);
    // Old leaves still verify during the overlap.
    ok(
        &p.dir,
        &[
            "verify",
            "--bundle",
            "bundle.json",
            "--chain",
            "leaf/chain.pem",
        ],
    );
    // Activate re-issues aws under the new root; new leaves verify.
    ok(
        &p.dir,
        &[
            "rotate",
            "activate",
            "--root",
            "root2",
            "--intermediate",
            "aws",
        ],
    );
    ok(
        &p.dir,
        &[
            "leaf",
            "issue",
            "--ca",
            "aws",
            "--spiffe-id",
            "spiffe://mesh.example/ns/default/sa/reviews",
            "--out",
            "leaf2",
        ],
    );
    ok(
        &p.dir,
        &[
            "verify",
            "--bundle",
            "bundle.json",
            "--chain",
            "leaf2/chain.pem",
        ],
    );
    // Retire is refused while the old root's intermediate (30 days) is unexpired.
    let err = fails(
        &p.dir,
        &[
            "rotate",
            "retire",
            "--root",
            "root",
            "--bundle",
            "bundle.json",
        ],
    );
    assert!(
        err.contains("refusing to retire") && err.contains("--force"),
        "{err}"
    );
    ok(
        &p.dir,
        &[
            "rotate",
            "retire",
            "--root",
            "root",
            "--bundle",
            "bundle.json",
            "--force",
        ],
    );
    let err = fails(
        &p.dir,
        &[
            "verify",
            "--bundle",
            "bundle.json",
            "--chain",
            "leaf/chain.pem",
        ],
    );
    assert!(err.contains("unknown issuer"), "{err}");
    ok(
        &p.dir,
        &[
            "verify",
            "--bundle",
            "bundle.json",
            "--chain",
            "leaf2/chain.pem",
        ],
    );
}

#[test]
fn bad_input_gives_one_line_errors_and_leaves_nothing_behind() {
    let p = pki();
    let d = &p.dir;
    let no_output = |name: &str| assert!(!d.join(name).exists(), "{name} was left behind");

    let err = fails(
        d,
        &[
            "intermediate",
            "create",
            "--root",
            "missing",
            "--cluster",
            "x",
            "--out",
            "o1",
        ],
    );
    assert!(err.contains("missing is not a CA directory"), "{err}");
    no_output("o1");

    std::fs::create_dir(d.join("badpem")).unwrap();
    std::fs::write(
        d.join("badpem/cert.pem"),
        "-----BEGIN CERTIFICATE-----\n!!!notbase64\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    std::fs::copy(d.join("root/key.pem"), d.join("badpem/key.pem")).unwrap();
    let err = fails(
        d,
        &[
            "intermediate",
            "create",
            "--root",
            "badpem",
            "--cluster",
            "x",
            "--out",
            "o2",
        ],
    );
    assert!(err.contains("badpem/cert.pem"), "{err}");
    no_output("o2");

    std::fs::write(d.join("empty.pem"), "hello\n").unwrap();
    let err = fails(d, &["inspect", "empty.pem"]);
    assert!(err.contains("no CERTIFICATE block"), "{err}");

    std::fs::create_dir(d.join("wrongkey")).unwrap();
    std::fs::copy(d.join("root/cert.pem"), d.join("wrongkey/cert.pem")).unwrap();
    std::fs::copy(d.join("aws/key.pem"), d.join("wrongkey/key.pem")).unwrap();
    let err = fails(
        d,
        &[
            "intermediate",
            "create",
            "--root",
            "wrongkey",
            "--cluster",
            "x",
            "--out",
            "o3",
        ],
    );
    assert!(
        err.contains("private key does not belong to the certificate"),
        "{err}"
    );
    no_output("o3");

    // An expired issuer, made with the library at a time in the past.
    write_expired_root(&d.join("expired"));
    let err = fails(
        d,
        &[
            "intermediate",
            "create",
            "--root",
            "expired",
            "--cluster",
            "x",
            "--out",
            "o4",
        ],
    );
    assert!(
        err.contains("expired at") && err.contains("renew it"),
        "{err}"
    );
    no_output("o4");

    let err = fails(
        d,
        &[
            "intermediate",
            "create",
            "--root",
            "root",
            "--cluster",
            "x",
            "--out",
            "o5",
            "--validity",
            "20y",
        ],
    );
    assert!(err.contains("after the issuer"), "{err}");
    no_output("o5");

    for (name, body, want) in [
        (
            "trunc.json",
            "{\"trust_domains\": {",
            "malformed bundle JSON",
        ),
        (
            "dup.json",
            "{\"trust_domains\": {}, \"trust_domains\": {}}",
            "duplicate key",
        ),
        (
            "nokeys.json",
            "{\"spiffe_sequence\": 1}",
            "missing field `keys`",
        ),
    ] {
        std::fs::write(d.join(name), body).unwrap();
        let err = fails(
            d,
            &[
                "bundle",
                "convert",
                name,
                "--trust-domain",
                "mesh.example",
                "--format",
                "map",
                "--out",
                "o6.json",
            ],
        );
        assert!(err.contains(want), "{name}: {err}");
        no_output("o6.json");
    }

    let err = fails(
        d,
        &[
            "leaf",
            "issue",
            "--ca",
            "aws",
            "--spiffe-id",
            "spiffe://other.example/x",
            "--out",
            "o7",
        ],
    );
    assert!(
        err.contains("trust domain \"other.example\", but the issuer is bound to \"mesh.example\""),
        "{err}"
    );
    no_output("o7");
    let err = fails(
        d,
        &[
            "leaf",
            "issue",
            "--ca",
            "aws",
            "--spiffe-id",
            "spiffe://mesh.example",
            "--out",
            "o8",
        ],
    );
    assert!(err.contains("has no path"), "{err}");
    no_output("o8");
    // No temporary files anywhere.
    for entry in walk(d) {
        assert!(
            !entry
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".tmp-"),
            "{}",
            entry.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

fn write_expired_root(dir: &Path) {
    use trust_bundle::ca::{Authority, KeyAlgorithm, RootParams};
    let two_years_ago = time::OffsetDateTime::now_utc() - time::Duration::days(730);
    let root = Authority::create_root(
        &RootParams {
            trust_domain: "mesh.example".parse().unwrap(),
            validity: std::time::Duration::from_secs(365 * 86_400),
            algorithm: KeyAlgorithm::EcdsaP256,
        },
        two_years_ago,
    )
    .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("cert.pem"),
        trust_bundle::bundle::pem_cert(&root.credential.cert),
    )
    .unwrap();
    std::fs::write(dir.join("key.pem"), root.credential.key.to_pem()).unwrap();
}
