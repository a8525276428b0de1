//! The report as one self-contained HTML page: the paper's panels when their metrics exist,
//! every workload's metrics relative to the host (or to the best engine when there is no host
//! run), the absolute medians, and the environment of every run — what the guest detected,
//! its kernel, CPUs and memory, the cache mode and accelerator, and whether the root
//! filesystem it digested is the build's.
//!
//! The markup is also well-formed XML (XHTML polyglot), so that a test can have a browser's
//! XML parser check every tag and every inline SVG.

use std::fmt::Write as _;

use imgbuild_init::results::schema::{Record, RunStart};

use super::panels::panels;
use super::svg::{esc, render, Bar, Chart};
use super::text::short;
use super::{percent, Comparison, MetricRow};
use crate::run::RunRecord;

/// Metrics per relative chart (more would make it unreadably wide).
const PER_CHART: usize = 12;

const STYLE: &str = "body{font-family:sans-serif;margin:24px;color:#222;max-width:1400px}\
table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ccc;padding:3px 7px;\
font-size:12px;text-align:left;vertical-align:top}th{background:#f3f3f3}td.n{text-align:right;\
font-variant-numeric:tabular-nums}.bad{color:#b00;font-weight:bold}.ok{color:#070}\
svg{display:block;margin:6px 0 18px}code{font-size:11px;word-break:break-all}\
h2{margin-top:32px;border-bottom:1px solid #ddd}";

fn run_start(r: &RunRecord) -> Option<&RunStart> {
    r.collected.as_ref()?.records.iter().find_map(|x| match x {
        Record::RunStart(s) => Some(&**s),
        _ => None,
    })
}

fn bar_abs(row: &MetricRow, engine: usize) -> Option<Bar> {
    row.cells.get(engine)?.as_ref().map(|c| Bar {
        value: c.median,
        low: c.min,
        high: c.max,
    })
}

/// A bar relative to `base` (100 = as good as the base), inverted for lower-is-better metrics.
fn bar_rel(row: &MetricRow, engine: usize, base: f64) -> Option<Bar> {
    let c = row.cells.get(engine)?.as_ref()?;
    if !(base.is_finite() && base > 0.0 && c.median > 0.0) {
        return None;
    }
    Some(if row.higher_is_better {
        Bar {
            value: c.median / base * 100.0,
            low: c.min / base * 100.0,
            high: c.max / base * 100.0,
        }
    } else {
        Bar {
            value: base / c.median * 100.0,
            low: if c.max > 0.0 {
                base / c.max * 100.0
            } else {
                f64::NAN
            },
            high: if c.min > 0.0 {
                base / c.min * 100.0
            } else {
                f64::NAN
            },
        }
    })
}

/// The base a row is normalised to: the host's median, else the best engine's.
fn base_of(c: &Comparison, row: &MetricRow) -> Option<f64> {
    if let Some(h) = c.host {
        return row.cells.get(h)?.as_ref().map(|x| x.median);
    }
    let medians = row.cells.iter().flatten().map(|x| x.median);
    if row.higher_is_better {
        medians.fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))))
    } else {
        medians.fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.min(v))))
    }
}

/// Renders the page; `sources` are the input paths as given.
pub fn render_page(c: &Comparison, sources: &[String]) -> String {
    let series: Vec<String> = c.engines.iter().map(|e| e.name.clone()).collect();
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\"><head><meta charset=\"utf-8\"/><title>imgbuild report\
         </title><style>{STYLE}</style></head><body><h1>imgbuild: platforms compared</h1>"
    );
    let images: Vec<String> = {
        let mut v: Vec<String> = c
            .runs
            .iter()
            .map(|r| format!("{} ({})", r.record.image, r.record.build_digest))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let _ = write!(
        h,
        "<p>Image {}. {} runs from {}. Bars are medians over every repetition of every run of an \
         engine; whiskers span the smallest and the largest repetition.</p>",
        esc(&images.join(", ")),
        c.runs.len(),
        esc(&sources.join(", "))
    );
    let incomplete: Vec<&RunRecord> = c
        .runs
        .iter()
        .map(|r| &r.record)
        .filter(|r| !r.complete)
        .collect();
    for r in incomplete {
        let _ = write!(
            h,
            "<p class=\"bad\">{}-{} is incomplete: {}</p>",
            esc(&r.engine),
            r.run,
            esc(r.incomplete_reason.as_deref().unwrap_or(""))
        );
    }

    let found = panels(c);
    if !found.is_empty() {
        h.push_str("<h2>The paper's figures</h2>");
    }
    for panel in &found {
        let categories: Vec<String> = panel.bars.iter().map(|(l, _)| l.clone()).collect();
        let bars: Vec<Vec<Option<Bar>>> = panel
            .bars
            .iter()
            .map(|(_, i)| {
                (0..c.engines.len())
                    .map(|e| bar_abs(&c.rows[*i], e))
                    .collect()
            })
            .collect();
        // Bonnie's figures mix units; they are drawn one chart per unit.
        let mut units: Vec<&str> = panel
            .bars
            .iter()
            .map(|(_, i)| c.rows[*i].unit.as_str())
            .collect();
        units.dedup();
        if units.len() <= 1 {
            h.push_str(&render(&Chart {
                title: &panel.title,
                y_label: &panel.y_label,
                series: &series,
                categories: &categories,
                bars: &bars,
                reference: None,
            }));
        } else {
            for unit in units {
                let pick: Vec<usize> = panel
                    .bars
                    .iter()
                    .enumerate()
                    .filter(|(_, (_, i))| c.rows[*i].unit == unit)
                    .map(|(k, _)| k)
                    .collect();
                let cats: Vec<String> = pick.iter().map(|&k| categories[k].clone()).collect();
                let sub: Vec<Vec<Option<Bar>>> = pick.iter().map(|&k| bars[k].clone()).collect();
                h.push_str(&render(&Chart {
                    title: &format!("{} ({unit})", panel.title),
                    y_label: unit,
                    series: &series,
                    categories: &cats,
                    bars: &sub,
                    reference: None,
                }));
            }
        }
    }

    h.push_str("<h2>Environment of every run</h2>");
    environment(&mut h, c);

    h.push_str("<h2>Every workload</h2>");
    let reference = if c.host.is_some() {
        "relative to the host (100 = the host's performance; higher is better)"
    } else {
        "relative to the best engine (100; higher is better); no host run"
    };
    for workload in c.workloads() {
        let rows: Vec<&MetricRow> = c.rows.iter().filter(|r| r.workload == workload).collect();
        let _ = write!(h, "<h3>{}</h3>", esc(workload));
        for (k, chunk) in rows.chunks(PER_CHART).enumerate() {
            let categories: Vec<String> = chunk.iter().map(|r| r.metric.clone()).collect();
            let bars: Vec<Vec<Option<Bar>>> = chunk
                .iter()
                .map(|r| {
                    let base = base_of(c, r);
                    (0..c.engines.len())
                        .map(|e| base.and_then(|b| bar_rel(r, e, b)))
                        .collect()
                })
                .collect();
            let title = if rows.len() > PER_CHART {
                format!("{workload} ({}/{})", k + 1, rows.len().div_ceil(PER_CHART))
            } else {
                workload.to_string()
            };
            h.push_str(&render(&Chart {
                title: &title,
                y_label: if c.host.is_some() {
                    "% of the host"
                } else {
                    "% of the best"
                },
                series: &series,
                categories: &categories,
                bars: &bars,
                reference: Some((100.0, if c.host.is_some() { "host" } else { "best" })),
            }));
        }
        let _ = write!(h, "<p>{reference}</p>");
        metric_table(&mut h, c, &rows);
    }

    h.push_str("</body></html>\n");
    h
}

fn metric_table(h: &mut String, c: &Comparison, rows: &[&MetricRow]) {
    h.push_str("<table><tr><th>metric</th><th>unit</th>");
    for e in &c.engines {
        let _ = write!(h, "<th>{}</th>", esc(&e.name));
    }
    h.push_str("</tr>");
    for r in rows {
        let _ = write!(
            h,
            "<tr><td>{}{}</td><td>{}</td>",
            esc(&r.metric),
            if r.higher_is_better {
                ""
            } else {
                " (lower is better)"
            },
            esc(&r.unit)
        );
        for (i, cell) in r.cells.iter().enumerate() {
            match cell {
                None => h.push_str("<td class=\"n\">-</td>"),
                Some(cell) => {
                    let rel = match c.host {
                        Some(host) if host != i => r
                            .relative(i, host)
                            .map(|x| format!(" {}", percent(x)))
                            .unwrap_or_default(),
                        _ => String::new(),
                    };
                    let _ = write!(
                        h,
                        "<td class=\"n\" title=\"{} values from {} run(s), min {}, max {}\">{}{}</td>",
                        cell.values.len(),
                        cell.runs,
                        esc(&short(cell.min)),
                        esc(&short(cell.max)),
                        esc(&short(cell.median)),
                        esc(&rel)
                    );
                }
            }
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
}

fn environment(h: &mut String, c: &Comparison) {
    h.push_str(
        "<table><tr><th>run</th><th>state</th><th>platform detected</th><th>kernel</th>\
         <th>CPUs</th><th>memory</th><th>cache</th><th>accel</th><th>rootfs digest</th>\
         <th>wall / first workload</th><th>command</th></tr>",
    );
    for loaded in &c.runs {
        let r = &loaded.record;
        let start = run_start(r);
        let state = if r.complete {
            "<span class=\"ok\">complete</span>".to_string()
        } else {
            format!(
                "<span class=\"bad\">incomplete</span>: {}",
                esc(r.incomplete_reason.as_deref().unwrap_or(""))
            )
        };
        let platform = start
            .map(|s| {
                let p = &s.platform;
                let mut t = format!("{:?}", p.hypervisor);
                if let Some(sig) = &p.hypervisor_signature {
                    t.push_str(&format!(" ({})", sig.trim()));
                }
                if let Some(ct) = &p.container {
                    t.push_str(&format!(", container {:?} ({})", ct.kind, ct.evidence));
                }
                t.push_str(&format!(", mode {}", s.mode.name()));
                t
            })
            .unwrap_or_else(|| "-".into());
        let kernel = start
            .map(|s| {
                format!(
                    "{} ({})",
                    s.platform.kernel_release,
                    s.platform.clocksource.as_deref().unwrap_or("?")
                )
            })
            .unwrap_or_else(|| "-".into());
        let cpus = start
            .map(|s| {
                format!(
                    "{} asked; {} online, {} usable; {}",
                    r.cpus,
                    s.platform.online_cpus,
                    s.platform.usable_cpus,
                    s.platform.cpu_model.as_deref().unwrap_or("?")
                )
            })
            .unwrap_or_else(|| format!("{} asked", r.cpus));
        let memory = start
            .and_then(|s| s.platform.memory_total_kib)
            .map(|k| format!("{} MiB asked; {} MiB seen", r.memory_mb, k / 1024))
            .unwrap_or_else(|| format!("{} MiB asked", r.memory_mb));
        let digest = match start {
            Some(s) => {
                let d = &s.digest_check;
                let same = d.digest == Some(r.build_digest);
                format!(
                    "<span class=\"{}\">{:?}</span>{}{}",
                    if same
                        || matches!(
                            d.status,
                            imgbuild_init::results::schema::DigestStatus::Skipped
                        )
                    {
                        "ok"
                    } else {
                        "bad"
                    },
                    d.status,
                    d.digest
                        .map(|g| format!(
                            " {}…",
                            esc(&g.to_string().chars().take(23).collect::<String>())
                        ))
                        .unwrap_or_default(),
                    d.reason
                        .as_deref()
                        .map(|x| format!(" ({})", esc(x)))
                        .unwrap_or_default()
                )
            }
            None => "-".into(),
        };
        let timing = format!(
            "{:.1} s / {}",
            r.wall_s,
            r.first_record_s
                .map(|t| format!("{t:.2} s"))
                .unwrap_or_else(|| "-".into())
        );
        let notes: String = r.notes.iter().map(|n| format!("<br/>{}", esc(n))).collect();
        let _ = write!(
            h,
            "<tr><td>{}-{}</td><td>{state}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{digest}</td><td>{timing}</td><td><details><summary>\
             command</summary><code>{}</code>{notes}</details></td></tr>",
            esc(&r.engine),
            r.run,
            esc(&platform),
            esc(&kernel),
            esc(&cpus),
            esc(&memory),
            r.cache.map(|c| c.name()).unwrap_or("host page cache"),
            r.accel.map(|a| a.name()).unwrap_or("-"),
            esc(&r.command),
        );
    }
    h.push_str("</table>");
}
