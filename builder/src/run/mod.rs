//! Booting packages on real engines and collecting their results: `imgbuild run`.
//!
//! One engine per platform ([`engine`]): `qemu` (KVM's virtio device set), `vmware` (the VMDK
//! booted from disk with VMware's SCSI controller and NIC), `xen-image` (Xen's bare image with
//! direct kernel boot under QEMU; `xen` only prints the `xl create` line for a real dom0),
//! `openvz` (the template as a runc container) and `host` (the init's host mode, the baseline).
//! Every run boots scratch copies of the build's disks, so the build stays as `verify` expects
//! it, and leaves in `OUT/results/`: `<engine>-<n>.json` (a [`RunRecord`]: the collected results
//! and how they were obtained), the console log and the results disk it wrote.

pub mod accel;
pub mod build_dir;
pub mod engine;
pub mod extract;
pub mod oci;
pub mod qemu;
pub mod record;
pub mod scratch;
pub mod watch;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

pub use build_dir::BuildDir;
pub use record::{RunPaths, RunRecord};

use qemu::CacheMode;

/// The engines `run --on` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EngineKind {
    /// The QEMU package with virtio devices (the KVM platform).
    Qemu,
    /// The VMware package's VMDK, booted from disk with VMware's devices.
    Vmware,
    /// The Xen package's image, kernel and initramfs under QEMU.
    XenImage,
    /// A real Xen dom0: only `--print` (the `xl create` line).
    Xen,
    /// The OpenVZ template as a runc container.
    Openvz,
    /// The init's host mode on this machine.
    Host,
}

impl EngineKind {
    /// Every engine that boots here, in the order `scripts/compare` runs them.
    pub const BOOTABLE: [EngineKind; 5] = [
        EngineKind::Qemu,
        EngineKind::Vmware,
        EngineKind::XenImage,
        EngineKind::Openvz,
        EngineKind::Host,
    ];

    /// The name on the command line and in result file names.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Qemu => "qemu",
            EngineKind::Vmware => "vmware",
            EngineKind::XenImage => "xen-image",
            EngineKind::Xen => "xen",
            EngineKind::Openvz => "openvz",
            EngineKind::Host => "host",
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EngineKind {
    type Err = RunError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            EngineKind::Qemu,
            EngineKind::Vmware,
            EngineKind::XenImage,
            EngineKind::Xen,
            EngineKind::Openvz,
            EngineKind::Host,
        ]
        .into_iter()
        .find(|e| e.name() == s)
        .ok_or_else(|| {
            RunError::Usage(format!(
                "unknown engine {s:?}; the engines are qemu, vmware, xen-image, xen (--print \
                 only), openvz and host"
            ))
        })
    }
}

/// What `imgbuild run` was asked for.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The engine.
    pub engine: EngineKind,
    /// A profile instead of the image's (`imgbuild.profile=` / the init's `--profile`).
    pub profile: Option<String>,
    /// vCPUs; the package's own setting when absent.
    pub cpus: Option<u32>,
    /// Memory in MiB; the package's own setting when absent.
    pub memory_mb: Option<u32>,
    /// A guest still running after this long is killed.
    pub timeout: Duration,
    /// Boots.
    pub repeat: u32,
    /// Disk cache mode of the VM engines.
    pub cache: CacheMode,
    /// Forward this host port (on 127.0.0.1) to the guest's port 80 and give the guest's NIC
    /// QEMU's user-network address, so a client on the host (a real `ab`) reaches a workload
    /// serving HTTP. Engines with direct kernel boot only (qemu, xen-image).
    pub forward_http: Option<u16>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            engine: EngineKind::Qemu,
            profile: None,
            cpus: None,
            memory_mb: None,
            timeout: Duration::from_secs(600),
            repeat: 1,
            cache: CacheMode::None,
            forward_http: None,
        }
    }
}

/// The settings one boot runs with, after the package's defaults were applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// vCPUs.
    pub cpus: u32,
    /// Memory, MiB.
    pub memory_mb: u32,
    /// Disk cache mode (VM engines).
    pub cache: CacheMode,
    /// Time limit.
    pub timeout: Duration,
    /// Profile override.
    pub profile: Option<String>,
    /// Host port forwarded to the guest's port 80 ([`RunOptions::forward_http`]).
    pub forward_http: Option<u16>,
}

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad usage: an option that does not fit.
    #[error("{0}")]
    Usage(String),
    /// The output directory has no manifest, or a bad one.
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
    /// The build lacks the target an engine boots.
    #[error("{dir} has no {target} target: build it with `imgbuild build --target {target} --out {dir}` (or --target all)")]
    MissingTarget {
        /// The output directory.
        dir: PathBuf,
        /// The target.
        target: String,
    },
    /// A file of the build is missing or not what it should be.
    #[error("build in {dir}: {message}")]
    BadBuild {
        /// The output directory or file.
        dir: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A program the engine needs is not installed.
    #[error("{tool} is not installed ({hint})")]
    MissingTool {
        /// The program.
        tool: String,
        /// How to get it.
        hint: String,
    },
    /// The template cannot be unpacked.
    #[error(transparent)]
    Template(#[from] crate::sources::tar::TarError),
    /// Writing the unpacked template failed.
    #[error(transparent)]
    Extract(#[from] extract::ExtractError),
    /// File I/O.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The engine itself failed (a runtime that refuses the container, a process that cannot
    /// start).
    #[error("{engine}: {message}")]
    Engine {
        /// Which engine.
        engine: EngineKind,
        /// What happened.
        message: String,
    },
}

impl RunError {
    /// 2 for bad usage or input (the user can fix it), 1 for failures of the tool or its
    /// environment (a missing program, I/O, an engine that fails).
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Usage(_)
            | RunError::Manifest(_)
            | RunError::MissingTarget { .. }
            | RunError::BadBuild { .. }
            | RunError::Template(_) => 2,
            RunError::MissingTool { .. }
            | RunError::Extract(_)
            | RunError::Io { .. }
            | RunError::Engine { .. } => 1,
        }
    }

    pub(crate) fn io(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| RunError::Io {
            path,
            action,
            source,
        }
    }
}

/// Applies the package's defaults and checks the options against the build.
pub fn settings(build: &BuildDir, options: &RunOptions) -> Result<Settings, RunError> {
    let engine = engine::engine(options.engine);
    let (cpus, memory_mb) = match (options.cpus, options.memory_mb) {
        (Some(c), Some(m)) => (c, m),
        (cpus, memory) => {
            let d = engine.defaults(build)?;
            (cpus.unwrap_or(d.cpus), memory.unwrap_or(d.memory_mb))
        }
    };
    if !(1..=256).contains(&cpus) {
        return Err(RunError::Usage(format!("--cpus {cpus}: use 1 to 256")));
    }
    if !(16..=1 << 20).contains(&memory_mb) {
        return Err(RunError::Usage(format!(
            "--memory {memory_mb}: use 16 MiB to 1 TiB"
        )));
    }
    if options.timeout.is_zero() {
        return Err(RunError::Usage("--timeout must be positive".into()));
    }
    if let Some(p) = &options.profile {
        build.check_profile(p)?;
    }
    if options.forward_http.is_some()
        && !matches!(options.engine, EngineKind::Qemu | EngineKind::XenImage)
    {
        return Err(RunError::Usage(format!(
            "--forward-http needs an engine that boots the kernel directly (qemu, xen-image), not {}",
            options.engine
        )));
    }
    if options.forward_http == Some(0) {
        return Err(RunError::Usage("--forward-http 0: name a port".into()));
    }
    Ok(Settings {
        cpus,
        memory_mb,
        cache: options.cache,
        timeout: options.timeout,
        profile: options.profile.clone(),
        forward_http: options.forward_http,
    })
}

/// The command `options.engine` would run, for `--print`: the build's own files, no copies.
pub fn print_command(out: &Path, options: &RunOptions) -> Result<String, RunError> {
    let build = BuildDir::open(out)?;
    let settings = settings(&build, options)?;
    engine::engine(options.engine).print(&build, &settings)
}

/// Boots `options.repeat` times and writes a [`RunRecord`] for each; `log` gets a line per
/// boot as it starts.
pub fn run(
    out: &Path,
    options: &RunOptions,
    log: &dyn Fn(&str),
) -> Result<Vec<RunRecord>, RunError> {
    if options.engine == EngineKind::Xen {
        return Err(engine::xen_refusal());
    }
    if options.repeat == 0 {
        return Err(RunError::Usage("--repeat must be at least 1".into()));
    }
    let build = BuildDir::open(out)?;
    let settings = settings(&build, options)?;
    let engine = engine::engine(options.engine);
    let results_dir = build.dir.join("results");
    std::fs::create_dir_all(&results_dir).map_err(RunError::io(&results_dir, "create"))?;
    let mut records = Vec::new();
    for _ in 0..options.repeat {
        let paths = RunPaths::reserve(&results_dir, options.engine)?;
        log(&format!(
            "{}-{}: booting ({} vCPUs, {} MiB, timeout {} s)",
            options.engine,
            paths.n,
            settings.cpus,
            settings.memory_mb,
            settings.timeout.as_secs_f64()
        ));
        let started = record::unix_now();
        let booted = match engine.boot(&engine::Context {
            build: &build,
            settings: &settings,
            paths: &paths,
        }) {
            Ok(b) => b,
            Err(e) => {
                paths.release();
                return Err(e);
            }
        };
        let record = RunRecord::new(&build, options.engine, &paths, &settings, started, booted);
        record.write(&paths)?;
        records.push(record);
    }
    Ok(records)
}
