//! Shared test plumbing: a stand-in with its kubeconfig on disk, `kubectl` runs with bounded
//! time, and bounded polls.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kube_standin::{Options, StandIn};
use serde_json::Value;

/// A stand-in, its kubeconfig file and a private kubectl cache directory.
pub(crate) struct Cluster {
    pub(crate) standin: StandIn,
    pub(crate) dir: tempfile::TempDir,
}

impl Cluster {
    pub(crate) async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub(crate) async fn start_with(options: Options) -> Self {
        let standin = StandIn::start(options).await.expect("the stand-in starts");
        let dir = tempfile::tempdir().expect("tempdir");
        standin
            .write_kubeconfig(&dir.path().join("kubeconfig"))
            .expect("kubeconfig written");
        Self { standin, dir }
    }

    pub(crate) fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    pub(crate) fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).expect("write manifest");
        path
    }

    /// Runs kubectl; returns (success, stdout, stderr).
    pub(crate) async fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        let cache = self.dir.path().join("kube-cache");
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(&cache)
            .arg("--request-timeout=20s")
            .args(args)
            .env("HOME", self.dir.path())
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish in 60 s"))
            .unwrap_or_else(|e| {
                panic!("cannot run kubectl ({e}); install it with `cargo xtask deps`")
            });
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs kubectl and fails the test, with its output, unless it succeeds.
    pub(crate) async fn kubectl_ok(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.kubectl(args).await;
        assert!(
            ok,
            "kubectl {args:?} failed:\nstdout: {stdout}\nstderr: {stderr}"
        );
        stdout
    }

    /// kubectl's minor version (Debian's `kubernetes-client` is 1.20; newer ones come from
    /// other packages): some flags and checks differ.
    pub(crate) async fn kubectl_minor(&self) -> u32 {
        let version = self
            .kubectl_json(&["version", "--client", "-o", "json"])
            .await;
        version["clientVersion"]["minor"]
            .as_str()
            .and_then(|m| m.trim_end_matches('+').parse().ok())
            .unwrap_or_else(|| panic!("cannot read kubectl's version from {version}"))
    }

    /// `kubectl get … -o json` with managedFields shown (kubectl 1.21+ hides them unless asked).
    pub(crate) async fn kubectl_get_full(&self, args: &[&str]) -> Value {
        let mut full = vec!["get"];
        full.extend(args);
        full.extend(["-o", "json"]);
        if self.kubectl_minor().await >= 21 {
            full.push("--show-managed-fields");
        }
        self.kubectl_json(&full).await
    }

    pub(crate) async fn kubectl_json(&self, args: &[&str]) -> Value {
        let stdout = self.kubectl_ok(args).await;
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("kubectl {args:?}: not JSON ({e}): {stdout}"))
    }
}

/// Polls `check` until it returns `Some`, for at most `within`; fails naming `what`.
pub(crate) async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The repository root.
pub(crate) fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate is inside the workspace")
}
