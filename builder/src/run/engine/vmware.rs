//! `--on vmware`: the VMware package's own disks, as its `.vmx` names them, booted from disk
//! (GRUB inside the VMDK, no direct kernel boot) on VMware's emulated devices: pvscsi, or the
//! LSI SAS 1068 for `lsisas1068`/`lsilogic`, with `scsi-hd` disks, and vmxnet3 or e1000.
//!
//! GRUB's command line is the image's, so a profile other than the image's own cannot be asked
//! for: that is refused rather than silently ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{PlanDisk, QemuPackage, QemuPlan, VmSize};
use crate::definition::{NicModel, ScsiAdapter};
use crate::run::build_dir::{key_values, read_config};
use crate::run::qemu::{Boot, DeviceSet};
use crate::run::{BuildDir, EngineKind, RunError, Settings};

/// The VMware package on VMware's device set.
pub struct Vmware;

fn vmx(build: &BuildDir) -> Result<(PathBuf, BTreeMap<String, String>), RunError> {
    let path = build.config("vmware", ".vmx")?;
    let kv = key_values(&read_config(&path)?);
    Ok((path, kv))
}

fn number(path: &Path, kv: &BTreeMap<String, String>, key: &str) -> Result<u32, RunError> {
    kv.get(key)
        .ok_or_else(|| format!("no {key}"))
        .and_then(|v| {
            v.parse()
                .map_err(|_| format!("{key} = {v:?} is not a number"))
        })
        .map_err(|message| RunError::BadBuild {
            dir: path.to_path_buf(),
            message,
        })
}

/// A disk the .vmx names, which must lie next to it.
fn disk(path: &Path, kv: &BTreeMap<String, String>, key: &str) -> Result<PathBuf, RunError> {
    let bad = |message: String| RunError::BadBuild {
        dir: path.to_path_buf(),
        message,
    };
    let name = kv.get(key).ok_or_else(|| bad(format!("no {key}")))?;
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(bad(format!(
            "{key} = {name:?} is not a file next to the .vmx"
        )));
    }
    let dir = path.parent().ok_or_else(|| bad("no directory".into()))?;
    Ok(dir.join(name))
}

impl QemuPackage for Vmware {
    fn kind(&self) -> EngineKind {
        EngineKind::Vmware
    }

    fn defaults(&self, build: &BuildDir) -> Result<VmSize, RunError> {
        let (path, kv) = vmx(build)?;
        Ok(VmSize {
            cpus: number(&path, &kv, "numvcpus")?,
            memory_mb: number(&path, &kv, "memsize")?,
        })
    }

    fn plan(&self, build: &BuildDir, settings: &Settings) -> Result<QemuPlan, RunError> {
        let (path, kv) = vmx(build)?;
        if let Some(p) = &settings.profile {
            let own = build.image_profile()?;
            if own.name != *p {
                return Err(RunError::Usage(format!(
                    "vmware boots GRUB from the disk with the image's command line, so it runs \
                     the image's profile {:?}; --profile {p} needs a build with [workloads] \
                     profile = \"{p}\" (or use --on qemu)",
                    own.name
                )));
            }
        }
        let mut notes = Vec::new();
        let adapter = match kv.get("scsi0.virtualDev").map(String::as_str) {
            Some("pvscsi") => ScsiAdapter::Pvscsi,
            Some("lsisas1068") => ScsiAdapter::Lsisas1068,
            Some("lsilogic") => ScsiAdapter::Lsilogic,
            other => {
                return Err(RunError::BadBuild {
                    dir: path,
                    message: format!(
                        "scsi0.virtualDev {other:?} is not pvscsi, lsilogic or lsisas1068"
                    ),
                })
            }
        };
        if adapter != ScsiAdapter::Pvscsi {
            notes.push(
                "SCSI controller emulated as QEMU's mptsas1068 (QEMU has no LSI53C1030); the guest \
                 needs the mptsas driver, which some kernels (Debian's cloud kernel) lack"
                    .into(),
            );
        }
        let nic = match kv.get("ethernet0.virtualDev").map(String::as_str) {
            Some("e1000") => {
                notes.push("e1000 NIC: Debian's cloud kernel has no e1000 driver".into());
                NicModel::E1000
            }
            _ => NicModel::Vmxnet3,
        };
        Ok(QemuPlan {
            devices: DeviceSet::Vmware { adapter, nic },
            boot: Boot::Disk,
            root: PlanDisk {
                path: disk(&path, &kv, "scsi0:0.fileName")?,
                format: "vmdk",
            },
            results: PlanDisk {
                path: disk(&path, &kv, "scsi0:1.fileName")?,
                format: "vmdk",
            },
            notes,
        })
    }
}
