//! End-to-end tests of the built `imgbuild-init` binary in host mode: the smoke profile, fault
//! workloads, a killed run, the panic path, and the digest check against an image root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use imgbuild_init::results::read_results_file;
use imgbuild_init::results::schema::{DigestStatus, Mode, RunStatus, Status};

const BIN: &str = env!("CARGO_BIN_EXE_imgbuild-init");

fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn write_profile(dir: &Path, json: &str) -> PathBuf {
    let path = dir.join("profile.json");
    std::fs::write(&path, json).unwrap();
    path
}

#[test]
fn smoke_profile_measures_crypto() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results.bin");
    let t = Instant::now();
    let out = run(
        &[
            "--host",
            "--profile",
            "smoke",
            "--results",
            path_str(&results),
        ],
        &[],
    );
    let elapsed = t.elapsed();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("imgbuild: phase run_start at "), "{stderr}");

    let run = read_results_file(&results).unwrap();
    assert!(run.complete, "{:?}", run.problems);
    assert!(run.problems.is_empty(), "{:?}", run.problems);
    let start = run.run_start().unwrap();
    assert_eq!(start.mode, Mode::Host);
    assert_eq!(start.profile.name, "smoke");
    assert_eq!(start.digest_check.status, DigestStatus::Skipped);
    assert!(start.platform.online_cpus >= 1);
    assert!(start.phases.iter().any(|p| p.name == "run_start"));
    let workloads: Vec<_> = run.workloads().collect();
    // Every built-in workload is in the smoke profile (tests/workloads_smoke.rs checks them
    // all); this test looks at crypto.
    assert_eq!(workloads.len(), start.profile.workloads.len());
    let crypto = workloads
        .iter()
        .find(|w| w.workload == "crypto")
        .expect("crypto in the smoke profile");
    assert_eq!(crypto.status, Status::Ok, "{:?}", crypto.reason);
    assert_eq!(crypto.metrics.len(), 4 * 6 * 2);
    for m in &crypto.metrics {
        assert_eq!(m.values.len(), crypto.repetitions as usize, "{}", m.name);
        assert!(
            m.values.iter().all(|&v| v > 0.0),
            "{}: {:?}",
            m.name,
            m.values
        );
        assert!(m.median > 1e5, "{}: {}", m.name, m.median);
        assert_eq!(m.unit, "bytes/s");
    }
    assert!(crypto.end_s > crypto.start_s);
    let end = run.run_end().unwrap();
    assert_eq!(end.status, RunStatus::Complete);
    assert_eq!(end.counts.ok as usize, workloads.len());
    eprintln!(
        "smoke run took {elapsed:?}, crypto {:.3} s",
        crypto.duration_s
    );
    assert!(elapsed < Duration::from_secs(30));
}

#[test]
fn faults_are_contained_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results.bin");
    let profile = write_profile(
        dir.path(),
        r#"{"name": "faults", "verify_digest": false, "repetitions": 1, "timeout_s": 30,
            "workloads": [
              {"workload": "fault-hang", "timeout_s": 1},
              {"workload": "fault-segv"},
              {"workload": "fault-panic"},
              {"workload": "crypto", "params": {"seconds": 0.001, "algorithms": ["sha256"],
                                                "block_sizes": [64], "threads": ["single"]}}
            ]}"#,
    );
    let t = Instant::now();
    let out = run(
        &[
            "--host",
            "--profile",
            path_str(&profile),
            "--results",
            path_str(&results),
        ],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "hang not cut at its timeout"
    );

    let run = read_results_file(&results).unwrap();
    assert!(run.complete);
    assert!(run.problems.is_empty(), "{:?}", run.problems);
    let by_name = |n: &str| run.workloads().find(|w| w.name == n).unwrap();
    let hang = by_name("fault-hang");
    assert_eq!(hang.status, Status::Timeout);
    assert!(
        hang.duration_s >= 1.0 && hang.duration_s < 10.0,
        "{}",
        hang.duration_s
    );
    let segv = by_name("fault-segv");
    assert_eq!(segv.status, Status::Failed);
    assert!(
        segv.reason.as_deref().unwrap().contains("SIGSEGV"),
        "{:?}",
        segv.reason
    );
    let panic = by_name("fault-panic");
    assert_eq!(panic.status, Status::Failed);
    assert!(
        panic
            .reason
            .as_deref()
            .unwrap()
            .contains("panicked on purpose"),
        "{:?}",
        panic.reason
    );
    let crypto = by_name("crypto");
    assert_eq!(crypto.status, Status::Ok);
    assert!(crypto.metrics[0].median > 0.0);
    let counts = &run.run_end().unwrap().counts;
    assert_eq!((counts.ok, counts.failed, counts.timeout), (1, 2, 1));

    // The same file cut in the middle of the last workload record: what finished is kept.
    let bytes = std::fs::read(&results).unwrap();
    let cut_file = dir.path().join("cut.bin");
    let record_starts: Vec<usize> = (4096..bytes.len())
        .step_by(512)
        .filter(|&o| bytes[o..].starts_with(b"imgbrec1"))
        .collect();
    assert_eq!(record_starts.len(), 6, "run_start, 4 workloads, run_end");
    std::fs::write(&cut_file, &bytes[..record_starts[4] + 100]).unwrap();
    let cut = read_results_file(&cut_file).unwrap();
    assert!(!cut.complete);
    assert_eq!(cut.workloads().count(), 3);
    assert!(!cut.problems.is_empty());
}

#[test]
fn a_killed_run_keeps_finished_workloads() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results.bin");
    let profile = write_profile(
        dir.path(),
        r#"{"name": "killed", "verify_digest": false, "repetitions": 1,
            "workloads": [
              {"workload": "crypto", "params": {"seconds": 0.001, "algorithms": ["sha512"],
                                                "block_sizes": [1024], "threads": ["single"]}},
              {"workload": "fault-hang", "timeout_s": 600}
            ]}"#,
    );
    let mut child = Command::new(BIN)
        .args([
            "--host",
            "--profile",
            path_str(&profile),
            "--results",
            path_str(&results),
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the crypto record is on disk, then kill the runner as a crash would.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = read_results_file(&results)
            .map(|r| r.workloads().count() == 1)
            .unwrap_or(false);
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "crypto record never appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let run = read_results_file(&results).unwrap();
    assert!(!run.complete);
    assert_eq!(run.workloads().next().unwrap().status, Status::Ok);
    assert!(
        run.problems.iter().any(|p| p.contains("did not finish")),
        "{:?}",
        run.problems
    );
}

#[test]
fn a_panic_of_the_init_is_recorded_as_a_failed_run() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results.bin");
    let out = run(
        &[
            "--host",
            "--profile",
            "smoke",
            "--results",
            path_str(&results),
        ],
        &[("IMGBUILD_TEST_PANIC", "1")],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = read_results_file(&results).unwrap();
    assert!(
        run.complete,
        "the run_end record is written after the panic"
    );
    let end = run.run_end().unwrap();
    assert_eq!(end.status, RunStatus::Failed);
    assert!(
        end.reason.as_deref().unwrap().contains("init panicked"),
        "{:?}",
        end.reason
    );
    assert_eq!(run.workloads().count(), 0);
}

#[test]
fn image_root_digest_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc/imgbuild")).unwrap();
    std::fs::write(root.join("etc/hostname"), "imgbuild\n").unwrap();
    let digest = imgbuild_init::digest::digest_directory(&root).unwrap();
    std::fs::write(
        root.join("etc/imgbuild/build.json"),
        format!(r#"{{"image": "tiny", "rootfs_digest": "{digest}"}}"#),
    )
    .unwrap();
    let profile = write_profile(
        dir.path(),
        r#"{"name": "digest-only", "verify_digest": true, "workloads": []}"#,
    );
    let results = dir.path().join("results.bin");
    let args = [
        "--host",
        "--root",
        path_str(&root),
        "--profile",
        path_str(&profile),
        "--results",
        path_str(&results),
    ];
    let out = run(&args, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run1 = read_results_file(&results).unwrap();
    let start = run1.run_start().unwrap();
    assert_eq!(start.image.as_deref(), Some("tiny"));
    assert_eq!(run1.header.image, "tiny");
    assert_eq!(run1.header.rootfs_digest, Some(digest));
    assert_eq!(
        start.digest_check.status,
        DigestStatus::Match,
        "{:?}",
        start.digest_check
    );
    assert_eq!(start.digest_check.digest, Some(digest));

    std::fs::write(root.join("etc/hostname"), "changed\n").unwrap();
    assert_eq!(run(&args, &[]).status.code(), Some(0));
    let run2 = read_results_file(&results).unwrap();
    assert_eq!(
        run2.run_start().unwrap().digest_check.status,
        DigestStatus::Mismatch
    );
}

#[test]
fn refuses_to_act_as_init_when_not_pid1() {
    let out = Command::new(BIN)
        .env_remove("IMGBUILD_STAGE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--host"));
    let out = run(&["--list-workloads"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("crypto") && text.contains("fault-hang"),
        "{text}"
    );
    assert_eq!(run(&["--host", "--bogus"], &[]).status.code(), Some(2));
    let out = run(
        &[
            "--host",
            "--profile",
            "no-such-profile",
            "--results",
            "/dev/null",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-profile"));
}
