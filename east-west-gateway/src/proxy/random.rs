//! The random source load balancing draws from, and weighted choice over it. Shared by the
//! route balancer and the egress gateway picker.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

/// splitmix64 over an atomic counter: lock-free, seeded per process, good enough for load
/// balancing (not for anything secret).
#[derive(Debug)]
pub(crate) struct Rng(AtomicU64);

impl Rng {
    pub(crate) fn new() -> Self {
        Self(AtomicU64::new(RandomState::new().hash_one(0u8)))
    }

    pub(crate) fn next_u64(&self) -> u64 {
        let mut z = self
            .0
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Draws one `(index, weight)` item with probability proportional to its weight; the first
    /// item when every weight is zero, `None` when there are no items.
    pub(crate) fn weighted(
        &self,
        items: impl Iterator<Item = (usize, u64)> + Clone,
    ) -> Option<usize> {
        let total: u64 = items.clone().map(|(_, w)| w).sum();
        let mut ticket = self.next_u64() % total.max(1);
        let mut first = None;
        for (i, w) in items {
            first.get_or_insert(i);
            if ticket < w {
                return Some(i);
            }
            ticket -= w;
        }
        first
    }
}
