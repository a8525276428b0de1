//! One run of the workload set: what root, container and host modes share.
//!
//! Order matters: build.json and the profile are read and the rootfs digest is computed before
//! anything is written to the root; only then is the root made writable, the results target
//! opened and the `run_start` record written. Each workload's record is flushed as soon as it
//! ends. A panic anywhere is caught and recorded as a failed `run_end`.

use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use crate::blockdev;
use crate::build_info::BuildInfo;
use crate::clock::{self, PhaseLog};
use crate::cmdline::Cmdline;
use crate::guest_digest;
use crate::mounts;
use crate::platform;
use crate::profile::{Profile, PROFILE_PATH};
use crate::results::schema::{
    ContainerInfo, DigestCheck, InitramfsReport, Mode, Record, RunEnd, RunStart, RunStatus, Status,
    StatusCounts, WorkloadResult, SCHEMA_VERSION,
};
use crate::results::{ResultsError, ResultsWriter};
use crate::runner::{self, RunnerOptions};
use crate::say;

/// Where the records go.
#[derive(Debug, Clone)]
pub enum ResultsTarget {
    /// The results disk, found among the block devices by its header.
    FindDisk,
    /// A file, created (or truncated) after the digest check.
    File(PathBuf),
}

/// Which profile to run.
#[derive(Debug, Clone, Default)]
pub struct ProfileRequest {
    /// A profile name: built-in, or the name of the image's own profile.
    pub name: Option<String>,
    /// A profile file.
    pub path: Option<PathBuf>,
}

/// How the rootfs digest is checked.
#[derive(Debug, Clone)]
pub enum DigestPolicy {
    /// The running root, through a bind mount when allowed.
    Root {
        /// Try a bind mount first.
        allow_bind: bool,
    },
    /// A directory standing for the image root.
    Directory(PathBuf),
    /// Not checked, for this reason.
    Skip(String),
}

/// Everything a run needs to know.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// How the init runs.
    pub mode: Mode,
    /// The image root whose build.json and profile.json are read (`/` in a guest).
    pub image_root: PathBuf,
    /// Where records go.
    pub results: ResultsTarget,
    /// Which profile.
    pub profile: ProfileRequest,
    /// Scratch directory for workloads (created, and removed when the run created it).
    pub workdir: PathBuf,
    /// Reap every orphan (PID 1).
    pub reap_all: bool,
    /// Digest check.
    pub digest: DigestPolicy,
    /// Remount `/` read-write after the digest check (root mode: the root is mounted ro).
    pub remount_root_rw: bool,
    /// The initramfs stage's report.
    pub initramfs: Option<InitramfsReport>,
    /// The kernel command line, recorded.
    pub cmdline: Option<Cmdline>,
    /// The container the init runs in.
    pub container: Option<ContainerInfo>,
    /// Panic after the run_start record, to test the panic path.
    pub test_panic: bool,
    /// Problems found before the session started.
    pub problems: Vec<String>,
}

/// How a run ended.
#[derive(Debug, Clone, Default)]
pub struct SessionOutcome {
    /// The run went through its workload list.
    pub completed: bool,
    /// Workloads per status.
    pub counts: StatusCounts,
    /// The results disk or file written.
    pub results: Option<PathBuf>,
    /// Why it stopped early.
    pub failure: Option<String>,
}

#[derive(Default)]
struct State {
    writer: Option<ResultsWriter>,
    counts: StatusCounts,
    workdir_created: Option<PathBuf>,
}

impl State {
    /// Writes a record, or prints it when there is nowhere to write it.
    fn record(&mut self, record: &Record) -> Result<(), ResultsError> {
        match &mut self.writer {
            Some(w) => w.append(record),
            None => {
                say!(
                    "record {}",
                    serde_json::to_string(record).unwrap_or_default()
                );
                Ok(())
            }
        }
    }
}

/// Runs the session; never panics.
pub fn run(config: SessionConfig, phases: PhaseLog) -> SessionOutcome {
    let mut state = State::default();
    let result = panic::catch_unwind(AssertUnwindSafe(|| run_inner(&config, phases, &mut state)));
    let failure = match result {
        Ok(Ok(())) => None,
        Ok(Err(reason)) => Some(reason),
        Err(payload) => Some(format!(
            "init panicked: {}",
            runner::panic_message(payload.as_ref())
        )),
    };
    let status = if failure.is_some() {
        RunStatus::Failed
    } else {
        RunStatus::Complete
    };
    if let Some(reason) = &failure {
        say!("run failed: {reason}");
    }
    let end = Record::RunEnd(RunEnd {
        status,
        reason: failure.clone(),
        end_s: clock::since_boot(),
        counts: state.counts.clone(),
    });
    if let Err(e) = state.record(&end) {
        say!("cannot write the run_end record: {e}");
    }
    if let Some(top) = state.workdir_created.take() {
        let _ = std::fs::remove_dir_all(top);
    }
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    say!(
        "run {}: {} ok, {} failed, {} timeout, {} skipped",
        if failure.is_none() {
            "complete"
        } else {
            "FAILED"
        },
        state.counts.ok,
        state.counts.failed,
        state.counts.timeout,
        state.counts.skipped
    );
    SessionOutcome {
        completed: failure.is_none(),
        counts: state.counts,
        results: state.writer.as_ref().map(|w| w.path().to_path_buf()),
        failure,
    }
}

/// Picks the profile; problems with the requested one fall back to the next choice.
pub fn choose_profile(
    request: &ProfileRequest,
    image_root: &Path,
) -> (Profile, String, Vec<String>) {
    let mut problems = Vec::new();
    let image_path = image_root.join(PROFILE_PATH.trim_start_matches('/'));
    let load = |path: &Path| -> Result<Profile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Profile::from_json(&text, &path.display().to_string()).map_err(|e| e.to_string())
    };
    if let Some(path) = &request.path {
        match load(path) {
            Ok(p) => return (p, path.display().to_string(), problems),
            Err(e) => problems.push(e),
        }
    }
    let image_profile = image_path.exists().then(|| load(&image_path));
    if let Some(name) = &request.name {
        if let Some(Ok(p)) = &image_profile {
            if &p.name == name {
                return (p.clone(), PROFILE_PATH.to_owned(), problems);
            }
        }
        match Profile::builtin(name) {
            Ok(p) => return (p, "builtin".into(), problems),
            Err(e) => problems.push(format!("requested profile: {e}")),
        }
    }
    match image_profile {
        Some(Ok(p)) => return (p, PROFILE_PATH.to_owned(), problems),
        Some(Err(e)) => problems.push(e),
        None => {}
    }
    match Profile::builtin("smoke") {
        Ok(p) => (p, "builtin".into(), problems),
        Err(e) => {
            problems.push(e.to_string());
            let empty = Profile {
                name: "none".into(),
                description: String::new(),
                verify_digest: false,
                repetitions: 1,
                timeout_s: 1.0,
                workloads: Vec::new(),
            };
            (empty, "none".into(), problems)
        }
    }
}

/// The block device nodes of this machine, whole disks first, except the one holding `/`.
pub fn block_device_nodes(problems: &mut Vec<String>) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let root_dev = std::fs::metadata("/").map(|m| m.dev()).ok();
    let mut devices = blockdev::list_block_devices(Path::new("/sys/class/block"));
    devices.sort_by_key(|d| d.partition);
    let mut nodes = Vec::new();
    for d in devices {
        if root_dev == Some(libc::makedev(d.major, d.minor)) {
            continue;
        }
        match blockdev::ensure_node(Path::new("/dev"), &d) {
            Ok(p) => nodes.push(p),
            Err(e) => problems.push(format!("no node for block device {}: {e}", d.name)),
        }
    }
    nodes
}

fn open_results(
    target: &ResultsTarget,
    image: &str,
    build: Option<&BuildInfo>,
    problems: &mut Vec<String>,
) -> Option<ResultsWriter> {
    match target {
        ResultsTarget::FindDisk => {
            let disks = blockdev::find_results_disks(&block_device_nodes(problems));
            if disks.len() > 1 {
                problems.push(format!(
                    "several results disks; using the first of {disks:?}"
                ));
            }
            let Some(disk) = disks.first() else {
                problems.push(
                    "no results disk found (no block device with the imgbuild-results header)"
                        .into(),
                );
                say!("no results disk: records go to the console only");
                return None;
            };
            match ResultsWriter::open_disk(disk) {
                Ok(w) => {
                    if w.header().image != image && build.is_some() {
                        problems.push(format!(
                            "results disk {} was made for image {:?}, this is {image:?}",
                            disk.display(),
                            w.header().image
                        ));
                    }
                    say!("results disk {}", disk.display());
                    Some(w)
                }
                Err(e) => {
                    problems.push(e.to_string());
                    None
                }
            }
        }
        ResultsTarget::File(path) => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                let _ = std::fs::create_dir_all(parent);
            }
            match ResultsWriter::create_file(path, image, build.map(|b| b.rootfs_digest)) {
                Ok(w) => {
                    say!("results file {}", path.display());
                    Some(w)
                }
                Err(e) => {
                    problems.push(e.to_string());
                    None
                }
            }
        }
    }
}

/// Creates `path`; returns the topmost directory that did not exist (to remove at the end).
fn create_workdir(path: &Path) -> io::Result<Option<PathBuf>> {
    let mut top = None;
    let mut p = Some(path);
    while let Some(dir) = p {
        if dir.exists() {
            break;
        }
        top = Some(dir.to_path_buf());
        p = dir.parent();
    }
    std::fs::create_dir_all(path)?;
    Ok(top)
}

fn run_inner(
    config: &SessionConfig,
    mut phases: PhaseLog,
    state: &mut State,
) -> Result<(), String> {
    let mut problems = config.problems.clone();
    let (build, build_info_error) = match BuildInfo::read(&config.image_root) {
        Ok(b) => (Some(b), None),
        Err(e) => (None, Some(e)),
    };
    let (profile, profile_source, profile_problems) =
        choose_profile(&config.profile, &config.image_root);
    problems.extend(profile_problems);
    say!(
        "profile {} ({profile_source}), {} workloads",
        profile.name,
        profile.workloads.len()
    );
    let platform = platform::collect(config.cmdline.as_ref(), config.container.clone());
    say!(
        "platform: {:?}{} {} kernel {}, {} CPUs",
        platform.hypervisor,
        platform
            .container
            .as_ref()
            .map(|c| format!(" {:?} container", c.kind))
            .unwrap_or_default(),
        platform.cpu_model.as_deref().unwrap_or("?"),
        platform.kernel_release,
        platform.online_cpus
    );
    let expected = build.as_ref().map(|b| b.rootfs_digest);
    let digest_check = if !profile.verify_digest {
        DigestCheck::skipped("profile has verify_digest off", expected)
    } else {
        match &config.digest {
            DigestPolicy::Root { allow_bind } => guest_digest::check_root(expected, *allow_bind),
            DigestPolicy::Directory(dir) => guest_digest::check_directory(dir, expected),
            DigestPolicy::Skip(reason) => DigestCheck::skipped(reason.clone(), expected),
        }
    };
    say!(
        "rootfs digest: {:?}{}",
        digest_check.status,
        digest_check
            .digest
            .map(|d| format!(" {d}"))
            .unwrap_or_default()
    );
    phases.mark("digest_checked");
    if config.remount_root_rw {
        if let Err(e) = mounts::mount("none", Path::new("/"), None, libc::MS_REMOUNT, None) {
            problems.push(format!("root stays read-only: {e}"));
        }
    }
    let image = build.as_ref().map(|b| b.image.clone()).unwrap_or_default();
    state.writer = open_results(&config.results, &image, build.as_ref(), &mut problems);
    match create_workdir(&config.workdir) {
        Ok(top) => state.workdir_created = top,
        Err(e) => problems.push(format!(
            "cannot create work directory {}: {e}",
            config.workdir.display()
        )),
    }
    for p in &problems {
        say!("problem: {p}");
    }
    phases.mark("run_start");
    let start = Record::RunStart(Box::new(RunStart {
        schema: SCHEMA_VERSION,
        init_version: env!("CARGO_PKG_VERSION").into(),
        mode: config.mode,
        wall_clock_unix_s: clock::wall_clock_unix(),
        image: build.as_ref().map(|b| b.image.clone()),
        build_digest: expected,
        build_info_error,
        platform: platform.clone(),
        phases: phases.phases().to_vec(),
        initramfs: config.initramfs.clone(),
        digest_check,
        profile: profile.clone(),
        profile_source,
        problems,
    }));
    state
        .record(&start)
        .map_err(|e| format!("cannot write run_start: {e}"))?;
    if config.test_panic {
        panic!("test panic requested (imgbuild.test_panic)");
    }
    let options = RunnerOptions {
        reap_all: config.reap_all,
    };
    // "One per CPU" means the CPUs this guest may use: all online ones in a VM, the
    // container's share where affinity limits it.
    let cpus = platform.usable_cpus.clamp(1, platform.online_cpus.max(1)) as usize;
    for spec in profile.resolved() {
        say!(
            "phase workload_start:{} at {:.3} s",
            spec.name,
            clock::since_boot()
        );
        let result = runner::run_workload(&spec, &config.workdir, cpus, options);
        say!(
            "phase workload_end:{} at {:.3} s: {:?} in {:.2} s, {} metrics{}",
            result.name,
            result.end_s,
            result.status,
            result.duration_s,
            result.metrics.len(),
            result
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
        state.counts.add(result.status);
        write_workload(state, result)?;
        if config.reap_all {
            runner::reap_orphans();
        }
    }
    Ok(())
}

/// Writes a workload record; one too large for a record is written without its metrics.
fn write_workload(state: &mut State, result: WorkloadResult) -> Result<(), String> {
    match state.record(&Record::Workload(Box::new(result.clone()))) {
        Ok(()) => Ok(()),
        Err(ResultsError::Encode(e)) => {
            let mut small = result;
            small.status = Status::Failed;
            small.reason = Some(format!(
                "record could not be written ({e}); metrics dropped"
            ));
            small.metrics.clear();
            small.info.clear();
            state
                .record(&Record::Workload(Box::new(small)))
                .map_err(|e| e.to_string())
        }
        Err(e) => Err(format!("cannot write the record of {}: {e}", result.name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_choice_order() {
        let root = tempfile::tempdir().unwrap();
        let (p, src, problems) = choose_profile(&ProfileRequest::default(), root.path());
        assert_eq!((p.name.as_str(), src.as_str()), ("smoke", "builtin"));
        assert!(problems.is_empty());

        std::fs::create_dir_all(root.path().join("etc/imgbuild")).unwrap();
        let own =
            r#"{"name":"mine","workloads":[{"workload":"crypto","params":{"seconds":0.001}}]}"#;
        std::fs::write(root.path().join("etc/imgbuild/profile.json"), own).unwrap();
        let (p, src, _) = choose_profile(&ProfileRequest::default(), root.path());
        assert_eq!((p.name.as_str(), src.as_str()), ("mine", PROFILE_PATH));

        let by_name = |n: &str| ProfileRequest {
            name: Some(n.into()),
            path: None,
        };
        assert_eq!(
            choose_profile(&by_name("quick"), root.path()).0.name,
            "quick"
        );
        assert_eq!(choose_profile(&by_name("mine"), root.path()).0.name, "mine");
        let (p, _, problems) = choose_profile(&by_name("nope"), root.path());
        assert_eq!(p.name, "mine");
        assert_eq!(problems.len(), 1);

        std::fs::write(root.path().join("etc/imgbuild/profile.json"), "{").unwrap();
        let (p, _, problems) = choose_profile(&ProfileRequest::default(), root.path());
        assert_eq!(p.name, "smoke");
        assert!(problems[0].contains("profile.json"), "{problems:?}");
    }

    #[test]
    fn workdir_creation_reports_what_to_remove() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        assert_eq!(create_workdir(&deep).unwrap(), Some(dir.path().join("a")));
        assert!(deep.is_dir());
        assert_eq!(create_workdir(&deep).unwrap(), None);
    }
}
