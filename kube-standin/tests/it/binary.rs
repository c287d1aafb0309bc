//! The `kube-standin` binary: a `ready` line once serving, a private kubeconfig, and real
//! kubectl working against it, as a process-based test or demo uses it.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};

/// Runs kubectl with `kubeconfig` and the cache directory `cache` beside it, for at most 60 s.
async fn kubectl(kubeconfig: &std::path::Path, cache: &str, args: &[&str]) -> std::process::Output {
    let dir = kubeconfig.parent().expect("a directory");
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(dir.join(cache))
        .args(args)
        .env("HOME", dir)
        .output();
    tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("kubectl finishes within 60 s")
        .expect("run kubectl")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_and_writes_a_private_kubeconfig() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-standin"))
        .args(["--listen", "127.0.0.1:0", "--kubeconfig-out"])
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start kube-standin");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("a ready line within 20 s")
        .expect("read stdout")
        .expect("kube-standin exited before it was ready");
    let ready: serde_json::Value = serde_json::from_str(&ready).expect("the ready line is JSON");
    assert_eq!(ready["event"], "ready", "{ready}");

    let mode = std::fs::metadata(&kubeconfig)
        .expect("kubeconfig written")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the kubeconfig holds a token");
    let text = std::fs::read_to_string(&kubeconfig).expect("read kubeconfig");
    let address = ready["address"].as_str().expect("address");
    assert!(
        text.contains(&format!("server: https://{address}")),
        "{text}"
    );

    let out = kubectl(&kubeconfig, "cache", &["get", "namespaces", "-o", "name"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names = String::from_utf8_lossy(&out.stdout);
    assert!(names.lines().any(|l| l == "namespace/default"), "{names}");

    // Without the token: 401, and the server keeps serving.
    let wrong = text.replace("token: ", "token: x");
    let wrong_path = dir.path().join("wrong");
    std::fs::write(&wrong_path, wrong).expect("write");
    let out = kubectl(&wrong_path, "cache-wrong", &["get", "namespaces"]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Unauthorized") || stderr.contains("credentials"),
        "{stderr}"
    );
    child.kill().await.expect("stop kube-standin");
}
