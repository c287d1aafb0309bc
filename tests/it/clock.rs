//! Clock skew between clusters, either way: the peer's clock ahead of ours, or ours behind the
//! peer's. Certificates are backdated 5 minutes, tokens are checked on the issuer's clock, and
//! leases count on each side's monotonic clock, so a skew within the backdate links and serves
//! with no failed call; beyond it, `link join` is refused with an error that names the clocks.
//! Needs libfaketime (`apt install faketime`, installed by `cargo xtask deps`); without it the
//! test prints `SKIPPED <test>: <why>` and passes.

use std::path::Path;

use multicloud::cluster::{ECHO, Options};
use multicloud::run_err;
use multicloud::shell::Shell;
use multicloud::topology::Topology;
use multicloud::traffic::Traffic;

use crate::faults::{Result, linked, no_call_failed, skip};

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Options whose controller runs `offset` seconds (e.g. `+120`, `-900`) off the real clock, or
/// on it: only the wall clock; monotonic timers (heartbeats, leases) keep real time.
fn skewed(offset: Option<&str>) -> Options {
    let Some(offset) = offset else {
        return Options::default();
    };
    Options {
        controller_env: [
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME", offset),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect(),
        ..Options::default()
    }
}

#[test]
fn clock_skew_within_the_backdate_links_and_serves_beyond_it_is_refused_naming_the_clocks() -> Result
{
    const TEST: &str = "clock_skew_within_the_backdate_links_and_serves";
    if !Path::new(LIBFAKETIME).exists() {
        skip(
            TEST,
            &format!("{LIBFAKETIME} missing (apt install faketime)"),
        );
        return Ok(());
    }
    // (case, a's offset, b's offset); a (the caller, the joiner) is "us", b the peer.
    let within = [
        ("b's clock 2 min ahead", None, Some("+120")),
        ("a's clock 2 min behind", Some("-120"), None),
    ];
    for (case, a_off, b_off) in within {
        let w = linked(&skewed(a_off), &skewed(b_off))?;
        let a = &w.topo.clusters[0];
        let traffic = Traffic::start(a.listener(ECHO)?, "b");
        // Eight heartbeats heard (1.6 s, more than the 1 s lease) with the lease live
        // throughout: the skewed clock does not make a judge b's heartbeats late or early.
        let heard = std::cell::RefCell::new(std::collections::BTreeSet::new());
        a.wait_links("eight heartbeats from b", |l| {
            assert_eq!(
                l[0]["lease_live"], true,
                "{case}: lease lapsed under skew: {l:?}"
            );
            heard
                .borrow_mut()
                .insert(l[0]["last_heartbeat"].to_string());
            heard.borrow().len() >= 8
        })?;
        no_call_failed(traffic, case)?;
    }

    // 15 minutes, either way: b's certificates (backdated 5 minutes on b's clock) start 10
    // minutes after a's now, so a refuses b's controller before sending the token's secret.
    let beyond = [
        ("b's clock 15 min ahead", None, Some("+900")),
        ("a's clock 15 min behind", Some("-900"), None),
    ];
    for (case, a_off, b_off) in beyond {
        let work = tempfile::tempdir().expect("tempdir");
        let mut topo = Topology::new(Shell::new(work.path())?);
        let root = topo.root("root", "mesh.example")?;
        for (name, offset) in [("a", a_off), ("b", b_off)] {
            let ca = topo.intermediate(&root, name)?;
            topo.start(name, &ca, &skewed(offset))?;
        }
        let [a, b] = &topo.clusters[..] else {
            unreachable!()
        };
        let token = b.token()?;
        let (_, err) = run_err(&mut a.ctl(&["link", "join", token.as_str()])?)?;
        println!("{case}: a's `link join` refused: {err}");
        assert!(
            err.contains("not valid for another") && err.contains("check the clocks"),
            "{case}: the refusal names the clock problem: {err}"
        );
        assert!(a.links()?.is_empty() && b.links()?.is_empty());
    }
    Ok(())
}
