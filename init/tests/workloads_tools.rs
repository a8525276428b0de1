//! The real tools through the built binary: bonnie++, openssl speed, ab (against the built-in
//! server), postal (against the built-in sink) and UnixBench Run, each `ok` when the host has
//! it and `skipped` with a reason when not; and a real `ab -n 2000 -c 8` driving the http
//! workload's serve mode with no failed request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use imgbuild_init::results::read_results_file;
use imgbuild_init::results::schema::Status;
use imgbuild_init::workloads::tools;

const BIN: &str = env!("CARGO_BIN_EXE_imgbuild-init");

fn host_run(dir: &Path, profile: &str) -> imgbuild_init::results::CollectedRun {
    let path = dir.join("profile.json");
    std::fs::write(&path, profile).unwrap();
    let results = dir.join("results.bin");
    let out = Command::new(BIN)
        .args(["--host", "--profile"])
        .arg(&path)
        .arg("--results")
        .arg(&results)
        .arg("--workdir")
        .arg(dir.join("work"))
        .output()
        .unwrap();
    // 0 when everything ran, 3 when a tool was skipped.
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    read_results_file(&results).unwrap()
}

#[test]
fn tool_workloads_run_or_are_skipped_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let run = host_run(
        dir.path(),
        r#"{"name": "tools", "verify_digest": false, "repetitions": 1, "timeout_s": 300,
            "workloads": [
              {"workload": "bonnie++", "params": {"size_mib": 64, "ram_mib": 32, "files_k": 1}},
              {"workload": "openssl-speed", "params": {"seconds": 1, "bytes": 8192,
                                                       "algorithms": ["sha256"]}},
              {"workload": "ab", "params": {"requests": 400, "concurrency": [1, 4]}},
              {"workload": "postal", "params": {"seconds": 4, "max_kib": 4}},
              {"workload": "unixbench-run", "params": {"iterations": 1}}
            ]}"#,
    );
    for w in run.workloads() {
        let tool = match w.workload.as_str() {
            "openssl-speed" => "openssl",
            "unixbench-run" => "perl",
            other => other,
        };
        let present = tools::locate(tool).is_ok()
            && (w.workload != "unixbench-run"
                || [
                    "/opt/byte-unixbench/UnixBench",
                    "/opt/UnixBench",
                    "/usr/local/UnixBench",
                ]
                .iter()
                .any(|d| Path::new(d).join("Run").is_file()));
        if !present {
            assert_eq!(w.status, Status::Skipped, "{}: {:?}", w.workload, w.reason);
            assert!(!w.reason.as_deref().unwrap_or("").is_empty());
            eprintln!("{}: skipped: {:?}", w.workload, w.reason);
            continue;
        }
        assert_eq!(w.status, Status::Ok, "{}: {:?}", w.workload, w.reason);
        assert!(w.tool.is_some(), "{}", w.workload);
        let get = |n: &str| {
            w.metrics
                .iter()
                .find(|m| m.name == n)
                .unwrap_or_else(|| panic!("{}: no {n} in {:?}", w.workload, w.metrics))
                .median
        };
        match w.workload.as_str() {
            "bonnie++" => {
                // 64 MiB goes through the page cache: bonnie++ may call some phases too fast.
                assert!(w.info.contains_key("too_fast"));
                assert!(!w.metrics.is_empty());
            }
            "openssl-speed" => assert!(get("sha256/8192") > 1e6),
            "ab" => {
                assert_eq!(get("4k/c1/failed"), 0.0);
                assert_eq!(get("4k/c4/failed"), 0.0);
                assert!(get("4k/c4/requests_per_s") > 0.0);
                assert!(get("4k/c4/p50_ms") <= get("4k/c4/p99_ms"));
            }
            "postal" => {
                assert_eq!(get("errors"), 0.0);
                assert!(get("sink_messages_per_minute") > 0.0);
                // Everything postal logged as sent reached the sink (the last message may
                // have been cut by the stop).
                let sent = w.info["postal_log_messages"].as_u64().unwrap();
                let got = w.info["sink_accepted"].as_u64().unwrap();
                assert!(
                    got + 2 * 2 >= sent && got <= sent + 4,
                    "sent {sent}, got {got}"
                );
            }
            _ => {}
        }
        eprintln!("{}: ok, {} metrics", w.workload, w.metrics.len());
    }
}

#[test]
fn real_ab_drives_the_serve_mode_without_failures() {
    if tools::locate("ab").is_err() {
        eprintln!("ab not installed: nothing to check");
        return;
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let profile = format!(
        r#"{{"name": "serve", "verify_digest": false, "repetitions": 1, "timeout_s": 120,
            "workloads": [{{"workload": "http", "params": {{"mode": "serve",
              "listen": "127.0.0.1:{port}", "serve_requests": 2000, "serve_seconds": 100}}}}]}}"#
    );
    let path = dir.path().join("serve.json");
    std::fs::write(&path, profile).unwrap();
    let results = dir.path().join("results.bin");
    let mut server = Command::new(BIN)
        .args(["--host", "--profile"])
        .arg(&path)
        .arg("--results")
        .arg(&results)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the server never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ab = Command::new("ab")
        .args(["-n", "2000", "-c", "8"])
        .arg(format!("http://127.0.0.1:{port}/4k"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&ab.stdout);
    let report = tools::ab::parse_report(&text).unwrap();
    assert_eq!(report.complete, 2000, "{text}");
    assert_eq!(report.failed, 0, "{text}");
    assert_eq!(report.non_2xx, 0);
    let status = server.wait().unwrap();
    assert!(status.success());
    let run = read_results_file(&results).unwrap();
    let w = run.workloads().next().unwrap();
    assert_eq!(w.status, Status::Ok, "{:?}", w.reason);
    let served = w
        .metrics
        .iter()
        .find(|m| m.name == "served_requests")
        .unwrap();
    assert!(served.median >= 2000.0, "{served:?}");
}
