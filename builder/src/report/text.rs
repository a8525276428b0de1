//! The report as a text table: per workload, each metric's median per engine and, next to
//! every engine but the host, its performance relative to the host ("+25%", "-57%").

use std::fmt::Write as _;

use super::{percent, Comparison};

/// A number in a few significant digits with an SI prefix (`1.23G`, `456k`, `0.0123`).
pub fn short(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let a = v.abs();
    let (scaled, suffix) = if a >= 1e12 {
        (v / 1e12, "T")
    } else if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e4 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let digits = if scaled.abs() >= 100.0 {
        0
    } else if scaled.abs() >= 10.0 {
        1
    } else if scaled.abs() >= 0.1 || scaled == 0.0 {
        2
    } else {
        return format!("{v:.3e}");
    };
    format!("{scaled:.digits$}{suffix}")
}

/// The whole table.
pub fn render(c: &Comparison) -> String {
    let mut out = String::new();
    let runs: Vec<String> = c
        .engines
        .iter()
        .map(|e| {
            format!(
                "{} ({} run{})",
                e.name,
                e.runs.len(),
                if e.runs.len() == 1 { "" } else { "s" }
            )
        })
        .collect();
    let _ = writeln!(out, "engines: {}", runs.join(", "));
    match c.host {
        Some(_) => {
            let _ = writeln!(
                out,
                "medians over every repetition of every run; % = performance relative to the host \
                 (negative: worse)"
            );
        }
        None => {
            let _ = writeln!(
                out,
                "medians over every repetition of every run; no host run to compare with"
            );
        }
    }
    for r in &c.runs {
        if !r.record.complete {
            let _ = writeln!(
                out,
                "note: {}-{} is incomplete: {}",
                r.record.engine,
                r.record.run,
                r.record.incomplete_reason.as_deref().unwrap_or("")
            );
        }
    }
    let name_width = c
        .rows
        .iter()
        .map(|r| r.metric.chars().count())
        .max()
        .unwrap_or(6)
        .clamp(6, 48);
    let unit_width = c
        .rows
        .iter()
        .map(|r| r.unit.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 16);
    let col = 16;
    for workload in c.workloads() {
        let _ = writeln!(out);
        let _ = write!(out, "{workload:<name_width$} {:<unit_width$}", "unit");
        for e in &c.engines {
            let _ = write!(out, " {:>col$}", e.name);
        }
        let _ = writeln!(out);
        for row in c.rows.iter().filter(|r| r.workload == workload) {
            let metric: String = row.metric.chars().take(name_width).collect();
            let unit: String = row.unit.chars().take(unit_width).collect();
            let arrow = if row.higher_is_better {
                ""
            } else {
                " (lower is better)"
            };
            let _ = write!(out, "{metric:<name_width$} {unit:<unit_width$}");
            for (i, cell) in row.cells.iter().enumerate() {
                let text = match cell {
                    None => "-".to_string(),
                    Some(cell) => {
                        let mut t = short(cell.median);
                        if let (Some(h), false) = (c.host, Some(i) == c.host) {
                            if let Some(rel) = row.relative(i, h) {
                                t.push_str(&format!(" {}", percent(rel)));
                            }
                        }
                        t
                    }
                };
                let _ = write!(out, " {text:>col$}");
            }
            let _ = writeln!(out, "{arrow}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_numbers() {
        assert_eq!(short(1_234_567_890.0), "1.23G");
        assert_eq!(short(45_600.0), "45.6k");
        assert_eq!(short(2_500.0), "2500");
        assert_eq!(short(12.345), "12.3");
        assert_eq!(short(0.5), "0.50");
        assert_eq!(short(0.0012), "1.200e-3");
        assert_eq!(short(f64::NAN), "-");
    }
}
