use super::*;
use crate::config::dump;
use crate::config::raw::{RawEndpoint, RawRoute};
use crate::config::{Mode, Tls};

const BOOTSTRAP: &str = "
cluster: aws
ingress: { listen: 127.0.0.1:0, max_connections: 10 }
admin: { listen: 127.0.0.1:0 }
drain_timeout: 3s
";

fn passthrough(name: &str, host: &str) -> RawRoute {
    RawRoute {
        name: Some(name.to_owned()),
        hosts: vec![host.to_owned()],
        services: Vec::new(),
        mode: None,
        max_connections: None,
        authorize: None,
        endpoints: vec![RawEndpoint {
            address: Some("127.0.0.1:9".to_owned()),
            weight: None,
        }],
    }
}

fn error_of(result: Result<impl std::fmt::Debug, Error>) -> String {
    result.expect_err("refused").to_string()
}

#[test]
fn the_bootstrap_may_not_hold_what_the_controller_sends() {
    for (extra, field) in [
        (
            "routes: [{ name: r, hosts: [a.example], endpoints: [{ address: 127.0.0.1:9 }] }]",
            "routes",
        ),
        (
            "egress: [{ name: e, listen: 127.0.0.1:0, mode: passthrough, service: { name: s, namespace: n, port: 1 }, gateways: [{ address: 'g:1' }] }]",
            "egress",
        ),
        (
            "tls: { cert_chain: a, private_key: b, trust_bundle: c }",
            "tls",
        ),
    ] {
        let message = error_of(Bootstrap::parse(&format!("{BOOTSTRAP}{extra}\n")));
        assert!(
            message.starts_with(&format!(
                "{field}: not allowed in the bootstrap file of a gateway run with --controller; \
                 the controller sends routes, egress listeners and TLS material: remove `{field}`"
            )),
            "{message}"
        );
    }
    let message = error_of(Bootstrap::parse(&format!(
        "{BOOTSTRAP}reload: {{ watch_interval: 1s }}\n"
    )));
    assert!(
        message.starts_with("reload: the bootstrap file is read once"),
        "{message}"
    );
    assert!(error_of(Bootstrap::parse("ingres: {}")).contains("unknown field `ingres`"));
}

#[test]
fn controller_configs_are_merged_into_the_bootstrap_and_validated_like_a_file() {
    let bootstrap = Bootstrap::parse(BOOTSTRAP).expect("valid bootstrap");
    assert!(bootstrap.initial().routes.is_empty());
    assert_eq!(bootstrap.initial().ingress.max_connections, 10);
    let config = bootstrap
        .merge(Dynamic {
            routes: vec![passthrough("web", "web.example")],
            ..Dynamic::default()
        })
        .expect("valid");
    assert_eq!(config.cluster.as_str(), "aws");
    assert_eq!(config.routes[0].mode, Mode::Passthrough);
    assert_eq!(config.drain_timeout, std::time::Duration::from_secs(3));
    assert_eq!(config.tls, None);

    let mut bad = passthrough("web", "web.example");
    bad.endpoints[0].address = Some("nowhere".to_owned());
    let message = error_of(bootstrap.merge(Dynamic {
        routes: vec![bad],
        ..Dynamic::default()
    }));
    assert!(
        message.contains("routes[0].endpoints[0].address: \"nowhere\" is not IP:PORT"),
        "{message}"
    );

    let mut terminate = passthrough("web", "web.example");
    terminate.mode = Some("terminate".to_owned());
    terminate.authorize = Some(crate::config::raw::RawAuthorize {
        trust_domains: vec!["gcp.example".to_owned()],
        clusters: Vec::new(),
        spiffe_ids: Vec::new(),
    });
    let message = error_of(bootstrap.merge(Dynamic {
        routes: vec![terminate.clone()],
        ..Dynamic::default()
    }));
    assert!(
        message.contains("the controller must send `identity` and `bundle_map_json`"),
        "{message}"
    );
    let config = bootstrap
        .merge(Dynamic {
            routes: vec![terminate],
            tls: true,
            ..Dynamic::default()
        })
        .expect("with material");
    assert_eq!(config.tls, Some(Tls::Controller));
    assert_eq!(dump(&config)["tls"]["source"], "controller");
}

#[test]
fn the_cluster_comes_from_the_bootstrap_or_the_controller_and_they_must_agree() {
    let bootstrap = Bootstrap::parse(BOOTSTRAP).expect("valid");
    let named = |cluster: &str| Dynamic {
        cluster: Some(cluster.to_owned()),
        ..Dynamic::default()
    };
    assert!(bootstrap.merge(named("aws")).is_ok());
    let message = error_of(bootstrap.merge(named("gcp")));
    assert!(
        message.starts_with(
            "cluster: the controller names cluster \"gcp\" but the bootstrap file says \"aws\""
        ),
        "{message}"
    );
    let anonymous = Bootstrap::load(None).expect("defaults");
    assert_eq!(anonymous.initial().cluster.as_str(), UNNAMED_CLUSTER);
    assert_eq!(anonymous.initial().ingress.listen.port(), 15443);
    let config = anonymous
        .merge(named("gcp"))
        .expect("named by the controller");
    assert_eq!(config.cluster.as_str(), "gcp");
    assert!(error_of(anonymous.merge(Dynamic::default())).starts_with("cluster: missing"));
}
