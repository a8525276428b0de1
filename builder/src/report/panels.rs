//! The paper's panels, picked out of whatever metrics the runs hold: the UnixBench index, the
//! four Bonnie++ figures (block write, block read, sequential create, random create) and ab's
//! requests per second at 1, 2, 4 and 8 concurrent clients. Metrics are matched by workload
//! and metric names and parameters, loosely (the words, not the punctuation), so a panel
//! appears as soon as a workload records such a metric and is simply absent otherwise.

use super::{Comparison, MetricRow};

/// One figure of the paper: bars for some metrics, one per engine.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Title.
    pub title: String,
    /// What the y axis shows.
    pub y_label: String,
    /// (category label, row index into [`Comparison::rows`]).
    pub bars: Vec<(String, usize)>,
}

/// Lower-case letters and digits only: "Block Write (K/s)" → "blockwriteks".
fn squash(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn is_kind(row: &MetricRow, words: &[&str]) -> bool {
    let w = squash(&row.kind);
    let n = squash(&row.workload);
    // Short names ("ab") must match whole; longer ones may be part of the name.
    words.iter().any(|k| {
        if k.len() < 3 {
            w == *k || n == *k
        } else {
            w.contains(k) || n.contains(k)
        }
    })
}

fn not_side_figure(m: &str) -> bool {
    !(m.contains("latency") || m.contains("cpu") || m.contains("percent"))
}

/// The panels whose metrics are present, in the paper's order.
pub fn panels(c: &Comparison) -> Vec<Panel> {
    let mut out = Vec::new();
    let rows = &c.rows;

    let unixbench: Vec<(String, usize)> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            is_kind(r, &["unixbench", "ubench"]) && squash(&r.metric).contains("index")
        })
        .map(|(i, r)| (r.metric.clone(), i))
        .collect();
    if !unixbench.is_empty() {
        out.push(Panel {
            title: "UnixBench index".into(),
            y_label: "index".into(),
            bars: unixbench,
        });
    }

    type Figure = (&'static str, fn(&str) -> bool);
    let bonnie_figures: [Figure; 4] = [
        ("block write", |m| {
            m.contains("block") && m.contains("write") && !m.contains("rewrite")
        }),
        ("block read", |m| m.contains("block") && m.contains("read")),
        ("seq create", |m| m.contains("seq") && m.contains("create")),
        ("random create", |m| {
            m.contains("ran") && m.contains("create")
        }),
    ];
    let mut bonnie = Vec::new();
    for (label, matches) in bonnie_figures {
        if let Some(i) = rows.iter().position(|r| {
            let m = squash(&r.metric);
            is_kind(r, &["bonnie", "disk"]) && matches(&m) && not_side_figure(&m)
        }) {
            bonnie.push((label.to_string(), i));
        }
    }
    if !bonnie.is_empty() {
        let units: Vec<&str> = bonnie.iter().map(|(_, i)| rows[*i].unit.as_str()).collect();
        out.push(Panel {
            title: "Bonnie++".into(),
            y_label: units.join(" / "),
            bars: bonnie,
        });
    }

    let mut ab: Vec<(u64, usize)> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            let m = squash(&r.metric);
            let u = squash(&r.unit);
            is_kind(r, &["http", "apache", "ab"])
                && (u.contains("req") || m.contains("requests") || m.contains("rps"))
                && !m.contains("failed")
                && not_side_figure(&m)
        })
        .filter_map(|(i, r)| concurrency(r).map(|c| (c, i)))
        .collect();
    ab.sort();
    ab.dedup_by_key(|(c, _)| *c);
    let paper: Vec<(u64, usize)> = ab
        .iter()
        .copied()
        .filter(|(c, _)| [1, 2, 4, 8].contains(c))
        .collect();
    let chosen = if paper.is_empty() { ab } else { paper };
    if !chosen.is_empty() {
        out.push(Panel {
            title: "Apache ab".into(),
            y_label: rows[chosen[0].1].unit.clone(),
            bars: chosen
                .into_iter()
                .map(|(c, i)| (format!("{c} concurrent"), i))
                .collect(),
        });
    }
    out
}

/// The client concurrency of an ab metric: a `concurrency`/`c`/`clients` parameter, or the
/// number after `c` in the name (`rps/c8`, `requests_per_s_c4`).
fn concurrency(row: &MetricRow) -> Option<u64> {
    for key in ["concurrency", "c", "clients", "connections"] {
        if let Some(v) = row.parameters.get(key).and_then(serde_json::Value::as_u64) {
            return Some(v);
        }
    }
    let m = row.metric.to_ascii_lowercase();
    let bytes = m.as_bytes();
    for (i, _) in m.match_indices('c') {
        let boundary = i == 0 || !bytes[i - 1].is_ascii_alphabetic();
        let digits: String = m[i + 1..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if boundary && !digits.is_empty() {
            return digits.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn row(kind: &str, metric: &str, unit: &str, params: serde_json::Value) -> MetricRow {
        MetricRow {
            workload: kind.into(),
            kind: kind.into(),
            metric: metric.into(),
            unit: unit.into(),
            higher_is_better: true,
            parameters: serde_json::from_value::<BTreeMap<String, serde_json::Value>>(params)
                .unwrap_or_default(),
            cells: Vec::new(),
        }
    }

    #[test]
    fn finds_the_paper_metrics() {
        let rows = vec![
            row(
                "crypto",
                "sha256/16/single",
                "bytes/s",
                serde_json::json!({}),
            ),
            row("unixbench", "system_index", "index", serde_json::json!({})),
            row("unixbench", "dhry2reg", "lps", serde_json::json!({})),
            row("bonnie", "block_write", "KiB/s", serde_json::json!({})),
            row("bonnie", "block_write_latency", "us", serde_json::json!({})),
            row("bonnie", "block_rewrite", "KiB/s", serde_json::json!({})),
            row("bonnie", "block_read", "KiB/s", serde_json::json!({})),
            row("bonnie", "seq_create", "files/s", serde_json::json!({})),
            row("bonnie", "random_create", "files/s", serde_json::json!({})),
            row(
                "http",
                "requests_per_s/c16",
                "requests/s",
                serde_json::json!({}),
            ),
            row(
                "http",
                "requests_per_s/c8",
                "requests/s",
                serde_json::json!({}),
            ),
            row(
                "http",
                "requests_per_s",
                "requests/s",
                serde_json::json!({"concurrency": 1}),
            ),
            row(
                "http",
                "failed_requests/c1",
                "requests",
                serde_json::json!({}),
            ),
        ];
        let c = Comparison {
            runs: Vec::new(),
            engines: Vec::new(),
            host: None,
            rows,
        };
        let p = panels(&c);
        let titles: Vec<&str> = p.iter().map(|p| p.title.as_str()).collect();
        assert_eq!(titles, ["UnixBench index", "Bonnie++", "Apache ab"]);
        assert_eq!(p[0].bars, [("system_index".to_string(), 1)]);
        let bonnie: Vec<usize> = p[1].bars.iter().map(|b| b.1).collect();
        assert_eq!(bonnie, [3, 6, 7, 8]);
        let ab: Vec<&str> = p[2].bars.iter().map(|b| b.0.as_str()).collect();
        assert_eq!(ab, ["1 concurrent", "8 concurrent"]);
    }

    #[test]
    fn no_panels_without_their_metrics() {
        let c = Comparison {
            runs: Vec::new(),
            engines: Vec::new(),
            host: None,
            rows: vec![row("crypto", "aes/16", "bytes/s", serde_json::json!({}))],
        };
        assert!(panels(&c).is_empty());
    }
}
