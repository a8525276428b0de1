//! `openssl-speed`: runs the real `openssl speed -mr` and parses its machine-readable lines.
//!
//! `+H:s1:s2:…` lists the block sizes; `+F:idx:ALG:v1:v2:…` gives bytes per second per size
//! (count × size / time); `+DT:ALG:secs:size` and `+R:count:ALG:time` are the per-size runs.
//! The `+F` index differs between versions, so results are matched by algorithm name
//! (case-insensitively: `-evp aes-128-cbc` prints `AES-128-CBC`). Time is user CPU time unless
//! `elapsed` is set (`-elapsed`), which the result's `info` records.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;

use super::super::{parse_params, Context, Repetition, Sample, Workload};
use super::{first_line, locate, run_tool};
use crate::results::schema::ToolVersion;

/// The parsed `-mr` output.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Speed {
    /// Block sizes of the `+H` line.
    pub sizes: Vec<u64>,
    /// `+F` results: algorithm → bytes/s per size (same order as `sizes`).
    pub rates: BTreeMap<String, Vec<f64>>,
    /// `+R` runs: (algorithm, count, time in s), in order.
    pub runs: Vec<(String, u64, f64)>,
}

impl Speed {
    /// Bytes per second of `alg` (any case) at `size`.
    pub fn rate(&self, alg: &str, size: u64) -> Option<f64> {
        let i = self.sizes.iter().position(|&s| s == size)?;
        self.rates
            .iter()
            .find(|(a, _)| a.eq_ignore_ascii_case(alg))
            .and_then(|(_, v)| v.get(i).copied())
    }
}

fn num<T: std::str::FromStr>(text: &str, what: &str, line: &str) -> Result<T, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("bad {what} {text:?} in {line:?}"))
}

/// Parses the `+H`, `+F` and `+R` lines of `openssl speed -mr` (stdout and stderr together).
pub fn parse_mr(output: &str) -> Result<Speed, String> {
    let mut s = Speed::default();
    for line in output.lines().map(str::trim) {
        let parts: Vec<&str> = line.split(':').collect();
        match parts[0] {
            "+H" => {
                s.sizes = parts[1..]
                    .iter()
                    .map(|p| num::<u64>(p, "block size", line))
                    .collect::<Result<_, _>>()?;
            }
            "+F" => {
                if parts.len() < 4 {
                    return Err(format!("short +F line {line:?}"));
                }
                let values: Vec<f64> = parts[3..]
                    .iter()
                    .map(|p| num::<f64>(p, "rate", line))
                    .collect::<Result<_, _>>()?;
                if values.iter().any(|v| !v.is_finite() || *v < 0.0) {
                    return Err(format!("impossible rate in {line:?}"));
                }
                s.rates.insert(parts[2].to_owned(), values);
            }
            "+R" if parts.len() == 4 => {
                s.runs.push((
                    parts[2].to_owned(),
                    num(parts[1], "count", line)?,
                    num(parts[3], "time", line)?,
                ));
            }
            "+R" => return Err(format!("bad +R line {line:?}")),
            _ => {}
        }
    }
    if s.sizes.is_empty() || s.rates.is_empty() {
        return Err("no +H or +F line in the openssl speed -mr output".into());
    }
    if let Some((alg, v)) = s.rates.iter().find(|(_, v)| v.len() != s.sizes.len()) {
        return Err(format!(
            "+F line of {alg} has {} values for {} sizes",
            v.len(),
            s.sizes.len()
        ));
    }
    Ok(s)
}

/// The openssl-speed workload.
pub struct OpensslSpeed;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "default_algs")]
    algorithms: Vec<String>,
    #[serde(default = "yes")]
    evp: bool,
    #[serde(default = "three")]
    seconds: u32,
    #[serde(default)]
    bytes: Option<u64>,
    #[serde(default)]
    elapsed: bool,
}

fn default_algs() -> Vec<String> {
    vec!["sha256".into(), "aes-128-cbc".into()]
}
fn yes() -> bool {
    true
}
fn three() -> u32 {
    3
}

fn parse(params: &serde_json::Value) -> Result<Params, String> {
    let p: Params = parse_params(params)?;
    if p.algorithms.is_empty()
        || p.algorithms
            .iter()
            .any(|a| a.is_empty() || !a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    {
        return Err("algorithms must be non-empty names of letters, digits and '-'".into());
    }
    if !(1..=600).contains(&p.seconds) {
        return Err(format!("seconds {} outside 1..=600", p.seconds));
    }
    if p.bytes.is_some_and(|b| b == 0 || b > 1 << 26) {
        return Err("bytes outside 1..=64 MiB".into());
    }
    Ok(p)
}

impl Workload for OpensslSpeed {
    fn name(&self) -> &'static str {
        "openssl-speed"
    }
    fn summary(&self) -> &'static str {
        "the real `openssl speed -mr` (when the root has it): bytes/s per algorithm and size"
    }
    fn check(&self, params: &serde_json::Value) -> Result<(), String> {
        parse(params).map(|_| ())
    }
    fn unavailable(&self, _: &serde_json::Value, _: &Context) -> Option<String> {
        locate("openssl").err()
    }
    fn run(&self, params: &serde_json::Value, _ctx: &Context) -> Result<Repetition, String> {
        let p = parse(params)?;
        let bin = locate("openssl")?;
        let version = run_tool(
            {
                let mut c = Command::new(&bin);
                c.arg("version");
                c
            },
            Duration::from_secs(10),
            &[libc::SIGKILL],
        )
        .map(|o| first_line(&o.stdout))
        .unwrap_or_default();
        let mut samples = Vec::new();
        for alg in &p.algorithms {
            let mut cmd = Command::new(&bin);
            cmd.args(["speed", "-mr", "-seconds", &p.seconds.to_string()]);
            if let Some(b) = p.bytes {
                cmd.args(["-bytes", &b.to_string()]);
            }
            if p.elapsed {
                cmd.arg("-elapsed");
            }
            if p.evp {
                cmd.arg("-evp");
            }
            cmd.arg(alg);
            let budget = Duration::from_secs(u64::from(p.seconds) * 8 + 30);
            let out = run_tool(cmd, budget, &[libc::SIGKILL])?;
            if out.code != Some(0) {
                return Err(format!(
                    "openssl speed {alg} failed (exit {:?}): {}",
                    out.code,
                    first_line(&out.stderr)
                ));
            }
            let speed = parse_mr(&format!("{}\n{}", out.stdout, out.stderr))?;
            for &size in &speed.sizes {
                let rate = speed
                    .rate(alg, size)
                    .ok_or_else(|| format!("no +F result for {alg} in the openssl output"))?;
                samples.push(Sample {
                    metric: format!("{}/{size}", alg.to_ascii_lowercase()),
                    unit: "bytes/s".into(),
                    parameters: BTreeMap::from([
                        ("algorithm".into(), alg.as_str().into()),
                        ("block_size".into(), size.into()),
                    ]),
                    higher_is_better: true,
                    value: rate,
                });
            }
        }
        Ok(Repetition {
            samples,
            tool: Some(ToolVersion {
                name: "openssl".into(),
                version,
            }),
            info: BTreeMap::from([
                (
                    "timing".into(),
                    if p.elapsed {
                        "wall time (-elapsed)"
                    } else {
                        "user CPU time (openssl's default)"
                    }
                    .into(),
                ),
                ("evp".into(), p.evp.into()),
            ]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AES: &str = include_str!("../../../tests/fixtures/tools/openssl_evp_aes128cbc.txt");
    const SHA: &str = include_str!("../../../tests/fixtures/tools/openssl_sha256.txt");
    const ONE: &str = include_str!("../../../tests/fixtures/tools/openssl_sha256_8192.txt");

    #[test]
    fn parses_captured_runs_by_name() {
        let s = parse_mr(AES).unwrap();
        assert_eq!(s.sizes, [16, 64, 256, 1024, 8192, 16384]);
        assert_eq!(s.rate("aes-128-cbc", 16), Some(1405599477.55));
        assert_eq!(s.runs.len(), 6);
        // +F is count * size / time: the first +R reproduces it.
        let (_, count, time) = &s.runs[0];
        assert!((*count as f64 * 16.0 / time - 1405599477.55).abs() < 1e3);
        let s = parse_mr(SHA).unwrap();
        assert!(s.rate("sha256", 8192).unwrap() > 1e6);
        let s = parse_mr(ONE).unwrap();
        assert_eq!(s.sizes, [8192]);
        assert_eq!(s.rate("SHA256", 8192), Some(1741468734.69));
        assert_eq!(s.rate("sha256", 16), None);
    }

    #[test]
    fn truncated_and_garbled_output_is_an_error() {
        let cut = &AES[..AES.find("+F").unwrap() + 20];
        for bad in [
            "",
            "garbage\nmore",
            cut,
            &AES.replace("1405599477.55", "fast"),
            &AES.replace("+H:16:64", "+H:16:x"),
            "+H:16\n+F:1:x:1:2\n",
            "+H:16\n+F:1:x:-5\n",
            "+H:16\n+F:1:x:1\n+R:1:x\n",
        ] {
            assert!(parse_mr(bad).is_err(), "{bad:?}");
        }
    }
}
