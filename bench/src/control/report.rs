//! Control-plane results: every figure for Isthmus and for the naive full-resync
//! implementation measured in the same run, and their ratio (Isthmus ÷ naive); written into
//! the same `results.json` (under `control_plane`) and `results.md` as the data-plane rows.

use std::fmt::Write as _;

use serde::Serialize;

use super::world::{Mode, Shape};
use crate::report::Better;

/// One figure of a scenario, for both implementations.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub(crate) scenario: &'static str,
    pub(crate) metric: &'static str,
    pub(crate) unit: &'static str,
    pub(crate) better: Better,
    /// The target for the Isthmus figure, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) target: Option<&'static str>,
    pub(crate) isthmus: Option<f64>,
    pub(crate) naive: Option<f64>,
    /// Isthmus ÷ naive.
    pub(crate) ratio: Option<f64>,
}

/// Everything the control-plane scenarios measured.
#[derive(Debug, Default, Serialize)]
pub(crate) struct ControlResults {
    pub(crate) peers: usize,
    pub(crate) services_per_peer: usize,
    pub(crate) endpoints_per_peer: usize,
    pub(crate) churn_changes: usize,
    pub(crate) duration_s: f64,
    pub(crate) rows: Vec<Row>,
    /// Changes whose push did not reach the gateway in time, per implementation.
    pub(crate) missed_changes: std::collections::BTreeMap<String, usize>,
}

/// A metric's identity and how to read it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Metric {
    pub(crate) scenario: &'static str,
    pub(crate) metric: &'static str,
    pub(crate) unit: &'static str,
    pub(crate) better: Better,
    pub(crate) target: Option<&'static str>,
}

impl ControlResults {
    pub(crate) fn new(shape: Shape, churn_changes: usize) -> Self {
        Self {
            peers: shape.peers,
            services_per_peer: shape.services,
            endpoints_per_peer: shape.endpoints,
            churn_changes,
            ..Self::default()
        }
    }

    pub(crate) fn record(&mut self, m: Metric, mode: Mode, value: Option<f64>) {
        let at = match self
            .rows
            .iter()
            .position(|r| r.scenario == m.scenario && r.metric == m.metric)
        {
            Some(at) => at,
            None => {
                self.rows.push(Row {
                    scenario: m.scenario,
                    metric: m.metric,
                    unit: m.unit,
                    better: m.better,
                    target: m.target,
                    isthmus: None,
                    naive: None,
                    ratio: None,
                });
                self.rows.len() - 1
            }
        };
        let row = &mut self.rows[at];
        let value = value.filter(|v| v.is_finite());
        match mode {
            Mode::Isthmus => row.isthmus = value,
            Mode::Naive => row.naive = value,
        }
        row.ratio = match (row.isthmus, row.naive) {
            (Some(i), Some(n)) if n != 0.0 => Some(i / n),
            _ => None,
        };
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    pub(crate) fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nControl plane: {} peer clusters × {} services × {} endpoints per peer (spread over its services), all exported to cluster `a`; churn: {} changes, one per second. Isthmus against the naive full-resync implementation of the same model (`FEDERATION_SYNC=full-resync`), same run; {:.0} s.\n",
            self.peers,
            self.services_per_peer,
            self.endpoints_per_peer,
            self.churn_changes,
            self.duration_s
        );
        let _ = writeln!(
            out,
            "| scenario | metric | isthmus | naive full-resync | isthmus ÷ naive | target |\n|---|---|---|---|---|---|"
        );
        for row in &self.rows {
            let arrow = match row.better {
                Better::Higher => "↑",
                Better::Lower => "↓",
            };
            let cell = |v: Option<f64>| v.map_or("n/a".to_owned(), crate::report::figure);
            let _ = writeln!(
                out,
                "| {} | {} ({}{arrow}) | {} | {} | {} | {} |",
                row.scenario,
                row.metric,
                row.unit,
                cell(row.isthmus),
                cell(row.naive),
                row.ratio.map_or("n/a".to_owned(), |r| format!("{r:.2}×")),
                row.target.unwrap_or(""),
            );
        }
        for (mode, missed) in &self.missed_changes {
            if *missed > 0 {
                let _ = writeln!(
                    out,
                    "\n⚠ {mode}: {missed} change(s) not applied by the gateway within the wait."
                );
            }
        }
        out
    }
}
