//! The command line: `validate`, exit codes and error messages.

use std::process::Command;

fn validate(config: &str) -> std::process::Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, config).expect("write");
    Command::new(env!("CARGO_BIN_EXE_east-west-gateway"))
        .arg("validate")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run validate")
}

#[test]
fn validate_accepts_a_good_config() {
    let out = validate(
        "cluster: aws-east\nroutes: [{ name: r, hosts: [a.example], endpoints: [{ address: 127.0.0.1:9 }] }]\n",
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 routes, cluster aws-east)"));
}

#[test]
fn validate_names_the_field_and_exits_64() {
    let out = validate(
        "cluster: aws-east\nroutes: [{ name: r, hosts: [a.example], endpoints: [{ address: nowhere }] }]\n",
    );
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("routes[0].endpoints[0].address: \"nowhere\" is not IP:PORT"),
        "{err}"
    );
}

#[test]
fn terminate_mode_without_a_certificate_is_refused_with_a_clear_error() {
    let out = validate(
        "cluster: aws-east
routes:
  - name: r
    hosts: [a.example]
    mode: terminate
    authorize: { trust_domains: [gcp.example] }
    endpoints: [{ address: 127.0.0.1:9 }]
",
    );
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "tls: missing, but routes[0] (mode: terminate) needs the gateway's certificate"
        ),
        "{err}"
    );
}

#[test]
fn a_taken_port_fails_startup() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.yaml");
    std::fs::write(
        &path,
        format!(
            "cluster: c\ningress: {{ listen: 127.0.0.1:{port} }}\nadmin: {{ listen: 127.0.0.1:0 }}\n"
        ),
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_east-west-gateway"))
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot bind ingress listener"), "{err}");
    assert!(out.stdout.is_empty(), "no ready event on failure");
}
