use super::*;

#[test]
fn delays_double_up_to_the_cap_and_reset() {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let delays: Vec<u128> = (0..9).map(|_| backoff.next_delay().as_millis()).collect();
    assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    backoff.reset();
    assert_eq!(backoff.next_delay(), Duration::from_millis(100));
}
