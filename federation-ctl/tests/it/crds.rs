//! `federation-ctl crds` prints the CRDs generated from the Rust types, and the copy shipped
//! with the Kubernetes manifests is exactly that output.

use std::path::Path;
use std::process::Command;

#[test]
fn crds_verb_prints_the_generated_crds_and_the_manifest_copy_matches() {
    let out = Command::new(env!("CARGO_BIN_EXE_federation-ctl"))
        .arg("crds")
        .output()
        .expect("run federation-ctl crds");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(printed, federation_ctl::kube::crds_yaml().expect("renders"));
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/multicloud/kubernetes/01-crds.yaml");
    let shipped = std::fs::read_to_string(&file).expect("read 01-crds.yaml");
    assert!(
        shipped == printed,
        "{} is stale: regenerate it with `cargo run -p federation-ctl -- crds > examples/multicloud/kubernetes/01-crds.yaml`",
        file.display()
    );
}
