//! Federation across network namespaces: each cluster in a namespace of its own, joined to the
//! other only through a bridge, so the gateways are the only way in (see `multicloud::netns`).
//! Needs root and `ip netns`; elsewhere the test says why on stderr and passes.

use std::io::Write;

use multicloud::cluster::{ECHO, Options};
use multicloud::echo::call_in;
use multicloud::netns::{self, Net};
use multicloud::shell::Shell;
use multicloud::topology::Topology;
use multicloud::traffic::call_until_with;
use multicloud::{Error, PATIENCE};

type Result<T = (), E = Error> = std::result::Result<T, E>;

struct World {
    // Dropped in this order: the processes stop, then their namespaces and directory go.
    topo: Topology,
    net: Net,
    _work: tempfile::TempDir,
}

/// Clusters `names` under one root, each in its own namespace; `None` when namespaces are
/// unavailable here (the reason printed where the test output shows it).
fn world(test: &str, names: &[&str]) -> Result<Option<World>> {
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
    for name in names {
        let site = net.site(name)?;
        let opts = Options {
            host: site.pod,
            public: Some(site.wan),
            netns: Some(site.netns.clone()),
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
