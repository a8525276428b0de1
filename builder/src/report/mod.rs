//! `imgbuild report`: several runs side by side.
//!
//! [`load`] reads run records (`OUT/results/<engine>-<n>.json`, or directories of them);
//! [`Comparison::new`] groups them by engine and every workload metric by (workload instance,
//! metric name): the median over all repetitions of all runs of an engine, the smallest and
//! largest repetition (the error bars), and the performance relative to the host run. It is
//! generic over metrics: whatever the workloads recorded is compared; [`panels`] picks out the
//! paper's figures (UnixBench index, Bonnie++, ab at 1/2/4/8) when those metrics exist.
//! [`text`] renders the table for the terminal, [`html`] the page with inline SVG charts.

pub mod html;
pub mod panels;
pub mod svg;
pub mod text;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use imgbuild_init::results::schema::{Record, Status};

use crate::run::{EngineKind, RunRecord};

/// A report that cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// An input is not a run record.
    #[error("{0}")]
    Input(String),
    /// Nothing to compare.
    #[error("no run records in {0}")]
    Empty(String),
    /// The HTML cannot be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A run record and where it was read.
#[derive(Debug, Clone)]
pub struct LoadedRun {
    /// The JSON file.
    pub path: PathBuf,
    /// Its content.
    pub record: RunRecord,
}

/// Reads run records: files, and every `*.json` run record in directories (other JSON files
/// there, such as extracted profiles, are skipped).
pub fn load(inputs: &[PathBuf]) -> Result<Vec<LoadedRun>, ReportError> {
    let mut runs = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(input)
                .map_err(|e| ReportError::Input(format!("cannot list {}: {e}", input.display())))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .filter(|p| {
                    !p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("profile-"))
                })
                .collect();
            files.sort();
            for path in files {
                match RunRecord::read(&path) {
                    Ok(record) => runs.push(LoadedRun { path, record }),
                    // A reserved number whose run is still going holds an empty file.
                    Err(_) if std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) => {}
                    Err(e) => return Err(ReportError::Input(e)),
                }
            }
        } else {
            let record = RunRecord::read(input).map_err(ReportError::Input)?;
            runs.push(LoadedRun {
                path: input.clone(),
                record,
            });
        }
    }
    if runs.is_empty() {
        let shown: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
        return Err(ReportError::Empty(shown.join(", ")));
    }
    Ok(runs)
}

/// One engine's value of one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// Every repetition of every run, in run order.
    pub values: Vec<f64>,
    /// Runs contributing.
    pub runs: usize,
    /// Median of `values`.
    pub median: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl Cell {
    fn new(values: Vec<f64>, runs: usize) -> Option<Cell> {
        let median = median(&values)?;
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(Cell {
            values,
            runs,
            median,
            min,
            max,
        })
    }
}

/// Median of finite values; None when there are none.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// One metric across engines.
#[derive(Debug, Clone)]
pub struct MetricRow {
    /// Workload instance name (`crypto`).
    pub workload: String,
    /// Registry name of the workload.
    pub kind: String,
    /// Metric name.
    pub metric: String,
    /// Unit.
    pub unit: String,
    /// Larger is better.
    pub higher_is_better: bool,
    /// The metric's parameters (from the first record that has it).
    pub parameters: BTreeMap<String, serde_json::Value>,
    /// Per engine (index into [`Comparison::engines`]).
    pub cells: Vec<Option<Cell>>,
}

impl MetricRow {
    /// Performance relative to the host, as a fraction: +0.25 is 25 % better, -0.57 is 57 %
    /// worse (for lower-is-better metrics the ratio is inverted, so the sign always says
    /// better or worse).
    pub fn relative(&self, engine: usize, host: usize) -> Option<f64> {
        let v = self.cells.get(engine)?.as_ref()?.median;
        let h = self.cells.get(host)?.as_ref()?.median;
        if !(v.is_finite() && h.is_finite()) || v <= 0.0 || h <= 0.0 {
            return None;
        }
        Some(if self.higher_is_better {
            v / h - 1.0
        } else {
            h / v - 1.0
        })
    }
}

/// "+25%", "-57%", as the paper states them.
pub fn percent(fraction: f64) -> String {
    let p = (fraction * 100.0).round();
    if p == 0.0 {
        "±0%".into()
    } else {
        format!("{p:+.0}%")
    }
}

/// Values of one engine for one metric, pooled over runs, and how many runs gave some.
type Pooled = (Vec<f64>, usize);

/// The runs of one engine.
#[derive(Debug, Clone)]
pub struct EngineRuns {
    /// Engine name.
    pub name: String,
    /// Indexes into [`Comparison::runs`].
    pub runs: Vec<usize>,
}

/// Runs grouped by engine, metrics side by side.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// Every run read.
    pub runs: Vec<LoadedRun>,
    /// Engines, the host first, then in `scripts/compare`'s order, then others by name.
    pub engines: Vec<EngineRuns>,
    /// Index of the host engine, the baseline.
    pub host: Option<usize>,
    /// Every metric, grouped by workload in run order.
    pub rows: Vec<MetricRow>,
}

fn engine_rank(name: &str) -> (usize, String) {
    let order = [
        EngineKind::Host,
        EngineKind::Qemu,
        EngineKind::Vmware,
        EngineKind::XenImage,
        EngineKind::Openvz,
    ];
    let rank = order
        .iter()
        .position(|e| e.name() == name)
        .unwrap_or(order.len());
    (rank, name.to_string())
}

impl Comparison {
    /// Groups `runs`.
    pub fn new(runs: Vec<LoadedRun>) -> Comparison {
        let mut names: Vec<String> = runs.iter().map(|r| r.record.engine.clone()).collect();
        names.sort_by_key(|n| engine_rank(n));
        names.dedup();
        let engines: Vec<EngineRuns> = names
            .iter()
            .map(|name| EngineRuns {
                name: name.clone(),
                runs: runs
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| &r.record.engine == name)
                    .map(|(i, _)| i)
                    .collect(),
            })
            .collect();
        let host = engines.iter().position(|e| e.name == "host");
        // (workload, metric) in first-seen order, with every engine's values.
        let mut order: Vec<(String, String)> = Vec::new();
        let mut rows: BTreeMap<(String, String), (MetricRow, Vec<Pooled>)> = BTreeMap::new();
        for (e, engine) in engines.iter().enumerate() {
            for &i in &engine.runs {
                let Some(c) = &runs[i].record.collected else {
                    continue;
                };
                for record in &c.records {
                    let Record::Workload(w) = record else {
                        continue;
                    };
                    if w.status != Status::Ok {
                        continue;
                    }
                    for m in &w.metrics {
                        let key = (w.name.clone(), m.name.clone());
                        let entry = rows.entry(key.clone()).or_insert_with(|| {
                            order.push(key.clone());
                            (
                                MetricRow {
                                    workload: w.name.clone(),
                                    kind: w.workload.clone(),
                                    metric: m.name.clone(),
                                    unit: m.unit.clone(),
                                    higher_is_better: m.higher_is_better,
                                    parameters: m.parameters.clone(),
                                    cells: Vec::new(),
                                },
                                vec![(Vec::new(), 0); engines.len()],
                            )
                        });
                        let slot = &mut entry.1[e];
                        slot.0
                            .extend(m.values.iter().copied().filter(|v| v.is_finite()));
                        slot.1 += 1;
                    }
                }
            }
        }
        // Keep workloads together, in the order they first ran.
        let mut workload_order: Vec<String> = Vec::new();
        for (w, _) in &order {
            if !workload_order.contains(w) {
                workload_order.push(w.clone());
            }
        }
        let mut out = Vec::new();
        for w in &workload_order {
            for key in order.iter().filter(|(kw, _)| kw == w) {
                if let Some((mut row, values)) = rows.remove(key) {
                    row.cells = values.into_iter().map(|(v, n)| Cell::new(v, n)).collect();
                    out.push(row);
                }
            }
        }
        Comparison {
            runs,
            engines,
            host,
            rows: out,
        }
    }

    /// Workload instance names in run order.
    pub fn workloads(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for r in &self.rows {
            if !out.contains(&r.workload.as_str()) {
                out.push(&r.workload);
            }
        }
        out
    }
}

/// Where the HTML goes by default: `report.html` in the first input's directory.
pub fn default_output(inputs: &[PathBuf]) -> PathBuf {
    let dir = match inputs.first() {
        Some(p) if p.is_dir() => p.clone(),
        Some(p) => p.parent().map(Path::to_path_buf).unwrap_or_default(),
        None => PathBuf::new(),
    };
    dir.join("report.html")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn medians_and_percent() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN]), None);
        assert_eq!(percent(0.25), "+25%");
        assert_eq!(percent(-0.566), "-57%");
        assert_eq!(percent(0.001), "±0%");
    }

    #[test]
    fn relative_performance_sign_means_better_or_worse() {
        let cell = |v: f64| Cell::new(vec![v], 1);
        let mut row = MetricRow {
            workload: "w".into(),
            kind: "w".into(),
            metric: "m".into(),
            unit: "s".into(),
            higher_is_better: true,
            parameters: BTreeMap::new(),
            cells: vec![cell(100.0), cell(125.0), cell(43.0), None],
        };
        assert_eq!(percent(row.relative(1, 0).unwrap()), "+25%");
        assert_eq!(percent(row.relative(2, 0).unwrap()), "-57%");
        assert!(row.relative(3, 0).is_none());
        row.higher_is_better = false;
        // Twice the latency of the host is 50 % worse.
        row.cells[1] = cell(200.0);
        assert_eq!(percent(row.relative(1, 0).unwrap()), "-50%");
    }
}
