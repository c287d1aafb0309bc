//! `cargo xtask fuzz-seeds`: regenerates the committed seed corpora from real producers.
//!
//! Bundles and certificates come from the `trust-bundle` CLI, ClientHellos from `openssl s_client`
//! and `curl` talking to a listener on 127.0.0.1 that records the first TLS record. Names and IDs
//! are listed here. Each corpus directory is rewritten, so add new seeds to this file rather than
//! by hand.

use std::fs;
use std::io::{ErrorKind, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::demo::{self, Session};
use crate::sh;

const SPIFFE_IDS: &[&str] = &[
    "spiffe://mesh.example/ns/default/sa/reviews",
    "spiffe://gcp.mesh.example",
    "spiffe://aws.mesh.example/ns/bookinfo/sa/ratings-v2",
    "spiffe://mesh.example/a/b.c/_d-e",
    "spiffe://Mesh.Example/ns/x",
    "spiffe://mesh.example//double",
    "spiffe://mesh.example/ns/../sa",
    "mesh.example",
];

const SNI_NAMES: &[&str] = &[
    "9080.reviews.default.aws.v1.isthmus.internal",
    "443.api.kube-system.gcp-europe-west1.v1.isthmus.internal",
    "80.web.default.aws.v2.isthmus.internal",
    "outbound_.9080_._.reviews.default.svc.cluster.local",
    "outbound_.9080_.v2_.reviews.default.svc.cluster.local",
    "outbound_.08080_._.reviews.default.svc.cluster.local",
    "api.mesh.example",
    "*.mesh.example",
];

/// The server name the openssl TLS 1.3 capture sends (a native v1 name).
const NATIVE_SNI: &str = "9080.reviews.default.aws.v1.isthmus.internal";
/// The server name the curl capture sends (an Istio alias).
const ISTIO_SNI: &str = "outbound_.9080_._.reviews.default.svc.cluster.local";

pub(crate) fn generate() -> anyhow::Result<()> {
    let work = sh::target_dir().join("fuzz/seedgen");
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    fs::create_dir_all(&work)?;
    sh::section("trust-bundle seeds", || trust_bundle_seeds(&work))?;
    sh::section("east-west-gateway seeds", east_west_gateway_seeds)
}

fn trust_bundle_seeds(work: &Path) -> anyhow::Result<()> {
    let session = Session::new(work, &demo::build_bins(&["trust-bundle"])?)?.quiet();
    for line in [
        "trust-bundle root create --trust-domain mesh.example --out root",
        "trust-bundle intermediate create --root root --cluster aws --out aws",
        "trust-bundle intermediate create --root root --cluster gcp \
         --trust-domain gcp.mesh.example --out gcp",
        "trust-bundle leaf issue --ca aws --spiffe-id spiffe://mesh.example/ns/default/sa/reviews \
         --dns reviews.default.svc --out leaf",
        "trust-bundle bundle build --trust-domain mesh.example --root root/cert.pem \
         --out mesh.json",
        "trust-bundle bundle build --trust-domain gcp.mesh.example --root root/cert.pem \
         --format spiffe --out gcp-spiffe.json",
        "trust-bundle bundle merge mesh.json gcp-spiffe.json --trust-domain gcp.mesh.example \
         --out map.json",
    ] {
        session.ok(line)?;
    }

    let corpus = |target: &str| corpus_dir("trust-bundle", target);
    let bundle_json = corpus("bundle_json")?;
    copy(&work.join("map.json"), &bundle_json.join("map.json"))?;
    copy(
        &work.join("gcp-spiffe.json"),
        &bundle_json.join("spiffe.json"),
    )?;
    let pem = corpus("pem")?;
    copy(&work.join("root/cert.pem"), &pem.join("root.pem"))?;
    copy(&work.join("leaf/chain.pem"), &pem.join("leaf-chain.pem"))?;
    copy(&work.join("gcp/cert.pem"), &pem.join("intermediate.pem"))?;
    write_lines(&corpus("spiffe_id")?, SPIFFE_IDS)
}

fn east_west_gateway_seeds() -> anyhow::Result<()> {
    let hellos = corpus_dir("east-west-gateway", "client_hello")?;
    let captures: [(&str, Client); 3] = [
        ("openssl-tls13-native.bin", |port| {
            let mut cmd = Command::new("openssl");
            cmd.args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
                .args(["-servername", NATIVE_SNI, "-alpn", "h2,http/1.1"]);
            cmd
        }),
        ("openssl-tls12.bin", |port| {
            let mut cmd = Command::new("openssl");
            cmd.args([
                "s_client",
                "-tls1_2",
                "-connect",
                &format!("127.0.0.1:{port}"),
            ])
            .args(["-servername", "api.mesh.example"]);
            cmd
        }),
        ("curl-istio.bin", |port| {
            let mut cmd = Command::new("curl");
            cmd.args(["--silent", "--max-time", "5", "--resolve"])
                .arg(format!("{ISTIO_SNI}:{port}:127.0.0.1"))
                .arg(format!("https://{ISTIO_SNI}:{port}/"));
            cmd
        }),
    ];
    for (file, client) in captures {
        let hello = capture_client_hello(client)?;
        println!("captured {} bytes into {file}", hello.len());
        fs::write(hellos.join(file), hello)?;
    }
    write_lines(&corpus_dir("east-west-gateway", "sni_name")?, SNI_NAMES)
}

/// Builds a TLS client command that connects to 127.0.0.1 on the given port.
type Client = fn(u16) -> Command;

/// Starts the client against a fresh listener and returns the first TLS record it sends.
fn capture_client_hello(client: Client) -> anyhow::Result<Vec<u8>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let mut cmd = client(listener.local_addr()?.port());
    println!("$ {}", sh::display(&cmd));
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    let child = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    listener.set_nonblocking(true)?;
    let mut stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e).context("the TLS client never connected"),
        }
    };
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !complete_record(&buf) {
        let n = stream.read(&mut chunk).context("reading the ClientHello")?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    drop(stream);
    drop(child);
    ensure!(
        complete_record(&buf) && buf[0] == 22,
        "the client did not send a TLS handshake record"
    );
    Ok(buf)
}

fn complete_record(buf: &[u8]) -> bool {
    match buf {
        [_, _, _, hi, lo, rest @ ..] => rest.len() >= usize::from(u16::from_be_bytes([*hi, *lo])),
        _ => false,
    }
}

/// Ends a client we no longer wait for.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Empties and returns `<crate>/fuzz/corpus/<target>`.
fn corpus_dir(krate: &str, target: &str) -> anyhow::Result<PathBuf> {
    let dir = sh::root().join(krate).join("fuzz/corpus").join(target);
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// One seed file per line, named by index.
fn write_lines(dir: &Path, lines: &[&str]) -> anyhow::Result<()> {
    for (i, line) in lines.iter().enumerate() {
        fs::write(dir.join(format!("{i:02}.txt")), line)?;
    }
    Ok(())
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    if !from.exists() {
        bail!("{} was not generated", from.display());
    }
    fs::copy(from, to).with_context(|| format!("cannot copy {}", from.display()))?;
    Ok(())
}
