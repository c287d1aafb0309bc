use super::*;
use proptest::prelude::*;

#[test]
fn parses_valid_ids() {
    let id = SpiffeId::parse("spiffe://aws.mesh.example/ns/default/sa/reviews").unwrap();
    assert_eq!(id.trust_domain().as_str(), "aws.mesh.example");
    assert_eq!(id.path(), "/ns/default/sa/reviews");
    assert!(!id.is_authority());
    let ca = SpiffeId::parse("spiffe://mesh.example").unwrap();
    assert!(ca.is_authority());
    assert_eq!(
        ca,
        TrustDomain::parse("mesh.example").unwrap().authority_id()
    );
}

#[test]
fn refuses_invalid_ids() {
    let cases = [
        ("http://td/x", Error::Scheme("http://td/x".into())),
        ("spiffe:///x", Error::EmptyTrustDomain),
        ("spiffe://TD/x", Error::TrustDomainChar("TD".into())),
        ("spiffe://td:443/x", Error::TrustDomainChar("td:443".into())),
        (
            "spiffe://td//x",
            Error::EmptySegment("spiffe://td//x".into()),
        ),
        (
            "spiffe://td/x/",
            Error::EmptySegment("spiffe://td/x/".into()),
        ),
        (
            "spiffe://td/./x",
            Error::DotSegment("spiffe://td/./x".into()),
        ),
        (
            "spiffe://td/a%20b",
            Error::PathChar("spiffe://td/a%20b".into()),
        ),
        ("spiffe://td/a?b", Error::PathChar("spiffe://td/a?b".into())),
    ];
    for (input, want) in cases {
        assert_eq!(SpiffeId::parse(input), Err(want), "{input}");
    }
    assert_eq!(
        SpiffeId::parse_workload("spiffe://td"),
        Err(Error::NoPath("spiffe://td".into()))
    );
    assert!(matches!(
        SpiffeId::parse(&format!("spiffe://td/{}", "a".repeat(3000))),
        Err(Error::IdTooLong(_))
    ));
}

proptest! {
    #[test]
    fn never_panics(s in ".{0,300}") {
        let _ = SpiffeId::parse(&s);
        let _ = TrustDomain::parse(&s);
    }

    #[test]
    fn valid_ids_round_trip(
        td in "[a-z0-9][a-z0-9.\\-_]{0,40}",
        segs in proptest::collection::vec("[a-zA-Z0-9\\-_][a-zA-Z0-9.\\-_]{0,10}", 0..5),
    ) {
        let segs: Vec<_> = segs.into_iter().filter(|s| s != "." && s != "..").collect();
        let path: String = segs.iter().map(|s| format!("/{s}")).collect();
        let text = format!("spiffe://{td}{path}");
        let id = SpiffeId::parse(&text).unwrap();
        prop_assert_eq!(id.as_str(), text.as_str());
        prop_assert_eq!(id.trust_domain_str(), td.as_str());
        prop_assert_eq!(id.path(), path.as_str());
    }
}
