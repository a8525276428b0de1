//! `imgbuild report` checked with a real browser: run records with the paper's metrics
//! (UnixBench index, Bonnie++'s four figures, ab at 1/2/4/8) plus crypto, from three engines
//! and a host, two runs each, one of them incomplete; the text table must state the ratios as
//! the paper does, and headless Chromium must render the HTML page to a PNG and parse it as
//! XML (every inline SVG well-formed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use imgbuild::collect::Collected;
use imgbuild::report::{html, load, panels::panels, text, Comparison};
use imgbuild::run::qemu::{Accel, CacheMode};
use imgbuild::run::RunRecord;
use imgbuild_init::digest::RootfsDigest;
use imgbuild_init::profile::Profile;
use imgbuild_init::results::schema::{
    DigestCheck, DigestMethod, DigestStatus, Hypervisor, Metric, Mode, Phase, Platform, Record,
    RunEnd, RunStart, RunStatus, Status, StatusCounts, WorkloadResult, SCHEMA_VERSION,
};

const DIGEST: RootfsDigest = RootfsDigest([0xab; 32]);

fn metric(name: &str, unit: &str, values: &[f64], params: serde_json::Value) -> Metric {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    Metric {
        name: name.into(),
        unit: unit.into(),
        parameters: serde_json::from_value::<BTreeMap<String, serde_json::Value>>(params)
            .unwrap_or_default(),
        higher_is_better: !unit.ends_with("us"),
        values: values.to_vec(),
        median: sorted[sorted.len() / 2],
        cv: 0.01,
    }
}

fn workload(name: &str, metrics: Vec<Metric>) -> Record {
    Record::Workload(Box::new(WorkloadResult {
        name: name.into(),
        workload: name.into(),
        parameters: serde_json::json!({}),
        repetitions: 3,
        timeout_s: 60.0,
        status: Status::Ok,
        reason: None,
        start_s: 1.0,
        end_s: 2.0,
        duration_s: 1.0,
        tool: None,
        info: BTreeMap::new(),
        metrics,
    }))
}

/// A run whose performance is `scale` times the host's (with a little spread).
fn record(engine: &str, run: u32, scale: f64, complete: bool) -> RunRecord {
    let v = |base: f64| [base * scale * 0.97, base * scale, base * scale * 1.02];
    let mut records = vec![Record::RunStart(Box::new(RunStart {
        schema: SCHEMA_VERSION,
        init_version: "0.1.0".into(),
        mode: if engine == "host" {
            Mode::Host
        } else {
            Mode::Root
        },
        wall_clock_unix_s: 1.7e9,
        image: Some("minimal".into()),
        build_digest: Some(DIGEST),
        build_info_error: None,
        platform: Platform {
            hypervisor: if engine == "host" {
                Hypervisor::BareMetal
            } else {
                Hypervisor::Tcg
            },
            hypervisor_signature: None,
            xen_guest_type: None,
            container: None,
            kernel_release: "6.1.0-56-cloud-amd64".into(),
            kernel_version: "#1 SMP".into(),
            machine: "x86_64".into(),
            cpu_model: Some("QEMU TCG CPU".into()),
            online_cpus: 2,
            usable_cpus: 2,
            memory_total_kib: Some(480 * 1024),
            clocksource: Some("tsc".into()),
            kernel_cmdline: Some("console=ttyS0".into()),
        },
        phases: vec![Phase {
            name: "run_start".into(),
            at_s: 1.0,
        }],
        initramfs: None,
        digest_check: DigestCheck {
            status: DigestStatus::Match,
            method: Some(DigestMethod::BindMount),
            digest: Some(DIGEST),
            expected: Some(DIGEST),
            skipped_mounts: Vec::new(),
            seconds: Some(0.4),
            reason: None,
        },
        profile: Profile::builtin("smoke").unwrap(),
        profile_source: "builtin".into(),
        problems: Vec::new(),
    }))];
    records.push(workload(
        "unixbench",
        vec![
            metric("system_index", "index", &v(1000.0), serde_json::json!({})),
            metric("dhry2reg", "lps", &v(3.0e7), serde_json::json!({})),
        ],
    ));
    records.push(workload(
        "bonnie",
        vec![
            metric("block_write", "KiB/s", &v(200_000.0), serde_json::json!({})),
            metric("block_read", "KiB/s", &v(900_000.0), serde_json::json!({})),
            metric("seq_create", "files/s", &v(30_000.0), serde_json::json!({})),
            metric(
                "random_create",
                "files/s",
                &v(28_000.0),
                serde_json::json!({}),
            ),
            metric(
                "block_write_latency",
                "us",
                &v(900.0),
                serde_json::json!({}),
            ),
        ],
    ));
    let mut ab = Vec::new();
    for c in [1u64, 2, 4, 8] {
        ab.push(metric(
            &format!("requests_per_s/c{c}"),
            "requests/s",
            &v(2000.0 * c as f64),
            serde_json::json!({ "concurrency": c }),
        ));
    }
    records.push(workload("http", ab));
    records.push(workload(
        "crypto",
        (0..14)
            .map(|i| {
                metric(
                    &format!("sha256/{}/single", 16 << i),
                    "bytes/s",
                    &v(1e8 * (i + 1) as f64),
                    serde_json::json!({}),
                )
            })
            .collect(),
    ));
    if complete {
        records.push(Record::RunEnd(RunEnd {
            status: RunStatus::Complete,
            reason: None,
            end_s: 3.0,
            counts: StatusCounts {
                ok: 4,
                ..StatusCounts::default()
            },
        }));
    }
    RunRecord {
        engine: engine.into(),
        run,
        image: "minimal".into(),
        build_dir: "/out".into(),
        build_digest: DIGEST,
        kernel: Some("6.1.0-56-cloud-amd64".into()),
        accel: (engine != "host").then_some(Accel::Tcg),
        command: format!("qemu-system-x86_64 -accel tcg # {engine} <&>"),
        cpus: 2,
        memory_mb: 512,
        cache: (engine != "host").then_some(CacheMode::None),
        profile: None,
        timeout_s: 600.0,
        started_unix_s: 1.7e9,
        wall_s: 9.5,
        first_record_s: Some(3.2),
        timed_out: !complete,
        exit_status: complete.then_some(0),
        complete,
        incomplete_reason: (!complete).then(|| "the guest did not finish within 600 s".into()),
        console_log: format!("/out/results/{engine}-{run}.console.log"),
        results_file: format!("/out/results/{engine}-{run}.results.img"),
        notes: vec!["a note with <markup> & ampersands".into()],
        collected: Some(Collected {
            disk: "/out/results/x".into(),
            image: "minimal".into(),
            rootfs_digest: Some(DIGEST),
            run_id: Some(7),
            complete,
            problems: Vec::new(),
            records,
        }),
        collect_error: None,
    }
}

fn write_runs(dir: &Path) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for (engine, scale) in [
        ("host", 1.0),
        ("qemu", 0.43),
        ("xen-image", 1.25),
        ("openvz", 0.98),
    ] {
        for run in 1..=2 {
            let r = record(engine, run, scale, !(engine == "openvz" && run == 2));
            let path = dir.join(format!("{engine}-{run}.json"));
            std::fs::write(&path, serde_json::to_vec_pretty(&r).unwrap()).unwrap();
            paths.push(path);
        }
    }
    paths
}

#[test]
fn text_table_states_ratios_as_the_paper() {
    let dir = tempfile::tempdir().unwrap();
    write_runs(dir.path());
    let c = Comparison::new(load(&[dir.path().to_path_buf()]).unwrap());
    let names: Vec<&str> = c.engines.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["host", "qemu", "xen-image", "openvz"]);
    let table = text::render(&c);
    let index = table
        .lines()
        .find(|l| l.starts_with("system_index"))
        .unwrap();
    assert!(
        index.contains("-57%") && index.contains("+25%") && index.contains("-2%"),
        "{index}"
    );
    // Lower-is-better: 0.43 times the host's latency is better than the host.
    let latency = table
        .lines()
        .find(|l| l.starts_with("block_write_latency"))
        .unwrap();
    assert!(
        latency.contains("+133%") && latency.contains("(lower is better)"),
        "{latency}"
    );
    assert!(table.contains("openvz-2 is incomplete"), "{table}");
    assert_eq!(panels(&c).len(), 3);
}

#[test]
fn chromium_renders_the_page() {
    let Some(chromium) = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find_map(imgbuild::run::qemu::find_on_path)
    else {
        return qemu_tests::skip(
            "chromium report test",
            "chromium is not installed (apt-get install chromium)",
        );
    };
    let dir = tempfile::tempdir().unwrap();
    let inputs = write_runs(dir.path());
    let c = Comparison::new(load(&inputs).unwrap());
    let page = html::render_page(&c, &["test".to_string()]);
    let svgs = page.matches("<svg").count();
    // UnixBench, Bonnie++ (two units: KiB/s and files/s), ab; one chart per workload, crypto's
    // 14 metrics in two.
    assert_eq!(svgs, 4 + 5, "{svgs} charts");
    let html_path = dir.path().join("report.html");
    std::fs::write(&html_path, &page).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ];
    let png = dir.path().join("report.png");
    let out = Command::new(&chromium)
        .args(common)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg("--window-size=1200,2000")
        .arg(format!("file://{}", html_path.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), (1200, 2000));
    // A blank page compresses to a few KiB; charts and tables do not.
    assert!(bytes.len() > 50_000, "{} bytes: nearly blank", bytes.len());
    if let Ok(keep) = std::env::var("IMGBUILD_KEEP_REPORT_PNG") {
        std::fs::copy(&png, keep).unwrap();
    }

    // The same page through the browser's XML parser: any malformed tag or SVG becomes a
    // <parsererror> element in the DOM.
    let xhtml = dir.path().join("report.xhtml");
    std::fs::write(&xhtml, &page).unwrap();
    let out = Command::new(&chromium)
        .args(common)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", xhtml.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !dom.contains("parsererror"),
        "{}",
        &dom[..dom.len().min(3000)]
    );
    assert_eq!(
        dom.matches("<svg").count(),
        svgs,
        "{}",
        &dom[..dom.len().min(3000)]
    );
}
