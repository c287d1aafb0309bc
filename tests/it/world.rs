//! The scenarios' world: clusters on loopback sharing one root, in a temporary directory.

use multicloud::Error;
use multicloud::cluster::Options;
use multicloud::shell::Shell;
use multicloud::topology::Topology;

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
