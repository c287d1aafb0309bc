use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::model::{ClusterName, Endpoint, ServicePort};
use crate::state::StateDir;

const FILE: &str = "/etc/isthmus/registry.yaml";

const EXAMPLE: &str = "
services:
  - name: echo
    namespace: default
    ports: [{ name: http, port: 8080, target_port: 18080 }]
    endpoints:
      - { address: 127.0.0.3, zone: az1, weight: 2, ready: true }
      - { address: '::1' }
  - name: other
    namespace: default
    ports: [{ name: grpc, port: 9090 }]
exports:
  - { service: echo.default }
  - { service: other.default, to: [gcp] }
";

fn key(s: &str) -> ServiceKey {
    ServiceKey::parse(s).unwrap()
}

fn cluster(s: &str) -> ClusterName {
    ClusterName::parse(s).unwrap()
}

fn parse_at(text: &str) -> Result<FileDoc, RegistryError> {
    parse(text, Path::new(FILE))
}

fn assert_error(text: &str, needles: &[&str]) {
    let message = match parse_at(text) {
        Ok(doc) => panic!("expected an error, got {doc:?}"),
        Err(e) => e.to_string(),
    };
    assert!(
        message.starts_with(FILE),
        "{message:?} should name the file"
    );
    for n in needles {
        assert!(message.contains(n), "{message:?} should contain {n:?}");
    }
}

/// A service block with the given ports and endpoints (YAML flow lists).
fn svc(name: &str, ports: &str, endpoints: &str) -> String {
    format!(
        "services:\n  - {{ name: {name}, namespace: default, ports: {ports}, endpoints: {endpoints} }}\n"
    )
}

#[test]
fn the_example_parses_with_defaults() {
    let doc = parse_at(EXAMPLE).unwrap();
    let echo = &doc.services[&key("echo.default")];
    assert_eq!(
        echo.ports,
        [ServicePort {
            name: "http".into(),
            port: 8080,
            target_port: Some(18080)
        }]
    );
    assert_eq!(
        echo.endpoints,
        [
            Endpoint {
                address: "127.0.0.3".parse().unwrap(),
                ready: true,
                zone: Some("az1".into()),
                weight: 2
            },
            Endpoint {
                address: "::1".parse().unwrap(),
                ready: true,
                zone: None,
                weight: 1
            },
        ]
    );
    assert!(doc.services[&key("other.default")].endpoints.is_empty());
    assert_eq!(doc.exports[&key("echo.default")], ExportTo::All);
    assert_eq!(
        doc.exports[&key("other.default")],
        ExportTo::Peers([cluster("gcp")].into())
    );
    assert_eq!(parse_at("services: []").unwrap(), FileDoc::default());
}

#[test]
fn invalid_edits_name_the_file_the_field_and_the_fix() {
    let http = "[{ name: http, port: 80 }]";
    let cases: Vec<(String, Vec<&str>)> = vec![
        ("".into(), vec!["empty", "services: []"]),
        ("services: [".into(), vec!["not a valid registry"]),
        ("servces: []".into(), vec!["unknown field `servces`"]),
        (
            "services: [{ name: a, namespace: b, ports: [], color: red }]".into(),
            vec!["unknown field `color`"],
        ),
        (
            svc("Echo", http, "[]"),
            vec!["services[0].name", "RFC 1123"],
        ),
        (
            "services: [{ name: a, ports: [{ name: h, port: 1 }] }]".into(),
            vec!["services[0].namespace: missing"],
        ),
        (svc("a", "[]", "[]"), vec!["services[0].ports: no ports"]),
        (
            svc("a", "[{ name: h, port: 0 }]", "[]"),
            vec!["services[0].ports[0].port", "0 is not a port", "1-65535"],
        ),
        (
            svc("a", "[{ name: h, port: 70000 }]", "[]"),
            vec!["ports[0].port", "70000"],
        ),
        (
            svc("a", "[{ name: h, port: 1, target_port: 0 }]", "[]"),
            vec!["ports[0].target_port"],
        ),
        (
            svc("a", "[{ name: h, port: 1 }, { name: h, port: 2 }]", "[]"),
            vec!["ports[1].name", "used twice"],
        ),
        (
            svc("a", "[{ name: h, port: 1 }, { name: g, port: 1 }]", "[]"),
            vec!["ports[1].port", "used twice"],
        ),
        (
            svc("a", "[{ name: H_1, port: 1 }]", "[]"),
            vec!["ports[0].name", "RFC 1123"],
        ),
        (
            svc("a", "[{ port: 1 }]", "[]"),
            vec!["ports[0].name: missing"],
        ),
        (
            svc("a", http, "[{ address: 10.0.0.1:80 }]"),
            vec!["endpoints[0].address", "not an IP address"],
        ),
        (
            svc("a", http, "[{ zone: z }]"),
            vec!["endpoints[0].address: missing"],
        ),
        (
            svc("a", http, "[{ address: 10.0.0.1, weight: 0 }]"),
            vec!["endpoints[0].weight", "ready: false"],
        ),
        (
            svc("a", http, "[{ address: 10.0.0.1, zone: 'a b' }]"),
            vec!["endpoints[0].zone"],
        ),
        (
            svc("a", http, "[{ address: 10.0.0.1 }, { address: 10.0.0.1 }]"),
            vec!["endpoints[1].address", "twice"],
        ),
        (
            format!(
                "{}  - {{ name: a, namespace: default, ports: {http} }}\n",
                svc("a", http, "[]")
            ),
            vec![
                "services[1]",
                "a.default is declared twice (first at services[0])",
            ],
        ),
        (
            format!(
                "{}exports: [{{ service: nope.default }}]",
                svc("a", http, "[]")
            ),
            vec![
                "exports[0].service",
                "nope.default is not a service in this file",
                "services:",
            ],
        ),
        (
            format!("{}exports: [{{ service: a }}]", svc("a", http, "[]")),
            vec!["exports[0].service", "NAME.NAMESPACE"],
        ),
        (
            format!(
                "{}exports: [{{ service: a.default }}, {{ service: a.default, to: [gcp] }}]",
                svc("a", http, "[]")
            ),
            vec!["exports[1]", "exported twice"],
        ),
        (
            format!(
                "{}exports: [{{ service: a.default, to: [] }}]",
                svc("a", http, "[]")
            ),
            vec!["exports[0].to", "exports to nobody"],
        ),
        (
            format!(
                "{}exports: [{{ service: a.default, to: [gcp, gcp] }}]",
                svc("a", http, "[]")
            ),
            vec!["exports[0].to[1]", "twice"],
        ),
        (
            format!(
                "{}exports: [{{ service: a.default, to: [GCP] }}]",
                svc("a", http, "[]")
            ),
            vec!["exports[0].to[0]"],
        ),
    ];
    for (text, needles) in cases {
        assert_error(&text, &needles);
    }
}

#[test]
fn merge_keeps_creation_times_and_promotes_cli_exports_declared_in_the_file() {
    let doc = parse_at(EXAMPLE).unwrap();
    let (reg, state) = merge(&doc, &ExportsRecord::default(), 100);
    assert_eq!(reg.exports[&key("echo.default")].created_at_ms, 100);
    assert_eq!(state.first_seen_ms[&key("other.default")], 100);
    // Later merges keep the first-seen time.
    let (reg, state2) = merge(&doc, &state, 200);
    assert_eq!(reg.exports[&key("echo.default")].created_at_ms, 100);
    assert_eq!(state2, state);

    // A CLI export that the file then declares keeps its CLI time and becomes the file's.
    let mut cli_state = ExportsRecord::default();
    cli_state
        .cli
        .insert(key("echo.default"), CliExport::new(&ExportTo::All, 5));
    cli_state
        .cli
        .insert(key("gone.default"), CliExport::new(&ExportTo::All, 6));
    let (reg, next) = merge(&doc, &cli_state, 300);
    assert_eq!(reg.exports[&key("echo.default")].created_at_ms, 5);
    assert_eq!(next.first_seen_ms[&key("echo.default")], 5);
    assert!(!next.cli.contains_key(&key("echo.default")));
    // A CLI export of a service not in the file is kept (dormant: exports_for skips it).
    assert_eq!(reg.exports[&key("gone.default")].created_at_ms, 6);
    assert!(
        !reg.exports_for(&cluster("gcp"))
            .contains_key(&key("gone.default"))
    );

    // Dropped from the file: forgotten, so re-adding it later is a new export.
    let (reg, next) = merge(&FileDoc::default(), &next, 400);
    assert!(!reg.exports.contains_key(&key("echo.default")));
    assert!(next.first_seen_ms.is_empty());
}

/// A test clock (Unix ms) shared with the registry.
fn clock(start: i64) -> (Arc<AtomicI64>, Arc<dyn Fn() -> i64 + Send + Sync>) {
    let now = Arc::new(AtomicI64::new(start));
    let c = now.clone();
    (now, Arc::new(move || c.load(Ordering::SeqCst)))
}

struct Fixture {
    _tmp: tempfile::TempDir,
    file: PathBuf,
    state: StateDir,
}

fn fixture(content: &str) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("registry.yaml");
    std::fs::write(&file, content).unwrap();
    let state = StateDir::open(&tmp.path().join("state")).unwrap();
    Fixture {
        _tmp: tmp,
        file,
        state,
    }
}

fn open(f: &Fixture, now: i64) -> (FileRegistry, Arc<AtomicI64>) {
    let (t, c) = clock(now);
    let reg = FileRegistry::open_with_clock(&f.file, Duration::from_secs(3600), f.state.clone(), c)
        .unwrap();
    (reg, t)
}

#[test]
fn opening_needs_an_existing_valid_file() {
    let f = fixture("services: [");
    let (_, c) = clock(0);
    let err =
        FileRegistry::open_with_clock(&f.file, Duration::from_secs(1), f.state.clone(), c.clone())
            .unwrap_err();
    assert!(matches!(err, RegistryError::Yaml { .. }), "{err}");
    std::fs::remove_file(&f.file).unwrap();
    let err = FileRegistry::open_with_clock(&f.file, Duration::from_secs(1), f.state.clone(), c)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not exist") && err.contains("services: []"),
        "{err}"
    );
}

#[test]
fn edits_are_published_and_invalid_ones_keep_the_last_good_registry() {
    let f = fixture(EXAMPLE);
    let (reg, now) = open(&f, 1_000);
    let mut rx = reg.watch();
    assert_eq!(rx.borrow_and_update().services.len(), 2);
    assert!(!reg.reload().unwrap(), "unchanged");

    now.store(2_000, Ordering::SeqCst);
    std::fs::write(&f.file, EXAMPLE.replace("port: 9090", "port: 9091")).unwrap();
    assert!(reg.reload().unwrap());
    assert!(rx.has_changed().unwrap());
    assert_eq!(
        rx.borrow_and_update().services[&key("other.default")].ports[0].port,
        9091
    );
    assert_eq!(reg.status().loaded_at_ms, 2_000);

    // A bad edit: rejected, the last good registry stays, the status says why.
    now.store(3_000, Ordering::SeqCst);
    std::fs::write(&f.file, EXAMPLE.replace("port: 9090", "port: 0")).unwrap();
    let err = reg.reload().unwrap_err().to_string();
    assert!(err.contains("services[1].ports[0].port"), "{err}");
    assert!(!rx.has_changed().unwrap());
    let status = reg.status();
    assert_eq!(status.services, 2);
    assert_eq!(status.loaded_at_ms, 2_000);
    let problem = status.last_error.unwrap();
    assert_eq!(problem.message, err);
    assert_eq!(problem.at_ms, 3_000);
    assert!(status.source.contains("registry.yaml"));
    // Polling the same bad content changes nothing.
    assert!(!reg.reload().unwrap());
    assert!(reg.status().last_error.is_some());

    // Fixed: accepted, error cleared.
    std::fs::write(&f.file, EXAMPLE).unwrap();
    assert!(reg.reload().unwrap());
    assert_eq!(reg.status().last_error, None);
}

#[test]
fn a_deleted_file_keeps_the_last_good_registry_until_it_returns() {
    let f = fixture(EXAMPLE);
    let (reg, _) = open(&f, 1_000);
    let rx = reg.watch();
    std::fs::remove_file(&f.file).unwrap();
    let err = reg.reload().unwrap_err();
    assert!(matches!(err, RegistryError::Deleted { .. }));
    assert!(err.to_string().contains("keeping the last good registry"));
    assert_eq!(rx.borrow().services.len(), 2);
    assert!(
        reg.status()
            .last_error
            .unwrap()
            .message
            .contains("was deleted")
    );
    std::fs::write(&f.file, EXAMPLE).unwrap();
    assert!(!reg.reload().unwrap(), "same content as before");
    assert_eq!(reg.status().last_error, None);
}

#[tokio::test]
async fn cli_exports_merge_persist_and_keep_their_creation_time() {
    let f = fixture(&EXAMPLE.replace("exports:\n  - { service: echo.default }\n", "exports:\n"));
    let (reg, now) = open(&f, 1_000);
    let rx = reg.watch();
    assert!(!rx.borrow().exports.contains_key(&key("echo.default")));

    reg.export(key("echo.default"), ExportTo::All)
        .await
        .unwrap();
    assert_eq!(
        rx.borrow().exports[&key("echo.default")].created_at_ms,
        1_000
    );
    assert_eq!(
        reg.export_origin(&key("echo.default")),
        Some(ExportOrigin::Cli)
    );
    assert_eq!(
        reg.export_origin(&key("other.default")),
        Some(ExportOrigin::Registry)
    );
    assert_eq!(reg.export_origin(&key("nope.default")), None);

    // Re-exporting to named peers keeps the creation time.
    now.store(2_000, Ordering::SeqCst);
    let gcp = ExportTo::Peers([cluster("gcp")].into());
    reg.export(key("echo.default"), gcp.clone()).await.unwrap();
    let e = rx.borrow().exports[&key("echo.default")].clone();
    assert_eq!((e.to, e.created_at_ms), (gcp.clone(), 1_000));

    // A restart keeps CLI exports and the file exports' first-seen times.
    drop(reg);
    let (reg, _) = open(&f, 9_000);
    let current = reg.watch().borrow().clone();
    assert_eq!(current.exports[&key("echo.default")].created_at_ms, 1_000);
    assert_eq!(current.exports[&key("echo.default")].to, gcp);
    assert_eq!(current.exports[&key("other.default")].created_at_ms, 1_000);

    reg.unexport(&key("echo.default")).await.unwrap();
    assert!(
        !reg.watch()
            .borrow()
            .exports
            .contains_key(&key("echo.default"))
    );
    let err = reg.unexport(&key("echo.default")).await.unwrap_err();
    assert!(matches!(err, RegistryError::NotExported { .. }));
    drop(reg);
    let (reg, _) = open(&f, 10_000);
    assert!(
        !reg.watch()
            .borrow()
            .exports
            .contains_key(&key("echo.default"))
    );
}

#[tokio::test]
async fn file_exports_are_changed_only_in_the_file() {
    let f = fixture(EXAMPLE);
    let (reg, _) = open(&f, 1_000);
    let file = f.file.display().to_string();
    let err = reg
        .unexport(&key("echo.default"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("remove it from {file} to unexport it")),
        "{err}"
    );
    let err = reg
        .export(key("echo.default"), ExportTo::All)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("change its entry there"), "{err}");
    let err = reg
        .export(key("nope.default"), ExportTo::All)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not in the registry") && err.contains(&file),
        "{err}"
    );
    let err = reg
        .export(key("echo.default"), ExportTo::Peers(BTreeSet::new()))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NoPeers { .. }));
}

#[tokio::test]
async fn a_cli_export_declared_in_the_file_becomes_the_files() {
    let f = fixture(&EXAMPLE.replace("exports:\n  - { service: echo.default }\n", "exports:\n"));
    let (reg, now) = open(&f, 1_000);
    reg.export(key("echo.default"), ExportTo::All)
        .await
        .unwrap();
    now.store(5_000, Ordering::SeqCst);
    std::fs::write(&f.file, EXAMPLE).unwrap();
    assert!(
        !reg.reload().unwrap(),
        "same exports, same times: nothing to publish"
    );
    assert_eq!(
        reg.export_origin(&key("echo.default")),
        Some(ExportOrigin::Registry)
    );
    assert_eq!(
        reg.watch().borrow().exports[&key("echo.default")].created_at_ms,
        1_000
    );
    // Removing it from the file unexports it.
    std::fs::write(
        &f.file,
        EXAMPLE.replace("  - { service: echo.default }\n", ""),
    )
    .unwrap();
    assert!(reg.reload().unwrap());
    assert!(
        !reg.watch()
            .borrow()
            .exports
            .contains_key(&key("echo.default"))
    );
    assert_eq!(f.state.load_exports().unwrap().cli, BTreeMap::new());
}

#[tokio::test]
async fn the_watcher_rereads_on_refresh() {
    let f = fixture(EXAMPLE);
    let (reg, _) = open(&f, 1_000);
    let mut rx = reg.watch();
    rx.borrow_and_update();
    let task = tokio::spawn(reg.clone().run());
    std::fs::write(&f.file, EXAMPLE.replace("port: 9090", "port: 9092")).unwrap();
    reg.refresh();
    // The hour-long poll interval cannot be what wakes it: only refresh does.
    tokio::time::timeout(Duration::from_secs(30), rx.changed())
        .await
        .expect("the refresh is applied")
        .unwrap();
    assert_eq!(
        rx.borrow().services[&key("other.default")].ports[0].port,
        9092
    );
    task.abort();
}

#[test]
fn registries_are_usable_as_trait_objects() {
    let f = fixture(EXAMPLE);
    let (reg, _) = open(&f, 1_000);
    let dynamic: Arc<dyn Registry> = Arc::new(reg);
    assert_eq!(dynamic.status().exports, 2);
}

proptest! {
    #[test]
    fn parse_never_panics(text in "\\PC{0,300}") {
        let _ = parse_at(&text);
    }

    /// Over any sequence of file edits and CLI exports, an export present throughout keeps its
    /// creation time, and the merged exports are exactly the file's plus the CLI's.
    #[test]
    fn merge_is_stable_over_edits(steps in proptest::collection::vec(
        (proptest::collection::btree_set(0usize..4, 0..4), proptest::collection::btree_set(0usize..4, 0..4)),
        1..10,
    )) {
        let names = ["a.x", "b.x", "c.x", "d.x"].map(key);
        let mut state = ExportsRecord::default();
        let mut created: BTreeMap<ServiceKey, i64> = BTreeMap::new();
        let mut check = |reg: &model::Registry, doc: &FileDoc, state: &ExportsRecord| {
            let expected: BTreeSet<&ServiceKey> = doc.exports.keys().chain(state.cli.keys()).collect();
            prop_assert_eq!(reg.exports.keys().collect::<BTreeSet<_>>(), expected);
            for (k, e) in &reg.exports {
                if let Some(before) = created.get(k) {
                    prop_assert_eq!(e.created_at_ms, *before, "{} changed its creation time", k);
                }
            }
            created = reg.exports.iter().map(|(k, e)| (k.clone(), e.created_at_ms)).collect();
            Ok(())
        };
        for (t, (file_set, cli_set)) in steps.into_iter().enumerate() {
            let now = i64::try_from(t).unwrap() * 10;
            // A file edit...
            let mut doc = FileDoc::default();
            for i in &file_set {
                doc.exports.insert(names[*i].clone(), ExportTo::All);
            }
            let (reg, next) = merge(&doc, &state, now);
            state = next;
            check(&reg, &doc, &state)?;
            // ...then CLI exports (refused for services the file exports).
            for i in &cli_set {
                if !doc.exports.contains_key(&names[*i]) {
                    state = with_cli_export(&state, &names[*i], &ExportTo::All, now + 5);
                }
            }
            let (reg, next) = merge(&doc, &state, now + 5);
            state = next;
            check(&reg, &doc, &state)?;
        }
    }
}
