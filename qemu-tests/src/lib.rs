//! Shared helpers of the integration tests in `tests/` that boot imgbuild images on real
//! engines: what is needed to run (and the skip-or-fail rule), builds shared by every test of
//! a test binary, and assertions on collected runs.
//!
//! A test that cannot run says why on stderr and returns; with `IMGBUILD_REQUIRE_QEMU=1` (set
//! by `.ci/run`) it fails instead.
#![deny(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use imgbuild::build::{build, BuildOptions};
use imgbuild::definition::load;
use imgbuild::manifest::Manifest;
use imgbuild::run::qemu::{find_on_path, qemu_binary};
use imgbuild::run::{run, EngineKind, RunOptions, RunRecord};
use imgbuild::target::Target;
use imgbuild_init::results::schema::{
    DigestStatus, Hypervisor, Mode, Record, RunStart, RunStatus, Status, WorkloadResult,
};

/// True when a test that cannot run must fail.
pub fn required() -> bool {
    std::env::var("IMGBUILD_REQUIRE_QEMU").as_deref() == Ok("1")
}

/// Reports a test that cannot run: fails under `IMGBUILD_REQUIRE_QEMU=1`, else prints why.
pub fn skip(test: &str, why: &str) {
    if required() {
        panic!("{test} is required (IMGBUILD_REQUIRE_QEMU=1) but cannot run: {why}");
    }
    eprintln!("SKIPPED {test}: {why}");
}

/// What booting the VM packages needs: QEMU, a kernel with its modules, the init binary.
pub fn vm_prerequisites() -> Result<(), String> {
    qemu_binary()
        .filter(|p| p.exists())
        .ok_or("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")?;
    imgbuild::kernel::resolve(None)
        .map_err(|e| format!("no kernel to boot: {e} (apt-get install linux-image-cloud-amd64)"))?;
    init_prerequisite()
}

/// The init binary next to the test executable's directory (built by `cargo build`).
pub fn init_prerequisite() -> Result<(), String> {
    imgbuild::kernel::elf_check::locate_init(None)
        .map(|_| ())
        .map_err(|e| format!("{e}: run `cargo build --release -p imgbuild-init` first"))
}

/// What the OpenVZ engine needs: runc, root, the init.
pub fn container_prerequisites() -> Result<(), String> {
    std::env::var_os("IMGBUILD_RUNC")
        .map(PathBuf::from)
        .or_else(|| find_on_path("runc"))
        .ok_or("runc is not installed (apt-get install runc)")?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("the openvz engine needs root (runc with device nodes and namespaces)".into());
    }
    init_prerequisite()
}

/// Where test builds go: under the target directory, on a real disk (QEMU's cache=none needs
/// O_DIRECT, which a tmpfs /tmp lacks).
pub fn scratch_root() -> PathBuf {
    // target/<triple>/<profile>/deps/<test> → target/<triple>/<profile>/qemu-tests
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let dir = profile_dir.join("qemu-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A build kept for the whole test binary (removed when it exits).
pub struct SharedBuild {
    /// The output directory.
    pub out: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

/// Directories to remove when the test binary exits: shared builds live in statics, which are
/// never dropped.
static AT_EXIT: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

extern "C" fn remove_at_exit() {
    if let Ok(dirs) = AT_EXIT.lock() {
        for d in dirs.iter() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A new directory under [`scratch_root`], removed when the process exits.
pub fn exit_scoped_dir(prefix: &str) -> Result<PathBuf, String> {
    static REGISTERED: OnceLock<()> = OnceLock::new();
    REGISTERED.get_or_init(|| {
        // SAFETY: registers a plain extern "C" function without arguments.
        unsafe { libc::atexit(remove_at_exit) };
    });
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(scratch_root())
        .map_err(|e| e.to_string())?
        .keep();
    if let Ok(mut dirs) = AT_EXIT.lock() {
        dirs.push(dir.clone());
    }
    Ok(dir)
}

fn build_into(definition: Option<&Path>, targets: Vec<Target>) -> Result<SharedBuild, String> {
    let dir = exit_scoped_dir("build-")?;
    let out = dir.join("out");
    let loaded = load(definition, &[]).map_err(|e| format!("definition: {e}"))?;
    let output = build(
        &loaded,
        &BuildOptions {
            targets,
            out_dir: Some(out.clone()),
            quiet: true,
            ..BuildOptions::default()
        },
    )
    .map_err(|e| format!("build failed: {e}"))?;
    Ok(SharedBuild {
        out,
        manifest: output.manifest,
    })
}

/// The embedded default image, every target, built once per test binary.
pub fn default_build() -> &'static Result<SharedBuild, String> {
    static BUILD: OnceLock<Result<SharedBuild, String>> = OnceLock::new();
    BUILD.get_or_init(|| {
        init_prerequisite()?;
        build_into(None, Target::ALL.to_vec())
    })
}

/// A small image (QEMU and OpenVZ targets, 1 vCPU) whose profile is `profile_toml`, a
/// `[workloads.profiles.NAME]` table named `name`.
pub fn build_with_profile(name: &str, profile_toml: &str) -> Result<SharedBuild, String> {
    init_prerequisite()?;
    let dir = exit_scoped_dir("definition-")?;
    let definition = dir.join(format!("{name}.toml"));
    std::fs::write(
        &definition,
        format!(
            "name = \"{name}\"\n\
             [filesystem]\nfs = \"ext4\"\nsize = \"auto\"\nfree = \"16M\"\n\
             [vm]\nmemory = 256\nvcpus = 1\n\
             [workloads]\nprofile = \"{name}\"\n\
             {profile_toml}\n\
             [[layers]]\nbuiltin = true\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    build_into(Some(&definition), vec![Target::Qemu, Target::Openvz])
}

/// Boots `out` once on `engine`.
pub fn boot(out: &Path, engine: EngineKind, timeout: Duration) -> RunRecord {
    boot_with(
        out,
        RunOptions {
            engine,
            timeout,
            ..RunOptions::default()
        },
    )
}

/// Boots `out` once with `options`.
pub fn boot_with(out: &Path, options: RunOptions) -> RunRecord {
    let engine = options.engine;
    let mut records = run(out, &options, &|line| eprintln!("{line}"))
        .unwrap_or_else(|e| panic!("imgbuild run --on {engine}: {e}"));
    assert_eq!(records.len(), 1);
    let record = records.remove(0);
    eprintln!("{}", record.summary());
    record
}

/// The records of a run.
pub fn records(r: &RunRecord) -> &[Record] {
    &r.collected
        .as_ref()
        .unwrap_or_else(|| panic!("{}-{}: no results: {:?}", r.engine, r.run, r.collect_error))
        .records
}

/// The run_start record.
pub fn run_start(r: &RunRecord) -> &RunStart {
    records(r)
        .iter()
        .find_map(|x| match x {
            Record::RunStart(s) => Some(&**s),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{}-{}: no run_start record", r.engine, r.run))
}

/// The workload records, in run order.
pub fn workloads(r: &RunRecord) -> Vec<&WorkloadResult> {
    records(r)
        .iter()
        .filter_map(|x| match x {
            Record::Workload(w) => Some(&**w),
            _ => None,
        })
        .collect()
}

fn console(r: &RunRecord) -> String {
    std::fs::read_to_string(&r.console_log).unwrap_or_default()
}

/// Asserts what every smoke run must show: complete; every workload of the profile present,
/// ok, with positive values (failure counts may be zero); phases in order; the guest's rootfs
/// digest equal to the manifest's (host mode digests no image: there the check must say
/// skipped); the platform as `platform` expects.
pub fn assert_smoke_run(
    r: &RunRecord,
    manifest: &Manifest,
    mode: Mode,
    platform: &dyn Fn(&RunStart),
) {
    let ctx = format!(
        "{}-{} (console {}):\n{}",
        r.engine,
        r.run,
        r.console_log,
        console(r)
    );
    assert!(r.complete, "{ctx}\nincomplete: {:?}", r.incomplete_reason);
    assert!(!r.timed_out, "{ctx}");
    let start = run_start(r);
    assert_eq!(start.mode, mode, "{ctx}");
    if mode != Mode::Host {
        assert_eq!(
            start.image.as_deref(),
            Some(manifest.image.as_str()),
            "{ctx}"
        );
    }

    let expected: Vec<String> = start
        .profile
        .resolved()
        .into_iter()
        .map(|w| w.name)
        .collect();
    let got = workloads(r);
    let names: Vec<&str> = got.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, expected, "{ctx}");
    assert!(!got.is_empty(), "{ctx}");
    for w in &got {
        assert_eq!(w.status, Status::Ok, "{ctx}\n{}: {:?}", w.name, w.reason);
        assert!(!w.metrics.is_empty(), "{ctx}\n{} has no metrics", w.name);
        for m in &w.metrics {
            // Counts of failures and errors (lower is better) are rightly zero; every rate,
            // size and time is positive.
            let fine = |v: f64| v.is_finite() && (v > 0.0 || (v == 0.0 && !m.higher_is_better));
            assert!(
                !m.values.is_empty() && m.values.iter().all(|v| fine(*v)),
                "{ctx}\n{}/{}: {:?}",
                w.name,
                m.name,
                m.values
            );
            assert!(fine(m.median), "{ctx}");
        }
    }

    // Phases in order, then the workloads, then the end.
    let mut last = 0.0f64;
    for p in &start.phases {
        assert!(
            p.at_s >= last,
            "{ctx}\nphase {} at {} before {last}",
            p.name,
            p.at_s
        );
        last = p.at_s;
    }
    let phase_names: Vec<&str> = start.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        phase_names.last(),
        Some(&"run_start"),
        "{ctx}\n{phase_names:?}"
    );
    for w in &got {
        assert!(
            w.start_s >= last && w.end_s >= w.start_s,
            "{ctx}\n{}",
            w.name
        );
        last = w.end_s;
    }
    let end = records(r)
        .iter()
        .find_map(|x| match x {
            Record::RunEnd(e) => Some(e),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{ctx}\nno run_end"));
    assert_eq!(end.status, RunStatus::Complete, "{ctx}");
    assert!(end.end_s >= last, "{ctx}");
    assert_eq!(end.counts.ok as usize, got.len(), "{ctx}");

    let d = &start.digest_check;
    if mode == Mode::Host {
        assert_eq!(
            d.status,
            DigestStatus::Skipped,
            "{ctx}\ndigest check: {d:?}"
        );
    } else {
        assert_eq!(d.status, DigestStatus::Match, "{ctx}\ndigest check: {d:?}");
        assert_eq!(d.digest, Some(manifest.rootfs_digest), "{ctx}");
    }
    platform(start);
}

/// The platform check of a QEMU guest: TCG or KVM as the engine recorded, the vCPUs asked for.
pub fn assert_qemu_platform(r: &RunRecord) -> impl Fn(&RunStart) + '_ {
    move |s: &RunStart| {
        let want = match r.accel {
            Some(imgbuild::run::qemu::Accel::Kvm) => Hypervisor::Kvm,
            _ => Hypervisor::Tcg,
        };
        assert_eq!(s.platform.hypervisor, want, "{:?}", s.platform);
        assert_eq!(s.platform.online_cpus, r.cpus, "{:?}", s.platform);
        let phases: Vec<&str> = s.phases.iter().map(|p| p.name.as_str()).collect();
        for needed in [
            "kernel_handoff",
            "modules_loaded",
            "root_mounted",
            "root_init",
        ] {
            assert!(phases.contains(&needed), "{needed} missing from {phases:?}");
        }
    }
}
