//! `unixbench-run`: runs a real UnixBench `Run` (when the root has a built UnixBench tree) and
//! parses its report: per copy count, the index table rows (`%-40s %12.1f %12.1f %8.1f`:
//! name, BASELINE, RESULT, INDEX) and the `System Benchmarks Index Score` line (`(Partial
//! Only)` when tests are missing).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;

use super::super::{parse_params, Context, Repetition, Sample, Workload};
use super::{first_line, run_tool};
use crate::results::schema::ToolVersion;

/// One index row.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexRow {
    /// Test name as printed.
    pub name: String,
    /// BASELINE.
    pub baseline: f64,
    /// RESULT.
    pub result: f64,
    /// INDEX.
    pub index: f64,
}

/// One `Benchmark Run` block.
#[derive(Debug, Clone, PartialEq)]
pub struct RunBlock {
    /// Parallel copies.
    pub copies: u32,
    /// Index rows.
    pub rows: Vec<IndexRow>,
    /// The final score.
    pub score: f64,
    /// Whether it was a partial index.
    pub partial: bool,
}

/// The parsed report.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    /// `BYTE UNIX Benchmarks (Version …)`.
    pub version: Option<String>,
    /// Blocks in order (1 copy, then N copies).
    pub blocks: Vec<RunBlock>,
}

fn last_numbers(line: &str, n: usize) -> Option<(String, Vec<f64>)> {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    if tokens.len() <= n {
        return None;
    }
    let split = tokens.len() - n;
    let nums: Option<Vec<f64>> = tokens[split..]
        .iter()
        .map(|t| t.parse::<f64>().ok().filter(|v| v.is_finite()))
        .collect();
    Some((tokens[..split].join(" "), nums?))
}

/// Parses the text Run prints.
pub fn parse_run(text: &str) -> Result<RunReport, String> {
    let version = text.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("BYTE UNIX Benchmarks (Version ")?;
        Some(rest.trim_end_matches(')').to_owned())
    });
    let mut blocks = Vec::new();
    let mut current: Option<RunBlock> = None;
    let mut in_table = false;
    for line in text.lines() {
        let t = line.trim();
        if let Some(pos) = t.find("running ") {
            let rest = &t[pos + "running ".len()..];
            if rest.contains("parallel cop") {
                if let Some(b) = current.take() {
                    return Err(format!("a {}-copy block has no index score", b.copies));
                }
                let copies: u32 = rest
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| format!("bad copy count in {t:?}"))?;
                current = Some(RunBlock {
                    copies,
                    rows: Vec::new(),
                    score: 0.0,
                    partial: false,
                });
                in_table = false;
                continue;
            }
        }
        let Some(block) = current.as_mut() else {
            continue;
        };
        if t.starts_with("System Benchmarks Index Values")
            || t.starts_with("System Benchmarks Partial Index")
        {
            in_table = true;
            block.partial |= t.contains("Partial");
        } else if t.starts_with("System Benchmarks Index Score") {
            let score = t
                .split_whitespace()
                .last()
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("bad index score line {t:?}"))?;
            block.score = score;
            block.partial |= t.contains("Partial");
            if let Some(b) = current.take() {
                if b.rows.is_empty() {
                    return Err(format!(
                        "the {}-copy block has a score but no index rows",
                        b.copies
                    ));
                }
                blocks.push(b);
            }
            in_table = false;
        } else if in_table && !t.is_empty() && !t.starts_with('=') {
            let (name, nums) = last_numbers(t, 3).ok_or_else(|| format!("bad index row {t:?}"))?;
            block.rows.push(IndexRow {
                name,
                baseline: nums[0],
                result: nums[1],
                index: nums[2],
            });
        }
    }
    if let Some(b) = current {
        return Err(format!(
            "the {}-copy block ends without an index score",
            b.copies
        ));
    }
    if blocks.is_empty() {
        return Err("no UnixBench index block in the output".into());
    }
    Ok(RunReport { version, blocks })
}

/// The unixbench-run workload.
pub struct UnixBenchRun;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default)]
    dir: Option<PathBuf>,
    #[serde(default = "ten")]
    iterations: u32,
    #[serde(default = "default_timeout")]
    timeout_s: f64,
}

fn ten() -> u32 {
    10
}
fn default_timeout() -> f64 {
    4.0 * 3600.0
}

const CANDIDATES: [&str; 4] = [
    "/opt/byte-unixbench/UnixBench",
    "/opt/UnixBench",
    "/usr/local/UnixBench",
    "/usr/local/share/UnixBench",
];

fn parse(params: &serde_json::Value) -> Result<Params, String> {
    let p: Params = parse_params(params)?;
    if !(1..=100).contains(&p.iterations) {
        return Err("iterations outside 1..=100".into());
    }
    if !(p.timeout_s.is_finite() && p.timeout_s > 0.0) {
        return Err("timeout_s must be positive".into());
    }
    Ok(p)
}

fn find_dir(p: &Params) -> Result<PathBuf, String> {
    let dirs: Vec<PathBuf> = match &p.dir {
        Some(d) => vec![d.clone()],
        None => CANDIDATES.iter().map(PathBuf::from).collect(),
    };
    let dir = dirs
        .iter()
        .find(|d| d.join("Run").is_file())
        .ok_or_else(|| {
            format!(
                "no UnixBench Run script in {}",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    let perl = super::locate("perl")?;
    let _ = perl;
    Ok(dir.clone())
}

impl Workload for UnixBenchRun {
    fn name(&self) -> &'static str {
        "unixbench-run"
    }
    fn summary(&self) -> &'static str {
        "the real UnixBench Run (when the root has a built tree): index rows and scores"
    }
    fn check(&self, params: &serde_json::Value) -> Result<(), String> {
        parse(params).map(|_| ())
    }
    fn unavailable(&self, params: &serde_json::Value, _: &Context) -> Option<String> {
        parse(params).and_then(|p| find_dir(&p)).err()
    }
    fn run(&self, params: &serde_json::Value, ctx: &Context) -> Result<Repetition, String> {
        let p = parse(params)?;
        let dir = find_dir(&p)?;
        let mut cmd = Command::new("perl");
        cmd.arg("./Run").arg("-i").arg(p.iterations.to_string());
        cmd.arg("-c").arg("1");
        if ctx.online_cpus > 1 {
            cmd.arg("-c").arg(ctx.online_cpus.to_string());
        }
        cmd.current_dir(&dir);
        let out = run_tool(cmd, Duration::from_secs_f64(p.timeout_s), &[libc::SIGKILL])?;
        if out.code != Some(0) {
            return Err(format!(
                "Run failed (exit {:?}): {}",
                out.code,
                first_line(&out.stderr)
            ));
        }
        let report = parse_run(&out.stdout)?;
        let mut samples = Vec::new();
        for b in &report.blocks {
            let mode = if b.copies == 1 { "single" } else { "multi" };
            for row in &b.rows {
                samples.push(Sample {
                    metric: format!("{mode}/{}", row.name),
                    unit: "index".into(),
                    parameters: BTreeMap::from([
                        ("copies".into(), b.copies.into()),
                        ("result".into(), row.result.into()),
                        ("baseline".into(), row.baseline.into()),
                    ]),
                    higher_is_better: true,
                    value: row.index,
                });
            }
            samples.push(Sample {
                metric: format!("{mode}/index"),
                unit: "index".into(),
                parameters: BTreeMap::from([("copies".into(), b.copies.into())]),
                higher_is_better: true,
                value: b.score,
            });
        }
        Ok(Repetition {
            samples,
            tool: Some(ToolVersion {
                name: "UnixBench".into(),
                version: report.version.unwrap_or_default(),
            }),
            info: BTreeMap::from([("dir".into(), dir.display().to_string().into())]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // No Debian package ships UnixBench: this fixture is laid out with Run's own printf
    // formats (see the file's first line), not captured.
    const RUN: &str = include_str!("../../../tests/fixtures/tools/unixbench_run_format.txt");

    #[test]
    fn parses_both_blocks() {
        let r = parse_run(RUN).unwrap();
        assert_eq!(r.version.as_deref(), Some("5.1.3"));
        assert_eq!(r.blocks.len(), 2);
        assert_eq!(r.blocks[0].copies, 1);
        assert_eq!(r.blocks[0].rows.len(), 12);
        assert_eq!(
            r.blocks[0].rows[0].name,
            "Dhrystone 2 using register variables"
        );
        assert_eq!(r.blocks[0].rows[0].baseline, 116700.0);
        assert_eq!(r.blocks[0].score, 1104.0);
        assert!(!r.blocks[0].partial);
        assert_eq!(r.blocks[1].copies, 2);
        assert!(r.blocks[1].partial);
        assert_eq!(r.blocks[1].rows.len(), 10);
    }

    #[test]
    fn truncated_and_garbled_reports_are_errors() {
        let cut = &RUN[..RUN.find("System Benchmarks Index Score").unwrap()];
        for bad in [
            "",
            cut,
            &RUN.replace("1104.0", "high"),
            &RUN.replace("116700.0", "x"),
        ] {
            assert!(parse_run(bad).is_err(), "{:?}", &bad[..bad.len().min(80)]);
        }
    }
}
