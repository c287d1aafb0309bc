use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;
use rand::SeedableRng;
use trust_bundle::{SpiffeId, TrustDomain, X509Bundle};

use super::*;
use crate::config::HostPort;
use crate::model::{ExportTo, ExportedService, FeedUpdate, ServiceKey, ServicePort};
use crate::token::{Issuer, TokenBook};

fn cluster(s: &str) -> ClusterName {
    ClusterName::parse(s).unwrap()
}

fn key(s: &str) -> ServiceKey {
    ServiceKey::parse(s).unwrap()
}

fn bundle_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let root = trust_bundle::test_util::root("gcp.example");
        X509Bundle::new([root.credential.cert.clone()])
            .unwrap()
            .to_spiffe_json()
    })
}

pub(crate) fn link(peer: &str) -> LinkRecord {
    LinkRecord {
        peer: cluster(peer),
        trust_domain: TrustDomain::parse("gcp.example").unwrap(),
        role: LinkRole::Joiner,
        bundle_json: bundle_json().to_owned(),
        peering_addresses: vec![HostPort::parse("127.0.0.1:15050").unwrap()],
        gateway_addresses: vec![HostPort::parse("gw.gcp.example:15443").unwrap()],
        gateway_spiffe_ids: vec![
            SpiffeId::parse("spiffe://gcp.example/isthmus/cluster/gcp/gateway").unwrap(),
        ],
        linked_at_ms: 1_000,
        bundle_sequence: 0,
    }
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn open_new() -> (tempfile::TempDir, StateDir) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::open(&tmp.path().join("state/aws")).unwrap();
    (tmp, dir)
}

#[test]
fn open_creates_an_owner_only_directory() {
    let (_tmp, dir) = open_new();
    assert_eq!(mode_of(dir.path()), 0o700);
    assert_eq!(files_in(dir.path()), ["imports", "links"]);
    assert_eq!(mode_of(&dir.path().join("links")), 0o700);
    // Opening again is fine and changes nothing.
    StateDir::open(dir.path()).unwrap();
}

#[test]
fn open_refuses_a_group_or_other_writable_directory() {
    let (_tmp, dir) = open_new();
    for mode in [0o770, 0o702, 0o777] {
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(mode)).unwrap();
        let err = StateDir::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&format!("mode {mode:03o}")), "{err}");
        assert!(
            err.contains(&format!("chmod 700 {}", dir.path().display())),
            "{err}"
        );
    }
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    StateDir::open(dir.path()).unwrap();
}

#[test]
fn open_refuses_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("state");
    fs::write(&file, "").unwrap();
    let err = StateDir::open(&file).unwrap_err().to_string();
    assert!(err.contains("not a directory"), "{err}");
}

#[test]
fn records_round_trip_in_owner_only_files() {
    let (_tmp, dir) = open_new();
    assert!(dir.load_links().unwrap().is_empty());
    assert_eq!(dir.load_tokens().unwrap(), TokenBook::new());
    assert_eq!(dir.load_exports().unwrap(), ExportsRecord::default());

    let rec = link("gcp");
    dir.save_link(&rec).unwrap();
    dir.save_link(&LinkRecord {
        role: LinkRole::Acceptor,
        ..link("onprem")
    })
    .unwrap();
    let links = dir.load_links().unwrap();
    assert_eq!(links.len(), 2);
    assert_eq!(links[&cluster("gcp")], rec);
    assert_eq!(links[&cluster("onprem")].role, LinkRole::Acceptor);
    assert_eq!(rec.bundle().unwrap().roots().len(), 1);

    let mut book = TokenBook::new();
    let (name, td) = (cluster("aws"), TrustDomain::parse("aws.example").unwrap());
    let issuer = Issuer {
        cluster: &name,
        trust_domain: &td,
        peering_addresses: &[HostPort::parse("127.0.0.1:1").unwrap()],
        bundle_json: bundle_json(),
    };
    book.issue(
        &issuer,
        5,
        Duration::from_secs(60),
        &mut rand::rngs::StdRng::seed_from_u64(1),
    )
    .unwrap();
    dir.save_tokens(&book).unwrap();
    assert_eq!(dir.load_tokens().unwrap(), book);

    let mut exports = ExportsRecord::default();
    exports.cli.insert(
        key("echo.default"),
        CliExport::new(&ExportTo::Peers([cluster("gcp")].into()), 7),
    );
    exports
        .cli
        .insert(key("web.prod"), CliExport::new(&ExportTo::All, 8));
    exports.first_seen_ms.insert(key("db.prod"), 9);
    dir.save_exports(&exports).unwrap();
    assert_eq!(dir.load_exports().unwrap(), exports);
    assert_eq!(exports.cli[&key("web.prod")].export_to(), ExportTo::All);

    let mut ports = EgressPorts::new(PortRange {
        first: 100,
        last: 110,
    });
    ports.allocate(&key("echo.default"), "http").unwrap();
    dir.save_egress(&ports).unwrap();

    for f in [
        "links/gcp.json",
        "links/onprem.json",
        "tokens.json",
        "exports.json",
        "egress.json",
    ] {
        assert_eq!(mode_of(&dir.path().join(f)), 0o600, "{f}");
    }
    dir.remove_link(&cluster("gcp")).unwrap();
    dir.remove_link(&cluster("gcp")).unwrap();
    assert_eq!(dir.load_links().unwrap().len(), 1);
}

#[test]
fn imports_restore_with_their_lease_time() {
    let (_tmp, dir) = open_new();
    let mut peer = PeerImports::new(cluster("gcp"), 3);
    dir.save_imports(&peer).unwrap();
    assert!(
        dir.load_imports().unwrap().is_empty(),
        "nothing before a snapshot"
    );

    let svc = ExportedService {
        key: key("echo.default"),
        ports: vec![ServicePort::new("http", 8080)],
        ready_endpoints: 2,
        total_endpoints: 3,
        zones: ["az1".to_owned()].into(),
        exported_at_ms: 11,
    };
    peer.apply(
        &FeedUpdate::Snapshot {
            version: 4,
            services: vec![svc.clone()],
        },
        1_234,
    )
    .unwrap();
    dir.save_imports(&peer).unwrap();
    assert_eq!(mode_of(&dir.path().join("imports/gcp.json")), 0o600);
    let loaded = dir.load_imports().unwrap();
    let restored = loaded[&cluster("gcp")].clone().into_peer(3);
    assert_eq!(restored, peer);
    assert_eq!(restored.version(), Some(4));
    assert_eq!(restored.last_heard_ms, 1_234);
    dir.remove_imports(&cluster("gcp")).unwrap();
    assert!(dir.load_imports().unwrap().is_empty());
}

#[test]
fn a_write_replaces_the_file_atomically() {
    let (_tmp, dir) = open_new();
    let path = dir.path().join("links/gcp.json");
    dir.save_link(&link("gcp")).unwrap();
    let before = fs::metadata(&path).unwrap();
    dir.save_link(&LinkRecord {
        linked_at_ms: 2_000,
        bundle_sequence: 0,
        ..link("gcp")
    })
    .unwrap();
    // A new file was renamed over the old one: a reader holding the old inode keeps the old
    // content, a new reader sees the new one; no temporary file is left behind.
    let after = fs::metadata(&path).unwrap();
    assert_ne!(
        std::os::unix::fs::MetadataExt::ino(&before),
        std::os::unix::fs::MetadataExt::ino(&after)
    );
    assert_eq!(
        dir.load_links().unwrap()[&cluster("gcp")].linked_at_ms,
        2_000
    );
    assert_eq!(files_in(&dir.path().join("links")), ["gcp.json"]);
}

#[test]
fn a_crash_between_temp_write_and_rename_keeps_the_old_content() {
    let (_tmp, dir) = open_new();
    dir.save_link(&link("gcp")).unwrap();
    let path = dir.path().join("links/gcp.json");
    let old = fs::read(&path).unwrap();
    // The process dies after staging the new content, before the rename.
    let tmp = stage(&path, b"{\"half\": ").unwrap();
    assert!(tmp.exists());
    assert_eq!(mode_of(&tmp), 0o600);
    assert_eq!(fs::read(&path).unwrap(), old);
    // The restart sees the old record, and sweeps the temporary file.
    let dir = StateDir::open(dir.path()).unwrap();
    assert_eq!(dir.load_links().unwrap()[&cluster("gcp")], link("gcp"));
    assert!(!tmp.exists());
    assert_eq!(files_in(&dir.path().join("links")), ["gcp.json"]);
}

#[test]
fn corrupt_files_are_errors_that_name_the_file_and_the_cost_of_deleting_it() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "tokens.json",
            "{\"tokens\": 1}",
            "tokens issued so far stop working",
        ),
        ("exports.json", "not json", "federation-ctl export"),
        ("egress.json", "{\"ports\": [{}]}", "new local ports"),
        ("links/gcp.json", "{}", "new token"),
        (
            "imports/gcp.json",
            "[",
            "come back when the link reconnects",
        ),
    ];
    for (file, content, fix) in cases {
        let (_tmp, dir) = open_new();
        let path = dir.path().join(file);
        fs::write(&path, content).unwrap();
        let err = match *file {
            "tokens.json" => dir.load_tokens().map(|_| ()),
            "exports.json" => dir.load_exports().map(|_| ()),
            "egress.json" => dir.load_egress(PortRange { first: 1, last: 2 }).map(|_| ()),
            "links/gcp.json" => dir.load_links().map(|_| ()),
            _ => dir.load_imports().map(|_| ()),
        }
        .unwrap_err()
        .to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("is corrupt") && err.contains(fix), "{err}");
        // Still there: never silently discarded.
        assert_eq!(fs::read_to_string(&path).unwrap(), *content);
    }
}

#[test]
fn misplaced_records_are_refused() {
    let (_tmp, dir) = open_new();
    dir.save_link(&link("gcp")).unwrap();
    fs::rename(
        dir.path().join("links/gcp.json"),
        dir.path().join("links/onprem.json"),
    )
    .unwrap();
    let err = dir.load_links().unwrap_err().to_string();
    assert!(err.contains("holds the link to gcp"), "{err}");

    let (_tmp, dir) = open_new();
    fs::write(dir.path().join("links/Notes.txt"), "hi").unwrap();
    let err = dir.load_links().unwrap_err().to_string();
    assert!(
        err.contains("not <cluster>.json") && err.contains("move it out"),
        "{err}"
    );

    let (_tmp, dir) = open_new();
    let mut bad = serde_json::to_value(link("gcp")).unwrap();
    bad["bundle_json"] = serde_json::json!("{\"keys\": 5}");
    fs::write(dir.path().join("links/gcp.json"), bad.to_string()).unwrap();
    let err = dir.load_links().unwrap_err().to_string();
    assert!(err.contains("bundle_json"), "{err}");
}

#[test]
fn egress_ports_are_lowest_free_and_stable() {
    let range = PortRange {
        first: 15100,
        last: 15102,
    };
    let mut ports = EgressPorts::new(range);
    let (a, b, c, d) = (
        key("a.default"),
        key("b.default"),
        key("c.default"),
        key("d.default"),
    );
    assert_eq!(ports.allocate(&a, "http"), Ok(15100));
    assert_eq!(ports.allocate(&a, "grpc"), Ok(15101));
    assert_eq!(ports.allocate(&b, "http"), Ok(15102));
    assert_eq!(ports.allocate(&a, "http"), Ok(15100), "stable");
    let full = ports.allocate(&c, "http").unwrap_err();
    assert!(
        full.to_string().contains("widen gateways.egress.ports"),
        "{full}"
    );
    assert_eq!(ports.release(&a, "grpc"), Some(15101));
    assert_eq!(ports.release(&a, "grpc"), None);
    assert_eq!(ports.allocate(&c, "http"), Ok(15101), "freed port reused");
    let freed = ports.retain(|s, _| s != &b);
    assert_eq!(freed.len(), 1);
    assert_eq!(ports.get(&b, "http"), None);
    assert_eq!(ports.allocate(&d, "x"), Ok(15102));

    // Across a restart, through the state directory.
    let (_tmp, dir) = open_new();
    dir.save_egress(&ports).unwrap();
    let (back, dropped) = dir.load_egress(range).unwrap();
    assert_eq!(back, ports);
    assert!(dropped.is_empty());
    // A narrower range drops what no longer fits.
    let (narrow, dropped) = dir
        .load_egress(PortRange {
            first: 15100,
            last: 15101,
        })
        .unwrap();
    assert_eq!(narrow.len(), 2);
    assert_eq!(dropped.iter().map(|e| e.port).collect::<Vec<_>>(), [15102]);
}

#[test]
fn restore_drops_duplicate_ports_and_keys() {
    let e = |s: &str, n: &str, port| EgressEntry {
        service: key(s),
        port_name: n.into(),
        port,
    };
    let (ports, dropped) = EgressPorts::restore(
        PortRange { first: 1, last: 10 },
        vec![
            e("a.x", "p", 1),
            e("b.x", "p", 1),
            e("a.x", "p", 2),
            e("c.x", "p", 11),
        ],
    );
    assert_eq!(ports.entries(), [e("a.x", "p", 1)]);
    assert_eq!(dropped.len(), 3);
}

proptest! {
    #[test]
    fn egress_allocations_stay_unique_and_in_range(
        ops in proptest::collection::vec((any::<bool>(), 0usize..6, 0usize..2), 0..60),
    ) {
        let range = PortRange { first: 40_000, last: 40_004 };
        let mut ports = EgressPorts::new(range);
        let services = ["a.x", "b.x", "c.x", "d.x", "e.x", "f.x"].map(key);
        for (alloc, s, n) in ops {
            let name = ["http", "grpc"][n];
            if alloc {
                let before = ports.get(&services[s], name);
                let used: BTreeSet<u16> = ports.entries().iter().map(|e| e.port).collect();
                match ports.allocate(&services[s], name) {
                    Ok(p) => {
                        prop_assert!(range.contains(p));
                        prop_assert!(before.is_none_or(|b| b == p));
                        if before.is_none() {
                            // The lowest free port.
                            prop_assert!((range.first..p).all(|q| used.contains(&q)));
                        }
                    }
                    Err(_) => prop_assert_eq!(ports.len(), range.len()),
                }
            } else {
                ports.release(&services[s], name);
            }
            let entries = ports.entries();
            let unique: BTreeSet<u16> = entries.iter().map(|e| e.port).collect();
            prop_assert_eq!(unique.len(), entries.len());
            // What is saved restores to the same allocator.
            let (back, dropped) = EgressPorts::restore(range, entries);
            prop_assert!(dropped.is_empty());
            prop_assert_eq!(&back, &ports);
        }
    }
}

#[test]
fn one_lock_per_state_directory_released_on_drop() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let held = StateLock::acquire(&dir).unwrap();
    let pid = std::process::id().to_string();
    assert_eq!(fs::read_to_string(dir.join(LOCK_FILE)).unwrap().trim(), pid);
    let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "created like StateDir::open would");
    // flock(2) locks belong to the open file: a second open, even in this process, is refused.
    let err = StateLock::acquire(&dir).unwrap_err().to_string();
    assert!(
        err.contains("in use by another controller") && err.contains(&format!("pid {pid}")),
        "{err}"
    );
    drop(held);
    let _again = StateLock::acquire(&dir).unwrap();
    // The lock file is not a state file: opening the directory leaves it alone.
    StateDir::open(&dir).unwrap();
    assert!(dir.join(LOCK_FILE).exists());
}

#[test]
fn saves_and_removals_are_sent_to_the_mirror_and_restores_are_not() {
    let tmp = tempfile::tempdir().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let dir = StateDir::open(&tmp.path().join("s"))
        .unwrap()
        .with_mirror(tx);
    dir.save_link(&link("gcp")).unwrap();
    dir.save_peering_port(15050).unwrap();
    dir.remove_link(&cluster("gcp")).unwrap();
    let got: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
        .map(|c| match c {
            StateChange::Link(rec) => format!("link {}", rec.peer),
            StateChange::LinkRemoved(peer) => format!("unlink {peer}"),
            StateChange::Record { name, json } => {
                format!("{name} {}", String::from_utf8_lossy(&json).trim())
            }
            StateChange::LinkStatus { peer, .. } => format!("status {peer}"),
        })
        .collect();
    assert_eq!(got, ["link gcp", "peering-port.json 15050", "unlink gcp"]);

    // What comes from the API is written locally only.
    dir.restore_links(&[link("aws"), link("onprem")]).unwrap();
    dir.restore_record(PEERING, Some(b"15051\n")).unwrap();
    assert!(rx.try_recv().is_err(), "restores are not mirrored back");
    assert_eq!(dir.load_peering_port().unwrap(), Some(15051));
    dir.restore_links(&[link("onprem")]).unwrap();
    assert_eq!(
        dir.load_links().unwrap().into_keys().collect::<Vec<_>>(),
        [cluster("onprem")],
        "a link the API does not hold is forgotten"
    );
    dir.restore_record(PEERING, None).unwrap();
    assert_eq!(dir.load_peering_port().unwrap(), None);
    let err = dir
        .restore_record("lock", Some(b"1"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a state record"), "{err}");
}
