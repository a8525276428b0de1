//! The Xen domU package: the bare filesystem image (a file-backed "loopback" disk, or a real
//! partition), kernel, initramfs, a results disk and an xl domain config.
//!
//! The root disk is exported as a partition-style vdev (`xvda1`) because the image holds a
//! filesystem without a partition table. Paths in the config are absolute: the files of the
//! `xen/` folder as they will lie in the directory named by `--xen-dir` (or `xen.dir`) on dom0,
//! by default where they are, in the output directory's `xen/`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{file_name, write_text, CheckContext, Output, PackageContext, Packager, TargetError};
use crate::artefacts::ArtefactError;
use crate::definition::{XenBootloader, XenGuestType, XenSpec};
use crate::disk::device;
use crate::manifest::Role;

/// The Xen packager.
pub struct Xen;

/// The directory on dom0 that will hold the files of `xen/`: `--xen-dir`, else `xen.dir`.
fn dom0_dir<'a>(option: Option<&'a Path>, spec: &'a XenSpec) -> Option<&'a Path> {
    option.or(spec.dir.as_deref())
}

impl Packager for Xen {
    fn check(&self, cx: &CheckContext<'_>) -> Result<(), TargetError> {
        let spec = &cx.definition.xen;
        if let Some(dir) = dom0_dir(cx.xen_dir, spec) {
            // xl resolves relative paths against its own working directory, not the config's.
            if !dir.is_absolute() {
                return Err(TargetError::Invalid(format!(
                    "the Xen directory {} must be an absolute path (xl reads the paths as they are)",
                    dir.display()
                )));
            }
        }
        if let Some(path) = cx.device {
            if spec.bootloader == XenBootloader::Pygrub {
                return Err(pygrub_device());
            }
            // The size is known only once the tree is built; everything else is checked now,
            // so a mounted or wrong device is refused before anything is built.
            device::check_device(path, 0, false).map_err(ArtefactError::from)?;
        }
        Ok(())
    }

    fn package(&self, cx: &PackageContext<'_>) -> Result<Vec<Output>, TargetError> {
        let name = cx.artefacts.name();
        let spec = &cx.definition.xen;
        let dom0: PathBuf = match dom0_dir(cx.xen_dir, spec) {
            Some(dir) => dir.to_path_buf(),
            None => cx.out_dir.join("xen"),
        };
        let on_dom0 = |file: &str| dom0.join(file).display().to_string();
        let mut outputs = Vec::new();
        let mut add = |role, path: String| outputs.push(Output { role, path });

        let root_target = match (cx.device, spec.bootloader) {
            (Some(device), XenBootloader::Direct) => {
                cx.artefacts.write_to_device(device)?;
                device.display().to_string()
            }
            (Some(_), XenBootloader::Pygrub) => return Err(pygrub_device()),
            (None, XenBootloader::Direct) => {
                let file = format!("{name}.ext4");
                cx.artefacts
                    .place_disk(&cx.artefacts.rootfs()?, &format!("xen/{file}"))?;
                add(Role::Rootfs, format!("xen/{file}"));
                on_dom0(&file)
            }
            (None, XenBootloader::Pygrub) => {
                let file = format!("{name}.disk");
                cx.artefacts
                    .place_disk(&cx.artefacts.disk()?, &format!("xen/{file}"))?;
                add(Role::Disk, format!("xen/{file}"));
                on_dom0(&file)
            }
        };
        let (mut kernel, mut ramdisk) = (String::new(), String::new());
        if spec.bootloader == XenBootloader::Direct {
            for (role, shared) in [
                (Role::Kernel, cx.artefacts.kernel()?),
                (Role::Initrd, cx.artefacts.initrd()?),
            ] {
                let file = file_name(&shared);
                cx.artefacts.place(&shared, &format!("xen/{file}"))?;
                add(role, format!("xen/{file}"));
                if role == Role::Kernel {
                    kernel = on_dom0(&file);
                } else {
                    ramdisk = on_dom0(&file);
                }
            }
        }
        let results = format!("{name}-results.img");
        cx.artefacts
            .results_disk(&format!("xen/{results}"), cx.definition.vm.results_disk.0)?;
        add(Role::Results, format!("xen/{results}"));

        let extra = cx.cmdline(&spec.console);
        let config = render_config(&XenConfig {
            name,
            spec,
            memory: cx.definition.vm.memory,
            vcpus: cx.definition.vm.vcpus,
            kernel: &kernel,
            ramdisk: &ramdisk,
            extra: &extra,
            root_target: &root_target,
            results_target: &on_dom0(&results),
        });
        write_text(cx, &format!("xen/{name}.cfg"), &config)?;
        add(Role::Config, format!("xen/{name}.cfg"));
        Ok(outputs)
    }
}

fn pygrub_device() -> TargetError {
    TargetError::Invalid(
        "--device writes a bare filesystem; xen.bootloader = \"pygrub\" needs a whole disk".into(),
    )
}

/// What the xl config describes.
#[derive(Debug, Clone)]
pub struct XenConfig<'a> {
    /// Domain name.
    pub name: &'a str,
    /// `[xen]` of the definition.
    pub spec: &'a XenSpec,
    /// Memory, MiB.
    pub memory: u32,
    /// vCPUs.
    pub vcpus: u32,
    /// Kernel path on dom0 (direct boot).
    pub kernel: &'a str,
    /// Initramfs path on dom0 (direct boot).
    pub ramdisk: &'a str,
    /// Kernel command line after `root=`.
    pub extra: &'a str,
    /// Root disk: an image path or a device such as /dev/sdb3.
    pub root_target: &'a str,
    /// Results disk path on dom0.
    pub results_target: &'a str,
}

/// Renders the xl.cfg text.
pub fn render_config(c: &XenConfig<'_>) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# xl domain config written by imgbuild {}",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(t, "# Start with: xl create {}.cfg", c.name);
    let _ = writeln!(t, "name = {}", quote(c.name));
    let guest_type = match c.spec.guest_type {
        XenGuestType::Pvh => "pvh",
        XenGuestType::Pv => "pv",
    };
    let _ = writeln!(t, "type = {}", quote(guest_type));
    let (root_vdev, root_disk) = match c.spec.bootloader {
        XenBootloader::Direct => {
            let _ = writeln!(t, "kernel = {}", quote(c.kernel));
            let _ = writeln!(t, "ramdisk = {}", quote(c.ramdisk));
            let _ = writeln!(t, "extra = {}", quote(c.extra));
            ("xvda1", c.root_target)
        }
        XenBootloader::Pygrub => {
            let _ = writeln!(t, "bootloader = \"pygrub\"");
            ("xvda", c.root_target)
        }
    };
    let _ = writeln!(t, "memory = {}", c.memory);
    let _ = writeln!(t, "vcpus = {}", c.vcpus);
    let _ = writeln!(t, "on_poweroff = \"destroy\"");
    let _ = writeln!(t, "on_reboot = \"destroy\"");
    let _ = writeln!(t, "on_crash = {}", quote(&c.spec.on_crash));
    let _ = writeln!(t, "disk = [");
    let _ = writeln!(
        t,
        "    'format=raw, vdev={root_vdev}, access=rw, target={root_disk}',"
    );
    let _ = writeln!(
        t,
        "    'format=raw, vdev=xvdb, access=rw, target={}',",
        c.results_target
    );
    let _ = writeln!(t, "]");
    if !c.spec.vif.is_empty() {
        let items: Vec<String> = c.spec.vif.iter().map(|v| format!("'{v}'")).collect();
        let _ = writeln!(t, "vif = [ {} ]", items.join(", "));
    }
    t
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_boot_config() {
        let spec = XenSpec {
            vif: vec!["bridge=xenbr0".into()],
            ..XenSpec::default()
        };
        let text = render_config(&XenConfig {
            name: "minimal",
            spec: &spec,
            memory: 512,
            vcpus: 2,
            kernel: "/srv/xen/minimal/vmlinuz",
            ramdisk: "/srv/xen/minimal/initrd.img",
            extra: "root=UUID=abc console=hvc0",
            root_target: "/srv/xen/minimal/minimal.ext4",
            results_target: "/srv/xen/minimal/results.img",
        });
        assert!(text.contains("type = \"pvh\""));
        assert!(text
            .contains("'format=raw, vdev=xvda1, access=rw, target=/srv/xen/minimal/minimal.ext4'"));
        assert!(text.contains("vdev=xvdb"));
        assert!(text.contains("extra = \"root=UUID=abc console=hvc0\""));
        assert!(text.contains("vif = [ 'bridge=xenbr0' ]"));
    }

    #[test]
    fn pygrub_uses_the_whole_disk() {
        let spec = XenSpec {
            bootloader: XenBootloader::Pygrub,
            guest_type: XenGuestType::Pv,
            ..XenSpec::default()
        };
        let text = render_config(&XenConfig {
            name: "sl6",
            spec: &spec,
            memory: 1024,
            vcpus: 1,
            kernel: "",
            ramdisk: "",
            extra: "",
            root_target: "/dev/sdb",
            results_target: "/srv/r.img",
        });
        assert!(text.contains("bootloader = \"pygrub\""));
        assert!(!text.contains("kernel ="));
        assert!(text.contains("vdev=xvda,"));
        assert!(text.contains("type = \"pv\""));
    }
}
