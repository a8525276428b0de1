//! The engines: one module each, behind [`Engine`]. The three QEMU engines differ only in
//! what they boot and with which device set ([`QemuPackage`]); [`OnQemu`] does the rest for
//! them (KVM probe, scratch copies, supervision, host-side timing).

mod host;
mod openvz;
mod qemu;
mod vmware;
mod xen;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use host::Host;
pub use openvz::Openvz;
pub use qemu::QemuVirtio;
pub use vmware::Vmware;
pub use xen::{xen_refusal, XenImage, XenPrint};

use super::qemu::{
    choose_accel, choose_accel_explained, command, qboot, qemu_binary, Accel, Boot, CacheMode,
    DeviceSet, Drive, Guest,
};
use super::scratch::{check_direct_io, copy_disk, sparse_copy};
use super::watch::{ResultsKind, Watch};
use super::{BuildDir, EngineKind, RunError, RunPaths, Settings};
use crate::kernel::pvh;

/// vCPUs and memory a package asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmSize {
    /// vCPUs.
    pub cpus: u32,
    /// Memory, MiB.
    pub memory_mb: u32,
}

/// What an engine boots with.
pub struct Context<'a> {
    /// The build.
    pub build: &'a BuildDir,
    /// Resolved settings.
    pub settings: &'a Settings,
    /// This run's files.
    pub paths: &'a RunPaths,
}

/// How a boot went, before its results are read.
#[derive(Debug, Clone)]
pub struct Booted {
    /// The exact command line.
    pub command: String,
    /// KVM or TCG (QEMU engines).
    pub accel: Option<Accel>,
    /// Disk cache mode used (VM engines).
    pub cache: Option<CacheMode>,
    /// The results disk or file to collect.
    pub results: PathBuf,
    /// Engine start to exit.
    pub wall: Duration,
    /// Engine start to the first record in the results.
    pub first_record: Option<Duration>,
    /// Killed at the timeout.
    pub timed_out: bool,
    /// Exit code of the engine program.
    pub exit_status: Option<i32>,
    /// Facts worth recording.
    pub notes: Vec<String>,
}

/// A way to boot a build.
pub trait Engine {
    /// Which engine.
    fn kind(&self) -> EngineKind;
    /// The vCPUs and memory the package's own configuration asks for.
    fn defaults(&self, build: &BuildDir) -> Result<VmSize, RunError>;
    /// The command that boots the build's own files (for `--print`).
    fn print(&self, build: &BuildDir, settings: &Settings) -> Result<String, RunError>;
    /// Boots once, on scratch copies, and leaves the results at [`Booted::results`].
    fn boot(&self, cx: &Context<'_>) -> Result<Booted, RunError>;
}

/// The engine of `kind`.
pub fn engine(kind: EngineKind) -> Box<dyn Engine> {
    match kind {
        EngineKind::Qemu => Box::new(OnQemu(QemuVirtio)),
        EngineKind::Vmware => Box::new(OnQemu(Vmware)),
        EngineKind::XenImage => Box::new(OnQemu(XenImage)),
        EngineKind::Xen => Box::new(XenPrint),
        EngineKind::Openvz => Box::new(Openvz),
        EngineKind::Host => Box::new(Host),
    }
}

/// A disk of a QEMU plan.
#[derive(Debug, Clone)]
pub struct PlanDisk {
    /// The build's file.
    pub path: PathBuf,
    /// `raw` or `vmdk`.
    pub format: &'static str,
}

/// What a QEMU engine boots.
#[derive(Debug, Clone)]
pub struct QemuPlan {
    /// Device set.
    pub devices: DeviceSet,
    /// Direct kernel boot (kernel, initrd, command line) or the disk's own boot loader.
    pub boot: Boot,
    /// Root disk.
    pub root: PlanDisk,
    /// Results disk.
    pub results: PlanDisk,
    /// Facts to record.
    pub notes: Vec<String>,
}

/// A package QEMU boots.
pub trait QemuPackage {
    /// Which engine.
    fn kind(&self) -> EngineKind;
    /// The package's vCPUs and memory.
    fn defaults(&self, build: &BuildDir) -> Result<VmSize, RunError>;
    /// Devices, boot method and disks.
    fn plan(&self, build: &BuildDir, settings: &Settings) -> Result<QemuPlan, RunError>;
}

/// Runs a [`QemuPackage`].
pub struct OnQemu<P>(pub P);

fn qemu_program() -> Result<PathBuf, RunError> {
    qemu_binary().ok_or_else(|| RunError::MissingTool {
        tool: "qemu-system-x86_64".into(),
        hint: "apt-get install qemu-system-x86, or set IMGBUILD_QEMU".into(),
    })
}

fn guest(
    qemu: &Path,
    plan: &QemuPlan,
    settings: &Settings,
    accel: Accel,
    root: &Path,
    results: &Path,
    serial: &Path,
) -> Guest {
    Guest {
        accel,
        cpus: settings.cpus,
        memory_mb: settings.memory_mb,
        cache: settings.cache,
        devices: plan.devices,
        boot: plan.boot.clone(),
        drives: vec![
            Drive {
                path: root.to_path_buf(),
                format: plan.root.format,
            },
            Drive {
                path: results.to_path_buf(),
                format: plan.results.format,
            },
        ],
        serial_log: serial.to_path_buf(),
        forward_http: settings.forward_http,
        firmware: direct_boot_firmware(qemu, &plan.boot),
    }
}

/// The address QEMU's user network gives its first guest (its DHCP server's only lease).
pub const USER_NET_GUEST_ADDRESS: &str = "10.0.2.15/24";

/// A package's kernel command line with the run's additions: `imgbuild.profile=P` for a
/// profile override, `imgbuild.ip=` when a host port is forwarded to the guest.
pub(crate) fn guest_cmdline(cmdline: &str, settings: &Settings) -> String {
    let mut line = cmdline.to_string();
    if let Some(p) = &settings.profile {
        line.push_str(&format!(" imgbuild.profile={p}"));
    }
    if settings.forward_http.is_some() {
        line.push_str(&format!(" imgbuild.ip={USER_NET_GUEST_ADDRESS}"));
    }
    line
}

impl<P: QemuPackage> Engine for OnQemu<P> {
    fn kind(&self) -> EngineKind {
        self.0.kind()
    }

    fn defaults(&self, build: &BuildDir) -> Result<VmSize, RunError> {
        self.0.defaults(build)
    }

    fn print(&self, build: &BuildDir, settings: &Settings) -> Result<String, RunError> {
        let plan = self.0.plan(build, settings)?;
        let qemu = qemu_binary().unwrap_or_else(|| PathBuf::from("qemu-system-x86_64"));
        let accel = match build.any_kernel() {
            Some(k) if qemu.exists() => choose_accel(&qemu, &k),
            _ => Accel::Tcg,
        };
        let serial = build
            .dir
            .join("results")
            .join(format!("{}-console.log", self.kind()));
        let g = guest(
            &qemu,
            &plan,
            settings,
            accel,
            &plan.root.path,
            &plan.results.path,
            &serial,
        );
        Ok(command(&qemu, &g).to_string())
    }

    fn boot(&self, cx: &Context<'_>) -> Result<Booted, RunError> {
        let qemu = qemu_program()?;
        let mut plan = self.0.plan(cx.build, cx.settings)?;
        let mut notes = plan.notes.clone();
        let accel = match cx.build.any_kernel() {
            Some(kernel) => {
                let (accel, reason) = choose_accel_explained(&qemu, &kernel);
                notes.push(format!("accelerator: {reason}"));
                accel
            }
            None => {
                notes.push("no kernel in the build to probe KVM with: TCG".into());
                Accel::Tcg
            }
        };
        let paths = cx.paths;
        std::fs::create_dir_all(&paths.work).map_err(RunError::io(&paths.work, "create"))?;
        let result = (|| {
            if cx.settings.cache == CacheMode::None {
                check_direct_io(&paths.work)?;
            }
            let root = copy_disk(&plan.root.path, &paths.work)?;
            let ext = if plan.results.format == "vmdk" {
                "results.vmdk"
            } else {
                "results.img"
            };
            let results = paths.file(ext);
            let _ = std::fs::remove_file(&results);
            sparse_copy(&plan.results.path, &results)?;
            notes.push(format!(
                "root disk: scratch copy of {} (removed after the run); results disk: copy of {}",
                plan.root.path.display(),
                plan.results.path.display()
            ));
            notes.push(boot_pvh_entry(&mut plan.boot, &paths.work));
            let g = guest(
                &qemu,
                &plan,
                cx.settings,
                accel,
                &root,
                &results,
                &paths.console,
            );
            let cmd = command(&qemu, &g);
            let kind = if plan.results.format == "vmdk" {
                ResultsKind::Vmdk
            } else {
                ResultsKind::RawDisk
            };
            let mut watch = Watch::new(results.clone(), kind, Instant::now());
            let outcome = super::qemu::run(&cmd, cx.settings.timeout, &paths.stderr, &mut || {
                watch.poll()
            })
            .map_err(|e| RunError::Engine {
                engine: self.kind(),
                message: format!("cannot run {}: {e}", qemu.display()),
            })?;
            drop_empty(&paths.stderr);
            if let Ok(text) = std::fs::read_to_string(&paths.stderr) {
                notes.extend(text.lines().take(20).map(|l| format!("qemu: {l}")));
            }
            Ok(Booted {
                command: cmd.to_string(),
                accel: Some(accel),
                cache: Some(cx.settings.cache),
                results,
                wall: outcome.wall,
                first_record: watch.first_record(),
                timed_out: outcome.timed_out,
                exit_status: outcome.status.and_then(|s| s.code()),
                notes,
            })
        })();
        let _ = std::fs::remove_dir_all(&paths.work);
        result
    }
}

/// qboot for a kernel QEMU loads itself, where installed; a disk boots through SeaBIOS.
fn direct_boot_firmware(qemu: &Path, boot: &Boot) -> Option<PathBuf> {
    match boot {
        Boot::Kernel { .. } => qboot(qemu),
        Boot::Disk => None,
    }
}

/// Points a direct kernel boot at the kernel's ELF `vmlinux`, unpacked into `work`, when the
/// kernel has a PVH entry: QEMU then starts it as Xen starts a `type = "pvh"` guest, without
/// the BIOS's Linux loader and the bzImage's decompressor (a quarter of a second under TCG).
/// Any reason not to leaves the bzImage in place; the returned note says which was booted.
fn boot_pvh_entry(boot: &mut Boot, work: &Path) -> String {
    let Boot::Kernel { kernel, .. } = boot else {
        return "kernel: the disk's own boot loader".into();
    };
    let unpacked = std::fs::read(&*kernel)
        .map_err(|e| e.to_string())
        .and_then(|image| pvh::vmlinux(&image).map_err(|e| e.to_string()))
        .and_then(|elf| {
            let path = work.join("vmlinux");
            std::fs::write(&path, elf)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(path)
        });
    match unpacked {
        Ok(path) => {
            let note = format!(
                "kernel: {} booted through its PVH entry (the ELF vmlinux unpacked from it)",
                kernel.display()
            );
            *kernel = path;
            note
        }
        Err(why) => format!("kernel: {} booted as a bzImage: {why}", kernel.display()),
    }
}

/// Removes a log file that stayed empty.
pub(crate) fn drop_empty(path: &Path) {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
        let _ = std::fs::remove_file(path);
    }
}
