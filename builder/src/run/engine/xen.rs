//! `--on xen-image`: the Xen package's own files — the bare filesystem image, kernel and
//! initramfs — under QEMU with direct kernel boot and virtio disks, the xl config's command line
//! with the console on ttyS0 instead of hvc0. `--on xen` boots nothing: with `--print` it gives
//! the `xl create` line for a real dom0.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{guest_cmdline, Booted, Context, Engine, PlanDisk, QemuPackage, QemuPlan, VmSize};
use crate::manifest::Role;
use crate::run::build_dir::{key_values, read_config};
use crate::run::qemu::{shell_quote, Boot, DeviceSet};
use crate::run::{BuildDir, EngineKind, RunError, Settings};

/// The Xen package's image under QEMU.
pub struct XenImage;

/// A real Xen dom0: prints the command only.
pub struct XenPrint;

fn cfg(build: &BuildDir) -> Result<(PathBuf, BTreeMap<String, String>), RunError> {
    let path = build.config("xen", ".cfg")?;
    let kv = key_values(&read_config(&path)?);
    Ok((path, kv))
}

fn size(build: &BuildDir) -> Result<VmSize, RunError> {
    let (path, kv) = cfg(build)?;
    let get = |key: &str| -> Result<u32, RunError> {
        kv.get(key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| RunError::BadBuild {
                dir: path.clone(),
                message: format!("no numeric {key}"),
            })
    };
    Ok(VmSize {
        cpus: get("vcpus")?,
        memory_mb: get("memory")?,
    })
}

/// The xl config's `extra` with the console on the serial port QEMU has.
pub fn serial_cmdline(extra: &str) -> String {
    extra
        .split_whitespace()
        .map(|w| match w.strip_prefix("console=") {
            Some(c) if c.starts_with("hvc") => "console=ttyS0",
            _ => w,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl QemuPackage for XenImage {
    fn kind(&self) -> EngineKind {
        EngineKind::XenImage
    }

    fn defaults(&self, build: &BuildDir) -> Result<VmSize, RunError> {
        size(build)
    }

    fn plan(&self, build: &BuildDir, settings: &Settings) -> Result<QemuPlan, RunError> {
        let (path, kv) = cfg(build)?;
        let rootfs = build
            .files("xen", Role::Rootfs)?
            .into_iter()
            .next()
            .ok_or_else(|| RunError::BadBuild {
                dir: path.clone(),
                message: "the xen package has no bare filesystem image (built with pygrub or \
                          --device): boot it with --on qemu instead"
                    .into(),
            })?;
        let extra = kv.get("extra").ok_or_else(|| RunError::BadBuild {
            dir: path.clone(),
            message: "no extra = \"…\" command line".into(),
        })?;
        Ok(QemuPlan {
            devices: DeviceSet::Virtio,
            boot: Boot::Kernel {
                kernel: build.file("xen", Role::Kernel)?,
                initrd: build.file("xen", Role::Initrd)?,
                cmdline: guest_cmdline(&serial_cmdline(extra), settings),
            },
            root: PlanDisk {
                path: rootfs,
                format: "raw",
            },
            results: PlanDisk {
                path: build.file("xen", Role::Results)?,
                format: "raw",
            },
            notes: vec![
                "Xen's bare filesystem image on virtio-blk (a whole disk without partitions, as \
                 xvda1 is under Xen); console=hvc0 replaced by console=ttyS0"
                    .into(),
            ],
        })
    }
}

/// Why `--on xen` boots nothing here.
pub fn xen_refusal() -> RunError {
    RunError::Usage(
        "xen needs a Xen dom0: `imgbuild run OUT --on xen --print` prints the xl create command \
         to run there; --on xen-image boots the same files under QEMU"
            .into(),
    )
}

impl Engine for XenPrint {
    fn kind(&self) -> EngineKind {
        EngineKind::Xen
    }

    fn defaults(&self, build: &BuildDir) -> Result<VmSize, RunError> {
        size(build)
    }

    fn print(&self, build: &BuildDir, settings: &Settings) -> Result<String, RunError> {
        let (path, kv) = cfg(build)?;
        let mut line = format!("xl create {}", shell_quote(&path.display().to_string()));
        if settings.profile.is_some() {
            // KEY=VALUE after the config file overrides the config's key.
            let extra = guest_cmdline(kv.get("extra").map_or("", String::as_str), settings);
            line.push_str(&format!(" {}", shell_quote(&format!("extra=\"{extra}\""))));
        }
        Ok(line)
    }

    fn boot(&self, _: &Context<'_>) -> Result<Booted, RunError> {
        Err(xen_refusal())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_moves_to_the_serial_port() {
        assert_eq!(
            serial_cmdline("root=UUID=x ro quiet panic=-1 console=hvc0 foo=1"),
            "root=UUID=x ro quiet panic=-1 console=ttyS0 foo=1"
        );
        assert_eq!(serial_cmdline("console=tty0"), "console=tty0");
    }
}
