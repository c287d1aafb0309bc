use proptest::prelude::*;

use super::*;

const MINIMAL: &str = "
cluster: aws
ca: ./pki/aws
registry: { file: registry.yaml }
state_dir: state
peering: { listen: 127.0.0.1:0 }
gateways: { addresses: [127.0.0.2:15443] }
";

const FULL: &str = "
cluster: aws
trust_domain: aws.example
ca: ./pki/aws
trust_bundle: /etc/isthmus/bundle.json
identity_validity: 2h
registry: { file: ./registry.yaml, watch_interval: 500ms }
state_dir: ./state/aws
peering: { listen: '0.0.0.0:15050', advertise: ['ctl.aws.example:15050', '[::1]:15050'] }
api: { socket: /run/isthmus/aws.sock }
gateways:
  addresses: [127.0.0.2:15443, gw.aws.example:15443]
  egress: { address: 127.0.0.1, ports: 15100-15199 }
lease: { heartbeat_interval: 250ms, missed_heartbeats: 5 }
token_ttl: 10m
preferences: [gcp, onprem]
";

fn at(text: &str) -> Result<ControllerConfig, ConfigError> {
    parse(text, Path::new("/etc/isthmus/controller.yaml"))
}

fn error_of(text: &str) -> String {
    match at(text) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e.to_string(),
    }
}

fn assert_error(text: &str, needles: &[&str]) {
    let message = error_of(text);
    for n in needles {
        assert!(message.contains(n), "{message:?} should contain {n:?}");
    }
}

/// MINIMAL with one top-level key replaced (or added).
fn with(key: &str, value: &str) -> String {
    let mut out: Vec<String> = MINIMAL
        .lines()
        .filter(|l| !l.starts_with(&format!("{key}:")))
        .map(str::to_owned)
        .collect();
    out.push(format!("{key}: {value}"));
    out.join("\n")
}

#[test]
fn minimal_config_gets_defaults_and_resolves_paths() {
    let c = at(MINIMAL).expect("valid");
    assert_eq!(c.cluster.as_str(), "aws");
    assert_eq!(c.trust_domain, None);
    assert_eq!(c.ca, Path::new("/etc/isthmus/./pki/aws"));
    assert_eq!(c.trust_bundle, None);
    assert_eq!(c.identity_validity, DEFAULT_IDENTITY_VALIDITY);
    assert_eq!(
        c.registry,
        RegistryConfig::File {
            path: "/etc/isthmus/registry.yaml".into(),
            watch_interval: DEFAULT_WATCH_INTERVAL,
        }
    );
    assert_eq!(c.state_dir, Path::new("/etc/isthmus/state"));
    assert_eq!(c.api.socket, Path::new("/etc/isthmus/state/api.sock"));
    assert_eq!(c.peering.advertise, []);
    assert_eq!(c.gateways.egress.address, DEFAULT_EGRESS_ADDRESS);
    assert_eq!(c.gateways.egress.ports, DEFAULT_EGRESS_PORTS);
    assert_eq!(c.token_ttl, DEFAULT_TOKEN_TTL);
    assert_eq!(
        c.lease(),
        Lease {
            heartbeat_interval_ms: 1000,
            missed_allowed: 3
        }
    );
    let bound: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    assert_eq!(c.peering_addresses(bound), [HostPort::from(bound)]);
}

#[test]
fn full_config_parses() {
    let c = at(FULL).expect("valid");
    assert_eq!(
        c.trust_domain.as_ref().map(|t| t.as_str()),
        Some("aws.example")
    );
    assert_eq!(c.trust_bundle, Some("/etc/isthmus/bundle.json".into()));
    assert_eq!(c.identity_validity, Duration::from_secs(7200));
    assert_eq!(c.state_dir, Path::new("/etc/isthmus/./state/aws"));
    assert_eq!(c.api.socket, Path::new("/run/isthmus/aws.sock"));
    let advertise: Vec<String> = c.peering.advertise.iter().map(|h| h.to_string()).collect();
    assert_eq!(advertise, ["ctl.aws.example:15050", "[::1]:15050"]);
    let gws: Vec<String> = c.gateways.addresses.iter().map(|h| h.to_string()).collect();
    assert_eq!(gws, ["127.0.0.2:15443", "gw.aws.example:15443"]);
    assert_eq!(
        c.gateways.egress.ports,
        PortRange {
            first: 15100,
            last: 15199
        }
    );
    assert_eq!(c.gateways.egress.ports.len(), 100);
    assert_eq!(c.lease().heartbeat_interval_ms, 250);
    assert_eq!(c.lease().missed_allowed, 5);
    assert_eq!(c.token_ttl, Duration::from_secs(600));
    let name = |s| ClusterName::parse(s).unwrap();
    assert_eq!(c.priority_of(&name("gcp")), 0);
    assert_eq!(c.priority_of(&name("onprem")), 1);
    assert_eq!(c.priority_of(&name("azure")), 2);
    assert_eq!(c.priority_of(&name("zz")), 2);
}

#[test]
fn single_egress_port_is_a_range_of_one() {
    let c = at(&with(
        "gateways",
        "{ addresses: [127.0.0.2:15443], egress: { ports: 15100 } }",
    ))
    .unwrap();
    assert_eq!(
        c.gateways.egress.ports,
        PortRange {
            first: 15100,
            last: 15100
        }
    );
}

#[test]
fn missing_required_fields_say_what_to_add() {
    for (key, needle) in [
        ("cluster", "cluster: missing"),
        ("ca", "ca: missing"),
        ("registry", "registry: missing"),
        ("state_dir", "state_dir: missing"),
        ("gateways", "gateways: missing"),
    ] {
        let text: String = MINIMAL
            .lines()
            .filter(|l| !l.starts_with(&format!("{key}:")))
            .collect::<Vec<_>>()
            .join("\n");
        assert_error(&text, &["/etc/isthmus/controller.yaml", needle]);
    }
}

#[test]
fn errors_name_the_file_the_field_and_the_fix() {
    let cases: &[(&str, &str, &[&str])] = &[
        ("cluster", "AWS", &["cluster:", "RFC 1123"]),
        (
            "trust_domain",
            "'Bad Domain'",
            &["trust_domain:", "aws.example"],
        ),
        (
            "identity_validity",
            "5s",
            &["identity_validity:", "at least 10s"],
        ),
        (
            "identity_validity",
            "soon",
            &["identity_validity:", "not a duration"],
        ),
        ("token_ttl", "0s", &["token_ttl:", "zero"]),
        ("token_ttl", "90d", &["token_ttl:", "30 days"]),
        (
            "registry",
            "{ watch_interval: 1s }",
            &["registry.file: missing"],
        ),
        (
            "registry",
            "{ file: r.yaml, watch_interval: x }",
            &["registry.watch_interval"],
        ),
        (
            "peering",
            "{ listen: localhost:1 }",
            &["peering.listen", "IP:PORT"],
        ),
        (
            "peering",
            "{ listen: '0.0.0.0:15050' }",
            &["peering.advertise", "wildcard"],
        ),
        (
            "peering",
            "{ listen: 127.0.0.1:0, advertise: ['0.0.0.0:1'] }",
            &["peering.advertise[0]", "wildcard"],
        ),
        (
            "peering",
            "{ listen: 127.0.0.1:15100 }",
            &["peering.listen", "inside gateways.egress.ports"],
        ),
        (
            "gateways",
            "{ addresses: [] }",
            &["gateways.addresses: empty"],
        ),
        (
            "gateways",
            "{ addresses: ['gw'] }",
            &["gateways.addresses[0]", "no port"],
        ),
        (
            "gateways",
            "{ addresses: ['Gw.Example:1'] }",
            &["gateways.addresses[0]", "DNS name"],
        ),
        (
            "gateways",
            "{ addresses: ['a.example:0'] }",
            &["gateways.addresses[0]", "port"],
        ),
        (
            "gateways",
            "{ addresses: ['::1:15443'] }",
            &["gateways.addresses[0]", "[ADDR]:PORT"],
        ),
        (
            "gateways",
            "{ addresses: ['a.example:1', 'a.example:1'] }",
            &["gateways.addresses[1]", "twice"],
        ),
        (
            "gateways",
            "{ addresses: ['a.example:1'], egress: { address: gw } }",
            &["gateways.egress.address", "IP address"],
        ),
        (
            "gateways",
            "{ addresses: ['a.example:1'], egress: { ports: 20-10 } }",
            &["gateways.egress.ports", "ends before it starts"],
        ),
        (
            "gateways",
            "{ addresses: ['a.example:1'], egress: { ports: 0-10 } }",
            &["gateways.egress.ports", "not a port"],
        ),
        (
            "lease",
            "{ missed_heartbeats: 0 }",
            &["lease.missed_heartbeats", "at least 1"],
        ),
        ("preferences", "[aws]", &["preferences[0]", "this cluster"]),
        ("preferences", "[gcp, gcp]", &["preferences[1]", "twice"]),
        ("preferences", "[GCP]", &["preferences[0]"]),
        (
            "api",
            &format!("{{ socket: /{} }}", "s".repeat(120)),
            &["api.socket", "107"],
        ),
    ];
    for (key, value, needles) in cases {
        let mut needles = needles.to_vec();
        needles.push("/etc/isthmus/controller.yaml");
        assert_error(&with(key, value), &needles);
    }
}

#[test]
fn unknown_fields_are_rejected_with_their_name() {
    assert_error(&with("tokn_ttl", "1h"), &["tokn_ttl", "controller.yaml"]);
    assert_error(
        &with("lease", "{ heartbeat: 1s }"),
        &["heartbeat", "heartbeat_interval"],
    );
    assert_error(
        &with("registry", "{ file: r.yaml, kubernetes: {} }"),
        &["kubernetes"],
    );
}

#[test]
fn load_reads_relative_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("controller.yaml");
    std::fs::write(&path, MINIMAL).unwrap();
    let c = load(&path).unwrap();
    assert_eq!(c.state_dir, dir.path().join("state"));
    assert_eq!(c.source, path);
    let missing = load(&dir.path().join("nope.yaml")).unwrap_err().to_string();
    assert!(missing.contains("cannot read config") && missing.contains("nope.yaml"));
}

#[test]
fn host_port_forms() {
    for (text, shown, ip) in [
        ("10.0.0.1:15443", "10.0.0.1:15443", true),
        ("[::1]:15443", "[::1]:15443", true),
        ("gw.aws.example:15443", "gw.aws.example:15443", false),
        ("localhost:1", "localhost:1", false),
    ] {
        let hp = HostPort::parse(text).unwrap();
        assert_eq!(hp.to_string(), shown);
        assert_eq!(hp.ip().is_some(), ip);
        assert_eq!(
            hp.port(),
            text.rsplit(':').next().unwrap().parse::<u16>().unwrap()
        );
    }
    for bad in [
        "",
        ":1",
        "gw",
        "gw:",
        "gw:x",
        "gw:65536",
        "10.0.0.1:0",
        "gw..x:1",
        "[gw]:1",
        // Found by the peering_token fuzz target: a signed port made the IP a host name,
        // which printed back as an IP address.
        "127.0.10.1:+15050",
        "gw:+1",
        "gw:-1",
        "gw: 1",
    ] {
        assert!(HostPort::parse(bad).is_err(), "{bad:?}");
    }
    for bad in ["+1", "+1-2", "1-+2"] {
        assert!(PortRange::parse(bad).is_err(), "{bad:?}");
    }
}

proptest! {
    #[test]
    fn parse_never_panics(text in "\\PC{0,200}") {
        let _ = at(&text);
    }

    #[test]
    fn host_port_round_trips(s in "\\PC{0,40}") {
        if let Ok(hp) = HostPort::parse(&s) {
            prop_assert_eq!(HostPort::parse(&hp.to_string()), Ok(hp));
        }
    }

    #[test]
    fn port_ranges_hold_what_they_say(a in 0u16.., b in 0u16..) {
        match PortRange::parse(&format!("{a}-{b}")) {
            Ok(r) => {
                prop_assert!(a > 0 && a <= b);
                prop_assert_eq!(r.len(), usize::from(b - a) + 1);
                prop_assert!(r.contains(a) && r.contains(b) && !r.contains(a - 1));
            }
            Err(_) => prop_assert!(a == 0 || a > b),
        }
    }
}

#[test]
fn dns_is_off_by_default_and_validated_when_given() {
    assert_eq!(at(MINIMAL).expect("minimal").dns, None);
    let dns = at(&with("dns", "{}")).expect("defaults").dns.expect("on");
    assert_eq!(
        (dns.listen.to_string(), dns.zone.as_str(), dns.ttl),
        (
            "127.0.0.1:15053".to_owned(),
            "clusterset.local",
            DEFAULT_DNS_TTL
        )
    );
    let dns = at(&with(
        "dns",
        "{ listen: '127.0.0.9:0', zone: Mesh.Example., ttl: 30s }",
    ))
    .expect("custom")
    .dns
    .expect("on");
    assert_eq!(
        (dns.listen.port(), dns.zone.as_str(), dns.ttl.as_secs()),
        (0, "mesh.example", 30)
    );
    assert_error(
        &with("dns", "{ listen: 'localhost:53' }"),
        &["dns.listen", "is not IP:PORT", "127.0.0.1:15053"],
    );
    assert_error(
        &with("dns", "{ zone: 'bad_zone.local' }"),
        &["dns.zone", "not a DNS zone name", "clusterset.local"],
    );
    assert_error(&with("dns", "{ ttl: 0s }"), &["dns.ttl", "zero"]);
    assert_error(&with("dns", "{ port: 53 }"), &["unknown field `port`"]);
}

#[test]
fn kubernetes_registry_gets_defaults_and_resolves_the_kubeconfig() {
    let c = at(&with(
        "registry",
        "{ kubernetes: { kubeconfig: kube/config, namespaces: [default, shop] } }",
    ))
    .expect("valid");
    let RegistryConfig::Kubernetes(k) = c.registry else {
        panic!("expected the kubernetes registry, got {:?}", c.registry)
    };
    assert_eq!(
        k.kubeconfig.as_deref(),
        Some(Path::new("/etc/isthmus/kube/config"))
    );
    assert_eq!(k.namespaces, ["default", "shop"]);
    assert_eq!(
        k.gateway_selector.into_iter().collect::<Vec<_>>(),
        [(
            "app.kubernetes.io/name".to_owned(),
            "isthmus-gateway".to_owned()
        )]
    );
    let c = at(&with("registry", "{ kubernetes: {} }")).expect("valid");
    assert!(matches!(
        c.registry,
        RegistryConfig::Kubernetes(KubernetesRegistry {
            kubeconfig: None,
            ..
        })
    ));
}

#[test]
fn kubernetes_registry_errors_name_the_field_and_the_fix() {
    assert_error(
        &with("registry", "{ file: r.yaml, kubernetes: {} }"),
        &["registry", "both", "keep one registry kind"],
    );
    assert_error(
        &with("registry", "{ kubernetes: { namespaces: [Bad_NS] } }"),
        &["registry.kubernetes.namespaces[0]", "Bad_NS"],
    );
    assert_error(
        &with("registry", "{ kubernetes: { namespaces: [a, a] } }"),
        &["registry.kubernetes.namespaces[1]", "twice"],
    );
    assert_error(
        &with("registry", "{ kubernetes: { gateway_selector: {} } }"),
        &["registry.kubernetes.gateway_selector", "empty"],
    );
    assert_error(
        &with(
            "registry",
            "{ kubernetes: { gateway_selector: {'a b': x} } }",
        ),
        &[
            "registry.kubernetes.gateway_selector",
            "not a Kubernetes label",
        ],
    );
    assert_error(
        &with("registry", "{ kubernetes: { namespace: [default] } }"),
        &["unknown field `namespace`"],
    );
}

#[test]
fn leader_election_is_off_by_default_and_validated_when_given() {
    assert_eq!(at(MINIMAL).expect("minimal").leader_election, None);
    let le = at(&with("leader_election", "{ namespace: isthmus-system }"))
        .expect("defaults")
        .leader_election
        .expect("on");
    assert_eq!(
        (
            le.kubeconfig,
            le.namespace.as_str(),
            le.lease_name.as_str(),
            le.lease_duration.as_secs(),
            le.renew_deadline.as_secs(),
            le.retry_period.as_secs()
        ),
        (None, "isthmus-system", "isthmus-controller", 15, 10, 2)
    );
    assert!(
        le.identity.ends_with(&format!("-{}", std::process::id())),
        "default identity is <hostname>-<pid>: {}",
        le.identity
    );
    let le = at(&with(
        "leader_election",
        "{ namespace: ns, identity: pod-a, kubeconfig: kc, lease_duration: 3s, renew_deadline: 2s, retry_period: 200ms }",
    ))
    .expect("given")
    .leader_election
    .expect("on");
    assert_eq!(le.identity, "pod-a");
    assert_eq!(le.kubeconfig.as_deref(), Some(Path::new("/etc/isthmus/kc")));
    assert_error(
        &with("leader_election", "{ lease_name: x }"),
        &["leader_election.namespace", "missing", "isthmus-system"],
    );
    assert_error(
        &with("leader_election", "{ namespace: Bad_NS }"),
        &["leader_election.namespace", "not a namespace name"],
    );
    assert_error(
        &with(
            "leader_election",
            "{ namespace: ns, lease_duration: 10s, renew_deadline: 10s }",
        ),
        &[
            "leader_election.renew_deadline",
            "not shorter than lease_duration",
        ],
    );
    assert_error(
        &with("leader_election", "{ namespace: ns, retry_period: 10s }"),
        &[
            "leader_election.retry_period",
            "not shorter than renew_deadline",
        ],
    );
    assert_error(
        &with(
            "leader_election",
            "{ namespace: ns, lease_duration: 1500ms, renew_deadline: 1s, retry_period: 100ms }",
        ),
        &["leader_election.lease_duration", "whole number of seconds"],
    );
    assert_error(
        &with("leader_election", "{ namespace: ns, leaseName: x }"),
        &["unknown field `leaseName`"],
    );
}
