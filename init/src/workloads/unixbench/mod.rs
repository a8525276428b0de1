//! `unixbench`: the tests of UnixBench 5.1's default index, built in, scored like `Run`.
//!
//! One repetition is one `Run`: for each copy mode (1 copy, then N = usable CPUs copies when
//! N > 1) every test runs its passes (10 for the 10-second tests, 3 for the longer ones), each
//! pass preceded by Run's `sync; sleep 1; sync; sleep 2` (scaled by `settle_s`). Scores, indexes
//! and the system index follow [`score`]. Semantics are UnixBench 6.0's where it differs from
//! 5.1.3 (raw getpid, dup of a pipe, PID-suffixed fstime files, no 16-copy cap); the result's
//! `info` says so. Params and metric names are documented in `init/WORKLOADS.md`.

mod copies;
pub mod dhry;
mod fstime;
pub mod score;
mod shell;
pub mod system;
pub mod whetstone;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{parse_params, Context, Repetition, Sample, Workload};
use score::Pass;

/// The unixbench workload.
pub struct UnixBench;

/// Run's `$index` tests, in its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Test {
    /// Dhrystone 2 using register variables.
    #[serde(rename = "dhry2reg")]
    Dhry2reg,
    /// Double-Precision Whetstone.
    #[serde(rename = "whetstone-double")]
    Whetstone,
    /// Execl Throughput.
    #[serde(rename = "execl")]
    Execl,
    /// File Copy 1024 bufsize 2000 maxblocks.
    #[serde(rename = "fstime")]
    Fstime,
    /// File Copy 256 bufsize 500 maxblocks.
    #[serde(rename = "fsbuffer")]
    Fsbuffer,
    /// File Copy 4096 bufsize 8000 maxblocks.
    #[serde(rename = "fsdisk")]
    Fsdisk,
    /// Pipe Throughput.
    #[serde(rename = "pipe")]
    Pipe,
    /// Pipe-based Context Switching.
    #[serde(rename = "context1")]
    Context1,
    /// Process Creation.
    #[serde(rename = "spawn")]
    Spawn,
    /// Shell Scripts (1 concurrent).
    #[serde(rename = "shell1")]
    Shell1,
    /// Shell Scripts (8 concurrent).
    #[serde(rename = "shell8")]
    Shell8,
    /// System Call Overhead.
    #[serde(rename = "syscall")]
    Syscall,
}

/// How long a test runs and how many passes it gets in Run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Length {
    /// 10 s, `long` passes (10).
    Long,
    /// 30 s, `short` passes (3).
    Short,
    /// 60 s, `short` passes.
    Shell,
}

impl Test {
    /// All index tests in Run's order.
    pub const ALL: [Test; 12] = [
        Test::Dhry2reg,
        Test::Whetstone,
        Test::Execl,
        Test::Fstime,
        Test::Fsbuffer,
        Test::Fsdisk,
        Test::Pipe,
        Test::Context1,
        Test::Spawn,
        Test::Shell1,
        Test::Shell8,
        Test::Syscall,
    ];

    /// Run's key.
    pub fn key(self) -> &'static str {
        match self {
            Test::Dhry2reg => "dhry2reg",
            Test::Whetstone => "whetstone-double",
            Test::Execl => "execl",
            Test::Fstime => "fstime",
            Test::Fsbuffer => "fsbuffer",
            Test::Fsdisk => "fsdisk",
            Test::Pipe => "pipe",
            Test::Context1 => "context1",
            Test::Spawn => "spawn",
            Test::Shell1 => "shell1",
            Test::Shell8 => "shell8",
            Test::Syscall => "syscall",
        }
    }

    /// Run's log message (the report's test name).
    pub fn title(self) -> &'static str {
        match self {
            Test::Dhry2reg => "Dhrystone 2 using register variables",
            Test::Whetstone => "Double-Precision Whetstone",
            Test::Execl => "Execl Throughput",
            Test::Fstime => "File Copy 1024 bufsize 2000 maxblocks",
            Test::Fsbuffer => "File Copy 256 bufsize 500 maxblocks",
            Test::Fsdisk => "File Copy 4096 bufsize 8000 maxblocks",
            Test::Pipe => "Pipe Throughput",
            Test::Context1 => "Pipe-based Context Switching",
            Test::Spawn => "Process Creation",
            Test::Shell1 => "Shell Scripts (1 concurrent)",
            Test::Shell8 => "Shell Scripts (8 concurrent)",
            Test::Syscall => "System Call Overhead",
        }
    }

    /// Unit of the score.
    pub fn unit(self) -> &'static str {
        match self {
            Test::Whetstone => "MWIPS",
            Test::Fstime | Test::Fsbuffer | Test::Fsdisk => "KBps",
            Test::Shell1 | Test::Shell8 => "lpm",
            _ => "lps",
        }
    }

    /// The `pgms/index.base` score (George).
    pub fn baseline(self) -> f64 {
        match self {
            Test::Dhry2reg => 116700.0,
            Test::Whetstone => 55.0,
            Test::Execl => 43.0,
            Test::Fstime => 3960.0,
            Test::Fsbuffer => 1655.0,
            Test::Fsdisk => 5800.0,
            Test::Pipe => 12440.0,
            Test::Context1 => 4000.0,
            Test::Spawn => 126.0,
            Test::Shell1 => 42.4,
            Test::Shell8 => 6.0,
            Test::Syscall => 15000.0,
        }
    }

    fn length(self) -> Length {
        match self {
            Test::Execl | Test::Fstime | Test::Fsbuffer | Test::Fsdisk | Test::Spawn => {
                Length::Short
            }
            Test::Shell1 | Test::Shell8 => Length::Shell,
            _ => Length::Long,
        }
    }
}

/// Which copy counts to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Copies {
    /// One copy.
    Single,
    /// One copy per usable CPU (only when there are several, as Run).
    All,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "all_tests")]
    tests: Vec<Test>,
    #[serde(default = "both_copies")]
    copies: Vec<Copies>,
    #[serde(default = "ten")]
    long_seconds: f64,
    #[serde(default = "thirty")]
    short_seconds: f64,
    #[serde(default = "sixty")]
    shell_seconds: f64,
    #[serde(default = "ten_passes")]
    long_passes: u32,
    #[serde(default = "three_passes")]
    short_passes: u32,
    #[serde(default = "three")]
    settle_s: f64,
    #[serde(default = "eleven")]
    fstime_settle_s: f64,
    #[serde(default = "yes")]
    pin: bool,
    #[serde(default)]
    drop_caches: bool,
}

fn all_tests() -> Vec<Test> {
    Test::ALL.to_vec()
}
fn both_copies() -> Vec<Copies> {
    vec![Copies::Single, Copies::All]
}
fn ten() -> f64 {
    10.0
}
fn thirty() -> f64 {
    30.0
}
fn sixty() -> f64 {
    60.0
}
fn ten_passes() -> u32 {
    10
}
fn three_passes() -> u32 {
    3
}
fn three() -> f64 {
    3.0
}
fn eleven() -> f64 {
    11.0
}
fn yes() -> bool {
    true
}

fn parse(params: &serde_json::Value) -> Result<Params, String> {
    let p: Params = parse_params(params)?;
    if p.tests.is_empty() || p.copies.is_empty() {
        return Err("tests and copies must not be empty".into());
    }
    for (name, v) in [
        ("long_seconds", p.long_seconds),
        ("short_seconds", p.short_seconds),
        ("shell_seconds", p.shell_seconds),
    ] {
        if !(v.is_finite() && v > 0.0 && v <= 3600.0) {
            return Err(format!("{name} {v} outside (0, 3600]"));
        }
    }
    for (name, v) in [
        ("settle_s", p.settle_s),
        ("fstime_settle_s", p.fstime_settle_s),
    ] {
        if !(v.is_finite() && (0.0..=60.0).contains(&v)) {
            return Err(format!("{name} {v} outside [0, 60]"));
        }
    }
    for (name, v) in [
        ("long_passes", p.long_passes),
        ("short_passes", p.short_passes),
    ] {
        if !(1..=100).contains(&v) {
            return Err(format!("{name} {v} outside 1..=100"));
        }
    }
    Ok(p)
}

/// The helper processes the init binary can be re-executed as ([`super::HELPER_ARG`]).
pub fn helper_main(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some(system::EXECL_HELPER) => system::execl_link(&args[1..]),
        other => {
            eprintln!("imgbuild-init: unknown workload helper {other:?}");
            2
        }
    }
}

/// Everything a pass of one copy needs.
struct PassEnv<'a> {
    p: &'a Params,
    workdir: &'a Path,
    exe: &'a Path,
}

fn seconds(p: &Params, test: Test) -> Duration {
    Duration::from_secs_f64(match test.length() {
        Length::Long => p.long_seconds,
        Length::Short => p.short_seconds,
        Length::Shell => p.shell_seconds,
    })
}

fn run_one(test: Test, copy: usize, env: &PassEnv) -> Result<Pass, String> {
    let d = seconds(env.p, test);
    let fs = |bufsize, max_blocks| {
        fstime::file_copy(
            env.workdir,
            fstime::FsParams {
                bufsize,
                max_blocks,
                duration: d,
                settle_s: env.p.fstime_settle_s,
            },
        )
        .map(|(pass, _, _)| pass)
    };
    let shell = |n| {
        let dir = env.workdir.join(format!("shell-{copy}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let r = shell::looper(&dir, n, d);
        let _ = std::fs::remove_dir_all(&dir);
        r
    };
    match test {
        Test::Dhry2reg => {
            let (loops, secs) = dhry::run_for(d);
            Ok(Pass {
                count: loops as f64,
                time_s: secs,
                timebase: 1.0,
            })
        }
        Test::Whetstone => {
            let w = whetstone::run_for(d.as_secs_f64());
            if w.check == 0.0 {
                return Err("whetstone: wrong answer (check is 0)".into());
            }
            Ok(Pass {
                count: w.mwips,
                time_s: w.time_s,
                timebase: 0.0,
            })
        }
        Test::Execl => system::execl(d, env.exe),
        Test::Fstime => fs(1024, 2000),
        Test::Fsbuffer => fs(256, 500),
        Test::Fsdisk => fs(4096, 8000),
        Test::Pipe => system::pipe_throughput(d),
        Test::Context1 => system::context_switch(d),
        Test::Spawn => system::spawn(d),
        Test::Shell1 => shell(1),
        Test::Shell8 => shell(8),
        Test::Syscall => system::syscall(d),
    }
}

/// Run's pre-pass ritual: `sync; sleep 1; sync; sleep 2`, scaled to `settle_s`, and optionally
/// dropping the page cache (root only); returns whether the drop worked.
fn settle(p: &Params) -> bool {
    // settle_s 0 (smoke runs) skips the ritual, sync included.
    if p.settle_s == 0.0 && !p.drop_caches {
        return false;
    }
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    std::thread::sleep(Duration::from_secs_f64(p.settle_s / 3.0));
    // SAFETY: as above.
    unsafe { libc::sync() };
    let dropped = p.drop_caches && std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok();
    std::thread::sleep(Duration::from_secs_f64(p.settle_s * 2.0 / 3.0));
    dropped
}

/// The scores of one copy mode.
struct ModeResult {
    samples: Vec<Sample>,
    rates: BTreeMap<String, serde_json::Value>,
    partial: bool,
}

fn sample(metric: String, unit: &str, value: f64, params: &[(&str, serde_json::Value)]) -> Sample {
    Sample::new(metric, unit, true, value).with_parameters(params)
}

fn run_mode(
    mode: &str,
    copies: usize,
    pin: &[usize],
    tests: &[(Test, Option<String>)],
    env: &PassEnv,
    drops: &mut bool,
) -> Result<ModeResult, String> {
    let mut out = ModeResult {
        samples: Vec::new(),
        rates: BTreeMap::new(),
        partial: false,
    };
    let mut for_index = Vec::new();
    for (test, skip) in tests {
        let test = *test;
        if skip.is_some() {
            out.partial = true;
            continue;
        }
        let passes = match test.length() {
            Length::Long => env.p.long_passes,
            _ => env.p.short_passes,
        };
        let mut merged = Vec::new();
        for _ in 0..passes {
            *drops |= settle(env.p);
            let per_copy = copies::run_copies(copies, pin, &|copy| run_one(test, copy, env))
                .map_err(|e| format!("{} ({mode}): {e}", test.key()))?;
            merged.push(score::merge_copies(&per_copy)?);
        }
        let s = score::combine_passes(&merged).map_err(|e| format!("{}: {e}", test.key()))?;
        let idx = score::index(s.score, test.baseline());
        for_index.push((s.score, test.baseline()));
        let params = [
            ("test", test.title().into()),
            ("copies", copies.into()),
            ("baseline", test.baseline().into()),
        ];
        let key = test.key();
        out.samples.push(sample(
            format!("{mode}/{key}"),
            test.unit(),
            s.score,
            &params,
        ));
        out.samples
            .push(sample(format!("{mode}/{key}/index"), "index", idx, &params));
        out.samples.push(sample(
            format!("{mode}/{key}/passes_kept"),
            "passes",
            s.kept as f64,
            &params,
        ));
        out.rates.insert(
            key.to_owned(),
            merged.iter().map(|p| p.rate()).collect::<Vec<_>>().into(),
        );
    }
    if let Some(system) = score::system_index(&for_index) {
        out.samples.push(sample(
            format!("{mode}/index"),
            "index",
            system,
            &[("copies", copies.into()), ("tests", for_index.len().into())],
        ));
    }
    Ok(out)
}

impl Workload for UnixBench {
    fn name(&self) -> &'static str {
        "unixbench"
    }

    fn summary(&self) -> &'static str {
        "UnixBench 5.1 index tests built in (dhrystone, whetstone, execl, file copy, pipe, \
         context switch, spawn, shell, syscall), scored and indexed like Run"
    }

    fn check(&self, params: &serde_json::Value) -> Result<(), String> {
        parse(params).map(|_| ())
    }

    fn run(&self, params: &serde_json::Value, ctx: &Context) -> Result<Repetition, String> {
        let p = parse(params)?;
        let exe = PathBuf::from("/proc/self/exe");
        let env = PassEnv {
            p: &p,
            workdir: &ctx.workdir,
            exe: &exe,
        };
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
        let shell_missing = shell::missing_tools(&path);
        let mut tests: Vec<(Test, Option<String>)> = Vec::new();
        for &t in &Test::ALL {
            if !p.tests.contains(&t) {
                continue;
            }
            let skip = match t {
                Test::Shell1 | Test::Shell8 => shell_missing.clone(),
                _ => None,
            };
            tests.push((t, skip));
        }
        let allowed = copies::allowed_cpus();
        let n = ctx.online_cpus.max(1);
        let mut info: BTreeMap<String, serde_json::Value> = BTreeMap::new();
        let mut samples = Vec::new();
        let mut drops = false;
        let mut partial = tests.len() < Test::ALL.len();
        for &mode in &p.copies {
            let (name, count) = match mode {
                Copies::Single => ("single", 1),
                Copies::All if n > 1 => ("multi", n),
                Copies::All => {
                    info.insert(
                        "multi".into(),
                        "not run: one usable CPU (Run runs N copies only when N > 1)".into(),
                    );
                    continue;
                }
            };
            let pin: Vec<usize> = if p.pin && !allowed.is_empty() {
                (0..count).map(|i| allowed[i % allowed.len()]).collect()
            } else {
                Vec::new()
            };
            let r = run_mode(name, count, &pin, &tests, &env, &mut drops)?;
            samples.extend(r.samples);
            partial |= r.partial;
            info.insert(format!("{name}_pass_rates"), serde_json::json!(r.rates));
            info.insert(format!("{name}_copies"), count.into());
            info.insert(format!("{name}_pinned_cpus"), serde_json::json!(pin));
        }
        let skipped: BTreeMap<String, String> = tests
            .iter()
            .filter_map(|(t, s)| s.clone().map(|s| (t.key().to_owned(), s)))
            .collect();
        info.insert("skipped_tests".into(), serde_json::json!(skipped));
        info.insert(
            "index_kind".into(),
            if partial {
                "Partial Index"
            } else {
                "System Benchmarks Index Score"
            }
            .into(),
        );
        info.insert(
            "semantics".into(),
            "UnixBench 6.0 where it differs from 5.1.3: syscall dups a pipe fd and calls raw \
             SYS_getpid, fstime files are PID-suffixed, no 16-copy cap; index.base baselines \
             (George); passes sorted by COUNT, lowest floor(n/3) dropped, geometric mean; \
             pass times measured inside the test (the TIME line), not around the process"
                .into(),
        );
        info.insert(
            "dhrystone".into(),
            "Dhrystone 2.1 in Rust (rustc), dhry_2.c procedures not inlined, state through \
             black_box every loop"
                .into(),
        );
        info.insert("page_cache_dropped".into(), drops.into());
        info.insert("pinned".into(), p.pin.into());
        Ok(Repetition {
            samples,
            tool: None,
            info,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(dir: &Path, cpus: usize) -> Context {
        Context {
            workdir: dir.to_path_buf(),
            online_cpus: cpus,
            repetition: 0,
            repetitions: 1,
        }
    }

    #[test]
    fn a_tiny_run_scores_and_indexes_every_test_but_execl() {
        // The test harness is not the init binary, so execl is left to the integration tests.
        let dir = tempfile::tempdir().unwrap();
        let params = serde_json::json!({
            "tests": ["dhry2reg", "whetstone-double", "fstime", "fsbuffer", "fsdisk", "pipe",
                      "context1", "spawn", "shell1", "shell8", "syscall"],
            "long_seconds": 0.01, "short_seconds": 0.01, "shell_seconds": 0.01,
            "long_passes": 3, "short_passes": 1, "settle_s": 0, "fstime_settle_s": 0});
        let rep = UnixBench.run(&params, &ctx(dir.path(), 2)).unwrap();
        let get = |name: &str| {
            rep.samples
                .iter()
                .find(|s| s.metric == name)
                .unwrap_or_else(|| panic!("no {name}: {:?}", rep.samples))
                .value
        };
        for mode in ["single", "multi"] {
            for t in Test::ALL.iter().filter(|t| **t != Test::Execl) {
                let score = get(&format!("{mode}/{}", t.key()));
                let idx = get(&format!("{mode}/{}/index", t.key()));
                assert!(score > 0.0, "{mode} {t:?}");
                assert!((idx - 10.0 * score / t.baseline()).abs() < 1e-9 * idx.max(1.0));
            }
            assert_eq!(get(&format!("{mode}/dhry2reg/passes_kept")), 2.0);
            assert_eq!(get(&format!("{mode}/spawn/passes_kept")), 1.0);
            assert!(get(&format!("{mode}/index")) > 0.0);
        }
        assert_eq!(rep.info["index_kind"], "Partial Index");
        assert_eq!(rep.info["multi_copies"], 2);
    }

    #[test]
    fn one_cpu_runs_no_multi_copy_pass() {
        let dir = tempfile::tempdir().unwrap();
        let params = serde_json::json!({"tests": ["syscall"], "long_seconds": 0.01,
            "long_passes": 1, "settle_s": 0});
        let rep = UnixBench.run(&params, &ctx(dir.path(), 1)).unwrap();
        assert!(rep.samples.iter().all(|s| s.metric.starts_with("single/")));
        assert!(rep.info.contains_key("multi"));
    }

    #[test]
    fn params_are_checked() {
        for bad in [
            serde_json::json!({"tests": []}),
            serde_json::json!({"tests": ["nope"]}),
            serde_json::json!({"long_seconds": 0}),
            serde_json::json!({"long_passes": 0}),
            serde_json::json!({"settle_s": -1}),
            serde_json::json!({"copies": ["some"]}),
        ] {
            assert!(UnixBench.check(&bad).is_err(), "{bad}");
        }
        assert!(UnixBench.check(&serde_json::json!({})).is_ok());
    }

    #[test]
    fn baselines_are_index_base() {
        let sum: f64 = Test::ALL.iter().map(|t| t.baseline()).sum();
        assert!((sum - 159_827.4).abs() < 1e-6, "{sum}");
    }
}
