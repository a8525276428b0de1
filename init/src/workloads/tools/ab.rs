//! `ab`: runs the real ApacheBench against the built-in HTTP server and parses its report.
//!
//! Lines are matched by their label: `Complete requests:`, `Failed requests:` (with the
//! `(Connect: …, Receive: …, Length: …, Exceptions: …)` line that follows when there are
//! failures), `Non-2xx responses:`, `Requests per second:`, both `Time per request:` lines,
//! `Transfer rate:`, and the percentile table. The `-e` CSV (`Percentage served,Time in ms`,
//! 101 rows) is parsed too, for fractional-millisecond percentiles.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;

use super::super::http::server;
use super::super::{parse_params, Context, Repetition, Sample, Workload};
use super::{first_line, locate, run_tool};
use crate::results::schema::ToolVersion;

/// The figures of an ab report.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AbReport {
    /// `ApacheBench, Version …`.
    pub version: Option<String>,
    /// `Complete requests`.
    pub complete: u64,
    /// `Failed requests`.
    pub failed: u64,
    /// The breakdown (connect, receive, length, exceptions), when printed.
    pub breakdown: Option<[u64; 4]>,
    /// `Non-2xx responses` (0 when absent).
    pub non_2xx: u64,
    /// `Requests per second`.
    pub requests_per_s: f64,
    /// `Time per request (mean)`, ms.
    pub time_per_request_ms: f64,
    /// `Time per request (mean, across all concurrent requests)`, ms.
    pub time_per_request_all_ms: f64,
    /// `Transfer rate`, KiB/s.
    pub transfer_kib_per_s: f64,
    /// Percentile table: percent → ms.
    pub percentiles: BTreeMap<u32, f64>,
}

fn value_after<'a>(line: &'a str, label: &str) -> Option<&'a str> {
    line.trim_start()
        .strip_prefix(label)
        .map(|rest| rest.split_whitespace().next().unwrap_or(""))
}

fn number<T: std::str::FromStr>(text: &str, label: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("ab: bad value {text:?} for {label:?}"))
}

/// Parses ab's text report.
pub fn parse_report(text: &str) -> Result<AbReport, String> {
    let mut r = AbReport::default();
    let mut seen = [false; 5];
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("This is ApacheBench, Version ") {
            r.version = Some(v.split_whitespace().next().unwrap_or("").to_owned());
        } else if let Some(v) = value_after(t, "Complete requests:") {
            r.complete = number(v, "Complete requests")?;
            seen[0] = true;
        } else if let Some(v) = value_after(t, "Failed requests:") {
            r.failed = number(v, "Failed requests")?;
            if let Some(next) = lines.peek() {
                if let Some(inner) = next
                    .trim()
                    .strip_prefix('(')
                    .and_then(|s| s.strip_suffix(')'))
                {
                    let mut b = [0u64; 4];
                    for (i, part) in inner.split(',').enumerate() {
                        let v = part.split(':').nth(1).ok_or("ab: bad failure breakdown")?;
                        *b.get_mut(i).ok_or("ab: failure breakdown too long")? =
                            number(v.trim(), "failure breakdown")?;
                    }
                    r.breakdown = Some(b);
                    lines.next();
                }
            }
            seen[1] = true;
        } else if let Some(v) = value_after(t, "Non-2xx responses:") {
            r.non_2xx = number(v, "Non-2xx responses")?;
        } else if let Some(v) = value_after(t, "Requests per second:") {
            r.requests_per_s = number(v, "Requests per second")?;
            seen[2] = true;
        } else if let Some(v) = value_after(t, "Time per request:") {
            let ms = number(v, "Time per request")?;
            if t.contains("across all concurrent requests") {
                r.time_per_request_all_ms = ms;
            } else {
                r.time_per_request_ms = ms;
                seen[3] = true;
            }
        } else if let Some(v) = value_after(t, "Transfer rate:") {
            r.transfer_kib_per_s = number(v, "Transfer rate")?;
            seen[4] = true;
        } else if let Some((pct, rest)) = t.split_once("%") {
            if let (Ok(p), Some(ms)) = (pct.trim().parse::<u32>(), rest.split_whitespace().next()) {
                if p <= 100 {
                    r.percentiles.insert(p, number(ms, "percentile")?);
                }
            }
        }
    }
    let labels = [
        "Complete requests",
        "Failed requests",
        "Requests per second",
        "Time per request",
        "Transfer rate",
    ];
    if let Some(i) = seen.iter().position(|s| !s) {
        return Err(format!("ab output has no {:?} line", labels[i]));
    }
    if r.failed > 0 && r.breakdown.is_none() {
        return Err("ab reports failures without the breakdown line".into());
    }
    Ok(r)
}

/// Parses ab's `-e` CSV: percent (0…100) → ms.
pub fn parse_percentile_csv(text: &str) -> Result<Vec<(u32, f64)>, String> {
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some("Percentage served,Time in ms") {
        return Err("ab -e CSV without its header".into());
    }
    let mut out = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let (p, ms) = line
            .split_once(',')
            .ok_or_else(|| format!("bad CSV row {line:?}"))?;
        let p: u32 = number(p.trim(), "percentage")?;
        let ms: f64 = number(ms.trim(), "time")?;
        if p > 100 || !ms.is_finite() {
            return Err(format!("bad CSV row {line:?}"));
        }
        out.push((p, ms));
    }
    if out.len() != 101 {
        return Err(format!("ab -e CSV has {} rows, not 101", out.len()));
    }
    Ok(out)
}

/// The ab workload.
pub struct Ab;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "default_requests")]
    requests: u64,
    #[serde(default = "default_concurrency")]
    concurrency: Vec<u32>,
    #[serde(default = "default_paths")]
    paths: Vec<String>,
    #[serde(default)]
    keep_alive: bool,
}

fn default_requests() -> u64 {
    10000
}
fn default_concurrency() -> Vec<u32> {
    vec![1, 2, 4, 8]
}
fn default_paths() -> Vec<String> {
    vec!["/4k".into()]
}

fn parse(params: &serde_json::Value) -> Result<Params, String> {
    let p: Params = parse_params(params)?;
    if !(1..=10_000_000).contains(&p.requests)
        || p.concurrency.is_empty()
        || p.concurrency
            .iter()
            .any(|&c| c == 0 || u64::from(c) > p.requests)
    {
        return Err("need 1 <= concurrency <= requests <= 10000000".into());
    }
    if p.paths.is_empty()
        || p.paths
            .iter()
            .any(|x| !x.starts_with('/') || x.contains(' '))
    {
        return Err("paths must be absolute URL paths without spaces".into());
    }
    Ok(p)
}

impl Workload for Ab {
    fn name(&self) -> &'static str {
        "ab"
    }
    fn summary(&self) -> &'static str {
        "the real ApacheBench (when the root has it) against the built-in HTTP server"
    }
    fn check(&self, params: &serde_json::Value) -> Result<(), String> {
        parse(params).map(|_| ())
    }
    fn unavailable(&self, _: &serde_json::Value, _: &Context) -> Option<String> {
        locate("ab").err()
    }
    fn run(&self, params: &serde_json::Value, ctx: &Context) -> Result<Repetition, String> {
        let p = parse(params)?;
        let bin = locate("ab")?;
        let srv = server::Server::start("127.0.0.1:0", server::default_files())?;
        let mut samples = Vec::new();
        let mut version = String::new();
        let mut info = BTreeMap::new();
        for path in &p.paths {
            let label = path.trim_start_matches('/');
            for &c in &p.concurrency {
                let csv = ctx.workdir.join(format!("ab-{label}-{c}.csv"));
                let mut cmd = Command::new(&bin);
                cmd.args(["-n", &p.requests.to_string(), "-c", &c.to_string()]);
                if p.keep_alive {
                    cmd.arg("-k");
                }
                cmd.arg("-e").arg(&csv);
                cmd.arg(format!("http://{}{path}", srv.addr()));
                let out = run_tool(cmd, Duration::from_secs(3600), &[libc::SIGKILL])?;
                if out.code != Some(0) {
                    return Err(format!(
                        "ab failed (exit {:?}): {}",
                        out.code,
                        first_line(&out.stderr)
                    ));
                }
                let r = parse_report(&out.stdout)?;
                let pct = std::fs::read_to_string(&csv)
                    .map_err(|e| format!("read {}: {e}", csv.display()))
                    .and_then(|t| parse_percentile_csv(&t))?;
                let _ = std::fs::remove_file(&csv);
                version = r.version.clone().unwrap_or_default();
                let m = |name: &str| format!("{label}/c{c}/{name}");
                let params = [("path", path.as_str().into()), ("concurrency", c.into())];
                let mut push = |name: &str, unit: &str, higher: bool, v: f64| {
                    samples.push(Sample {
                        metric: m(name),
                        unit: unit.into(),
                        parameters: params
                            .iter()
                            .map(|(k, v): &(&str, serde_json::Value)| ((*k).to_owned(), v.clone()))
                            .collect(),
                        higher_is_better: higher,
                        value: v,
                    })
                };
                push("requests_per_s", "requests/s", true, r.requests_per_s);
                push("time_per_request_ms", "ms", false, r.time_per_request_ms);
                push(
                    "time_per_request_all_ms",
                    "ms",
                    false,
                    r.time_per_request_all_ms,
                );
                push("transfer_kib_per_s", "KiB/s", true, r.transfer_kib_per_s);
                push("failed", "requests", false, r.failed as f64);
                push("non_2xx", "responses", false, r.non_2xx as f64);
                for q in [50u32, 90, 99] {
                    let ms = pct.iter().find(|(p, _)| *p == q).map_or(0.0, |(_, ms)| *ms);
                    push(&format!("p{q}_ms"), "ms", false, ms);
                }
                if let Some(b) = r.breakdown {
                    info.insert(
                        m("failures"),
                        serde_json::json!({"connect": b[0],
                        "receive": b[1], "length": b[2], "exceptions": b[3]}),
                    );
                }
            }
        }
        info.insert(
            "server".into(),
            "built-in (imgbuild-init http server)".into(),
        );
        Ok(Repetition {
            samples,
            tool: Some(ToolVersion {
                name: "ab".into(),
                version,
            }),
            info,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = include_str!("../../../tests/fixtures/tools/ab_ok.txt");
    const FAIL: &str = include_str!("../../../tests/fixtures/tools/ab_fail.txt");
    const CSV: &str = include_str!("../../../tests/fixtures/tools/ab_e.csv");

    #[test]
    fn parses_captured_reports() {
        let r = parse_report(OK).unwrap();
        assert_eq!(r.version.as_deref(), Some("2.3"));
        assert_eq!((r.complete, r.failed, r.non_2xx), (500, 0, 0));
        assert_eq!(r.requests_per_s, 1191.15);
        assert_eq!(r.time_per_request_ms, 3.358);
        assert_eq!(r.time_per_request_all_ms, 0.840);
        assert_eq!(r.transfer_kib_per_s, 4999.59);
        assert_eq!(r.percentiles.get(&50), Some(&2.0));
        assert_eq!(r.percentiles.get(&100), Some(&17.0));
        let r = parse_report(FAIL).unwrap();
        assert_eq!((r.failed, r.non_2xx), (136, 32));
        assert_eq!(r.breakdown, Some([0, 0, 136, 0]));
    }

    #[test]
    fn parses_the_percentile_csv() {
        let rows = parse_percentile_csv(CSV).unwrap();
        assert_eq!(rows.len(), 101);
        assert_eq!(rows[0], (0, 0.403));
        assert!(rows.windows(2).all(|w| w[0].1 <= w[1].1));
    }

    #[test]
    fn truncated_and_garbled_reports_are_errors() {
        let cut = &OK[..OK.find("Requests per second").unwrap()];
        for bad in [
            "",
            cut,
            &OK.replace("1191.15", "many"),
            &FAIL.replace(
                "   (Connect: 0, Receive: 0, Length: 136, Exceptions: 0)\n",
                "",
            ),
            &FAIL.replace("Length: 136", "Length: x"),
        ] {
            assert!(parse_report(bad).is_err(), "{bad:?}");
        }
        assert!(parse_percentile_csv(&CSV[..200]).is_err());
        assert!(parse_percentile_csv("x,y\n").is_err());
        assert!(parse_percentile_csv(&CSV.replace("0,0.403", "0,abc")).is_err());
    }
}
