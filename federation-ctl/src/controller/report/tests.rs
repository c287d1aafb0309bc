use super::*;

fn report(name: &str, egress: &str, address: &str, healthy: bool) -> gw::GatewayReport {
    gw::GatewayReport {
        gateway: name.to_owned(),
        ready: true,
        egress: vec![gw::EgressReport {
            name: egress.to_owned(),
            listen: "127.0.0.1:15100".to_owned(),
            gateways: vec![gw::ProbeReport {
                address: address.to_owned(),
                healthy,
                ..gw::ProbeReport::default()
            }],
        }],
        ..gw::GatewayReport::default()
    }
}

#[test]
fn the_latest_current_report_answers_and_stale_ones_do_not() {
    let reports = Reports::default();
    reports.record(report("gw-1", "echo", "10.0.0.1:15443", false), 1_000);
    reports.record(report("gw-1", "echo", "10.0.0.1:15443", true), 2_000);
    assert_eq!(reports.all().len(), 1, "one entry per gateway name");
    let probe = reports
        .probe("echo", "10.0.0.1:15443", 2_500)
        .expect("current");
    assert!(probe.healthy, "the newest report wins");
    assert!(reports.probe("other", "10.0.0.1:15443", 2_500).is_none());
    assert!(
        reports
            .probe("echo", "10.0.0.1:15443", 2_000 + STALE_AFTER + 1)
            .is_none(),
        "a silent gateway's report goes stale"
    );
}

#[test]
fn the_map_is_bounded_and_forgets_the_stalest_first() {
    let reports = Reports::default();
    for i in 0..MAX_GATEWAYS + 5 {
        let at = i64::try_from(i).expect("small");
        reports.record(report(&format!("gw-{i}"), "e", "a:1", true), at);
    }
    let all = reports.all();
    assert_eq!(all.len(), MAX_GATEWAYS);
    assert!(all.iter().all(|r| r.report.gateway != "gw-0"));
}

#[test]
fn skew_is_their_clock_minus_ours() {
    assert_eq!(skew_ms(10_500, 10_000), Some(500));
    assert_eq!(skew_ms(9_000, 10_000), Some(-1_000));
    assert_eq!(skew_ms(0, 10_000), None, "an old peer that sends no time");
}
