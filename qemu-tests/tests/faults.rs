//! Fault tests on small images with profiles of their own (`[workloads.profiles.NAME]`):
//! - QEMU SIGKILLed while a workload hangs: the results disk keeps the finished records,
//!   `collect` marks the run incomplete; through `imgbuild run`, the timeout does the kill and
//!   the run record says incomplete with the reason;
//! - a hung workload is killed at its timeout and the run goes on;
//! - a guest kernel panic (sysrq-c) ends the boot well within the timeout, with the records
//!   before it kept;
//! - the OpenVZ engine's timeout kills the container (runc kill, delete) and removes the bundle;
//! - `--profile` reaches the init (kernel command line, the container init's arguments).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use imgbuild::collect::collect;
use imgbuild::manifest::Role;
use imgbuild::run::qemu::{
    choose_accel, command, qemu_binary, Boot, CacheMode, DeviceSet, Drive, Guest,
};
use imgbuild::run::scratch::sparse_copy;
use imgbuild::run::{BuildDir, EngineKind};
use imgbuild_init::results::schema::{Record, Status};
use qemu_tests::{boot, build_with_profile, skip, vm_prerequisites, workloads, SharedBuild};

/// crypto, then a workload that never ends (its own timeout is an hour).
const HANG: &str = r#"
[workloads.profiles.hang]
repetitions = 1
verify_digest = false
[[workloads.profiles.hang.workloads]]
workload = "crypto"
params = { seconds = 0.001, block_sizes = [16], algorithms = ["sha256"] }
[[workloads.profiles.hang.workloads]]
workload = "fault-hang"
timeout_s = 3600
"#;

/// A hang killed after 2 s, crypto again, a kernel panic, and a workload never reached.
const FAULTS: &str = r#"
[workloads.profiles.faults]
repetitions = 1
verify_digest = false
[[workloads.profiles.faults.workloads]]
workload = "fault-hang"
timeout_s = 2
[[workloads.profiles.faults.workloads]]
workload = "crypto"
name = "crypto-after-hang"
params = { seconds = 0.001, block_sizes = [16], algorithms = ["sha256"] }
[[workloads.profiles.faults.workloads]]
workload = "fault-panic-kernel"
[[workloads.profiles.faults.workloads]]
workload = "crypto"
name = "never-reached"
params = { seconds = 0.001, block_sizes = [16], algorithms = ["sha256"] }
"#;

fn hang_build() -> &'static Result<SharedBuild, String> {
    static B: OnceLock<Result<SharedBuild, String>> = OnceLock::new();
    B.get_or_init(|| build_with_profile("hang", HANG))
}

fn faults_build() -> &'static Result<SharedBuild, String> {
    static B: OnceLock<Result<SharedBuild, String>> = OnceLock::new();
    B.get_or_init(|| build_with_profile("faults", FAULTS))
}

#[test]
fn results_disk_survives_qemu_killed_mid_run() {
    if let Err(why) = vm_prerequisites() {
        return skip("kill mid-run", &why);
    }
    let build = hang_build().as_ref().unwrap_or_else(|e| panic!("{e}"));
    let dir = BuildDir::open(&build.out).unwrap();
    let work = tempfile::tempdir_in(qemu_tests::scratch_root()).unwrap();
    let root = work.path().join("root.raw");
    let results = work.path().join("results.img");
    sparse_copy(&dir.file("qemu", Role::Disk).unwrap(), &root).unwrap();
    sparse_copy(&dir.file("qemu", Role::Results).unwrap(), &results).unwrap();
    let qemu = qemu_binary().unwrap();
    let kernel = dir.file("qemu", Role::Kernel).unwrap();
    let script = std::fs::read_to_string(dir.config("qemu", ".sh").unwrap()).unwrap();
    let cmdline = imgbuild::run::build_dir::parse_qemu_script(&script)
        .unwrap()
        .cmdline
        .unwrap();
    let console = work.path().join("console.log");
    let guest = Guest {
        accel: choose_accel(&qemu, &kernel),
        cpus: 1,
        memory_mb: 256,
        cache: CacheMode::None,
        devices: DeviceSet::Virtio,
        boot: Boot::Kernel {
            kernel,
            initrd: dir.file("qemu", Role::Initrd).unwrap(),
            cmdline,
        },
        drives: vec![
            Drive {
                path: root,
                format: "raw",
            },
            Drive {
                path: results.clone(),
                format: "raw",
            },
        ],
        serial_log: console.clone(),
        forward_http: None,
        firmware: None,
    };
    let cmd = command(&qemu, &guest);
    let mut argv = cmd.argv();
    let mut child = Command::new(argv.next().unwrap())
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until crypto's record is on the disk (the hang runs from then on), then SIGKILL.
    let start = Instant::now();
    loop {
        let done = collect(&results)
            .map(|c| {
                c.records
                    .iter()
                    .any(|r| matches!(r, Record::Workload(w) if w.name == "crypto"))
            })
            .unwrap_or(false);
        if done {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "QEMU ended ({status}) before crypto's record appeared:\n{}",
                std::fs::read_to_string(&console).unwrap_or_default()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "no crypto record after 240 s:\n{}",
            std::fs::read_to_string(&console).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    let c = collect(&results).unwrap();
    assert!(!c.complete, "{c:?}");
    let kinds: Vec<&str> = c
        .records
        .iter()
        .map(|r| match r {
            Record::RunStart(_) => "run_start",
            Record::Workload(_) => "workload",
            Record::RunEnd(_) => "run_end",
        })
        .collect();
    assert_eq!(kinds, ["run_start", "workload"], "{:?}", c.problems);
    let Record::Workload(w) = &c.records[1] else {
        unreachable!()
    };
    assert_eq!(w.status, Status::Ok);
    assert!(w.metrics.iter().all(|m| m.median > 0.0));
}

#[test]
fn run_timeout_kills_the_guest_and_keeps_its_records() {
    if let Err(why) = vm_prerequisites() {
        return skip("run timeout", &why);
    }
    let build = hang_build().as_ref().unwrap_or_else(|e| panic!("{e}"));
    let timeout = Duration::from_secs(60);
    let r = boot(&build.out, EngineKind::Qemu, timeout);
    let console = std::fs::read_to_string(&r.console_log).unwrap_or_default();
    assert!(r.timed_out && !r.complete, "{r:?}\n{console}");
    assert!(r.wall_s >= 60.0 && r.wall_s < 80.0, "{}", r.wall_s);
    assert!(
        r.incomplete_reason
            .as_deref()
            .unwrap_or("")
            .contains("did not finish within 60 s"),
        "{:?}",
        r.incomplete_reason
    );
    let w = workloads(&r);
    assert_eq!(w.len(), 1, "{console}");
    assert_eq!((w[0].name.as_str(), w[0].status), ("crypto", Status::Ok));
    assert!(r.exit_status.is_none());
}

#[test]
fn hang_is_killed_and_kernel_panic_ends_the_boot() {
    if let Err(why) = vm_prerequisites() {
        return skip("hang and kernel panic", &why);
    }
    let build = faults_build().as_ref().unwrap_or_else(|e| panic!("{e}"));
    let timeout = Duration::from_secs(240);
    let r = boot(&build.out, EngineKind::Qemu, timeout);
    let console = std::fs::read_to_string(&r.console_log).unwrap_or_default();
    // The panic ends the boot: QEMU exits (panic=-1 reboots, -no-reboot stops) long before the
    // timeout, and the run has no end record.
    assert!(!r.timed_out, "{console}");
    assert!(r.wall_s < 200.0, "{}", r.wall_s);
    assert!(!r.complete, "{console}");
    assert!(
        r.incomplete_reason
            .as_deref()
            .unwrap_or("")
            .contains("no run_end"),
        "{:?}",
        r.incomplete_reason
    );
    assert!(
        console.contains("sysrq") || console.contains("Kernel panic"),
        "{console}"
    );
    let w = workloads(&r);
    let seen: Vec<(&str, Status)> = w.iter().map(|w| (w.name.as_str(), w.status)).collect();
    assert_eq!(
        seen,
        [
            ("fault-hang", Status::Timeout),
            ("crypto-after-hang", Status::Ok)
        ],
        "{console}"
    );
    // Killed at its 2 s timeout, not later.
    assert!(
        w[0].duration_s >= 2.0 && w[0].duration_s < 10.0,
        "{}",
        w[0].duration_s
    );
}

#[test]
fn openvz_timeout_kills_the_container_and_removes_the_bundle() {
    if let Err(why) = qemu_tests::container_prerequisites() {
        return skip("openvz timeout", &why);
    }
    let build = hang_build().as_ref().unwrap_or_else(|e| panic!("{e}"));
    let r = boot(&build.out, EngineKind::Openvz, Duration::from_secs(5));
    let console = std::fs::read_to_string(&r.console_log).unwrap_or_default();
    assert!(r.timed_out && !r.complete, "{r:?}\n{console}");
    assert!(
        r.wall_s < 20.0,
        "runc kill did not end the container: {}",
        r.wall_s
    );
    let w = workloads(&r);
    assert_eq!(w.len(), 1, "{console}");
    assert_eq!((w[0].name.as_str(), w[0].status), ("crypto", Status::Ok));
    let work = build
        .out
        .join("results")
        .join(format!("openvz-{}.work", r.run));
    assert!(!work.exists(), "{} left behind", work.display());
    // No process of the container survives (its hang would still be sleeping): none is left in
    // the cgroup runc made for it, which is named after the container id.
    let id = format!("imgbuild-{}-openvz-{}", std::process::id(), r.run);
    assert!(r.command.ends_with(&id), "{}", r.command);
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| {
            let cgroup = std::fs::read_to_string(e.path().join("cgroup")).ok()?;
            cgroup
                .contains(&id)
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect();
    assert!(left.is_empty(), "processes of {id} left: {left:?}");
}

#[test]
fn profile_override_reaches_the_init() {
    let options = |engine| imgbuild::run::RunOptions {
        engine,
        profile: Some("smoke".into()),
        timeout: Duration::from_secs(240),
        ..imgbuild::run::RunOptions::default()
    };
    let check = |r: &imgbuild::run::RunRecord| {
        let console = std::fs::read_to_string(&r.console_log).unwrap_or_default();
        assert!(r.complete, "{:?}\n{console}", r.incomplete_reason);
        let start = qemu_tests::run_start(r);
        assert_eq!(start.profile.name, "smoke", "{console}");
        let names: Vec<String> = workloads(r).iter().map(|w| w.name.clone()).collect();
        let smoke: Vec<String> = imgbuild_init::profile::Profile::builtin("smoke")
            .unwrap()
            .resolved()
            .into_iter()
            .map(|w| w.name)
            .collect();
        assert_eq!(names, smoke, "{console}");
    };
    // The image's own profile is "hang"; smoke instead proves the override got through.
    if let Err(why) = qemu_tests::container_prerequisites() {
        skip("profile override (openvz)", &why);
    } else {
        let build = hang_build().as_ref().unwrap_or_else(|e| panic!("{e}"));
        let r = qemu_tests::boot_with(&build.out, options(EngineKind::Openvz));
        assert!(r.command.contains("runc"));
        check(&r);
    }
    if let Err(why) = vm_prerequisites() {
        return skip("profile override (qemu)", &why);
    }
    let build = hang_build().as_ref().unwrap_or_else(|e| panic!("{e}"));
    let r = qemu_tests::boot_with(&build.out, options(EngineKind::Qemu));
    assert!(
        r.command.contains("imgbuild.profile=smoke"),
        "{}",
        r.command
    );
    check(&r);
    // A profile the image cannot run is refused before anything boots.
    let e = imgbuild::run::run(
        &build.out,
        &imgbuild::run::RunOptions {
            profile: Some("nope".into()),
            ..options(EngineKind::Qemu)
        },
        &|_| {},
    )
    .unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
}
