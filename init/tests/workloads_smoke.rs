//! End to end: the built `imgbuild-init --host --profile smoke` runs every built-in workload
//! (unixbench with the execl re-exec of the real binary, disk, crypto, http, smtp), and the
//! results file read back has each of them `ok` with positive figures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Instant;

use imgbuild_init::results::read_results_file;
use imgbuild_init::results::schema::{RunStatus, Status};

const BIN: &str = env!("CARGO_BIN_EXE_imgbuild-init");
const BUILT_IN: [&str; 5] = ["unixbench", "disk", "crypto", "http", "smtp"];

/// Metrics that count failures or errors are legitimately 0; everything else must be > 0.
fn may_be_zero(name: &str) -> bool {
    ["failed", "non_2xx", "errors"]
        .iter()
        .any(|s| name.ends_with(s))
}

#[test]
fn smoke_runs_every_built_in_workload() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results.bin");
    let work = dir.path().join("work");
    let t = Instant::now();
    let out = Command::new(BIN)
        .args(["--host", "--profile", "smoke", "--results"])
        .arg(&results)
        .arg("--workdir")
        .arg(&work)
        .output()
        .unwrap();
    let elapsed = t.elapsed();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = read_results_file(&results).unwrap();
    assert!(
        run.complete && run.problems.is_empty(),
        "{:?}",
        run.problems
    );
    assert_eq!(run.run_end().unwrap().status, RunStatus::Complete);
    let workloads: Vec<_> = run.workloads().collect();
    for name in BUILT_IN {
        let w = workloads
            .iter()
            .find(|w| w.workload == name)
            .unwrap_or_else(|| panic!("{name} missing from the smoke results"));
        assert_eq!(w.status, Status::Ok, "{name}: {:?}", w.reason);
        assert!(!w.metrics.is_empty(), "{name}");
        for m in &w.metrics {
            assert_eq!(m.values.len(), w.repetitions as usize, "{name} {}", m.name);
            assert!(
                m.values.iter().all(|v| v.is_finite() && *v >= 0.0),
                "{}",
                m.name
            );
            if !may_be_zero(&m.name) {
                assert!(m.median > 0.0, "{name} {} = {:?}", m.name, m.values);
            } else {
                assert_eq!(m.median, 0.0, "{name} {} = {:?}", m.name, m.values);
            }
        }
        eprintln!("{name}: {:.2} s, {} metrics", w.duration_s, w.metrics.len());
    }
    // UnixBench: every index test, 1 and N copies, with the execl chain of the real binary.
    let ub = workloads
        .iter()
        .find(|w| w.workload == "unixbench")
        .unwrap();
    let has = |n: &str| ub.metrics.iter().any(|m| m.name == n);
    for key in [
        "dhry2reg",
        "whetstone-double",
        "execl",
        "fstime",
        "fsbuffer",
        "fsdisk",
        "pipe",
        "context1",
        "spawn",
        "shell1",
        "shell8",
        "syscall",
    ] {
        assert!(has(&format!("single/{key}")), "single/{key}");
        assert!(has(&format!("single/{key}/index")), "single/{key}/index");
        assert!(has(&format!("single/{key}/passes_kept")));
    }
    assert!(has("single/index"));
    let cpus = run.run_start().unwrap().platform.usable_cpus;
    assert_eq!(has("multi/index"), cpus > 1);
    assert_eq!(ub.info["index_kind"], "System Benchmarks Index Score");
    assert!(ub.info["semantics"].as_str().unwrap().contains("6.0"));
    // Disk: the page cache was kept out.
    let disk = workloads.iter().find(|w| w.workload == "disk").unwrap();
    assert!(disk.info.contains_key("io_mode"));
    // Nothing left behind in the work directory.
    assert_eq!(std::fs::read_dir(&work).map(|d| d.count()).unwrap_or(0), 0);
    eprintln!("smoke profile took {elapsed:?}");
}
