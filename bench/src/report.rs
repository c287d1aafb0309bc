//! Results: every run's figure per (scenario, metric, contender), summarised as the median of
//! the runs and the median of the per-run ratios to the direct connection measured in the same
//! repetition; written as JSON and Markdown.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::contender::Name;

/// Which way is better for a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Better {
    Higher,
    Lower,
}

/// One row: a metric of a scenario, every contender's runs.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) scenario: &'static str,
    pub(crate) metric: &'static str,
    pub(crate) unit: &'static str,
    pub(crate) better: Better,
    /// Per contender: the figure of each repetition (`None`: that run produced none).
    pub(crate) runs: Vec<(Name, Vec<Option<f64>>)>,
    pub(crate) errors: BTreeMap<String, u64>,
}

/// Everything measured.
#[derive(Debug, Default)]
pub(crate) struct Results {
    pub(crate) rows: Vec<Row>,
}

impl Results {
    /// Records `value` for run `rep` of `contender`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record(
        &mut self,
        scenario: &'static str,
        metric: &'static str,
        unit: &'static str,
        better: Better,
        contender: Name,
        rep: usize,
        value: Option<f64>,
    ) {
        let at = match self
            .rows
            .iter()
            .position(|r| r.scenario == scenario && r.metric == metric)
        {
            Some(at) => at,
            None => {
                self.rows.push(Row {
                    scenario,
                    metric,
                    unit,
                    better,
                    runs: vec![],
                    errors: BTreeMap::new(),
                });
                self.rows.len() - 1
            }
        };
        let row = &mut self.rows[at];
        let runs = match row.runs.iter().position(|(n, _)| *n == contender) {
            Some(i) => &mut row.runs[i].1,
            None => {
                row.runs.push((contender, vec![]));
                &mut row.runs.last_mut().expect("just pushed").1
            }
        };
        if runs.len() <= rep {
            runs.resize(rep + 1, None);
        }
        runs[rep] = value.filter(|v| v.is_finite());
    }

    /// Adds failed operations of `contender` to every row of `scenario`.
    pub(crate) fn errors(&mut self, scenario: &'static str, contender: Name, errors: u64) {
        for row in self.rows.iter_mut().filter(|r| r.scenario == scenario) {
            *row.errors.entry(contender.to_string()).or_default() += errors;
        }
    }
}

/// A contender's summary in one row.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Cell {
    /// Median of the runs.
    pub(crate) value: Option<f64>,
    /// Median of the per-run ratios to direct (`None` when direct has no such figure).
    pub(crate) ratio: Option<f64>,
    /// Median of the per-run differences to direct (latency rows: the added latency).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) delta: Option<f64>,
    pub(crate) runs: Vec<Option<f64>>,
    pub(crate) errors: u64,
}

fn median(mut xs: Vec<f64>) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let mid = xs.len() / 2;
    Some(if xs.len() % 2 == 1 {
        xs[mid]
    } else {
        (xs[mid - 1] + xs[mid]) / 2.0
    })
}

impl Row {
    pub(crate) fn cells(&self) -> Vec<(Name, Cell)> {
        let direct = self
            .runs
            .iter()
            .find(|(n, _)| *n == Name::Direct)
            .map(|(_, r)| r.clone());
        let latency = self.unit == "µs";
        self.runs
            .iter()
            .map(|(name, runs)| {
                let paired = |f: fn(f64, f64) -> f64| {
                    let direct = direct.as_ref()?;
                    median(
                        runs.iter()
                            .zip(direct)
                            .filter_map(|(v, d)| Some(f((*v)?, (*d)?)))
                            .filter(|x| x.is_finite())
                            .collect(),
                    )
                };
                let cell = Cell {
                    value: median(runs.iter().flatten().copied().collect()),
                    ratio: paired(|v, d| v / d),
                    delta: if latency { paired(|v, d| v - d) } else { None },
                    runs: runs.clone(),
                    errors: self.errors.get(&name.to_string()).copied().unwrap_or(0),
                };
                (*name, cell)
            })
            .collect()
    }
}

/// Machine facts recorded with the results.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Meta {
    pub(crate) date: String,
    pub(crate) quick: bool,
    pub(crate) cpus: usize,
    pub(crate) loadavg_start: String,
    pub(crate) loadavg_end: String,
    pub(crate) kernel: String,
    pub(crate) repetitions: usize,
    pub(crate) warmup_s: f64,
    pub(crate) measure_s: f64,
    pub(crate) idle_connections: usize,
    pub(crate) versions: BTreeMap<String, String>,
    pub(crate) duration_s: f64,
    /// Scenario filters given (`--only`); empty for a complete run.
    pub(crate) only: Vec<String>,
    /// The variant tried (`--isthmus-upstream`), if any.
    pub(crate) isthmus_upstream: Option<String>,
}

#[derive(Serialize)]
struct JsonRow<'a> {
    scenario: &'a str,
    metric: &'a str,
    unit: &'a str,
    better: Better,
    contenders: BTreeMap<String, Cell>,
}

pub(crate) fn json(meta: &Meta, results: &Results) -> anyhow::Result<String> {
    let rows: Vec<JsonRow<'_>> = results
        .rows
        .iter()
        .map(|row| JsonRow {
            scenario: row.scenario,
            metric: row.metric,
            unit: row.unit,
            better: row.better,
            contenders: row
                .cells()
                .into_iter()
                .map(|(n, c)| (n.to_string(), c))
                .collect(),
        })
        .collect();
    Ok(serde_json::to_string_pretty(
        &serde_json::json!({ "meta": meta, "results": rows }),
    )?)
}

pub(crate) fn figure(v: f64) -> String {
    let a = v.abs();
    if a >= 100_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if a >= 10_000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

pub(crate) fn markdown(meta: &Meta, results: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Run {} ({}), {} CPUs, load average {} at the start and {} at the end; {} run(s) of {:.1} s after {:.1} s of warm-up per figure, median shown; (×) is the median of the per-run ratios to direct in the same repetition.\n",
        meta.date,
        if meta.quick { "quick" } else { "full" },
        meta.cpus,
        meta.loadavg_start,
        meta.loadavg_end,
        meta.repetitions,
        meta.measure_s,
        meta.warmup_s,
    );
    if let Some(upstream) = &meta.isthmus_upstream {
        let _ = writeln!(out, "Isthmus variant: `upstream: {upstream}`.\n");
    }
    let names: Vec<Name> = Name::ALL
        .into_iter()
        .filter(|n| {
            results
                .rows
                .iter()
                .any(|r| r.runs.iter().any(|(m, _)| m == n))
        })
        .collect();
    let _ = write!(out, "| scenario | metric |");
    for n in &names {
        let _ = write!(out, " {n} |");
    }
    let _ = write!(out, "\n|---|---|");
    for _ in &names {
        let _ = write!(out, "---|");
    }
    out.push('\n');
    for row in &results.rows {
        let cells = row.cells();
        let arrow = match row.better {
            Better::Higher => "↑",
            Better::Lower => "↓",
        };
        let _ = write!(
            out,
            "| {} | {} ({}{arrow}) |",
            row.scenario, row.metric, row.unit
        );
        for n in &names {
            let text = match cells.iter().find(|(m, _)| m == n) {
                None => "".to_owned(),
                Some((_, cell)) => {
                    let mut t = cell.value.map_or("n/a".to_owned(), figure);
                    match (cell.ratio, cell.delta, *n) {
                        (_, _, Name::Direct) => {}
                        (Some(r), Some(d), _) => t += &format!(" ({r:.2}×, {d:+.0})"),
                        (Some(r), None, _) => t += &format!(" ({r:.2}×)"),
                        _ => {}
                    }
                    if cell.errors > 0 {
                        t += &format!(" ⚠{} errors", cell.errors);
                    }
                    t
                }
            };
            let _ = write!(out, " {text} |");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
