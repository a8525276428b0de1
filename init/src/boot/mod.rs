//! The init's entry: which mode to run in, and the root, container and host modes.
//!
//! Modes are chosen automatically and can be forced:
//! - `--host` (or `--mode M`) on the command line;
//! - `IMGBUILD_STAGE=root`, set by the initramfs stage for the init it execs;
//! - container hints (OpenVZ, LXC, OCI runtimes), which win over the kernel command line
//!   because a container sees its host's /proc/cmdline;
//! - `imgbuild.mode=initramfs|root|container|host` on the kernel command line;
//! - otherwise: PID 1 on ramfs/tmpfs (or started as `/init`) is the initramfs stage, PID 1 on
//!   anything else the root stage.
//!
//! As PID 1 the command line is read leniently (OpenVZ starts init as `init -z "      "`, the
//! kernel passes unknown words): everything not understood is ignored.

mod initramfs;
mod pid1;
pub mod session;

use std::path::{Path, PathBuf};

pub use initramfs::{REPORT_ENV, STAGE_ENV};
pub use pid1::{install_panic_hook, power_off};

use crate::clock::{self, PhaseLog};
use crate::cmdline::Cmdline;
use crate::console;
use crate::mounts::{self, PROC_SUPER_MAGIC, RAMFS_MAGIC, SYSFS_MAGIC, TMPFS_MAGIC};
use crate::platform::{self, ContainerHints};
use crate::results::schema::{ContainerInfo, InitramfsReport, Mode};
use crate::say;
use session::{DigestPolicy, ProfileRequest, ResultsTarget, SessionConfig};

/// Results file of container mode.
pub const CONTAINER_RESULTS: &str = "/var/lib/imgbuild/results";
/// Scratch directory of root and container modes (on the root filesystem under test).
pub const GUEST_WORKDIR: &str = "/var/tmp/imgbuild-work";
/// Default results file of host mode.
pub const HOST_RESULTS: &str = "imgbuild-results.bin";

const USAGE: &str = "\
imgbuild-init: PID 1 of imgbuild images; runs the benchmark workloads and records the results.

As PID 1 it picks its mode itself (initramfs, root, container). On a host:
  imgbuild-init --host [--results FILE] [--profile NAME|FILE.json] [--workdir DIR] [--root DIR]

  --results FILE   results file (default imgbuild-results.bin), readable by `imgbuild collect`
  --profile P      built-in profile (smoke, quick, paper), a profile JSON file, or the name of
                   the profile in ROOT/etc/imgbuild/profile.json
  --workdir DIR    scratch directory for workloads (default: a new one in $TMPDIR)
  --root DIR       an image root: read its build.json and profile.json, check its digest
  --mode M         force a mode (initramfs, root, container, host)
  --list-workloads list the workloads
  --version, --help

Exit status in host mode: 0 all workloads ok, 3 some failed or timed out, 1 the run failed,
2 bad arguments or an unusable profile.
";

/// The command line.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Args {
    /// `--host`.
    pub host: bool,
    /// `--mode`.
    pub mode: Option<Mode>,
    /// `--results`.
    pub results: Option<PathBuf>,
    /// `--profile`.
    pub profile: Option<String>,
    /// `--workdir`.
    pub workdir: Option<PathBuf>,
    /// `--root`.
    pub root: Option<PathBuf>,
    /// `--help`.
    pub help: bool,
    /// `--version`.
    pub version: bool,
    /// `--list-workloads`.
    pub list_workloads: bool,
}

impl Args {
    /// Parses arguments (without argv0). `lenient` ignores what it does not know (PID 1).
    pub fn parse(args: &[String], lenient: bool) -> Result<Args, String> {
        let mut out = Args::default();
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
                _ => (arg.as_str(), None),
            };
            let takes_value = matches!(
                flag,
                "--results" | "--profile" | "--workdir" | "--root" | "--mode"
            );
            let value = if takes_value {
                match inline {
                    Some(v) => Some(v),
                    None => {
                        i += 1;
                        match args.get(i) {
                            Some(v) => Some(v.clone()),
                            None if lenient => None,
                            None => return Err(format!("{flag} needs a value")),
                        }
                    }
                }
            } else {
                None
            };
            match (flag, value) {
                ("--host", _) => out.host = true,
                ("--help" | "-h", _) => out.help = true,
                ("--version" | "-V", _) => out.version = true,
                ("--list-workloads", _) => out.list_workloads = true,
                ("--results", Some(v)) => out.results = Some(v.into()),
                ("--profile", Some(v)) => out.profile = Some(v),
                ("--workdir", Some(v)) => out.workdir = Some(v.into()),
                ("--root", Some(v)) => out.root = Some(v.into()),
                ("--mode", Some(v)) => match Mode::parse(&v) {
                    Some(m) => out.mode = Some(m),
                    None if lenient => {}
                    None => return Err(format!("unknown mode {v:?}")),
                },
                _ if lenient => {}
                (other, _) => return Err(format!("unknown argument {other:?} (see --help)")),
            }
            i += 1;
        }
        Ok(out)
    }
}

/// Decides the mode; see the module documentation for the order.
fn decide_mode(
    args: &Args,
    pid1: bool,
    argv0: &str,
) -> Result<(Mode, Option<ContainerInfo>), String> {
    if args.host {
        return Ok((Mode::Host, None));
    }
    if let Some(mode) = args.mode {
        return Ok((mode, None));
    }
    if std::env::var(STAGE_ENV).as_deref() == Ok("root") {
        return Ok((Mode::Root, None));
    }
    if !pid1 {
        return Err("not PID 1: use --host to run the workloads on this host (see --help)".into());
    }
    // Container hints and the command line live in /proc.
    let _ = mounts::ensure_mounted("proc", Path::new("/proc"), Some(PROC_SUPER_MAGIC), 0);
    if let Some(c) = platform::container_from_hints(&ContainerHints::gather()) {
        return Ok((Mode::Container, Some(c)));
    }
    if let Some(mode) = Cmdline::read().and_then(|c| c.get("imgbuild.mode").and_then(Mode::parse)) {
        return Ok((mode, None));
    }
    let root = Path::new("/");
    if mounts::is_fs(root, RAMFS_MAGIC) || mounts::is_fs(root, TMPFS_MAGIC) || argv0 == "/init" {
        return Ok((Mode::Initramfs, None));
    }
    Ok((Mode::Root, None))
}

/// The init's `main`: returns the exit status. As PID 1 only container and host modes return;
/// every other path, a panic included, ends in a power-off.
pub fn main() -> i32 {
    let handoff = clock::since_boot();
    install_panic_hook();
    let pid1 = std::process::id() == 1;
    let result = std::panic::catch_unwind(|| dispatch(handoff, pid1));
    match result {
        Ok((code, Some(Mode::Container | Mode::Host))) => code,
        Ok((code, _)) if !pid1 => code,
        Err(_) if !pid1 => 101,
        _ => {
            say!("PID 1 has nothing left to run");
            power_off()
        }
    }
}

fn dispatch(handoff: f64, pid1: bool) -> (i32, Option<Mode>) {
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let args = match Args::parse(argv.get(1..).unwrap_or_default(), pid1) {
        Ok(a) => a,
        Err(e) => {
            say!("{e}");
            return (2, None);
        }
    };
    if args.help {
        print!("{USAGE}");
        return (0, None);
    }
    if args.version {
        println!("imgbuild-init {}", env!("CARGO_PKG_VERSION"));
        return (0, None);
    }
    if args.list_workloads {
        for w in crate::workloads::registry() {
            println!("{:16} {}", w.name(), w.summary());
        }
        return (0, None);
    }
    let argv0 = argv.first().map(String::as_str).unwrap_or("");
    match decide_mode(&args, pid1, argv0) {
        Ok((Mode::Host, _)) => (host_main(&args), Some(Mode::Host)),
        Ok((Mode::Initramfs, _)) => initramfs::run(handoff),
        Ok((Mode::Root, _)) => (root_main(handoff, pid1), Some(Mode::Root)),
        Ok((Mode::Container, c)) => (
            container_main(c, pid1, profile_request(args.profile.as_deref())),
            Some(Mode::Container),
        ),
        Err(e) => {
            say!("{e}");
            (2, None)
        }
    }
}

fn test_panic_requested(cmdline: Option<&Cmdline>) -> bool {
    std::env::var("IMGBUILD_TEST_PANIC").is_ok_and(|v| v == "1")
        || cmdline.is_some_and(|c| c.get("imgbuild.test_panic") == Some("1"))
}

/// Root stage: PID 1 of the real root. Runs the session and powers off.
fn root_main(handoff: f64, pid1: bool) -> i32 {
    let body = std::panic::catch_unwind(|| {
        let mut problems = Vec::new();
        let report: Option<InitramfsReport> = std::env::var(REPORT_ENV).ok().and_then(|json| {
            serde_json::from_str(&json)
                .map_err(|e| problems.push(format!("cannot decode {REPORT_ENV}: {e}")))
                .ok()
        });
        // Not inherited by the workloads.
        std::env::remove_var(REPORT_ENV);
        std::env::remove_var(STAGE_ENV);
        // Booted without our initramfs, the kernel mounted the root and maybe /dev only.
        for (fstype, target, magic, flags) in [
            (
                "proc",
                "/proc",
                Some(PROC_SUPER_MAGIC),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            ),
            (
                "sysfs",
                "/sys",
                Some(SYSFS_MAGIC),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            ),
        ] {
            if let Err(e) = mounts::ensure_mounted(fstype, Path::new(target), magic, flags) {
                problems.push(e.to_string());
            }
        }
        let dev = Path::new("/dev");
        if !mounts::is_mount_point(dev) {
            if let Err(e) = mounts::mount(
                "devtmpfs",
                dev,
                Some("devtmpfs"),
                libc::MS_NOSUID,
                Some("mode=0755"),
            ) {
                problems.push(e.to_string());
            }
        }
        if !console::has_stderr() {
            let _ = console::attach_console();
        }
        say!("imgbuild-init {}: root stage", env!("CARGO_PKG_VERSION"));
        crate::net::default_path();
        if let Err(e) = crate::net::bring_up_loopback() {
            problems.push(format!("cannot bring up lo: {e}"));
        }
        let mut phases = match &report {
            Some(r) => PhaseLog::continuing(r.phases.clone()),
            None => {
                let mut log = PhaseLog::new();
                log.mark_at("kernel_handoff", handoff);
                log
            }
        };
        phases.mark("root_init");
        let cmdline = Cmdline::read();
        if let Some(spec) = cmdline.as_ref().and_then(|c| c.get("imgbuild.ip")) {
            match crate::net::InterfaceAddress::parse(spec) {
                Ok(ifa) => match crate::net::configure(&ifa) {
                    Ok(()) => say!("{} is {}/{}", ifa.interface, ifa.address, ifa.prefix),
                    Err(e) => problems.push(format!("cannot configure {spec}: {e}")),
                },
                Err(e) => problems.push(e),
            }
        }
        let config = SessionConfig {
            mode: Mode::Root,
            image_root: PathBuf::from("/"),
            results: ResultsTarget::FindDisk,
            profile: ProfileRequest {
                name: cmdline
                    .as_ref()
                    .and_then(|c| c.get("imgbuild.profile"))
                    .map(str::to_owned),
                path: None,
            },
            workdir: PathBuf::from(GUEST_WORKDIR),
            reap_all: pid1,
            digest: DigestPolicy::Root { allow_bind: true },
            remount_root_rw: true,
            initramfs: report,
            test_panic: test_panic_requested(cmdline.as_ref()),
            cmdline,
            container: None,
            problems,
        };
        session::run(config, phases)
    });
    if let Err(p) = body {
        say!(
            "root stage panicked outside the run: {}",
            crate::runner::panic_message(p.as_ref())
        );
    }
    if pid1 {
        pid1::remount_root_readonly();
        power_off();
    }
    0
}

/// `--profile P`: a file when P looks like a path, else a name.
fn profile_request(profile: Option<&str>) -> ProfileRequest {
    match profile {
        Some(p) if p.contains('/') || p.ends_with(".json") => ProfileRequest {
            name: None,
            path: Some(PathBuf::from(p)),
        },
        Some(p) => ProfileRequest {
            name: Some(p.to_owned()),
            path: None,
        },
        None => ProfileRequest::default(),
    }
}

/// Container mode: PID 1 of a container. Results go to a file; exits 0 (no power-off). A
/// `--profile` argument (the runtime's process arguments) picks the profile, since the kernel
/// command line a container sees is its host's.
fn container_main(container: Option<ContainerInfo>, pid1: bool, profile: ProfileRequest) -> i32 {
    let outcome = std::panic::catch_unwind(|| {
        let mut problems = Vec::new();
        if let Err(e) =
            mounts::ensure_mounted("proc", Path::new("/proc"), Some(PROC_SUPER_MAGIC), 0)
        {
            problems.push(e.to_string());
        }
        let container =
            container.or_else(|| platform::container_from_hints(&ContainerHints::gather()));
        say!(
            "imgbuild-init {}: container stage ({container:?})",
            env!("CARGO_PKG_VERSION")
        );
        crate::net::default_path();
        if let Err(e) = crate::net::bring_up_loopback() {
            problems.push(format!("cannot bring up lo: {e}"));
        }
        let mut phases = PhaseLog::new();
        phases.mark("container_init");
        // A results file left by an earlier run is not part of the image: remove it before the
        // digest walks the root.
        let _ = std::fs::remove_file(CONTAINER_RESULTS);
        let _ = std::fs::remove_dir_all(GUEST_WORKDIR);
        let cmdline = Cmdline::read();
        let config = SessionConfig {
            mode: Mode::Container,
            image_root: PathBuf::from("/"),
            results: ResultsTarget::File(PathBuf::from(CONTAINER_RESULTS)),
            profile,
            workdir: PathBuf::from(GUEST_WORKDIR),
            reap_all: pid1,
            digest: DigestPolicy::Root { allow_bind: true },
            remount_root_rw: false,
            initramfs: None,
            test_panic: test_panic_requested(None),
            // The command line a container sees is its host's: recorded, not obeyed.
            cmdline,
            container,
            problems,
        };
        session::run(config, phases)
    });
    if let Err(p) = outcome {
        say!(
            "container stage panicked outside the run: {}",
            crate::runner::panic_message(p.as_ref())
        );
    }
    0
}

/// Host mode: a normal process benchmarking the host.
fn host_main(args: &Args) -> i32 {
    let results = args
        .results
        .clone()
        .unwrap_or_else(|| PathBuf::from(HOST_RESULTS));
    let image_root = args.root.clone().unwrap_or_else(|| PathBuf::from("/"));
    let profile = profile_request(args.profile.as_deref());
    // On a host a profile that cannot be used is an error, not a fallback.
    let (_, _, problems) = session::choose_profile(&profile, &image_root);
    if !problems.is_empty() {
        for p in problems {
            say!("{p}");
        }
        return 2;
    }
    let workdir = args.workdir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("imgbuild-work-{}", std::process::id()))
    });
    let digest = match &args.root {
        Some(root) => DigestPolicy::Directory(root.clone()),
        None => DigestPolicy::Skip("host mode without --root: the host's / is not an image".into()),
    };
    let mut phases = PhaseLog::new();
    phases.mark("host_start");
    let cmdline = Cmdline::read();
    let config = SessionConfig {
        mode: Mode::Host,
        image_root,
        results: ResultsTarget::File(results),
        profile,
        workdir,
        reap_all: false,
        digest,
        remount_root_rw: false,
        initramfs: None,
        test_panic: test_panic_requested(None),
        cmdline,
        container: platform::container_from_hints(&ContainerHints::gather()),
        problems: Vec::new(),
    };
    let outcome = session::run(config, phases);
    if outcome.results.is_none() {
        say!("no results file was written");
        return 1;
    }
    if !outcome.completed {
        return 1;
    }
    let c = &outcome.counts;
    if c.failed + c.timeout + c.skipped > 0 {
        3
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn host_arguments() {
        let a = Args::parse(
            &strings(&[
                "--host",
                "--results",
                "r.bin",
                "--profile=smoke",
                "--workdir",
                "/w",
            ]),
            false,
        )
        .unwrap();
        assert!(a.host);
        assert_eq!(a.results.as_deref(), Some(Path::new("r.bin")));
        assert_eq!(a.profile.as_deref(), Some("smoke"));
        assert_eq!(a.workdir.as_deref(), Some(Path::new("/w")));
        assert!(Args::parse(&strings(&["--bogus"]), false).is_err());
        assert!(Args::parse(&strings(&["--results"]), false).is_err());
        assert!(Args::parse(&strings(&["--mode", "vm"]), false).is_err());
    }

    #[test]
    fn openvz_arguments_are_ignored_as_pid1() {
        let a = Args::parse(&strings(&["-z", "      "]), true).unwrap();
        assert_eq!(a, Args::default());
        let a = Args::parse(&strings(&["single", "--mode", "root", "--results"]), true).unwrap();
        assert_eq!(a.mode, Some(Mode::Root));
    }

    #[test]
    fn mode_decision_outside_pid1() {
        let host = Args {
            host: true,
            ..Args::default()
        };
        assert_eq!(decide_mode(&host, false, "x").unwrap().0, Mode::Host);
        let forced = Args {
            mode: Some(Mode::Container),
            ..Args::default()
        };
        assert_eq!(decide_mode(&forced, false, "x").unwrap().0, Mode::Container);
        if std::env::var(STAGE_ENV).is_err() {
            assert!(decide_mode(&Args::default(), false, "x").is_err());
        }
    }
}
