//! Test PKI on disk: two federated trust domains (`aws.example` with cluster `aws`,
//! `gcp.example` with cluster `gcp`), gateway identities as PEM files, and bundle maps.

use std::path::{Path, PathBuf};

use trust_bundle::bundle::{BundleMap, pem_cert};
use trust_bundle::test_util::{bundle_map, intermediate, leaf, root};
use trust_bundle::{Authority, Credential};

/// The federation's CAs, and a directory holding every file the tests write.
pub(crate) struct Pki {
    pub(crate) aws_root: Authority,
    pub(crate) aws: Authority,
    pub(crate) gcp_root: Authority,
    pub(crate) gcp: Authority,
    dir: tempfile::TempDir,
}

/// The `tls:` files of one gateway.
pub(crate) struct Files {
    pub(crate) chain: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) bundle: PathBuf,
}

/// The SPIFFE ID every test gateway in `td` uses.
pub(crate) fn gateway_id(td: &str) -> String {
    format!("spiffe://{td}/ns/isthmus/sa/gateway")
}

impl Pki {
    pub(crate) fn new() -> Self {
        let aws_root = root("aws.example");
        let aws = intermediate(&aws_root, "aws", None);
        let gcp_root = root("gcp.example");
        let gcp = intermediate(&gcp_root, "gcp", None);
        Self {
            aws_root,
            aws,
            gcp_root,
            gcp,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Both trust domains.
    pub(crate) fn federation(&self) -> BundleMap {
        bundle_map(&[
            ("aws.example", &self.aws_root),
            ("gcp.example", &self.gcp_root),
        ])
    }

    /// Writes `cred` and `bundle` as `<name>.{pem,key,bundle.json}`.
    pub(crate) fn write(&self, name: &str, cred: &Credential, bundle: &BundleMap) -> Files {
        let files = Files {
            chain: self.dir.path().join(format!("{name}.pem")),
            key: self.dir.path().join(format!("{name}.key")),
            bundle: self.dir.path().join(format!("{name}.bundle.json")),
        };
        let chain: String = cred.chain.iter().map(|c| pem_cert(c)).collect();
        std::fs::write(&files.chain, chain).expect("write chain");
        std::fs::write(&files.key, cred.key.to_pem()).expect("write key");
        write_atomically(&files.bundle, &bundle.to_json());
        files
    }

    /// A gateway identity of `ca` with the standard gateway ID, written with the federation
    /// bundle map.
    pub(crate) fn gateway(&self, name: &str, ca: &Authority, td: &str) -> Files {
        self.write(name, &leaf(ca, &gateway_id(td)), &self.federation())
    }
}

impl Files {
    /// The `tls:` config section for these files.
    pub(crate) fn section(&self) -> String {
        format!(
            "tls: {{ cert_chain: {}, private_key: {}, trust_bundle: {} }}\n",
            self.chain.display(),
            self.key.display(),
            self.bundle.display()
        )
    }
}

/// Replace a file by rename, so a poller never sees half of it.
pub(crate) fn write_atomically(path: &Path, contents: &str) {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, contents).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}
