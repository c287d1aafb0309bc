use proptest::prelude::*;

use super::*;

fn svc(name: &str, namespace: &str, port: u16) -> ServiceRef {
    ServiceRef::new(name, namespace, port).expect("valid test service")
}

fn label(s: &str) -> Label {
    Label::new(s).expect("valid test label")
}

fn check(input: &str, expected: Result<ServiceName, Error>) {
    assert_eq!(parse_service_name(input), expected, "input {input:?}");
}

#[test]
fn native_names_parse() {
    check(
        "9080.reviews.default.aws-east.v1.isthmus.internal",
        Ok(ServiceName::Native(NativeName {
            service: svc("reviews", "default", 9080),
            cluster: label("aws-east"),
        })),
    );
}

#[test]
fn istio_aliases_parse() {
    check(
        "outbound_.9080_._.reviews.default.svc.cluster.local",
        Ok(ServiceName::Istio(IstioName {
            service: svc("reviews", "default", 9080),
            subset: None,
            domain: "cluster.local".to_owned(),
        })),
    );
    check(
        "outbound_.443_.v2_.ratings.prod.svc.corp.example",
        Ok(ServiceName::Istio(IstioName {
            service: svc("ratings", "prod", 443),
            subset: Some(label("v2")),
            domain: "corp.example".to_owned(),
        })),
    );
}

#[test]
fn malformed_names_say_why() {
    check(
        "9080.reviews.default.aws-east.v2.isthmus.internal",
        Err(Error::UnsupportedVersion("v2".to_owned())),
    );
    check(
        "reviews.default.aws-east.v1.isthmus.internal",
        Err(Error::NativeShape),
    );
    check(
        "09080.reviews.default.aws-east.v1.isthmus.internal",
        Err(Error::InvalidPort("09080".to_owned())),
    );
    check(
        "0.reviews.default.aws-east.v1.isthmus.internal",
        Err(Error::InvalidPort("0".to_owned())),
    );
    check(
        "70000.reviews.default.aws-east.v1.isthmus.internal",
        Err(Error::InvalidPort("70000".to_owned())),
    );
    check(
        "9080.-reviews.default.aws-east.v1.isthmus.internal",
        Err(Error::InvalidLabel {
            label: "-reviews".to_owned(),
            reason: "must start and end with a letter or digit",
        }),
    );
    check(
        "outbound_.9080_._.reviews.default.cluster.local",
        Err(Error::IstioShape),
    );
    check(
        "outbound_.9080._.reviews.default.svc.x",
        Err(Error::IstioShape),
    );
    check("outbound_.9080_", Err(Error::IstioShape));
    // Found by fuzzing: a 63-character subset makes the label `<subset>_` 64 characters long.
    let long_subset = format!("outbound_.9080_.{}_.v.dt.svc.kl", "8".repeat(63));
    check(
        &long_subset,
        Err(Error::InvalidLabel {
            label: format!("{}_", "8".repeat(63)),
            reason: "longer than 63 characters",
        }),
    );
    check("reviews.example.com", Err(Error::NotAServiceName));
    check("isthmus.internal", Err(Error::NotAServiceName));
}

#[test]
fn uppercase_is_not_native_grammar() {
    // Callers lowercase SNI first; the grammar itself is strictly lowercase.
    assert!(NativeName::parse("9080.Reviews.default.c.v1.isthmus.internal").is_err());
}

#[test]
fn host_names_are_checked() {
    assert_eq!(check_host_name("a.example.com"), Ok(()));
    assert_eq!(
        check_host_name("outbound_.9080_._.reviews.default.svc.cluster.local"),
        Ok(())
    );
    assert!(check_host_name("a..b").is_err());
    assert!(check_host_name("A.example").is_err());
    assert!(check_host_name(&"a".repeat(64)).is_err());
    assert_eq!(check_host_name(&["a"; 128].join(".")), Err(Error::TooLong));
}

// === properties ===

fn label_strategy() -> impl Strategy<Value = Label> {
    "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?".prop_map(|s| label(&s))
}

fn service_strategy() -> impl Strategy<Value = ServiceRef> {
    (label_strategy(), label_strategy(), 1u16..).prop_map(|(name, namespace, port)| ServiceRef {
        name,
        namespace,
        port,
    })
}

fn is_dns_valid(name: &str) -> bool {
    name.len() <= MAX_NAME_LEN
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= MAX_LABEL_LEN
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

proptest! {
    #[test]
    fn native_names_round_trip_and_are_dns_valid(service in service_strategy(), cluster in label_strategy()) {
        let native = NativeName { service, cluster };
        let text = native.to_string();
        prop_assert!(is_dns_valid(&text), "{text}");
        prop_assert_eq!(parse_service_name(&text), Ok(ServiceName::Native(native)));
    }

    #[test]
    fn istio_names_round_trip(
        service in service_strategy(),
        subset in proptest::option::of(label_strategy()),
        domain in "[a-z0-9]{1,10}(\\.[a-z0-9]{1,10}){0,3}",
    ) {
        let istio = IstioName { service, subset, domain };
        let text = istio.to_string();
        // A printed alias parses back exactly when it is a host name; the parser must not
        // accept a name (e.g. a 63-character subset plus `_`) that DNS and TLS cannot carry.
        if check_host_name(&text).is_ok() {
            prop_assert_eq!(parse_service_name(&text), Ok(ServiceName::Istio(istio)));
        } else {
            prop_assert!(parse_service_name(&text).is_err(), "{text}");
        }
    }

    #[test]
    fn arbitrary_strings_never_panic(s in "\\PC{0,300}") {
        let _ = parse_service_name(&s);
        let _ = check_host_name(&s);
        let _ = NativeName::parse(&s);
        let _ = IstioName::parse(&s);
    }

    #[test]
    fn near_miss_native_names_never_panic(s in "[0-9a-z._-]{0,40}\\.v[0-9]\\.isthmus\\.internal") {
        let _ = parse_service_name(&s);
    }
}
