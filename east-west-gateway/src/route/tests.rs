use proptest::prelude::*;

use super::*;

fn svc(name: &str, namespace: &str, port: u16) -> ServiceRef {
    ServiceRef::new(name, namespace, port).expect("valid test service")
}

fn label(s: &str) -> Label {
    Label::new(s).expect("valid test label")
}

fn host(p: &str) -> Pattern {
    Pattern::host(p).expect("valid test pattern")
}

fn service(name: &str, namespace: &str, port: u16, subset: Option<&str>) -> Pattern {
    Pattern::Service {
        service: svc(name, namespace, port),
        subset: subset.map(label),
    }
}

fn table(patterns: &[(Pattern, &'static str)]) -> RouteTable<&'static str> {
    let mut b = Builder::new(label("aws-east"), "cluster.local");
    for (p, v) in patterns {
        b.insert(p.clone(), *v)
            .expect("no duplicates in test tables");
    }
    b.build()
}

fn check(t: &RouteTable<&'static str>, name: &str, expected: Option<(&str, MatchKind)>) {
    assert_eq!(
        t.lookup(name).map(|(v, k)| (*v, k)),
        expected,
        "name {name:?}"
    );
}

#[test]
fn precedence_exact_then_service_then_longest_wildcard() {
    let t = table(&[
        (
            host("9080.reviews.default.aws-east.v1.isthmus.internal"),
            "exact",
        ),
        (service("reviews", "default", 9080, None), "reviews"),
        (
            service("reviews", "default", 9080, Some("v2")),
            "reviews-v2",
        ),
        (host("*.isthmus.internal"), "wild-short"),
        (host("*.aws-east.v1.isthmus.internal"), "wild-long"),
        (host("*.example.com"), "example"),
        (host("api.example.com"), "api"),
    ]);
    check(
        &t,
        "9080.reviews.default.aws-east.v1.isthmus.internal",
        Some(("exact", MatchKind::Exact)),
    );
    check(
        &t,
        "9080.REVIEWS.default.aws-east.v1.isthmus.internal",
        Some(("exact", MatchKind::Exact)),
    );
    check(
        &t,
        "outbound_.9080_._.reviews.default.svc.cluster.local",
        Some(("reviews", MatchKind::Service)),
    );
    check(
        &t,
        "outbound_.9080_.v2_.reviews.default.svc.cluster.local",
        Some(("reviews-v2", MatchKind::Service)),
    );
    // Unknown subset: no fallback to the subset-less route.
    check(
        &t,
        "outbound_.9080_.v3_.reviews.default.svc.cluster.local",
        None,
    );
    // Another cluster domain is not ours.
    check(
        &t,
        "outbound_.9080_._.reviews.default.svc.other.local",
        None,
    );
    // A native name for another cluster or port falls through to the wildcards.
    check(
        &t,
        "9080.reviews.default.gcp.v1.isthmus.internal",
        Some(("wild-short", MatchKind::Wildcard)),
    );
    check(
        &t,
        "9081.reviews.default.aws-east.v1.isthmus.internal",
        Some(("wild-long", MatchKind::Wildcard)),
    );
    check(&t, "api.example.com", Some(("api", MatchKind::Exact)));
    check(
        &t,
        "a.b.example.com",
        Some(("example", MatchKind::Wildcard)),
    );
    check(&t, "example.com", None);
    check(&t, ".example.com", None);
    check(&t, "", None);
    check(&t, "unknown.test", None);
}

#[test]
fn duplicates_are_rejected() {
    let mut b = Builder::new(label("c"), "cluster.local");
    b.insert(host("*.Example.com"), 1).expect("first");
    assert_eq!(
        b.insert(host("*.example.com"), 2),
        Err(Error::Duplicate(Pattern::Wildcard(
            "example.com".to_owned()
        )))
    );
    b.insert(service("a", "b", 1, None), 1).expect("first");
    assert!(b.insert(service("a", "b", 1, None), 2).is_err());
    b.insert(service("a", "b", 1, Some("v1")), 3)
        .expect("a subset is a distinct pattern");
}

#[test]
fn host_patterns_are_validated() {
    assert!(Pattern::host("*.").is_err());
    assert!(Pattern::host("*").is_err());
    assert!(Pattern::host("a.*.com").is_err());
    assert!(Pattern::host("**.com").is_err());
    assert!(Pattern::host("bad name").is_err());
    assert_eq!(
        Pattern::host("Api.Example.COM"),
        Ok(Pattern::Exact("api.example.com".to_owned()))
    );
}

// === properties ===

fn pattern_strategy() -> impl Strategy<Value = Pattern> {
    let word = "[a-c]{1,2}";
    prop_oneof![
        proptest::collection::vec(word, 1..4).prop_map(|l| Pattern::Exact(l.join("."))),
        proptest::collection::vec(word, 1..3).prop_map(|l| Pattern::Wildcard(l.join("."))),
        ("[a-b]", "[a-b]", 1u16..3, proptest::option::of("v[1-2]")).prop_map(
            |(n, ns, port, subset)| Pattern::Service {
                service: svc(&n, &ns, port),
                subset: subset.map(|s| label(&s)),
            }
        ),
    ]
}

fn query_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::vec("[a-c]{1,2}", 1..5).prop_map(|l| l.join(".")),
        ("[a-b]", "[a-b]", 1u16..3, "aws-east|gcp")
            .prop_map(|(n, ns, p, c)| format!("{p}.{n}.{ns}.{c}.v1.isthmus.internal")),
        ("[a-b]", "[a-b]", 1u16..3, "_|v1_|v2_")
            .prop_map(|(n, ns, p, s)| format!("outbound_.{p}_.{s}.{n}.{ns}.svc.cluster.local")),
    ]
}

fn unique(patterns: Vec<Pattern>) -> Vec<(Pattern, usize)> {
    let mut seen = std::collections::HashSet::new();
    patterns
        .into_iter()
        .filter(|p| seen.insert(p.clone()))
        .enumerate()
        .map(|(i, p)| (p, i))
        .collect()
}

fn build(patterns: &[(Pattern, usize)]) -> RouteTable<usize> {
    let mut b = Builder::new(label("aws-east"), "cluster.local");
    for (p, v) in patterns {
        b.insert(p.clone(), *v).expect("unique patterns");
    }
    b.build()
}

/// The documented precedence, written as a slow reference over the pattern list.
fn reference(patterns: &[(Pattern, usize)], name: &str) -> Option<usize> {
    let exact = patterns
        .iter()
        .find(|(p, _)| *p == Pattern::Exact(name.to_owned()));
    let service = names::parse_service_name(name).ok().and_then(|s| {
        let key = match s {
            ServiceName::Native(n) if n.cluster.as_str() == "aws-east" => (n.service, None),
            ServiceName::Istio(n) if n.domain == "cluster.local" => (n.service, n.subset),
            _ => return None,
        };
        patterns.iter().find(|(p, _)| {
            *p == Pattern::Service {
                service: key.0.clone(),
                subset: key.1.clone(),
            }
        })
    });
    let wildcard = patterns
        .iter()
        .filter_map(|(p, v)| match p {
            Pattern::Wildcard(s) if name.ends_with(&format!(".{s}")) => Some((s.len(), v)),
            _ => None,
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, v)| *v);
    exact.or(service).map(|(_, v)| *v).or(wildcard)
}

proptest! {
    #[test]
    fn lookup_is_independent_of_insertion_order(
        patterns in proptest::collection::vec(pattern_strategy(), 0..20),
        queries in proptest::collection::vec(query_strategy(), 1..20),
        order in Just(()).prop_perturb(|(), mut rng| rng.random::<u64>()),
    ) {
        let forward = unique(patterns);
        let mut shuffled = forward.clone();
        // Deterministic shuffle from a proptest-drawn seed, so failures reproduce.
        let mut state = order;
        for i in (1..shuffled.len()).rev() {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let j = usize::try_from((state >> 33) % (i as u64 + 1)).expect("fits");
            shuffled.swap(i, j);
        }
        let (a, b) = (build(&forward), build(&shuffled));
        for q in &queries {
            let got = a.lookup(q).map(|(v, _)| *v);
            prop_assert_eq!(got, b.lookup(q).map(|(v, _)| *v));
            prop_assert_eq!(got, reference(&forward, q), "query {}", q);
        }
    }

    #[test]
    fn arbitrary_names_never_panic(name in "\\PC{0,100}") {
        let t = table(&[(host("*.a.b"), "w"), (service("a", "b", 1, None), "s")]);
        let _ = t.lookup(&name);
    }
}
