//! Federation across network namespaces: each cluster in a namespace of its own, joined to the
//! other only through a bridge, so the gateways are the only way in (see `multicloud::netns`);
//! and a cluster cut off by its link going down, under continuous calls. Needs root and
//! `ip netns`; elsewhere each test says why on stderr (`SKIPPED`) and passes.

use std::io::Write;
use std::time::Instant;

use multicloud::cluster::{ECHO, Options};
use multicloud::echo::call_in;
use multicloud::netns::{self, Net};
use multicloud::shell::Shell;
use multicloud::topology::Topology;
use multicloud::traffic::{Traffic, call_until_with};
use multicloud::{Error, PATIENCE};

type Result<T = (), E = Error> = std::result::Result<T, E>;

struct World {
    // Dropped in this order: the processes stop, then their namespaces and directory go.
    topo: Topology,
    net: Net,
    _work: tempfile::TempDir,
}

/// Clusters `names` under one root, each in its own namespace, the first preferring imports
/// from `first_prefers` in that order; `None` when namespaces are unavailable here (the reason
/// printed where the test output shows it).
fn world(test: &str, names: &[&str], first_prefers: &[&str]) -> Result<Option<World>> {
    if let Some(why) = netns::unavailable() {
        // Straight to stderr: the harness captures `eprintln!` of passing tests, and a skip
        // must be seen.
        let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
        return Ok(None);
    }
    let work = tempfile::tempdir().expect("tempdir");
    let net = Net::create(names)?;
    let mut topo = Topology::new(Shell::new(work.path())?);
    let root = topo.root("root", "mesh.example")?;
    for (i, name) in names.iter().enumerate() {
        let site = net.site(name)?;
        let opts = Options {
            host: site.pod,
            public: Some(site.wan),
            netns: Some(site.netns.clone()),
            preferences: if i == 0 {
                first_prefers.iter().map(|p| (*p).to_owned()).collect()
            } else {
                Vec::new()
            },
            ..Options::default()
        };
        let ca = topo.intermediate(&root, name)?;
        topo.start(name, &ca, &opts)?;
    }
    Ok(Some(World {
        topo,
        net,
        _work: work,
    }))
}

#[test]
fn clusters_in_separate_namespaces_reach_each_other_only_through_the_gateways() -> Result {
    let Some(w) = world(
        "clusters_in_separate_namespaces_reach_each_other_only_through_the_gateways",
        &["a", "b"],
        &[],
    )?
    else {
        return Ok(());
    };
    let [a, b] = &w.topo.clusters[..] else {
        unreachable!()
    };
    let (site_a, site_b) = (w.net.site("a")?, w.net.site("b")?);

    // b's endpoint serves inside b...
    let endpoint = b.echo.addr;
    assert_eq!(call_in(&site_b.netns, endpoint).as_deref(), Ok("b"));
    // ...and is out of a's reach, at its own address and at b's public one.
    for target in [
        endpoint,
        std::net::SocketAddr::new(site_b.wan, endpoint.port()),
    ] {
        let direct = call_in(&site_a.netns, target);
        assert!(
            direct.is_err(),
            "b's endpoint answered a directly at {target}: {direct:?}"
        );
        println!("a -> b's endpoint at {target} directly: {direct:?}");
    }

    a.join(&b.token()?)?;
    b.export(ECHO)?;
    let listener = a.listener(ECHO)?;
    assert_eq!(listener.ip(), site_a.pod, "a's egress listener is inside a");
    let (took, missed) = call_until_with(&listener.to_string(), "b", || {
        call_in(&site_a.netns, listener)
    })?;
    println!(
        "a -> a's gateway -> b's gateway -> b's endpoint: answered by b after {took:?} ({missed} calls missed)"
    );
    assert!(took < PATIENCE);

    // The link and the call crossed the bridge between the wan addresses.
    let links = a.links()?;
    let gateways = links[0]["gateway_addresses"].to_string();
    assert!(
        gateways.contains(&format!("{}:", site_b.wan)),
        "a knows b's gateway by its wan address: {gateways}"
    );
    let log = std::fs::read_to_string(b.gateway.stderr_log()).expect("b's gateway log");
    assert!(
        log.contains(&format!("\"src\":\"{}:", site_a.wan))
            && log
                .contains("\"peer_spiffe_id\":\"spiffe://mesh.example/isthmus/cluster/a/gateway\""),
        "b's gateway served a's gateway, coming from a's wan address:\n{log}"
    );
    Ok(())
}

#[test]
fn a_peer_cut_off_by_its_link_going_down_is_failed_over_withdrawn_and_back_on_link_up() -> Result {
    let Some(w) = world(
        "a_peer_cut_off_by_its_link_going_down_is_failed_over_withdrawn_and_back_on_link_up",
        &["a", "b", "c"],
        &["b", "c"],
    )?
    else {
        return Ok(());
    };
    let [a, b, c] = &w.topo.clusters[..] else {
        unreachable!()
    };
    crate::world::import_echo_from_two(a, b, c)?;
    let sources = |n: usize| {
        move |i: Option<&serde_json::Value>| {
            i.is_some_and(|i| i["sources"].as_array().map(Vec::len) == Some(n))
        }
    };
    let listener = a.listener(ECHO)?;
    let netns_a = w.net.site("a")?.netns.clone();
    let call = {
        let netns_a = netns_a.clone();
        move || call_in(&netns_a, listener)
    };
    call_until_with(&listener.to_string(), "b", call.clone())?;

    // Continuous calls from inside a: an answer by b or c is a success.
    let traffic = Traffic::start_with({
        let call = call.clone();
        move || match call() {
            Ok(body) if body == "b" || body == "c" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    traffic.wait_successes(5)?;
    let before = traffic.counts();
    let cut = Instant::now();
    w.net.set_link("b", false)?;
    let (failover, missed) = call_until_with(&listener.to_string(), "c", call.clone())?;
    let failover_at = cut.elapsed();
    a.wait_import("b's part of the import withdrawn", ECHO, sources(1))?;
    let withdrawn = cut.elapsed();
    a.wait_links("b's lease lapsed", |l| {
        l.iter()
            .any(|l| l["peer"] == "b" && l["lease_live"] == false)
    })?;
    traffic.wait_successes(10)?;
    let during = traffic.counts();

    let up = Instant::now();
    w.net.set_link("b", true)?;
    a.wait_import("b's part of the import back", ECHO, sources(2))?;
    let restored = up.elapsed();
    let (back, _) = call_until_with(&listener.to_string(), "b", call.clone())?;
    let back_at = up.elapsed();
    traffic.wait_successes(10)?;
    let total = traffic.stop();
    let during_failed = during.failed - before.failed;
    let after_failed = total.failed - during.failed;

    println!(
        "b cut off (link down) while a calls echo.default continuously (preferring b, then c):"
    );
    println!(
        "  first call answered by c {failover_at:.1?} after the cut ({failover:.1?} of calls, {missed} calls missed by that caller)"
    );
    println!(
        "  b's part of a's import withdrawn {withdrawn:.1?} after the cut (lease 200ms x (4 + 1))"
    );
    println!(
        "  continuous calls while cut: {} ok, {during_failed} failed{}",
        during.ok - before.ok,
        during
            .errors
            .get(before.failed)
            .map_or(String::new(), |e| format!(" (first: {e})"))
    );
    println!(
        "  link up: b's import back after {restored:.1?}, calls answered by b again after {back_at:.1?} ({back:.1?} of calls); {after_failed} calls failed meanwhile"
    );
    println!("  total: {} calls ok, {} failed", total.ok, total.failed);
    assert_eq!(
        call_in(&netns_a, listener).as_deref(),
        Ok("b"),
        "the preferred cluster serves again"
    );
    Ok(())
}
