//! Faults under continuous traffic, and the controller's robustness: every process killed and
//! restarted in turn while a client calls, a peer's controller stopped (SIGSTOP) past its lease,
//! a full state directory, two controllers on one state directory, identity renewal under
//! traffic, and connections from an unlinked trust domain. Skewed clocks are in `clock.rs`, a
//! peer cut off by its link going down in `netns.rs`.
//!
//! Each scenario prints what callers saw (failed calls, time to recover); the README's
//! "Failure behaviour" table is made of these figures. Scenarios that need root (mounting a
//! tmpfs) print `SKIPPED <test>: <why>` and pass without them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use multicloud::cluster::{Cluster, ECHO, Options};
use multicloud::echo::call;
use multicloud::shell::Shell;
use multicloud::topology::{Ca, Topology};
use multicloud::traffic::{Traffic, call_until};
use multicloud::{Error, PATIENCE, run_err, run_ok};

pub(crate) type Result<T = (), E = Error> = std::result::Result<T, E>;

pub(crate) struct World {
    // Declared first, so dropped first: the processes stop before their directory goes.
    pub(crate) topo: Topology,
    cas: Vec<Ca>,
    _work: tempfile::TempDir,
}

/// Clusters `a` (calling) and `b` (serving), one root; `b` exports the echo service and `a`
/// calls it through both gateways. Options per cluster, `a` first.
pub(crate) fn linked(a_opts: &Options, b_opts: &Options) -> Result<World> {
    let work = tempfile::tempdir().expect("tempdir");
    let mut topo = Topology::new(Shell::new(work.path())?);
    let root = topo.root("root", "mesh.example")?;
    let mut cas = Vec::new();
    for (name, opts) in [("a", a_opts), ("b", b_opts)] {
        let ca = topo.intermediate(&root, name)?;
        topo.start(name, &ca, opts)?;
        cas.push(ca);
    }
    let [a, b] = &topo.clusters[..] else {
        unreachable!()
    };
    a.join(&b.token()?)?;
    b.export(ECHO)?;
    call_until(a.listener(ECHO)?, "b")?;
    Ok(World {
        topo,
        cas,
        _work: work,
    })
}

/// One line of a scenario's summary: what continuous callers saw across one fault.
struct Row {
    fault: String,
    ok: usize,
    failed: usize,
    /// From the fault to the first successful call after it.
    recovered: Duration,
    first_error: Option<String>,
}

/// Runs `fault` under `traffic` and waits until calls succeed again (bounded): what callers saw.
fn under_traffic(traffic: &Traffic, fault: &str, inject: impl FnOnce() -> Result) -> Result<Row> {
    let before = traffic.counts();
    let start = Instant::now();
    inject()?;
    traffic.wait_successes(1)?;
    let recovered = start.elapsed();
    // Settled: enough calls to be sure the path is whole again before the next fault.
    traffic.wait_successes(10)?;
    let after = traffic.counts();
    Ok(Row {
        fault: fault.to_owned(),
        ok: after.ok - before.ok,
        failed: after.failed - before.failed,
        recovered,
        first_error: after.errors.get(before.failed).cloned(),
    })
}

/// Ten more good calls, then stops `traffic` and asserts none failed; prints the counts.
pub(crate) fn no_call_failed(traffic: Traffic, what: &str) -> Result {
    traffic.wait_successes(10)?;
    let counts = traffic.stop();
    println!("{what}: {} calls ok, {} failed", counts.ok, counts.failed);
    assert_eq!(counts.failed, 0, "{what}: {:?}", counts.errors);
    Ok(())
}

fn print_table(title: &str, rows: &[Row]) {
    println!("\n{title}");
    println!(
        "| {:<44} | {:>9} | {:>12} | {:>12} |",
        "fault", "calls ok", "calls failed", "recovered in"
    );
    for r in rows {
        println!(
            "| {:<44} | {:>9} | {:>12} | {:>12} |",
            r.fault,
            r.ok,
            r.failed,
            format!("{:.0?}", r.recovered)
        );
        if let Some(e) = &r.first_error {
            println!("|   first failure: {e}");
        }
    }
}

#[test]
fn every_process_killed_and_restarted_in_turn_under_continuous_calls() -> Result {
    let b_opts = Options {
        echo_process: true,
        ..Options::default()
    };
    let mut w = linked(&Options::default(), &b_opts)?;
    let listener = w.topo.clusters[0].listener(ECHO)?;
    let traffic = Traffic::start(listener, "b");
    traffic.wait_successes(20)?;

    let mut rows = Vec::new();
    // Controllers are off the data path: killing one fails no call.
    for (i, who) in [(0, "a (calling) controller"), (1, "b (serving) controller")] {
        let row = under_traffic(&traffic, &format!("SIGKILL + restart {who}"), || {
            w.topo.clusters[i].restart_controller()?;
            w.topo.clusters[0].wait_links("link back up", |l| l[0]["state"] == "connected")
        })?;
        assert_eq!(row.failed, 0, "{who}: {:?}", row.first_error);
        rows.push(row);
    }
    // Gateways and the endpoint are the data path: calls fail until they are back, and then
    // every call succeeds again (bounded by `under_traffic`).
    rows.push(under_traffic(
        &traffic,
        "SIGKILL + restart a (calling) gateway",
        || w.topo.clusters[0].restart_gateway(),
    )?);
    rows.push(under_traffic(
        &traffic,
        "SIGKILL + restart b (serving) gateway",
        || w.topo.clusters[1].restart_gateway(),
    )?);
    rows.push(under_traffic(
        &traffic,
        "SIGKILL + restart b's echo endpoint",
        || w.topo.clusters[1].restart_echo(|| Ok(())),
    )?);
    let total = traffic.stop();
    print_table(
        "faults under continuous calls (a calls b's echo.default)",
        &rows,
    );
    println!("total: {} calls ok, {} failed", total.ok, total.failed);
    // The path is whole at the end: the same listener still answers.
    assert_eq!(call(listener).as_deref(), Ok("b"));
    Ok(())
}

#[test]
fn a_stopped_peer_controller_loses_its_imports_after_the_lease_and_regains_them_on_sigcont()
-> Result {
    let w = linked(&Options::default(), &Options::default())?;
    let [a, b] = &w.topo.clusters[..] else {
        unreachable!()
    };
    let listener = a.listener(ECHO)?;
    b.signal_controller("STOP")?;
    let stopped = Instant::now();
    // b's gateway keeps serving while its controller is frozen, until a's lease lapses.
    assert_eq!(call(listener).as_deref(), Ok("b"));
    a.wait_import("import from the frozen b withdrawn", ECHO, |i| i.is_none())?;
    let withdrawn = stopped.elapsed();
    a.wait_links("b's lease lapsed", |l| l[0]["lease_live"] == false)?;
    b.signal_controller("CONT")?;
    let resumed = Instant::now();
    let (_, failed) = call_until(a.listener(ECHO)?, "b")?;
    let back = resumed.elapsed();
    println!(
        "b's controller SIGSTOPped: a withdrew the import after {withdrawn:.0?} (lease: 200ms x (4 + 1)); \
         SIGCONT: calls answered again after {back:.0?} ({failed} calls failed meanwhile)"
    );
    a.wait_links("link connected", |l| {
        l[0]["state"] == "connected" && l[0]["lease_live"] == true
    })?;
    Ok(())
}

#[test]
fn a_second_controller_on_the_same_state_directory_exits_64_naming_the_holder() -> Result {
    let w = linked(&Options::default(), &Options::default())?;
    let a = &w.topo.clusters[0];
    let mut second = w.topo.shell.command("federation-ctl")?;
    second
        .args(["controller", "--config"])
        .arg(Path::new("a").join("controller.yaml"));
    let (code, err) = run_err(&mut second)?;
    assert_eq!(code, 64, "{err}");
    let pid = a.controller.pid();
    assert!(
        err.contains("in use by another controller") && err.contains(&format!("pid {pid}")),
        "the message names the holder's pid {pid}: {err}"
    );
    // The first one was not disturbed.
    assert_eq!(a.links()?.len(), 1);
    assert_eq!(call(a.listener(ECHO)?).as_deref(), Ok("b"));
    Ok(())
}

/// Skips a scenario visibly (the harness does not capture stderr of a passing test's reason).
pub(crate) fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// A small tmpfs mounted over a directory; unmounted on drop.
struct Tmpfs(Mounted);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Self> {
        run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={size},mode=0700"))
                .arg("tmpfs")
                .arg(dir),
        )?;
        Ok(Self(Mounted(dir.to_owned())))
    }

    /// A read-only bind mount of the same directory on top (the controller holds its lock
    /// file open for writing, so the tmpfs itself cannot be remounted read-only); writes through
    /// the path fail with EROFS until it is dropped.
    fn read_only(&self) -> Result<Mounted> {
        let dir = &self.0.0;
        run_ok(Command::new("mount").arg("--bind").arg(dir).arg(dir))?;
        let top = Mounted(dir.clone());
        run_ok(
            Command::new("mount")
                .args(["-o", "remount,ro,bind"])
                .arg(dir),
        )?;
        Ok(top)
    }
}

/// A mount on a directory, lazily unmounted on drop, so a failed test leaves no mount behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("--lazy").arg(&self.0).status();
    }
}

/// Copies the state files (JSON, in `links/` and `imports/` too), not the socket or the lock.
fn copy_state(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type()?.is_dir() {
            std::fs::create_dir_all(&dst)?;
            copy_state(&src, &dst)?;
        } else if src.extension().is_some_and(|e| e == "json") {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

/// Every JSON file under `dir` parses; how many there are.
fn parse_all(dir: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("read state dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            n += parse_all(&path);
        } else if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).expect("read state file");
            serde_json::from_str::<serde_json::Value>(&text)
                .unwrap_or_else(|e| panic!("{} is corrupt: {e}\n{text}", path.display()));
            n += 1;
        }
    }
    n
}

/// Writes zeros into `path` until the filesystem is full.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).expect("create filler");
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
}

#[test]
fn a_full_or_read_only_state_directory_is_reported_and_the_controller_keeps_serving_uncorrupted()
-> Result {
    const TEST: &str = "a_full_or_read_only_state_directory_is_reported";
    if !is_root() {
        skip(TEST, "mounting a small tmpfs needs root");
        return Ok(());
    }
    let mut w = linked(&Options::default(), &Options::default())?;
    // Move a's state onto a 512 KiB tmpfs while its controller is down.
    let state = w.topo.clusters[0].dir.join("state");
    let saved = w.topo.clusters[0].dir.join("state.saved");
    w.topo.clusters[0].kill_controller();
    std::fs::rename(&state, &saved).expect("move state aside");
    std::fs::create_dir(&state).expect("mkdir state");
    let tmpfs = Tmpfs::mount(&state, "512k")?;
    copy_state(&saved, &state).expect("copy state onto the tmpfs");
    w.topo.clusters[0].restart_controller()?;
    let [a, b] = &w.topo.clusters[..] else {
        unreachable!()
    };
    a.wait_links("link back up", |l| l[0]["state"] == "connected")?;
    let listener = a.listener(ECHO)?;
    call_until(listener, "b")?;

    fill(&state.join("filler"));
    let traffic = Traffic::start(listener, "b");
    // A verb that writes says the state could not be saved, and why.
    let (code, err) = run_err(&mut a.ctl(&["export", ECHO])?)?;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cannot save") && err.contains("No space left on device"),
        "export on a full disk: {err}"
    );
    println!("full state dir, `export`: {}", err.trim());
    let (_, err) = run_err(&mut a.ctl(&["link", "token"])?)?;
    assert!(
        err.contains("cannot record the token") && err.contains("No space left on device"),
        "link token on a full disk: {err}"
    );
    // Calls never noticed: the data path does not touch the disk.
    no_call_failed(traffic, "full state dir")?;
    // An import change that cannot be persisted is logged with the path and the errno, and
    // still applied: b unexports, a withdraws it (and would resume it from the old file).
    b.show(&["unexport", ECHO])?;
    a.wait_import("import withdrawn on a full disk", ECHO, |i| i.is_none())?;
    let log_has = |needle: &str| {
        std::fs::read_to_string(a.controller.stderr_log())
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains(needle) && l.contains("No space left on device"))
    };
    assert!(
        log_has("a/state/imports/.tmp-b.json"),
        "a's log names the imports file and the errno:\n{}",
        a.controller.logs()
    );

    // Still serving: the API answers, and every file on disk is whole.
    assert_eq!(a.links()?.len(), 1);
    let files = parse_all(&state);
    assert!(files >= 3, "links, imports, exports...: {files} files");
    // Space again: the same verb works.
    std::fs::remove_file(state.join("filler")).expect("remove filler");
    b.export(ECHO)?;
    call_until(a.listener(ECHO)?, "b")?;
    a.show(&["link", "token"])?;
    parse_all(&state);

    // Read-only: the same, with the other errno.
    let read_only = tmpfs.read_only()?;
    let (code, err) = run_err(&mut a.ctl(&["link", "token"])?)?;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cannot record the token") && err.contains("Read-only file system"),
        "link token on a read-only disk: {err}"
    );
    println!("read-only state dir, `link token`: {}", err.trim());
    assert_eq!(call(listener).as_deref(), Ok("b"));
    assert_eq!(a.links()?.len(), 1);
    parse_all(&state);
    drop(read_only);
    a.show(&["link", "token"])?;
    // Stop a before the tmpfs goes.
    w.topo.clusters[0].kill_controller();
    Ok(())
}

/// A leaf for `spiffe_id` from `ca`, as a peer gateway would hold it.
struct Leaf {
    cert: PathBuf,
    key: PathBuf,
    /// The issuing intermediate, sent after the leaf.
    intermediate: PathBuf,
}

fn peer_leaf(shell: &Shell, ca: &Ca, spiffe_id: &str, out: &str) -> Result<Leaf> {
    run_ok(
        shell
            .command("trust-bundle")?
            .args(["leaf", "issue", "--ca"])
            .arg(&ca.dir)
            .args(["--spiffe-id", spiffe_id, "--out", out]),
    )?;
    let dir = shell.work().join(out);
    Ok(Leaf {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        intermediate: shell.work().join(&ca.dir).join("cert.pem"),
    })
}

/// `openssl s_client` to `ingress` with `sni`, presenting `leaf`, saving or resuming a session
/// (`-sess_out FILE` / `-sess_in FILE`): whether the handshake held, and the whole output.
fn s_client(
    ingress: SocketAddr,
    sni: &str,
    leaf: &Leaf,
    session: (&str, &Path),
) -> Result<(bool, String)> {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &ingress.to_string(),
            "-servername",
            sni,
        ])
        .arg("-cert")
        .arg(&leaf.cert)
        .arg("-key")
        .arg(&leaf.key)
        .arg("-cert_chain")
        .arg(&leaf.intermediate)
        .arg(session.0)
        .arg(session.1)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            command: "openssl s_client".into(),
            source,
        })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success() && !text.contains("alert"), text))
}

/// The native SNI a peer gateway sends for the echo service's port 8080 in `cluster`.
fn echo_sni(cluster: &Cluster) -> String {
    format!("8080.echo.default.{}.v1.isthmus.internal", cluster.name)
}

/// The leaf certificate (PEM) `s_client` printed.
fn server_cert(output: &str) -> Option<String> {
    let start = output.find("-----BEGIN CERTIFICATE-----")?;
    let end = output[start..].find("-----END CERTIFICATE-----")? + start;
    Some(output[start..end].to_owned())
}

#[test]
fn the_gateway_identity_renews_under_traffic_and_the_presented_certificate_changes() -> Result {
    let short = Options {
        identity_validity: Some(Duration::from_secs(10)),
        ..Options::default()
    };
    let w = linked(&Options::default(), &short)?;
    let [a, b] = &w.topo.clusters[..] else {
        unreachable!()
    };
    let traffic = Traffic::start(a.listener(ECHO)?, "b");
    traffic.wait_successes(10)?;
    let sni = echo_sni(b);
    let leaf = peer_leaf(
        &w.topo.shell,
        &w.cas[0],
        "spiffe://mesh.example/isthmus/cluster/a/gateway",
        "probe",
    )?;
    let sess = w.topo.shell.work().join("sess.pem");
    let presented = || -> Result<String> {
        let (ok, out) = s_client(b.ingress, &sni, &leaf, ("-sess_out", &sess))?;
        server_cert(&out).filter(|_| ok).ok_or_else(|| {
            b.gateway
                .fail(&format!("no certificate from s_client:\n{out}"))
        })
    };
    let first = presented()?;
    let start = Instant::now();
    let mut renewals = 0;
    let mut last = first.clone();
    // Two renewals (at half-life, 5 s): the second replaces a renewed certificate too.
    while renewals < 2 {
        assert!(
            start.elapsed() < PATIENCE,
            "the presented certificate did not change twice within {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
        let now = presented()?;
        if now != last {
            renewals += 1;
            println!(
                "presented certificate changed after {:.1?}",
                start.elapsed()
            );
            last = now;
        }
    }
    no_call_failed(traffic, "identity_validity 10s, 2 renewals")?;
    assert_ne!(first, last);
    Ok(())
}

#[test]
fn unlinking_a_peer_with_another_root_closes_its_live_connections_and_refuses_resumption() -> Result
{
    let work = tempfile::tempdir().expect("tempdir");
    let mut topo = Topology::new(Shell::new(work.path())?);
    let cas = topo.start_with_own_roots(&[("aws", "aws.example"), ("onprem", "onprem.example")])?;
    let [aws, onprem] = &topo.clusters[..] else {
        unreachable!()
    };
    aws.join(&onprem.token()?)?;
    onprem.export(ECHO)?;
    let listener = aws.listener(ECHO)?;
    call_until(listener, "onprem")?;
    let sni = echo_sni(onprem);

    // A peer gateway's session, saved for resumption while it is trusted.
    let leaf = peer_leaf(
        &topo.shell,
        &cas[0],
        "spiffe://aws.example/isthmus/cluster/aws/gateway",
        "probe",
    )?;
    let sess = topo.shell.work().join("sess.pem");
    let (ok, out) = s_client(onprem.ingress, &sni, &leaf, ("-sess_out", &sess))?;
    assert!(ok, "a trusted peer's handshake:\n{out}");

    let live = Live::open(listener, onprem)?;
    onprem.unlink("aws")?;
    let closed = live.wait_revoked()?;
    println!("unlink across roots: the live connection from aws.example closed {closed:.0?} later");

    // New handshakes, and resumptions of the session saved before, are refused (sessions die
    // with the trust store they were made under: trust-bundle's `tests/it/resumption.rs`).
    let (ok, out) = s_client(onprem.ingress, &sni, &leaf, ("-sess_in", &sess))?;
    assert!(!ok, "an unlinked peer's handshake is refused:\n{out}");
    assert!(!out.contains("Reused"), "no session was resumed:\n{out}");
    Ok(())
}

#[test]
fn unlinking_a_peer_under_a_shared_root_closes_its_live_connections() -> Result {
    let w = linked(&Options::default(), &Options::default())?;
    let [a, b] = &w.topo.clusters[..] else {
        unreachable!()
    };
    // a's chain still verifies at b after the unlink (one root): what ends the connection is
    // that no route at b authorizes a's gateway any more.
    let live = Live::open(a.listener(ECHO)?, b)?;
    b.unlink("a")?;
    let closed = live.wait_revoked()?;
    println!("unlink under a shared root: the live connection from a closed {closed:.0?} later");
    Ok(())
}

/// A connection through both gateways kept open: the request is not finished, so the endpoint
/// waits for the rest.
struct Live<'a> {
    conn: TcpStream,
    serving: &'a Cluster,
}

impl<'a> Live<'a> {
    fn open(listener: SocketAddr, serving: &'a Cluster) -> Result<Self> {
        let mut conn = TcpStream::connect(listener).map_err(|source| Error::Io {
            what: format!("connect {listener}"),
            source,
        })?;
        conn.write_all(b"GET / HTTP/1.0\r\n").expect("write");
        wait_metric(
            serving,
            "federation_gateway_route_connections_active",
            |v| v >= 1.0,
        )?;
        Ok(Self { conn, serving })
    }

    /// Waits (bounded) until the connection ends, and checks that the serving gateway closed
    /// it as `revoked`; how long that took.
    fn wait_revoked(mut self) -> Result<Duration> {
        let start = Instant::now();
        self.conn.set_read_timeout(Some(PATIENCE)).expect("timeout");
        let mut buf = [0u8; 64];
        let read = self.conn.read(&mut buf);
        let took = start.elapsed();
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "the live connection of the unlinked peer ends: {read:?}"
        );
        let gateway = &self.serving.gateway;
        let log = std::fs::read_to_string(gateway.stderr_log()).unwrap_or_default();
        assert!(
            log.contains("\"outcome\":\"revoked\""),
            "{}'s gateway closed it as revoked:\n{}",
            self.serving.name,
            gateway.logs()
        );
        Ok(took)
    }
}

/// Polls a gateway's `/metrics` until the sum of the samples of `name` satisfies `pred`.
fn wait_metric(cluster: &Cluster, name: &str, pred: impl Fn(f64) -> bool) -> Result<()> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let body = http_get(cluster.admin, "/metrics").unwrap_or_else(|e| e.to_string());
        let sum: f64 = body
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if pred(sum) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout {
                what: format!("{}'s gateway metric {name} (now {sum})", cluster.name),
                logs: format!("\n{body}"),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut conn = TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: admin\r\n\r\n")?;
    let mut out = String::new();
    conn.read_to_string(&mut out)?;
    Ok(out)
}
