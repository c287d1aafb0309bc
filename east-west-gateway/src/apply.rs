//! The one way a validated config takes effect, at startup and on every reload: first stage
//! everything that can fail (TLS material, the route snapshot, egress pools), then commit (TLS
//! into the live handles, snapshot swap, egress reconcile). A config that fails staging changes
//! nothing; once committing starts, only an egress listener that cannot bind is left out, and it
//! is reported.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::config::{self, Config};
use crate::drain;
use crate::egress;
use crate::metrics::ResultLabel;
use crate::proxy::{self, Shared, Snapshot};
use crate::tls;

/// Why a config could not be applied (it was valid, but its material or runtime state is not).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The routing state could not be built.
    #[error(transparent)]
    Routes(#[from] proxy::Error),
    /// A certificate, key or bundle is unusable.
    #[error(transparent)]
    Tls(#[from] tls::Error),
    /// An egress pool could not be built.
    #[error(transparent)]
    Egress(#[from] egress::Error),
}

/// What an applied config put in force.
#[derive(Debug)]
pub(crate) struct Applied {
    /// The new snapshot generation.
    pub(crate) generation: u64,
    /// The egress listeners bound and those that could not be.
    pub(crate) egress: egress::Report,
}

impl Applied {
    /// The fields every "applied" stdout event carries: `generation`, `egress` (name → bound
    /// address, like the `ready` event) and `egress_errors` (name → why it is not listening).
    pub(crate) fn event_fields(&self) -> Map<String, Value> {
        let mut fields = Map::new();
        fields.insert("generation".into(), json!(self.generation));
        fields.insert("egress".into(), egress_map(&self.egress.bound));
        fields.insert(
            "egress_errors".into(),
            self.egress
                .failed
                .iter()
                .map(|f| (f.name.clone(), json!(f.to_string())))
                .collect::<Map<_, _>>()
                .into(),
        );
        fields
    }
}

/// `{name: "ip:port"}` for the stdout events.
pub(crate) fn egress_map(bound: &[(String, SocketAddr)]) -> Value {
    bound
        .iter()
        .map(|(name, address)| (name.clone(), json!(address.to_string())))
        .collect::<Map<_, _>>()
        .into()
}

/// Applies configs to the running gateway; owned by the one task that applies them.
#[derive(Debug)]
pub(crate) struct Applier {
    shared: Arc<Shared>,
    egress: egress::Listeners,
}

impl Applier {
    pub(crate) fn new(shared: Arc<Shared>, spawner: drain::Spawner) -> Self {
        let egress = egress::Listeners::new(spawner, shared.metrics.clone());
        Self { shared, egress }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stages and commits `config`; `inline` is the controller's TLS material, for a config
    /// whose `tls` says it comes from the controller. Connections already open keep what they
    /// started with (terminated peers are re-verified against a new bundle map).
    pub(crate) async fn apply(
        &mut self,
        config: Config,
        inline: Option<&tls::Inline>,
    ) -> Result<Applied, Error> {
        let source = match &config.tls {
            Some(config::Tls::Files(files)) => Some(tls::Source::Files(files)),
            // Validation marks TLS as the controller's only when its message carried some.
            Some(config::Tls::Controller) => inline.map(tls::Source::Memory),
            None => None,
        };
        let staged = match source {
            Some(source) => Some(self.counted(tls::Material::stage(source))?),
            None => None,
        };
        // Routes and pools are built on the live handles; staged content reaches the handles
        // only at commit. A gateway's first TLS material gets fresh handles.
        let existing = self.shared.tls();
        let (material, install) = match (existing, staged) {
            (Some(live), staged) => (Some(live), staged),
            (None, Some(staged)) => (Some(self.counted(tls::Material::new(staged))?), None),
            (None, None) => (None, None),
        };
        let generation = self.shared.load().generation + 1;
        let drain_timeout = config.drain_timeout;
        let snapshot = Snapshot::new(config, generation, material.as_ref())?;
        let plan = self
            .egress
            .prepare(&snapshot.config, material.as_ref())
            .await?;

        if let (Some(live), Some(staged)) = (&material, install) {
            self.counted(live.install(staged))?;
        }
        if let Some(material) = &material {
            self.shared
                .metrics
                .certificate_expiry
                .set(material.own().not_after);
        }
        if let Some(material) = material.filter(|_| self.shared.tls().is_none()) {
            self.shared.set_tls(material);
        }
        if snapshot.config.tls.is_some() {
            self.count_tls("applied");
        }
        self.shared.store(snapshot);
        // After the routes: a woken connection checks its peer against this config, not the last.
        if let Some(material) = self.shared.tls() {
            material.announce();
        }
        let egress = self.egress.commit(plan, &self.shared, drain_timeout).await;
        Ok(Applied { generation, egress })
    }

    /// Counts a rejected TLS load in `tls_reloads_total`.
    fn counted<T>(&self, result: Result<T, tls::Error>) -> Result<T, tls::Error> {
        if result.is_err() {
            self.count_tls("rejected");
        }
        result
    }

    fn count_tls(&self, result: &'static str) {
        self.shared
            .metrics
            .tls_reloads
            .get_or_create(&ResultLabel { result })
            .inc();
    }
}
