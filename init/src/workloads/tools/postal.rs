//! `postal`: drives the built-in SMTP sink with the real postal and parses its per-minute CSV.
//!
//! postal prints `time,messages,data(K),errors,connections,SSL connections` and then one line
//! per wall-clock minute; the first and last lines are partial minutes. It does not stop by
//! itself: after `seconds` it gets SIGINT three times (the first only stops sending) and
//! SIGKILL if still there. The rate comes from whole-minute lines when there are any
//! (`postal_messages_per_minute`); in every case the sink's own count over the elapsed time is
//! reported (`sink_messages_per_minute`), and `postal.log` (one line per message postal sent)
//! gives what postal believes it sent.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::super::smtp::sink::Sink;
use super::super::{parse_params, Context, Repetition, Sample, Workload};
use super::{locate, run_tool};
use crate::results::schema::ToolVersion;

/// One per-minute line.
#[derive(Debug, Clone, PartialEq)]
pub struct MinuteLine {
    /// `HH:MM`.
    pub time: String,
    /// Messages sent in that minute.
    pub messages: u64,
    /// KiB sent.
    pub data_kib: u64,
    /// Errors.
    pub errors: u64,
    /// Connections opened.
    pub connections: u64,
    /// SSL connections.
    pub ssl_connections: u64,
}

/// Parses postal's (or bhm's) CSV output: the header, then minute lines.
pub fn parse_minutes(text: &str) -> Result<Vec<MinuteLine>, String> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    match lines.next() {
        Some(h) if h.starts_with("time,messages,data(K),errors,connections") => {}
        other => {
            return Err(format!(
                "postal output starts with {other:?}, not its CSV header"
            ))
        }
    }
    let mut out = Vec::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < 6 {
            return Err(format!("short postal line {line:?}"));
        }
        let (h, m) = f[0]
            .split_once(':')
            .ok_or_else(|| format!("bad time in {line:?}"))?;
        if h.parse::<u8>().map_or(true, |h| h > 23) || m.parse::<u8>().map_or(true, |m| m > 59) {
            return Err(format!("bad time in {line:?}"));
        }
        let n = |i: usize| -> Result<u64, String> {
            f[i].trim()
                .parse()
                .map_err(|_| format!("bad field {i} in {line:?}"))
        };
        out.push(MinuteLine {
            time: f[0].to_owned(),
            messages: n(1)?,
            data_kib: n(2)?,
            errors: n(3)?,
            connections: n(4)?,
            ssl_connections: n(5)?,
        });
    }
    Ok(out)
}

/// Messages per minute from whole-minute lines (all but the first and last), if any.
pub fn whole_minute_rate(lines: &[MinuteLine]) -> Option<f64> {
    if lines.len() < 3 {
        return None;
    }
    let inner = &lines[1..lines.len() - 1];
    Some(inner.iter().map(|l| l.messages as f64).sum::<f64>() / inner.len() as f64)
}

/// The postal workload.
pub struct Postal;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "default_seconds")]
    seconds: f64,
    #[serde(default = "default_threads")]
    threads: u32,
    #[serde(default = "default_max")]
    max_kib: u32,
    #[serde(default)]
    min_kib: u32,
    #[serde(default = "default_per_conn")]
    per_connection: u32,
}

fn default_seconds() -> f64 {
    60.0
}
fn default_threads() -> u32 {
    2
}
fn default_max() -> u32 {
    10
}
fn default_per_conn() -> u32 {
    1
}

fn parse(params: &serde_json::Value) -> Result<Params, String> {
    let p: Params = parse_params(params)?;
    if !(p.seconds.is_finite() && p.seconds > 0.0 && p.seconds <= 86400.0) {
        return Err("seconds outside (0, 86400]".into());
    }
    if !(1..=256).contains(&p.threads) || p.per_connection == 0 || p.min_kib > p.max_kib {
        return Err("need 1 <= threads <= 256, per_connection >= 1, min_kib <= max_kib".into());
    }
    Ok(p)
}

impl Workload for Postal {
    fn name(&self) -> &'static str {
        "postal"
    }
    fn summary(&self) -> &'static str {
        "the real postal (when the root has it) against the built-in SMTP sink"
    }
    fn check(&self, params: &serde_json::Value) -> Result<(), String> {
        parse(params).map(|_| ())
    }
    fn unavailable(&self, _: &serde_json::Value, _: &Context) -> Option<String> {
        locate("postal").err()
    }
    fn run(&self, params: &serde_json::Value, ctx: &Context) -> Result<Repetition, String> {
        let p = parse(params)?;
        let bin = locate("postal")?;
        let sink = Sink::start("127.0.0.1:0")?;
        let users = ctx.workdir.join("postal-users");
        let list: String = (0..20).map(|i| format!("user{i}@example.org\n")).collect();
        std::fs::write(&users, list).map_err(|e| format!("write {}: {e}", users.display()))?;
        let log = ctx.workdir.join("postal.log");
        let _ = std::fs::remove_file(&log);
        let mut cmd = Command::new(&bin);
        cmd.args(["-t", &p.threads.to_string(), "-m", &p.max_kib.to_string()]);
        cmd.args([
            "-M",
            &p.min_kib.to_string(),
            "-c",
            &p.per_connection.to_string(),
        ]);
        cmd.args(["-p", &sink.addr().port().to_string(), "127.0.0.1"]);
        cmd.arg(&users);
        cmd.current_dir(&ctx.workdir);
        let start = Instant::now();
        // The first SIGINT stops sending; the third makes postal exit.
        let signals = [libc::SIGINT; 3];
        let out = run_tool(cmd, Duration::from_secs_f64(p.seconds), &signals)?;
        let elapsed = start.elapsed().as_secs_f64().min(p.seconds).max(1e-3);
        let accepted = sink.counters().messages.load(Ordering::Relaxed);
        let sink_errors = sink.counters().errors.load(Ordering::Relaxed);
        let minutes = parse_minutes(&out.stdout)?;
        let postal_errors: u64 = minutes.iter().map(|l| l.errors).sum();
        let sent = std::fs::read_to_string(&log)
            .map(|t| t.lines().count() as u64)
            .ok();
        let mut samples = vec![
            Sample::new(
                "sink_messages_per_minute",
                "messages/min",
                true,
                accepted as f64 * 60.0 / elapsed,
            ),
            Sample::new(
                "errors",
                "errors",
                false,
                (postal_errors + sink_errors) as f64,
            ),
        ];
        if let Some(rate) = whole_minute_rate(&minutes) {
            samples.push(Sample::new(
                "postal_messages_per_minute",
                "messages/min",
                true,
                rate,
            ));
        }
        if accepted == 0 {
            return Err(format!(
                "postal delivered nothing in {elapsed:.1} s: {}",
                super::first_line(&out.stderr)
            ));
        }
        let mut info = BTreeMap::from([
            ("minute_lines".into(), minutes.len().into()),
            ("sink_accepted".into(), accepted.into()),
            ("seconds".into(), elapsed.into()),
        ]);
        if let Some(s) = sent {
            info.insert("postal_log_messages".into(), s.into());
        }
        Ok(Repetition {
            samples,
            tool: Some(ToolVersion {
                name: "postal".into(),
                version: "unknown (postal has no version flag)".into(),
            }),
            info,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: &str = include_str!("../../../tests/fixtures/tools/postal_bhm.csv");

    #[test]
    fn parses_captured_minutes() {
        let m = parse_minutes(REAL).unwrap();
        assert!(m.len() >= 2);
        assert_eq!(m[0].time, "22:27");
        assert_eq!(
            (m[0].messages, m[0].data_kib, m[0].errors, m[0].connections),
            (1465, 3533, 0, 712)
        );
        assert_eq!(whole_minute_rate(&m[..2]), None);
        let three = [m[0].clone(), m[0].clone(), m[1].clone()];
        assert_eq!(whole_minute_rate(&three), Some(1465.0));
        assert!(
            parse_minutes("time,messages,data(K),errors,connections,SSL connections\n")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn garbled_lines_are_errors() {
        for bad in [
            "",
            "11:07,2511,13706,0,2513,0",
            "time,messages,data(K),errors,connections,SSL connections\n11:07,2511",
            "time,messages,data(K),errors,connections,SSL connections\n25:07,1,1,0,1,0",
            "time,messages,data(K),errors,connections,SSL connections\n11:07,x,1,0,1,0",
        ] {
            assert!(parse_minutes(bad).is_err(), "{bad:?}");
        }
    }
}
