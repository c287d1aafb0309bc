//! Controller mode (`--controller`): the bootstrap file holds this gateway's own settings
//! (cluster, listeners, timeouts, limits, drain) and is read once; routes, egress listeners and
//! TLS material come from the controller. Each controller config is merged into the bootstrap
//! in the file's raw shape and checked by the same validator as a config file.

use std::path::Path;

use super::raw::{Origin, RawConfig, RawEgress, RawRoute};
use super::{Config, Error, validate};

/// The cluster name in force before the controller's first config, when the bootstrap file
/// names none: nothing is routed or dialled under it.
const UNNAMED_CLUSTER: &str = "unknown";

/// What one controller message contributes, already in the file's raw shape.
#[derive(Debug, Clone, Default)]
pub struct Dynamic {
    /// This gateway's cluster, if the controller names it.
    pub(crate) cluster: Option<String>,
    pub(crate) routes: Vec<RawRoute>,
    pub(crate) egress: Vec<RawEgress>,
    /// Whether the message carried an identity or a bundle map.
    pub(crate) tls: bool,
}

/// A validated bootstrap file.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    raw: RawConfig,
    initial: Config,
}

impl Bootstrap {
    /// Reads the bootstrap file; without one, every setting takes its default.
    pub fn load(path: Option<&Path>) -> Result<Self, Error> {
        match path {
            None => Self::parse(""),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Self::parse(&text)
            }
        }
    }

    /// Parses and validates bootstrap text.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let raw: RawConfig = if text.trim().is_empty() {
            RawConfig::default()
        } else {
            serde_yaml_ng::from_str(text)?
        };
        let sent = "the controller sends routes, egress listeners and TLS material";
        for (field, present) in [
            ("routes", !raw.routes.is_empty()),
            ("egress", !raw.egress.is_empty()),
            ("tls", raw.tls.is_some()),
        ] {
            if present {
                return Err(Error::Invalid {
                    field: field.to_owned(),
                    problem: "not allowed in the bootstrap file of a gateway run with --controller"
                        .to_owned(),
                    fix: format!("{sent}: remove `{field}`, or run with --config alone"),
                });
            }
        }
        if raw.reload.watch_interval.is_some() {
            return Err(Error::Invalid {
                field: "reload".to_owned(),
                problem: "the bootstrap file is read once, at startup".to_owned(),
                fix: "remove `reload`; restart the gateway to change bootstrap settings".to_owned(),
            });
        }
        let mut first = raw.clone();
        first
            .cluster
            .get_or_insert_with(|| UNNAMED_CLUSTER.to_owned());
        let initial = validate::validate(first)?;
        Ok(Self { raw, initial })
    }

    /// The config in force until the controller's first: listeners and limits, nothing to serve.
    pub fn initial(&self) -> &Config {
        &self.initial
    }

    /// The bootstrap with one controller config merged in, validated like a config file.
    pub fn merge(&self, dynamic: Dynamic) -> Result<Config, Error> {
        let mut raw = self.raw.clone();
        match (&raw.cluster, dynamic.cluster) {
            (Some(ours), Some(theirs)) if *ours != theirs => {
                return Err(Error::Invalid {
                    field: "cluster".to_owned(),
                    problem: format!(
                        "the controller names cluster {theirs:?} but the bootstrap file says {ours:?}"
                    ),
                    fix: "make them agree, or drop `cluster` from the bootstrap file".to_owned(),
                });
            }
            (None, Some(theirs)) => raw.cluster = Some(theirs),
            _ => {}
        }
        raw.routes = dynamic.routes;
        raw.egress = dynamic.egress;
        raw.origin = Origin::Controller { tls: dynamic.tls };
        validate::validate(raw)
    }
}

#[cfg(test)]
mod tests;
