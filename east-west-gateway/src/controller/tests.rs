use super::*;
use crate::api::{self, GatewayConfig};

#[test]
fn addresses_are_unix_sockets() {
    for (address, socket) in [
        ("unix:/run/isthmus/ctl.sock", "/run/isthmus/ctl.sock"),
        ("unix:///run/isthmus/ctl.sock", "/run/isthmus/ctl.sock"),
        ("unix:ctl.sock", "ctl.sock"),
        ("/run/isthmus/ctl.sock", "/run/isthmus/ctl.sock"),
        ("/tmp/odd:name.sock", "/tmp/odd:name.sock"),
    ] {
        let settings = Settings::new(address, "gw".to_owned()).expect(address);
        assert_eq!(settings.socket, PathBuf::from(socket), "{address}");
        assert_eq!(settings.address, address);
    }
    for (address, problem) in [
        ("http://127.0.0.1:50051", "only Unix sockets are supported"),
        ("unix:", "no socket path"),
        ("", "no socket path"),
    ] {
        let message = Settings::new(address, "gw".to_owned())
            .expect_err(address)
            .to_string();
        assert!(message.contains(problem), "{message}");
        assert!(message.contains("use unix:/path/to.sock"), "{message}");
    }
}

fn message() -> GatewayConfig {
    GatewayConfig {
        version: 7,
        routes: vec![api::Route {
            name: "reviews".to_owned(),
            services: vec![api::ServiceRef {
                name: "reviews".to_owned(),
                namespace: "default".to_owned(),
                port: 9080,
            }],
            // An empty Authorize is no authorize section.
            authorize: Some(api::Authorize::default()),
            endpoints: vec![api::Endpoint {
                address: "127.0.0.1:9080".to_owned(),
                weight: 0,
            }],
            ..api::Route::default()
        }],
        egress: vec![api::Egress {
            name: "ratings".to_owned(),
            listen: "127.0.0.1:0".to_owned(),
            mode: String::new(),
            service: Some(api::ServiceRef {
                name: "ratings".to_owned(),
                namespace: "default".to_owned(),
                port: 9080,
            }),
            gateways: vec![api::RemoteGateway {
                address: "10.0.0.1:15443".to_owned(),
                priority: 1,
                weight: 0,
                cluster: "gcp".to_owned(),
                trust_domain: "gcp.example".to_owned(),
                sni: String::new(),
            }],
        }],
        identity: None,
        // Material is checked when applied, not by validation.
        bundle_map_json: "{}".to_owned(),
        cluster: String::new(),
    }
}

#[test]
fn messages_become_raw_configs_with_the_files_defaults() {
    let bootstrap = Bootstrap::parse("cluster: aws\n").expect("bootstrap");
    let (dynamic, inline) = convert::dynamic(message());
    assert!(inline.is_some());
    let config = bootstrap.merge(dynamic).expect("valid");
    assert_eq!(config.routes[0].mode, config::Mode::Passthrough);
    assert_eq!(
        config.routes[0].endpoints[0].weight, 1,
        "weight 0 is the default"
    );
    let egress = &config.egress[0];
    assert_eq!(
        egress.mode,
        config::EgressMode::Mtls,
        "empty mode is the default"
    );
    let gateway = &egress.gateways[0];
    assert_eq!((gateway.priority, gateway.weight), (1, 1));
    let target = gateway.mtls.as_ref().expect("mtls");
    assert_eq!(target.sni, "9080.ratings.default.gcp.v1.isthmus.internal");
    assert_eq!(target.trust_domain, "gcp.example");
}

#[test]
fn bad_messages_get_the_files_errors_with_the_messages_field_paths() {
    let bootstrap = Bootstrap::parse("cluster: aws\n").expect("bootstrap");
    let reject = |edit: &dyn Fn(&mut GatewayConfig)| {
        let mut m = message();
        edit(&mut m);
        let (dynamic, _) = convert::dynamic(m);
        bootstrap.merge(dynamic).expect_err("rejected").to_string()
    };
    let error = reject(&|m| m.routes[0].services[0].port = 70_000);
    assert!(
        error.contains("routes[0].services[0].port: 70000 is above 65535"),
        "{error}"
    );
    let error = reject(&|m| m.egress[0].gateways[0].trust_domain.clear());
    assert!(
        error.contains("egress[0].gateways[0].trust_domain: missing"),
        "{error}"
    );
    let error = reject(&|m| m.routes[0].mode = "terminate".to_owned());
    assert!(error.contains("routes[0].authorize: missing"), "{error}");
    let error = reject(&|m| m.cluster = "gcp".to_owned());
    assert!(
        error.starts_with("cluster: the controller names cluster"),
        "{error}"
    );
}

#[test]
fn an_identity_or_a_bundle_means_tls_from_the_controller() {
    let mut m = message();
    m.bundle_map_json.clear();
    let (dynamic, inline) = convert::dynamic(m.clone());
    assert!(!dynamic.tls && inline.is_none());
    m.bundle_map_json = "{}".to_owned();
    let (dynamic, inline) = convert::dynamic(m);
    assert!(dynamic.tls);
    let inline = inline.expect("inline material");
    assert!(
        inline.cert_chain_pem.is_empty(),
        "staging names what is missing"
    );
    let mut m = message();
    m.identity = Some(api::Identity {
        cert_chain_pem: "chain".to_owned(),
        private_key_pem: "-----BEGIN PRIVATE KEY-----\nsecret\n".to_owned(),
    });
    assert!(
        !format!("{m:?}").contains("secret"),
        "Debug never shows the key"
    );
    let (_, inline) = convert::dynamic(m);
    assert!(!format!("{inline:?}").contains("secret"));
}
