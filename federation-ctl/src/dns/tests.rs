use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use hickory_server::proto::rr::RecordType;
use proptest::prelude::*;

use super::*;

fn zone() -> Zone {
    Zone {
        zone: "clusterset.local".to_owned(),
        ttl: Duration::from_secs(5),
    }
}

fn imports(address: IpAddr) -> impl Imports {
    move |key: &ServiceKey| {
        (key.to_string() == "echo.default").then(|| ServiceRecords {
            address,
            ports: vec![("http".to_owned(), 25100), ("grpc".to_owned(), 25101)],
        })
    }
}

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[test]
fn a_names_the_egress_address_and_srv_the_listener_ports() {
    let z = zone();
    let i = imports(LOCAL);
    assert_eq!(
        z.answer("echo.default.svc.clusterset.local.", RecordType::A, &i),
        Answer::Records(vec![Rec::A(Ipv4Addr::LOCALHOST)])
    );
    assert_eq!(
        z.answer("ECHO.Default.svc.clusterset.local", RecordType::AAAA, &i),
        Answer::Records(vec![]),
        "the name exists, with no IPv6 address"
    );
    let target = "echo.default.svc.clusterset.local.".to_owned();
    assert_eq!(
        z.answer("echo.default.svc.clusterset.local", RecordType::SRV, &i),
        Answer::Records(vec![
            Rec::Srv {
                port: 25100,
                target: target.clone()
            },
            Rec::Srv {
                port: 25101,
                target: target.clone()
            },
        ])
    );
    assert_eq!(
        z.answer(
            "_grpc._tcp.echo.default.svc.clusterset.local",
            RecordType::SRV,
            &i
        ),
        Answer::Records(vec![Rec::Srv {
            port: 25101,
            target
        }])
    );
    let v6 = imports(IpAddr::V6(Ipv6Addr::LOCALHOST));
    assert_eq!(
        z.answer("echo.default.svc.clusterset.local", RecordType::AAAA, &v6),
        Answer::Records(vec![Rec::Aaaa(Ipv6Addr::LOCALHOST)])
    );
}

#[test]
fn unknown_names_are_nxdomain_and_other_zones_refused() {
    let z = zone();
    let i = imports(LOCAL);
    for name in [
        "nope.default.svc.clusterset.local",
        "_nope._tcp.echo.default.svc.clusterset.local",
        "_http._udp.echo.default.svc.clusterset.local",
        "a.b.c.svc.clusterset.local",
        "echo.default.clusterset.local",
    ] {
        assert_eq!(
            z.answer(name, RecordType::A, &i),
            Answer::NxDomain,
            "{name}"
        );
    }
    for name in [
        "example.com",
        "echo.default.svc.cluster.local",
        "xclusterset.local",
    ] {
        assert_eq!(z.answer(name, RecordType::A, &i), Answer::Refused, "{name}");
    }
    assert_eq!(
        z.answer("clusterset.local", RecordType::A, &i),
        Answer::Records(vec![])
    );
}

proptest! {
    #[test]
    fn any_name_gets_an_answer_without_panicking(name in "[a-zA-Z0-9._-]{0,80}") {
        let _ = zone().answer(&name, RecordType::SRV, &imports(LOCAL));
    }
}
