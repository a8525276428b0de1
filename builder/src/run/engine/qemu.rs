//! `--on qemu`: the QEMU package (the KVM platform): its raw whole disk and the results disk on
//! virtio-blk, virtio-net, direct kernel boot with the package's kernel, initramfs and the
//! command line of its script (console on ttyS0).

use super::{guest_cmdline, PlanDisk, QemuPackage, QemuPlan, VmSize};
use crate::manifest::Role;
use crate::run::build_dir::{parse_qemu_script, read_config};
use crate::run::qemu::{Boot, DeviceSet};
use crate::run::{BuildDir, EngineKind, RunError, Settings};

/// The QEMU package with virtio devices.
pub struct QemuVirtio;

fn script(build: &BuildDir) -> Result<crate::run::build_dir::QemuScript, RunError> {
    let path = build.config("qemu", ".sh")?;
    parse_qemu_script(&read_config(&path)?).map_err(|e| RunError::BadBuild {
        dir: path.clone(),
        message: e,
    })
}

impl QemuPackage for QemuVirtio {
    fn kind(&self) -> EngineKind {
        EngineKind::Qemu
    }

    fn defaults(&self, build: &BuildDir) -> Result<VmSize, RunError> {
        let s = script(build)?;
        Ok(VmSize {
            cpus: s.cpus.unwrap_or(1),
            memory_mb: s.memory_mb.unwrap_or(512),
        })
    }

    fn plan(&self, build: &BuildDir, settings: &Settings) -> Result<QemuPlan, RunError> {
        let s = script(build)?;
        let cmdline = s.cmdline.ok_or_else(|| RunError::BadBuild {
            dir: build.dir.clone(),
            message: "the qemu script has no -append command line".into(),
        })?;
        let disk = build
            .files("qemu", Role::Disk)?
            .into_iter()
            .find(|p| p.extension().is_some_and(|e| e == "raw"))
            .ok_or_else(|| RunError::BadBuild {
                dir: build.dir.clone(),
                message: "the qemu target has no raw disk".into(),
            })?;
        Ok(QemuPlan {
            devices: DeviceSet::Virtio,
            boot: Boot::Kernel {
                kernel: build.file("qemu", Role::Kernel)?,
                initrd: build.file("qemu", Role::Initrd)?,
                cmdline: guest_cmdline(&cmdline, settings),
            },
            root: PlanDisk {
                path: disk,
                format: "raw",
            },
            results: PlanDisk {
                path: build.file("qemu", Role::Results)?,
                format: "raw",
            },
            notes: Vec::new(),
        })
    }
}
