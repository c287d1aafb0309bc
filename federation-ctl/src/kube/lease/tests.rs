use proptest::prelude::*;

use super::{Decision, Elector, LeaseRecord};

const LEASE_MS: u64 = 15_000;
const RENEW_MS: u64 = 10_000;

fn held_by(holder: &str, renew: &str) -> LeaseRecord {
    LeaseRecord {
        holder: Some(holder.into()),
        lease_duration_secs: Some(15),
        renew_time: Some(renew.into()),
        transitions: 3,
    }
}

#[test]
fn a_missing_or_released_lease_is_taken_at_once() {
    let mut e = Elector::new("a".into(), LEASE_MS, RENEW_MS);
    assert_eq!(
        e.decide(None, 0),
        Decision::Take {
            create: true,
            acquire: true,
            transitions: 0
        }
    );
    let released = LeaseRecord {
        holder: Some(String::new()),
        ..held_by("x", "t")
    };
    assert_eq!(
        e.decide(Some(&released), 5),
        Decision::Take {
            create: false,
            acquire: true,
            transitions: 4
        }
    );
}

#[test]
fn a_held_lease_is_free_only_after_it_stayed_unchanged_for_its_duration() {
    let mut e = Elector::new("b".into(), LEASE_MS, RENEW_MS);
    let r1 = held_by("a", "t1");
    assert!(
        matches!(e.decide(Some(&r1), 1_000), Decision::Wait { ref holder, free_in_ms: 15_000 } if holder == "a")
    );
    assert!(matches!(
        e.decide(Some(&r1), 15_999),
        Decision::Wait { free_in_ms: 1, .. }
    ));
    // A renewal restarts our timer.
    let r2 = held_by("a", "t2");
    assert!(matches!(
        e.decide(Some(&r2), 16_000),
        Decision::Wait {
            free_in_ms: 15_000,
            ..
        }
    ));
    assert_eq!(
        e.decide(Some(&r2), 31_000),
        Decision::Take {
            create: false,
            acquire: true,
            transitions: 4
        }
    );
}

#[test]
fn the_holder_renews_and_leads_until_its_renew_deadline() {
    let mut e = Elector::new("a".into(), LEASE_MS, RENEW_MS);
    assert!(!e.is_leader(0));
    let r = held_by("a", "t");
    assert_eq!(
        e.decide(Some(&r), 100),
        Decision::Take {
            create: false,
            acquire: false,
            transitions: 3
        }
    );
    e.written(100);
    assert!(e.is_leader(10_099));
    assert!(!e.is_leader(10_100));
    assert_eq!(e.leads_until(), Some(10_100));
    // A late answer to an older write never shortens leadership.
    e.written(50);
    assert_eq!(e.leads_until(), Some(10_100));
}

/// A write in flight: decided at `sent_at` against resourceVersion `rv`.
#[derive(Clone)]
struct Pending {
    rv: u64,
    record: LeaseRecord,
    sent_at: u64,
}

/// The API server's Lease with optimistic concurrency.
#[derive(Default)]
struct Store {
    lease: Option<(LeaseRecord, u64)>,
    next_rv: u64,
}

impl Store {
    fn read(&self) -> (Option<LeaseRecord>, u64) {
        match &self.lease {
            Some((r, rv)) => (Some(r.clone()), *rv),
            None => (None, 0),
        }
    }

    /// Applies a write if the version still matches (0: create); false is a 409.
    fn write(&mut self, p: &Pending) -> bool {
        let current = self.lease.as_ref().map_or(0, |(_, rv)| *rv);
        if current != p.rv {
            return false;
        }
        self.next_rv += 1;
        self.lease = Some((p.record.clone(), self.next_rv));
        true
    }
}

proptest! {
    /// Replicas reading, deciding and writing in any interleaving, with writes delayed or lost
    /// and replicas stalled for any time: never do two believe they lead at the same instant.
    #[test]
    fn two_replicas_never_lead_at_once(
        steps in proptest::collection::vec((0usize..3, 0u8..4, 0u64..4_000), 1..400)
    ) {
        let mut electors: Vec<Elector> =
            (0..3).map(|i| Elector::new(format!("r{i}"), LEASE_MS, RENEW_MS)).collect();
        let mut pending: Vec<Option<Pending>> = vec![None; 3];
        let mut store = Store::default();
        let mut now = 0u64;
        for (who, action, dt) in steps {
            now += dt;
            match action {
                // Read and decide.
                0 | 1 => {
                    let (record, rv) = store.read();
                    if let Decision::Take { transitions, .. } = electors[who].decide(record.as_ref(), now) {
                        pending[who] = Some(Pending {
                            rv,
                            record: LeaseRecord {
                                holder: Some(format!("r{who}")),
                                lease_duration_secs: Some(15),
                                renew_time: Some(format!("{now}")),
                                transitions,
                            },
                            sent_at: now,
                        });
                    }
                }
                // The write lands (or conflicts).
                2 => {
                    if let Some(p) = pending[who].take() && store.write(&p) {
                        electors[who].written(p.sent_at);
                    }
                }
                // The write is lost.
                _ => pending[who] = None,
            }
            let leaders: Vec<usize> = (0..3).filter(|&i| electors[i].is_leader(now)).collect();
            prop_assert!(leaders.len() <= 1, "at {now} ms {leaders:?} all lead");
        }
    }

    /// Decisions never panic, whatever the Lease holds.
    #[test]
    fn any_lease_gets_a_decision(
        holder in proptest::option::of("\\PC{0,8}"),
        secs in proptest::option::of(any::<i32>()),
        transitions in any::<i32>(),
        now in any::<u64>(),
    ) {
        let mut e = Elector::new("me".into(), LEASE_MS, RENEW_MS);
        let r = LeaseRecord { holder, lease_duration_secs: secs, renew_time: None, transitions };
        let _ = e.decide(Some(&r), now);
        let _ = e.decide(Some(&r), now.saturating_add(LEASE_MS));
    }
}
