use super::*;

fn results(direct: &[f64], isthmus: &[f64], unit: &'static str) -> Results {
    let mut r = Results::default();
    for (rep, (d, i)) in direct.iter().zip(isthmus).enumerate() {
        r.record("s", "m", unit, Better::Higher, Name::Direct, rep, Some(*d));
        r.record("s", "m", unit, Better::Higher, Name::Isthmus, rep, Some(*i));
    }
    r
}

#[test]
fn ratio_is_the_median_of_per_run_ratios_to_direct_in_the_same_repetition() {
    // Per-run ratios 0.5, 0.9, 0.8: median 0.8, although the medians' ratio is 60/100.
    let r = results(&[100.0, 50.0, 75.0], &[50.0, 45.0, 60.0], "req/s");
    let cells = r.rows[0].cells();
    let (_, isthmus) = cells
        .iter()
        .find(|(n, _)| *n == Name::Isthmus)
        .expect("isthmus");
    assert_eq!(isthmus.value, Some(50.0));
    assert_eq!(isthmus.ratio, Some(0.8));
    assert_eq!(isthmus.delta, None);
}

#[test]
fn latency_rows_also_carry_the_added_latency() {
    let r = results(&[200.0, 210.0, 190.0], &[300.0, 315.0, 285.0], "µs");
    let cells = r.rows[0].cells();
    let (_, isthmus) = cells
        .iter()
        .find(|(n, _)| *n == Name::Isthmus)
        .expect("isthmus");
    assert_eq!(isthmus.delta, Some(100.0));
    let md = markdown(&meta(), &r);
    assert!(
        md.contains("| s | m (µs↑) | 200 | 300 (1.50×, +100) |"),
        "{md}"
    );
}

#[test]
fn a_run_without_a_figure_is_left_out_and_shown_as_missing() {
    let mut r = Results::default();
    r.record("s", "m", "KiB", Better::Lower, Name::Envoy, 0, None);
    r.record(
        "s",
        "m",
        "KiB",
        Better::Lower,
        Name::Envoy,
        1,
        Some(f64::NAN),
    );
    let cells = r.rows[0].cells();
    assert_eq!(cells[0].1.value, None);
    assert_eq!(cells[0].1.ratio, None);
    assert!(markdown(&meta(), &r).contains("| n/a |"));
    let json = json(&meta(), &r).expect("json");
    assert!(json.contains("\"value\": null"), "{json}");
}

fn meta() -> Meta {
    Meta {
        date: "2026-01-01T00:00:00Z".into(),
        quick: true,
        cpus: 2,
        loadavg_start: "1.00 1.00 1.00".into(),
        loadavg_end: "1.00 1.00 1.00".into(),
        kernel: "6".into(),
        repetitions: 3,
        warmup_s: 0.1,
        measure_s: 0.3,
        idle_connections: 20,
        versions: BTreeMap::new(),
        duration_s: 1.0,
        only: vec![],
        isthmus_upstream: None,
    }
}
