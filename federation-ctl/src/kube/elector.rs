//! Leader election, the IO shell: reads the `coordination.k8s.io/v1` Lease, lets
//! [`lease::Elector`](super::lease::Elector) decide, and writes with the `resourceVersion` read
//! (create or replace), so of two replicas racing on one version the API server lets exactly one
//! through; the other gets `409 Conflict` and reads again.
//!
//! A standby runs nothing but this loop. A leader that cannot renew before its renew deadline
//! stops leading ([`LeaseElector::keep`] returns) and the process exits, rather than risk two
//! writers.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};

use super::lease::{Decision, Elector, LeaseRecord};
use crate::config::LeaderElection;

/// Why leadership ended.
#[derive(Debug, thiserror::Error)]
#[error("lost the Lease {namespace}/{name}: {reason}")]
pub struct LeadershipLost {
    pub namespace: String,
    pub name: String,
    pub reason: String,
}

/// The outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// We hold the Lease (created, acquired or renewed it).
    Leading,
    /// Another replica holds it.
    Standby { holder: String },
    /// Another replica wrote first (`409 Conflict`); read again.
    Conflict,
}

/// One replica's elector on one Lease.
pub struct LeaseElector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    core: Elector,
    retry_period: Duration,
    epoch: Instant,
}

impl LeaseElector {
    pub fn new(client: kube::Client, cfg: &LeaderElection) -> Self {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            api: Api::namespaced(client, &cfg.namespace),
            namespace: cfg.namespace.clone(),
            name: cfg.lease_name.clone(),
            core: Elector::new(
                cfg.identity.clone(),
                ms(cfg.lease_duration),
                ms(cfg.renew_deadline),
            ),
            retry_period: cfg.retry_period,
            epoch: Instant::now(),
        }
    }

    pub fn identity(&self) -> &str {
        self.core.identity()
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        self.core.is_leader(self.now_ms())
    }

    /// Reads the Lease and creates, acquires or renews it when the rules allow.
    pub async fn try_once(&mut self) -> Result<Attempt, kube::Error> {
        // Leadership is timed from before the read: earlier than the write lands, never later.
        let sent_at = self.now_ms();
        let current = self.api.get_opt(&self.name).await?;
        let record = current.as_ref().map(record_of);
        let (create, acquire, transitions) = match self.core.decide(record.as_ref(), sent_at) {
            Decision::Wait { holder, .. } => return Ok(Attempt::Standby { holder }),
            Decision::Take {
                create,
                acquire,
                transitions,
            } => (create, acquire, transitions),
        };
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let mut lease = current.unwrap_or_else(|| Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: None,
        });
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = Some(self.core.identity().to_owned());
        spec.lease_duration_seconds = Some(self.core.lease_duration_secs());
        spec.lease_transitions = Some(transitions);
        spec.renew_time = Some(now.clone());
        if acquire {
            spec.acquire_time = Some(now);
        }
        let params = PostParams::default();
        let written = if create {
            self.api.create(&params, &lease).await
        } else {
            self.api.replace(&self.name, &params, &lease).await
        };
        match written {
            Ok(_) => {
                self.core.written(sent_at);
                Ok(Attempt::Leading)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::Conflict),
            Err(e) => Err(e),
        }
    }

    /// Tries every `retry_period` until this replica leads; `on_standby` hears of each new
    /// holder seen while waiting.
    pub async fn acquire(&mut self, mut on_standby: impl FnMut(&str)) {
        let mut last_holder = String::new();
        loop {
            match self.try_once().await {
                Ok(Attempt::Leading) => return,
                Ok(Attempt::Standby { holder }) => {
                    if holder != last_holder {
                        on_standby(&holder);
                        last_holder = holder;
                    }
                }
                // Someone else just wrote: read again at once.
                Ok(Attempt::Conflict) => continue,
                Err(error) => tracing::warn!(
                    lease = %self.name,
                    namespace = %self.namespace,
                    %error,
                    "cannot read or write the leader-election Lease; retrying"
                ),
            }
            tokio::time::sleep(self.retry_period).await;
        }
    }

    /// Renews every `retry_period` while leading; returns once leadership is lost: another
    /// replica holds the Lease, or no renewal succeeded within the renew deadline.
    pub async fn keep(mut self) -> LeadershipLost {
        loop {
            tokio::time::sleep(self.retry_period).await;
            let Some(until) = self.core.leads_until().filter(|_| self.is_leader()) else {
                return self.lost("not renewed within the renew deadline".into());
            };
            // An attempt that hangs past the deadline is as good as a failed one.
            let left = Duration::from_millis(until.saturating_sub(self.now_ms()));
            let reason = match tokio::time::timeout(left, self.try_once()).await {
                Ok(Ok(Attempt::Leading)) => continue,
                Ok(Ok(Attempt::Standby { holder })) => {
                    return self.lost(format!("{holder} holds it"));
                }
                Ok(Ok(Attempt::Conflict)) => "another replica wrote it".to_owned(),
                Ok(Err(error)) => error.to_string(),
                Err(_) => "the API server did not answer in time".to_owned(),
            };
            tracing::warn!(lease = %self.name, %reason, "could not renew the leader-election Lease");
            if !self.is_leader() {
                return self.lost(format!("not renewed within the renew deadline ({reason})"));
            }
        }
    }

    fn lost(&self, reason: String) -> LeadershipLost {
        LeadershipLost {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            reason,
        }
    }
}

/// The fields election reads.
pub fn record_of(lease: &Lease) -> LeaseRecord {
    let spec = lease.spec.clone().unwrap_or_default();
    LeaseRecord {
        holder: spec.holder_identity,
        lease_duration_secs: spec.lease_duration_seconds,
        renew_time: spec.renew_time.map(|t| t.0.to_string()),
        transitions: spec.lease_transitions.unwrap_or(0),
    }
}
