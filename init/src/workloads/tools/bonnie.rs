//! `bonnie++`: runs the real Bonnie++ in the work directory and parses its CSV line.
//!
//! The CSV line (format 1.98, bonnie++ 2.00a) is parsed by position: 50 fields, of which this
//! workload reports block write (11), rewrite (13), block read (17), and the six file tests
//! (26, 28, 30, 32, 34, 36) with their latencies (38…49). `+++++` means the test ran under
//! half a second and bonnie++ would not give a figure: it is recorded in `info.too_fast`, never
//! as a number. An empty field means the test did not run.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;

use super::super::{parse_params, Context, Repetition, Sample, Workload};
use super::{first_line, locate, run_tool};
use crate::results::schema::ToolVersion;

/// One CSV field's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    /// A number (K/s, /s, %CPU).
    Number(f64),
    /// `+++++` / `+++`: too fast to measure.
    TooFast,
    /// Empty: not run.
    Empty,
    /// A latency, seconds (from `us`, `ms` or `s`).
    Latency(f64),
}

/// A parsed CSV line.
#[derive(Debug, Clone, PartialEq)]
pub struct BonnieCsv {
    /// Field 0: format version (`1.98`).
    pub format: String,
    /// Field 1: bonnie++ version.
    pub version: String,
    /// Field 5: file size as printed (`64M`).
    pub size: String,
    /// All 50 fields after the header ones, by index.
    pub fields: Vec<Field>,
}

/// The columns reported: (metric, rate field, latency field).
pub const COLUMNS: [(&str, usize, usize); 9] = [
    ("block_write", 11, 39),
    ("rewrite", 13, 40),
    ("block_read", 17, 42),
    ("seq_create", 26, 44),
    ("seq_stat", 28, 45),
    ("seq_delete", 30, 46),
    ("random_create", 32, 47),
    ("random_stat", 34, 48),
    ("random_delete", 36, 49),
];

fn field(text: &str, index: usize) -> Result<Field, String> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(Field::Empty);
    }
    if !t.is_empty() && t.bytes().all(|b| b == b'+') {
        return Ok(Field::TooFast);
    }
    if index >= 38 {
        let (num, scale) = if let Some(n) = t.strip_suffix("us") {
            (n, 1e-6)
        } else if let Some(n) = t.strip_suffix("ms") {
            (n, 1e-3)
        } else if let Some(n) = t.strip_suffix('s') {
            (n, 1.0)
        } else {
            return Err(format!("field {index}: latency {t:?} has no unit"));
        };
        let v: f64 = num
            .parse()
            .map_err(|_| format!("field {index}: bad latency {t:?}"))?;
        return Ok(Field::Latency(v * scale));
    }
    t.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .map(Field::Number)
        .ok_or_else(|| format!("field {index}: {t:?} is not a number"))
}

/// Finds and parses the CSV line in bonnie++'s output.
pub fn parse_csv(output: &str) -> Result<BonnieCsv, String> {
    let line = output
        .lines()
        .find(|l| l.starts_with("1.9") && l.matches(',').count() >= 20)
        .ok_or("no bonnie++ CSV line (format 1.9x) in the output")?;
    let parts: Vec<&str> = line.split(',').collect();
    if parts.len() != 50 {
        return Err(format!(
            "the CSV line has {} fields, format {} has 50",
            parts.len(),
            parts[0]
        ));
    }
    let mut fields = Vec::with_capacity(50);
    for (i, p) in parts.iter().enumerate() {
        fields.push(if (9..).contains(&i) {
            field(p, i)?
        } else {
            Field::Empty
        });
    }
    Ok(BonnieCsv {
        format: parts[0].to_owned(),
        version: parts[1].to_owned(),
        size: parts[5].to_owned(),
        fields,
    })
}

/// The bonnie++ workload.
pub struct Bonnie;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default)]
    size_mib: Option<u64>,
    #[serde(default)]
    ram_mib: Option<u64>,
    #[serde(default = "sixteen")]
    files_k: u32,
    #[serde(default)]
    direct: bool,
    #[serde(default = "yes")]
    skip_per_char: bool,
    #[serde(default = "default_timeout")]
    timeout_s: f64,
}

fn sixteen() -> u32 {
    16
}
fn yes() -> bool {
    true
}
fn default_timeout() -> f64 {
    3600.0
}

fn parse(params: &serde_json::Value) -> Result<Params, String> {
    let p: Params = parse_params(params)?;
    if p.files_k > 1024 {
        return Err("files_k above 1024".into());
    }
    if !(p.timeout_s.is_finite() && p.timeout_s > 0.0) {
        return Err("timeout_s must be positive".into());
    }
    Ok(p)
}

impl Workload for Bonnie {
    fn name(&self) -> &'static str {
        "bonnie++"
    }
    fn summary(&self) -> &'static str {
        "the real bonnie++ (when the root has it): block write/rewrite/read and file tests"
    }
    fn check(&self, params: &serde_json::Value) -> Result<(), String> {
        parse(params).map(|_| ())
    }
    fn unavailable(&self, _: &serde_json::Value, _: &Context) -> Option<String> {
        locate("bonnie++").err()
    }
    fn run(&self, params: &serde_json::Value, ctx: &Context) -> Result<Repetition, String> {
        let p = parse(params)?;
        let bin = locate("bonnie++")?;
        let mut cmd = Command::new(&bin);
        cmd.arg("-d").arg(&ctx.workdir).arg("-q");
        cmd.arg("-n").arg(p.files_k.to_string());
        if let Some(s) = p.size_mib {
            cmd.arg("-s").arg(s.to_string());
        }
        if let Some(r) = p.ram_mib {
            cmd.arg("-r").arg(r.to_string());
        }
        if p.direct {
            cmd.arg("-D");
        }
        if p.skip_per_char {
            cmd.arg("-f");
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            cmd.arg("-u").arg("root");
        }
        let out = run_tool(cmd, Duration::from_secs_f64(p.timeout_s), &[libc::SIGKILL])?;
        if out.timed_out || out.code != Some(0) {
            return Err(format!(
                "bonnie++ failed (exit {:?}, timed out {}): {}",
                out.code,
                out.timed_out,
                first_line(&out.stderr)
            ));
        }
        let csv = parse_csv(&out.stdout)?;
        let mut samples = Vec::new();
        let mut too_fast = Vec::new();
        let mut not_run = Vec::new();
        for (name, rate, lat) in COLUMNS {
            let unit = if rate < 20 { "KiB/s" } else { "ops/s" };
            match &csv.fields[rate] {
                Field::Number(v) => samples.push(Sample::new(
                    format!("{name}_{}", if rate < 20 { "kib_per_s" } else { "per_s" }),
                    unit,
                    true,
                    *v,
                )),
                Field::TooFast => too_fast.push(name),
                _ => not_run.push(name),
            }
            if let Field::Latency(s) = csv.fields[lat] {
                samples.push(Sample::new(
                    format!("{name}_max_latency_ms"),
                    "ms",
                    false,
                    s * 1000.0,
                ));
            }
        }
        let info = BTreeMap::from([
            ("too_fast".into(), serde_json::json!(too_fast)),
            ("not_run".into(), serde_json::json!(not_run)),
            ("file_size".into(), csv.size.clone().into()),
            ("csv_format".into(), csv.format.clone().into()),
        ]);
        Ok(Repetition {
            samples,
            tool: Some(ToolVersion {
                name: "bonnie++".into(),
                version: csv.version,
            }),
            info,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: &str = include_str!("../../../tests/fixtures/tools/bonnie_q.csv");

    #[test]
    fn parses_the_captured_line() {
        let c = parse_csv(REAL).unwrap();
        assert_eq!(
            (c.format.as_str(), c.version.as_str(), c.size.as_str()),
            ("1.98", "2.00a", "64M")
        );
        assert_eq!(c.fields[11], Field::TooFast);
        assert_eq!(c.fields[15], Field::Number(2733.0));
        assert_eq!(c.fields[26], Field::TooFast);
        let Field::Latency(l) = c.fields[38] else {
            panic!("{:?}", c.fields[38])
        };
        assert!((l - 0.024698).abs() < 1e-12);
    }

    #[test]
    fn latency_units_and_garbage() {
        assert_eq!(field("12ms", 40).unwrap(), Field::Latency(0.012));
        assert_eq!(field("2s", 40).unwrap(), Field::Latency(2.0));
        assert!(field("12", 40).is_err());
        assert!(field("abc", 11).is_err());
        assert!(field("NaN", 11).is_err());
        assert_eq!(field("", 11).unwrap(), Field::Empty);
        assert_eq!(field("+++", 12).unwrap(), Field::TooFast);
    }

    #[test]
    fn truncated_and_garbled_lines_are_errors() {
        let line = REAL.lines().next().unwrap();
        for bad in [
            "",
            "Version 2.00a  ------Sequential Output------",
            &line[..line.len() / 2],
            &line.replace("24698us", "24698xx"),
            &format!("{line},extra"),
        ] {
            assert!(parse_csv(bad).is_err(), "{bad:?}");
        }
    }
}
