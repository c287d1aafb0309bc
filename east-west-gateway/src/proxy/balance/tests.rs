use proptest::prelude::*;

use super::*;

fn upstream() -> config::Upstream {
    config::Upstream {
        connect_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(60),
        connect_attempts: 3,
        ejection_base: Duration::from_secs(1),
        ejection_max: Duration::from_secs(8),
        buffer_bytes: 1024,
        splice: config::Splice::Auto,
    }
}

fn balancer(weights: &[u32]) -> Balancer {
    let endpoints: Vec<config::Endpoint> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| config::Endpoint {
            address: SocketAddr::from(([127, 0, 0, 1], 1000 + u16::try_from(i).expect("few"))),
            weight: *w,
        })
        .collect();
    Balancer::new(&endpoints, &upstream())
}

fn counts(b: &Balancer, picks: usize) -> Vec<usize> {
    let now = Instant::now();
    let mut counts = vec![0; b.len()];
    for _ in 0..picks {
        counts[b.pick(&[], now).expect("an endpoint")] += 1;
    }
    counts
}

#[test]
fn weights_shift_the_share() {
    let c = counts(&balancer(&[1, 3]), 4000);
    // Without load, P2C with weighted sampling favours the heavy endpoint strongly.
    assert!(c[1] > c[0] * 2, "{c:?}");
}

#[test]
fn less_loaded_endpoint_wins() {
    let b = balancer(&[1, 1]);
    let _busy: Vec<_> = (0..10).map(|_| b.acquire(0).expect("exists")).collect();
    let c = counts(&b, 200);
    assert_eq!(c[0], 0, "{c:?}");
    drop(_busy);
    let c = counts(&b, 2000);
    assert!(c[0] > 500 && c[1] > 500, "{c:?}");
}

#[test]
fn tried_endpoints_are_skipped() {
    let b = balancer(&[1, 1, 1]);
    let now = Instant::now();
    for _ in 0..100 {
        let p = b.pick(&[0, 2], now);
        assert_eq!(p, Some(1));
    }
    assert_eq!(b.pick(&[0, 1, 2], now), None);
    assert_eq!(balancer(&[]).pick(&[], now), None);
}

#[test]
fn ejected_endpoints_are_avoided_until_their_period_ends() {
    let b = balancer(&[1, 1]);
    let now = Instant::now();
    assert_eq!(b.report_failure(0, now), Some(Duration::from_secs(1)));
    assert!((0..100).all(|_| b.pick(&[], now) == Some(1)));
    let later = now + Duration::from_secs(1);
    assert!((0..200).any(|_| b.pick(&[], later) == Some(0)));
    // Consecutive failures double the period; success resets it.
    assert_eq!(b.report_failure(0, now), Some(Duration::from_secs(2)));
    b.report_success(0);
    assert_eq!(b.report_failure(0, now), Some(Duration::from_secs(1)));
}

#[test]
fn all_ejected_still_routes() {
    let b = balancer(&[1, 1]);
    let now = Instant::now();
    b.report_failure(0, now);
    b.report_failure(1, now);
    assert!(b.pick(&[], now).is_some());
    assert_eq!(b.pick(&[1], now), Some(0));
}

proptest! {
    #[test]
    fn ejection_period_is_bounded_and_monotonic(
        base_ms in 1u64..10_000,
        extra_ms in 0u64..100_000,
        failures in 1u32..200,
    ) {
        let base = Duration::from_millis(base_ms);
        let max = base + Duration::from_millis(extra_ms);
        let d = ejection_period(base, max, failures);
        prop_assert!(d >= base && d <= max);
        prop_assert!(ejection_period(base, max, failures + 1) >= d);
    }

    #[test]
    fn pick_never_returns_a_tried_or_unknown_index(
        weights in proptest::collection::vec(1u32..10, 0..6),
        tried in proptest::collection::vec(0usize..8, 0..8),
    ) {
        let b = balancer(&weights);
        if let Some(i) = b.pick(&tried, Instant::now()) {
            prop_assert!(i < weights.len());
            prop_assert!(!tried.contains(&i));
        } else {
            prop_assert!((0..weights.len()).all(|i| tried.contains(&i)));
        }
    }
}
