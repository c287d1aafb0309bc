//! The scenarios' world: clusters on loopback sharing one root, in a temporary directory.

use std::net::SocketAddr;

use multicloud::Error;
use multicloud::cluster::{Cluster, ECHO, Options};
use multicloud::shell::Shell;
use multicloud::topology::Topology;
use multicloud::traffic::call_until;

pub(crate) type Result<T = (), E = Error> = std::result::Result<T, E>;

pub(crate) struct World {
    // Declared first, so dropped first: the processes stop before their directory goes.
    pub(crate) topo: Topology,
    pub(crate) work: tempfile::TempDir,
}

/// Clusters sharing one root (`mesh.example`), each with its own intermediate.
pub(crate) fn world(names: &[&str], opts: &[Options]) -> Result<World> {
    let work = tempfile::tempdir().expect("tempdir");
    let mut topo = Topology::new(Shell::new(work.path())?);
    let root = topo.root("root", "mesh.example")?;
    let opts = opts
        .iter()
        .cloned()
        .chain(std::iter::repeat(Options::default()));
    for (name, opts) in names.iter().zip(opts) {
        let ca = topo.intermediate(&root, name)?;
        topo.start(name, &ca, &opts)?;
    }
    Ok(World { topo, work })
}

/// `a` links with `b`, `b` exports the echo service, and `a` calls it until `b` answers; `a`'s
/// listener for it.
pub(crate) fn echo_from(a: &Cluster, b: &Cluster) -> Result<SocketAddr> {
    a.join(&b.token()?)?;
    b.export(ECHO)?;
    let listener = a.listener(ECHO)?;
    call_until(listener, "b")?;
    Ok(listener)
}

/// `a` links with `b` and `c`, both export the echo service, and `a` imports it from both.
pub(crate) fn import_echo_from_two(a: &Cluster, b: &Cluster, c: &Cluster) -> Result {
    a.join(&b.token()?)?;
    a.join(&c.token()?)?;
    b.export(ECHO)?;
    c.export(ECHO)?;
    a.wait_import("imported from b and c", ECHO, |i| {
        i.is_some_and(|i| i["sources"].as_array().map(Vec::len) == Some(2))
    })
    .map(drop)
}
