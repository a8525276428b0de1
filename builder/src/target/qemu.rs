//! The QEMU/KVM package: the raw whole-disk image (it boots on its own through GRUB), kernel
//! and initramfs for direct boot, a results disk, and the QEMU command line as a script.

use std::path::{Path, PathBuf};

use super::{file_name, write_text, Output, PackageContext, Packager, TargetError};
use crate::manifest::Role;
use crate::run::qemu::{command, Accel, Boot, CacheMode, DeviceSet, Drive, Guest};

/// The QEMU packager.
pub struct Qemu;

impl Packager for Qemu {
    fn package(&self, cx: &PackageContext<'_>) -> Result<Vec<Output>, TargetError> {
        let name = cx.artefacts.name();
        let mut outputs = Vec::new();
        let disk = format!("{name}.raw");
        cx.artefacts
            .place_disk(&cx.artefacts.disk()?, &format!("qemu/{disk}"))?;
        outputs.push(Output {
            role: Role::Disk,
            path: format!("qemu/{disk}"),
        });
        let mut boot_files = Vec::new();
        for (role, shared) in [
            (Role::Kernel, cx.artefacts.kernel()?),
            (Role::Initrd, cx.artefacts.initrd()?),
        ] {
            let file = file_name(&shared);
            cx.artefacts.place(&shared, &format!("qemu/{file}"))?;
            outputs.push(Output {
                role,
                path: format!("qemu/{file}"),
            });
            boot_files.push(file);
        }
        let results = format!("{name}-results.img");
        cx.artefacts
            .results_disk(&format!("qemu/{results}"), cx.definition.vm.results_disk.0)?;
        outputs.push(Output {
            role: Role::Results,
            path: format!("qemu/{results}"),
        });
        if cx.definition.qemu.qcow2 {
            let qcow2 = format!("{name}.qcow2");
            convert_qcow2(
                &cx.artefacts.staged(&format!("qemu/{disk}"))?,
                &cx.artefacts.staged(&format!("qemu/{qcow2}"))?,
            )?;
            outputs.push(Output {
                role: Role::Disk,
                path: format!("qemu/{qcow2}"),
            });
        }
        let guest = Guest {
            accel: Accel::Tcg,
            cpus: cx.definition.vm.vcpus,
            memory_mb: cx.definition.vm.memory,
            cache: CacheMode::None,
            devices: DeviceSet::Virtio,
            boot: Boot::Kernel {
                kernel: PathBuf::from(&boot_files[0]),
                initrd: PathBuf::from(&boot_files[1]),
                cmdline: cx.cmdline("ttyS0"),
            },
            drives: vec![
                Drive {
                    path: disk.into(),
                    format: "raw",
                },
                Drive {
                    path: results.into(),
                    format: "raw",
                },
            ],
            serial_log: format!("{name}-console.log").into(),
            forward_http: None,
            // The script runs on other hosts: QEMU's default firmware, which every
            // installation has.
            firmware: None,
        };
        let line = command(Path::new("qemu-system-x86_64"), &guest).to_string();
        let script = format!(
            "#!/bin/sh\n# Boots the {name} image under QEMU (software emulation; on a host where KVM\n\
             # works, replace `-accel tcg` with `-accel kvm` and `-cpu Westmere` with `-cpu host`).\n\
             # The disk also boots on its own through GRUB: drop -kernel, -initrd and -append.\n\
             cd \"$(dirname \"$0\")\" || exit 1\nexec {line}\n"
        );
        write_text(cx, &format!("qemu/{name}.sh"), &script)?;
        outputs.push(Output {
            role: Role::Config,
            path: format!("qemu/{name}.sh"),
        });
        Ok(outputs)
    }
}

fn convert_qcow2(raw: &Path, qcow2: &Path) -> Result<(), TargetError> {
    let status = std::process::Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(raw)
        .arg(qcow2)
        .status()
        .map_err(|source| TargetError::Io {
            path: qcow2.to_path_buf(),
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(TargetError::Invalid(format!(
            "qemu-img convert to {} failed ({status})",
            qcow2.display()
        )))
    }
}
