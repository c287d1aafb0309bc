//! Leader election, sans IO: from the Lease as last read and a local monotonic clock, decide
//! whether to take the Lease (create, acquire or renew it) or to wait.
//!
//! The rules are client-go's: a Lease held by another replica is free once it has not changed
//! for its `leaseDurationSeconds` *as timed by our own clock* (never by comparing `renewTime`
//! with our wall clock, so skew between nodes cannot shorten a lease). A replica leads from the
//! moment it *sent* a write that succeeded until `renew_deadline` later; since
//! `renew_deadline < lease_duration` and a standby's timer starts only once it has seen that
//! write, the two intervals never overlap. Writes carry the `resourceVersion` read, so of two
//! replicas racing on one version exactly one wins (`409 Conflict` for the other).
//!
//! [`elector`](super::elector) is the IO shell.

/// The fields of a `coordination.k8s.io/v1` Lease that election reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// `spec.holderIdentity`; `None` or empty: released.
    pub holder: Option<String>,
    /// `spec.leaseDurationSeconds`.
    pub lease_duration_secs: Option<i32>,
    /// `spec.renewTime` as written, compared only for change.
    pub renew_time: Option<String>,
    /// `spec.leaseTransitions`.
    pub transitions: i32,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Write the Lease with us as holder and `transitions`; `create`: it does not exist yet;
    /// `acquire`: we are not the current holder (set `acquireTime`).
    Take {
        create: bool,
        acquire: bool,
        transitions: i32,
    },
    /// Someone else holds it; ask again after at most `retry_period`.
    Wait {
        holder: String,
        /// Time left before the Lease is free, if it is not renewed meanwhile.
        free_in_ms: u64,
    },
}

/// One replica's view of the election. Times are milliseconds of a monotonic local clock.
#[derive(Debug, Clone)]
pub struct Elector {
    identity: String,
    lease_duration_ms: u64,
    renew_deadline_ms: u64,
    /// The record last read, and when (our clock) it was first seen in that form.
    observed: Option<(LeaseRecord, u64)>,
    /// When the last write that made or kept us holder was sent.
    renewed_at: Option<u64>,
}

impl Elector {
    /// `renew_deadline_ms < lease_duration_ms` (the config validates it).
    pub fn new(identity: String, lease_duration_ms: u64, renew_deadline_ms: u64) -> Self {
        Self {
            identity,
            lease_duration_ms,
            renew_deadline_ms: renew_deadline_ms.min(lease_duration_ms.saturating_sub(1)),
            observed: None,
            renewed_at: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The lease duration written into the Lease, in whole seconds (at least 1).
    pub fn lease_duration_secs(&self) -> i32 {
        i32::try_from(self.lease_duration_ms.div_ceil(1000))
            .unwrap_or(i32::MAX)
            .max(1)
    }

    /// Decides from the Lease read at `now` (`None`: it does not exist).
    pub fn decide(&mut self, current: Option<&LeaseRecord>, now: u64) -> Decision {
        let Some(record) = current else {
            self.observed = None;
            return Decision::Take {
                create: true,
                acquire: true,
                transitions: 0,
            };
        };
        let seen_at = match &self.observed {
            Some((prev, at)) if prev == record => *at,
            _ => now,
        };
        self.observed = Some((record.clone(), seen_at));
        let holder = record.holder.as_deref().filter(|h| !h.is_empty());
        match holder {
            Some(h) if h == self.identity => Decision::Take {
                create: false,
                acquire: false,
                transitions: record.transitions,
            },
            None => Decision::Take {
                create: false,
                acquire: true,
                transitions: record.transitions.saturating_add(1),
            },
            Some(h) => {
                let duration_ms = record
                    .lease_duration_secs
                    .and_then(|s| u64::try_from(s).ok())
                    .filter(|&s| s > 0)
                    .map_or(self.lease_duration_ms, |s| s.saturating_mul(1000));
                let free_at = seen_at.saturating_add(duration_ms);
                if now >= free_at {
                    Decision::Take {
                        create: false,
                        acquire: true,
                        transitions: record.transitions.saturating_add(1),
                    }
                } else {
                    Decision::Wait {
                        holder: h.to_owned(),
                        free_in_ms: free_at - now,
                    }
                }
            }
        }
    }

    /// A write decided at `sent_at` succeeded: we lead until `sent_at + renew_deadline`.
    pub fn written(&mut self, sent_at: u64) {
        if self.renewed_at.is_none_or(|t| sent_at > t) {
            self.renewed_at = Some(sent_at);
        }
    }

    /// Whether we lead at `now`: our last successful write is younger than the renew deadline.
    pub fn is_leader(&self, now: u64) -> bool {
        self.renewed_at
            .is_some_and(|t| now < t.saturating_add(self.renew_deadline_ms))
    }

    /// When leadership ends unless renewed (`None`: never held).
    pub fn leads_until(&self) -> Option<u64> {
        self.renewed_at
            .map(|t| t.saturating_add(self.renew_deadline_ms))
    }
}

#[cfg(test)]
mod tests;
