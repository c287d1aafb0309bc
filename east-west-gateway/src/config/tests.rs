use super::*;

const MINIMAL: &str = "
cluster: aws-east
routes:
  - name: reviews
    services: [{ name: reviews, namespace: default, port: 9080 }]
    endpoints: [{ address: 127.0.0.1:9443 }]
";

fn validate_only(text: &str) -> Result<Config, Error> {
    parse(text)
}

fn error_of(text: &str) -> String {
    match parse(text) {
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

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(MINIMAL).expect("valid");
    assert_eq!(c.cluster.as_str(), "aws-east");
    assert_eq!(c.cluster_domain, "cluster.local");
    assert_eq!(c.ingress.listen.port(), 15443);
    assert_eq!(c.ingress.hello_timeout, DEFAULT_HELLO_TIMEOUT);
    assert_eq!(c.ingress.max_hello_bytes, 16 * 1024);
    assert_eq!(c.admin.listen.to_string(), DEFAULT_ADMIN_LISTEN);
    assert_eq!(c.watch_interval, Some(DEFAULT_WATCH_INTERVAL));
    assert_eq!(
        c.limits.max_concurrent_handshakes,
        DEFAULT_MAX_CONCURRENT_HANDSHAKES
    );
    assert_eq!(c.routes[0].mode, Mode::Passthrough);
    assert_eq!(c.routes[0].endpoints[0].weight, 1);
}

#[test]
fn full_config_parses() {
    let c = parse(
        "
cluster: gcp
cluster_domain: corp.local
ingress: { listen: 127.0.0.1:0, hello_timeout: 250ms, max_hello_bytes: 4096, max_connections: 10 }
admin: { listen: 127.0.0.1:0 }
upstream: { connect_timeout: 1s, idle_timeout: 2m, connect_attempts: 2, ejection_base: 100ms, ejection_max: 5s, buffer_bytes: 16384 }
limits: { max_concurrent_handshakes: 64 }
drain_timeout: 3s
reload: { watch_interval: 0s }
routes:
  - name: web
    hosts: [Web.Example.com, '*.example.com']
    max_connections: 3
    endpoints: [{ address: '[::1]:8443', weight: 5 }, { address: 127.0.0.2:8443 }]
",
    )
    .expect("valid");
    assert_eq!(c.ingress.hello_timeout, Duration::from_millis(250));
    assert_eq!(c.watch_interval, None);
    assert_eq!(c.limits.max_concurrent_handshakes, 64);
    assert_eq!(
        dump(&c)["limits"]["max_concurrent_handshakes"],
        serde_json::json!(64)
    );
    assert_eq!(
        c.routes[0].patterns,
        vec![
            Pattern::Exact("web.example.com".to_owned()),
            Pattern::Wildcard("example.com".to_owned())
        ]
    );
    assert_eq!(c.routes[0].max_connections, Some(3));
    assert_eq!(c.routes[0].endpoints[0].weight, 5);
}

#[test]
fn unknown_fields_are_rejected_with_their_name() {
    assert_error(
        &format!("{MINIMAL}\ningres: {{}}\n"),
        &["unknown field `ingres`"],
    );
    assert_error(
        "cluster: a\nroutes: [{ name: r, hosts: [a.b], endpoints: [{ adress: 1.2.3.4:5 }] }]",
        &[
            "unknown field `adress`",
            "routes[0].endpoints[0]: unknown field `adress`, expected `address` or `weight`",
        ],
    );
}

#[test]
fn invalid_values_name_the_field_and_the_fix() {
    assert_error(
        "routes: []",
        &["cluster: missing", "e.g. `cluster: aws-east`"],
    );
    assert_error("cluster: Aws_East", &["cluster: invalid label", "a-z, 0-9"]);
    assert_error(
        &MINIMAL.replace("127.0.0.1:9443", "reviews:9443"),
        &["routes[0].endpoints[0].address", "not IP:PORT"],
    );
    assert_error(
        &format!("{MINIMAL}ingress: {{ hello_timeout: soon }}\n"),
        &["ingress.hello_timeout", "500ms, 5s or 1h"],
    );
    assert_error(
        &format!("{MINIMAL}ingress: {{ max_connections: 0 }}\n"),
        &["ingress.max_connections: 0 is not allowed"],
    );
    assert_error(
        &format!("{MINIMAL}limits: {{ max_concurrent_handshakes: 0 }}\n"),
        &["limits.max_concurrent_handshakes: 0 is not allowed"],
    );
    assert_error(
        &format!("{MINIMAL}limits: {{ max_handshakes: 10 }}\n"),
        &["unknown field `max_handshakes`"],
    );
    assert_error(
        &format!("{MINIMAL}ingress: {{ max_hello_bytes: 100 }}\n"),
        &["ingress.max_hello_bytes", "at least 512"],
    );
    assert_error(
        "cluster: a\nroutes: [{ name: r, endpoints: [{ address: 1.2.3.4:5 }] }]",
        &["routes[0]: route matches nothing", "hosts"],
    );
    assert_error(
        "cluster: a\nroutes: [{ name: r, hosts: [a.b] }]",
        &["routes[0].endpoints: route has no endpoints"],
    );
    assert_error(
        "cluster: a\nroutes: [{ name: r, hosts: ['a.*'], endpoints: [{ address: 1.2.3.4:5 }] }]",
        &["routes[0].hosts[0]", "`*.suffix`"],
    );
    assert_error(
        "cluster: a\nroutes: [{ name: r, hosts: [a.b], mode: splice, endpoints: [{ address: 1.2.3.4:5 }] }]",
        &["routes[0].mode: unknown mode \"splice\""],
    );
    assert_error(
        "cluster: a\nupstream: { ejection_base: 10s, ejection_max: 1s }",
        &["upstream.ejection_max"],
    );
}

#[test]
fn duplicate_names_and_patterns_are_rejected() {
    let twice = "
cluster: a
routes:
  - { name: r, hosts: [a.example], endpoints: [{ address: 1.2.3.4:5 }] }
  - { name: r, hosts: [b.example], endpoints: [{ address: 1.2.3.4:5 }] }
";
    assert_error(twice, &["routes[1].name", "unique"]);
    let overlap = "
cluster: a
routes:
  - { name: r1, hosts: [a.example], endpoints: [{ address: 1.2.3.4:5 }] }
  - { name: r2, hosts: [A.example], endpoints: [{ address: 1.2.3.4:5 }] }
";
    assert_error(
        overlap,
        &["routes[1]: pattern a.example is claimed by more than one route"],
    );
}

const TERMINATE: &str = "
cluster: aws-east
tls: { cert_chain: gw.pem, private_key: /secret/gw.key, trust_bundle: bundle.json }
routes:
  - name: reviews
    services: [{ name: reviews, namespace: default, port: 9080 }]
    mode: terminate
    authorize:
      trust_domains: [gcp.example]
      clusters: [gcp]
      spiffe_ids: [spiffe://gcp.example/ns/default/sa/gateway]
    endpoints: [{ address: 127.0.0.1:9080 }]
egress:
  - name: ratings-gcp
    listen: 127.0.0.1:15001
    service: { name: ratings, namespace: default, port: 9080 }
    cluster: gcp
    trust_domain: gcp.example
    gateways:
      - { address: gw.gcp.example:15443, priority: 0 }
      - { address: '127.0.0.9:15443', priority: 1, weight: 3 }
";

#[test]
fn terminate_and_egress_are_validated_in_full() {
    let c = validate_only(TERMINATE).expect("well-formed");
    let Mode::Terminate(auth) = &c.routes[0].mode else {
        panic!("terminate mode expected");
    };
    assert_eq!(auth.clusters[0].as_str(), "gcp");
    assert_eq!(c.egress[0].mode, EgressMode::Mtls);
    for g in &c.egress[0].gateways {
        assert_eq!(
            g.mtls,
            Some(MtlsTarget {
                sni: "9080.ratings.default.gcp.v1.isthmus.internal".to_owned(),
                trust_domain: "gcp.example".to_owned(),
            })
        );
        assert_eq!(g.cluster.as_ref().map(Label::as_str), Some("gcp"));
    }
    assert_eq!(c.egress[0].probe.unhealthy_after, DEFAULT_UNHEALTHY_AFTER);
    assert_eq!(c.egress[0].gateways[1].weight, 3);

    assert_error(
        &TERMINATE.replace("spiffe://gcp.example/ns", "spiffe://gcp.example//ns"),
        &["routes[0].authorize.spiffe_ids[0]", "not a SPIFFE ID"],
    );
    assert_error(
        &TERMINATE.replace("gw.gcp.example:15443", "gw.gcp.example"),
        &["egress[0].gateways[0].address", "HOST:PORT"],
    );
    assert_error(
        &TERMINATE.replace("    cluster: gcp\n", ""),
        &[
            "egress[0].gateways[0]: no SNI: neither this gateway nor egress[0] sets `cluster` or `sni`",
            "set `cluster:` on the listener or on the gateway",
        ],
    );
}

#[test]
fn terminate_and_mtls_egress_need_the_tls_section() {
    let without_tls = TERMINATE.replace(
        "tls: { cert_chain: gw.pem, private_key: /secret/gw.key, trust_bundle: bundle.json }\n",
        "",
    );
    assert_error(
        &without_tls,
        &["tls: missing, but routes[0] (mode: terminate)"],
    );
    let egress_only = without_tls
        .replace("    mode: terminate\n", "")
        .replace("    authorize:\n      trust_domains: [gcp.example]\n      clusters: [gcp]\n      spiffe_ids: [spiffe://gcp.example/ns/default/sa/gateway]\n", "");
    assert_error(&egress_only, &["tls: missing, but egress[0] (mode: mtls)"]);
    let passthrough = egress_only.replace(
        "    cluster: gcp\n    trust_domain: gcp.example\n",
        "    mode: passthrough\n",
    );
    let c = parse(&passthrough).expect("passthrough egress needs no certificate");
    assert_eq!(c.egress[0].mode, EgressMode::Passthrough);
    assert_error(
        &passthrough.replace(
            "    mode: passthrough\n",
            "    mode: passthrough\n    trust_domain: x\n",
        ),
        &["egress[0]: sni and trust_domain apply to mtls egress only"],
    );
    assert_error(
        &TERMINATE.replace(
            "    gateways:\n",
            "    probe: { interval: 0s }\n    gateways:\n",
        ),
        &["egress[0].probe"],
    );
}

#[test]
fn dump_redacts_the_private_key() {
    let c = validate_only(TERMINATE).expect("well-formed");
    let text = dump(&c).to_string();
    assert!(!text.contains("/secret/gw.key"), "{text}");
    assert!(text.contains("[redacted]"));
    assert!(text.contains("\"spiffe_ids\""));
    let minimal = dump(&parse(MINIMAL).expect("valid"));
    assert_eq!(minimal["ingress"]["hello_timeout"], "5s");
    assert_eq!(
        minimal["routes"][0]["patterns"][0],
        "service reviews.default:9080"
    );
}

/// An import merged from two clusters: one listener, gateways of clusters `b` and `c`.
const MERGED: &str = "
cluster: a
tls: { cert_chain: gw.pem, private_key: gw.key, trust_bundle: bundle.json }
egress:
  - name: reviews
    listen: 127.0.0.1:15001
    service: { name: reviews, namespace: default, port: 9080 }
    trust_domain: mesh.example
    gateways:
      - { address: '10.0.0.1:15443', priority: 0, cluster: b }
      - { address: '10.0.0.2:15443', priority: 1, cluster: c, trust_domain: c.example }
      - { address: '10.0.0.3:15443', priority: 2, cluster: c, sni: reviews.c.example }
";

#[test]
fn gateways_override_the_listeners_cluster_sni_and_trust_domain() {
    let c = parse(MERGED).expect("valid");
    let targets: Vec<(Option<&str>, &str, &str)> = c.egress[0]
        .gateways
        .iter()
        .map(|g| {
            let m = g.mtls.as_ref().expect("mtls target");
            (
                g.cluster.as_ref().map(Label::as_str),
                m.sni.as_str(),
                m.trust_domain.as_str(),
            )
        })
        .collect();
    assert_eq!(
        targets,
        [
            (
                Some("b"),
                "9080.reviews.default.b.v1.isthmus.internal",
                "mesh.example"
            ),
            (
                Some("c"),
                "9080.reviews.default.c.v1.isthmus.internal",
                "c.example"
            ),
            (Some("c"), "reviews.c.example", "mesh.example"),
        ]
    );
    // A listener-level cluster and sni are defaults; a gateway's own cluster beats the sni.
    let defaults = MERGED.replace(
        "    trust_domain: mesh.example\n",
        "    trust_domain: mesh.example\n    cluster: z\n    sni: all.example\n",
    );
    let c = parse(&defaults).expect("valid");
    let sni = |j: usize| {
        c.egress[0].gateways[j]
            .mtls
            .as_ref()
            .expect("mtls")
            .sni
            .clone()
    };
    assert_eq!(sni(0), "9080.reviews.default.b.v1.isthmus.internal");
    assert_eq!(sni(2), "reviews.c.example");
    let inherit = defaults.replace(", cluster: b }", " }");
    let c = parse(&inherit).expect("valid");
    let first = &c.egress[0].gateways[0];
    assert_eq!(first.mtls.as_ref().expect("mtls").sni, "all.example");
    assert_eq!(first.cluster.as_ref().map(Label::as_str), Some("z"));
    let dumped = dump(&c);
    assert_eq!(
        dumped["egress"][0]["gateways"][1]["trust_domain"],
        "c.example"
    );
    assert_eq!(dumped["egress"][0]["gateways"][0]["sni"], "all.example");
}

#[test]
fn every_gateway_needs_an_sni_and_a_trust_domain() {
    assert_error(
        &MERGED.replace(", priority: 0, cluster: b }", ", priority: 0 }"),
        &[
            "egress[0].gateways[0]: no SNI: neither this gateway nor egress[0] sets `cluster` or `sni`",
        ],
    );
    assert_error(
        &MERGED.replace("    trust_domain: mesh.example\n", ""),
        &[
            "egress[0].gateways[0].trust_domain: missing, and egress[0].trust_domain is not set either",
            "on the gateway or once for the whole listener",
        ],
    );
    assert_error(
        &MERGED.replace("cluster: c, trust_domain: c.example", "cluster: C"),
        &["egress[0].gateways[1].cluster: invalid label"],
    );
    assert_error(
        &MERGED.replace("sni: reviews.c.example", "sni: 'not a name'"),
        &["egress[0].gateways[2].sni"],
    );
    assert_error(
        &MERGED.replace(
            "trust_domain: c.example",
            "trust_domain: 'spiffe://c.example'",
        ),
        &[
            "egress[0].gateways[1].trust_domain",
            "is not a trust domain",
        ],
    );
    let passthrough = MERGED
        .replace(
            "    trust_domain: mesh.example\n",
            "    mode: passthrough\n",
        )
        .replace(", trust_domain: c.example", "")
        .replace(", sni: reviews.c.example", "");
    let c = parse(&passthrough).expect("passthrough gateways may name their cluster");
    assert_eq!(c.egress[0].gateways[0].mtls, None);
    assert_eq!(
        c.egress[0].gateways[1].cluster.as_ref().map(Label::as_str),
        Some("c")
    );
    assert_error(
        &passthrough.replace("cluster: c }", "cluster: c, sni: x.example }"),
        &["egress[0].gateways[1]: sni and trust_domain apply to mtls egress only"],
    );
}

#[test]
fn splice_is_off_unless_turned_on() {
    let default = parse(MINIMAL).expect("valid");
    assert_eq!(default.upstream.splice, Splice::Off);
    assert_eq!(dump(&default)["upstream"]["splice"], "off");
    let off = parse(&format!("{MINIMAL}upstream: {{ splice: off }}\n")).expect("valid");
    assert_eq!(off.upstream.splice, Splice::Off);
    assert_eq!(dump(&off)["upstream"]["splice"], "off");
    let explicit = parse(&format!("{MINIMAL}upstream: {{ splice: auto }}\n")).expect("valid");
    assert_eq!(explicit.upstream.splice, Splice::Auto);
    for bad in ["always", "false", "Off"] {
        assert_error(
            &format!("{MINIMAL}upstream: {{ splice: {bad} }}\n"),
            &[
                &format!("upstream.splice: unknown value \"{bad}\""),
                "`auto`",
                "`off`",
            ],
        );
    }
}
