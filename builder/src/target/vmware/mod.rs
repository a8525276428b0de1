//! The VMware package: the partitioned disk as VMDKs (monolithicSparse for the hosted products,
//! streamOptimized for OVF import into ESXi, monolithicFlat for ESXi itself), a results disk as
//! a VMDK, and the `.vmx`.
//!
//! VMware has no direct kernel boot, so the disk boots on its own through GRUB (installed by the
//! shared disk image) with the kernel and initramfs under /boot of the root filesystem.

pub mod ova;

use std::fmt::Write as _;
use std::fs::File;
use std::path::Path;
use std::thread;

use super::{file_name, write_text, CheckContext, Output, PackageContext, Packager, TargetError};
use crate::definition::{NicModel, ScsiAdapter, VmdkFormat, VmwareSpec};
use crate::manifest::Role;
use crate::vmdk::{flat, write_vmdk, VmdkOptions, SECTOR};
use ova::{OvaDisk, OvaMachine};

/// virtualHW.version values VMware products know (ESX 3.5 = 4 … ESXi 8 = 21).
pub const HW_VERSIONS: [u32; 14] = [4, 7, 8, 9, 10, 11, 13, 14, 15, 17, 18, 19, 20, 21];

/// The VMware packager.
pub struct Vmware;

fn vmdk_name(name: &str, format: VmdkFormat) -> String {
    match format {
        VmdkFormat::MonolithicSparse => format!("{name}.vmdk"),
        VmdkFormat::StreamOptimized => format!("{name}-stream.vmdk"),
        VmdkFormat::MonolithicFlat => format!("{name}-esx.vmdk"),
    }
}

impl Packager for Vmware {
    fn check(&self, cx: &CheckContext<'_>) -> Result<(), TargetError> {
        check_spec(&cx.definition.vmware, cx.definition.vm.memory)
    }

    fn package(&self, cx: &PackageContext<'_>) -> Result<Vec<Output>, TargetError> {
        let spec = &cx.definition.vmware;
        check_spec(spec, cx.definition.vm.memory)?;
        if cx.boot.is_none() {
            return Err(crate::artefacts::ArtefactError::NoKernel.into());
        }
        let name = cx.artefacts.name();
        let disk_path = cx.artefacts.disk()?;
        let raw = File::open(&disk_path).map_err(|source| TargetError::Io {
            path: disk_path.clone(),
            source,
        })?;
        let mut options = VmdkOptions::new(&cx.finished.digest.0, spec.adapter);
        options.hw_version = 4;
        // The staging directory makes the build's outputs appear all at once; see artefacts.
        options.durable = false;
        let mut formats: Vec<VmdkFormat> = Vec::new();
        for f in &spec.formats {
            if !formats.contains(f) {
                formats.push(*f);
            }
        }
        // The compressed form takes longest: it is written on another thread meanwhile.
        let mut written: Vec<(VmdkFormat, Vec<String>)> = thread::scope(|s| {
            let stream = formats.contains(&VmdkFormat::StreamOptimized).then(|| {
                s.spawn(|| {
                    let format = VmdkFormat::StreamOptimized;
                    let file = vmdk_name(name, format);
                    let dest = cx.artefacts.staged(&format!("vmware/{file}"))?;
                    write_vmdk(&raw, format, &dest, &options)?;
                    Ok::<_, TargetError>((format, vec![file]))
                })
            });
            let mut written = Vec::new();
            for &format in formats
                .iter()
                .filter(|f| **f != VmdkFormat::StreamOptimized)
            {
                let file = vmdk_name(name, format);
                let files = match format {
                    VmdkFormat::MonolithicFlat => flat_from_raw(cx, &disk_path, &file, &options)?,
                    _ => {
                        let dest = cx.artefacts.staged(&format!("vmware/{file}"))?;
                        write_vmdk(&raw, format, &dest, &options)?;
                        vec![file]
                    }
                };
                written.push((format, files));
            }
            if let Some(handle) = stream {
                let result = handle.join().map_err(|_| {
                    TargetError::Invalid("the streamOptimized writer panicked".into())
                })?;
                written.push(result?);
            }
            Ok::<_, TargetError>(written)
        })?;
        written.sort_by_key(|(format, _)| formats.iter().position(|f| f == format));
        let mut outputs: Vec<Output> = written
            .into_iter()
            .flat_map(|(_, files)| files)
            .map(|file| Output {
                role: Role::Disk,
                path: format!("vmware/{file}"),
            })
            .collect();
        // The results disk: a raw results image converted to a hosted sparse VMDK.
        let results_raw = cx
            .artefacts
            .results_disk(".shared/results.img", cx.definition.vm.results_disk.0)?;
        let raw_results = File::open(&results_raw).map_err(|source| TargetError::Io {
            path: results_raw.clone(),
            source,
        })?;
        let results = format!("{name}-results.vmdk");
        let dest = cx.artefacts.staged(&format!("vmware/{results}"))?;
        let mut results_options = VmdkOptions::new(b"imgbuild results disk", spec.adapter);
        results_options.durable = false;
        write_vmdk(
            &raw_results,
            VmdkFormat::MonolithicSparse,
            &dest,
            &results_options,
        )?;
        outputs.push(Output {
            role: Role::Results,
            path: format!("vmware/{results}"),
        });

        let root_disk = root_disk_format(spec).map(|f| vmdk_name(name, f))?;
        let vmx = render_vmx(
            name,
            spec,
            cx.definition.vm.memory,
            cx.definition.vm.vcpus,
            &root_disk,
            &results,
        );
        write_text(cx, &format!("vmware/{name}.vmx"), &vmx)?;
        outputs.push(Output {
            role: Role::Config,
            path: format!("vmware/{name}.vmx"),
        });
        if spec.ova {
            let ova =
                write_appliance(cx, &raw, &raw_results, &formats, &options, &results_options)?;
            outputs.push(Output {
                role: Role::Appliance,
                path: format!("vmware/{ova}"),
            });
        }
        Ok(outputs)
    }
}

/// `NAME.ova` with the root disk and the results disk as streamOptimized VMDKs (the root one
/// is the package's own when it has that form); returns its file name.
fn write_appliance(
    cx: &PackageContext<'_>,
    raw: &File,
    raw_results: &File,
    formats: &[VmdkFormat],
    options: &VmdkOptions,
    results_options: &VmdkOptions,
) -> Result<String, TargetError> {
    let name = cx.artefacts.name();
    let stream = VmdkFormat::StreamOptimized;
    let root_name = vmdk_name(name, stream);
    let root = if formats.contains(&stream) {
        cx.artefacts.staged(&format!("vmware/{root_name}"))?
    } else {
        let path = cx.artefacts.staged(&format!(".shared/{root_name}"))?;
        write_vmdk(raw, stream, &path, options)?;
        path
    };
    let results_name = format!("{name}-results-stream.vmdk");
    let results = cx.artefacts.staged(&format!(".shared/{results_name}"))?;
    write_vmdk(raw_results, stream, &results, results_options)?;
    let size = |f: &File, path: &Path| {
        f.metadata()
            .map(|m| m.len())
            .map_err(|source| TargetError::Io {
                path: path.to_path_buf(),
                source,
            })
    };
    let disks = [
        OvaDisk {
            path: &root,
            name: &root_name,
            capacity: size(raw, &root)?,
        },
        OvaDisk {
            path: &results,
            name: &results_name,
            capacity: size(raw_results, &results)?,
        },
    ];
    let machine = OvaMachine {
        name,
        spec: &cx.definition.vmware,
        memory: cx.definition.vm.memory,
        vcpus: cx.definition.vm.vcpus,
    };
    let file = format!("{name}.ova");
    let path = cx.artefacts.staged(&format!("vmware/{file}"))?;
    let tree = &cx.finished.tree;
    let mtime = u64::try_from(tree.inode(tree.root()).meta.mtime).unwrap_or(0);
    let io = |source| TargetError::Io {
        path: path.clone(),
        source,
    };
    let mut out = File::create(&path).map_err(io)?;
    ova::write_ova(&mut out, &machine, &disks, mtime).map_err(io)?;
    Ok(file)
}

/// The monolithicFlat form of the raw disk at `raw`: its extent is the raw disk itself (linked
/// or copied in the kernel, no pass through this process), and the descriptor `file` names it.
/// Returns the files, descriptor first.
fn flat_from_raw(
    cx: &PackageContext<'_>,
    raw: &Path,
    file: &str,
    options: &VmdkOptions,
) -> Result<Vec<String>, TargetError> {
    let size = std::fs::metadata(raw)
        .map_err(|source| TargetError::Io {
            path: raw.to_path_buf(),
            source,
        })?
        .len();
    if size % SECTOR != 0 {
        // Not a whole number of sectors: the writer pads the extent.
        let dest = cx.artefacts.staged(&format!("vmware/{file}"))?;
        let raw_file = File::open(raw).map_err(|source| TargetError::Io {
            path: raw.to_path_buf(),
            source,
        })?;
        return Ok(
            write_vmdk(&raw_file, VmdkFormat::MonolithicFlat, &dest, options)?
                .iter()
                .map(|p| file_name(p))
                .collect(),
        );
    }
    let extent = flat::extent_name(file);
    cx.artefacts.place_disk(raw, &format!("vmware/{extent}"))?;
    let text = flat::descriptor_text(&extent, size / SECTOR, options);
    write_text(cx, &format!("vmware/{file}"), &text)?;
    Ok(vec![file.to_string(), extent])
}

/// Refuses values VMware would reject, naming the allowed ones.
pub fn check_spec(spec: &VmwareSpec, memory: u32) -> Result<(), TargetError> {
    if !HW_VERSIONS.contains(&spec.hw_version) {
        let allowed: Vec<String> = HW_VERSIONS.iter().map(u32::to_string).collect();
        return Err(TargetError::Invalid(format!(
            "vmware.hw_version {} is not a VMware virtual hardware version; use one of {}",
            spec.hw_version,
            allowed.join(", ")
        )));
    }
    if spec.formats.is_empty() {
        return Err(TargetError::Invalid(
            "vmware.formats is empty; use monolithicSparse, streamOptimized and/or monolithicFlat"
                .into(),
        ));
    }
    root_disk_format(spec)?;
    if memory % 4 != 0 {
        return Err(TargetError::Invalid(format!(
            "vm.memory {memory} must be a multiple of 4 MiB for VMware"
        )));
    }
    Ok(())
}

/// The form the .vmx runs: the first that is not streamOptimized, which is for import only.
fn root_disk_format(spec: &VmwareSpec) -> Result<VmdkFormat, TargetError> {
    spec.formats
        .iter()
        .copied()
        .find(|f| *f != VmdkFormat::StreamOptimized)
        .ok_or_else(|| {
            TargetError::Invalid(
                "vmware.formats needs monolithicSparse or monolithicFlat for the .vmx to run \
                 (streamOptimized is for import only)"
                    .into(),
            )
        })
}

/// The `.vmx` text.
pub fn render_vmx(
    name: &str,
    spec: &VmwareSpec,
    memory: u32,
    vcpus: u32,
    root_disk: &str,
    results_disk: &str,
) -> String {
    let scsi = match spec.adapter {
        ScsiAdapter::Pvscsi => "pvscsi",
        ScsiAdapter::Lsilogic => "lsilogic",
        ScsiAdapter::Lsisas1068 => "lsisas1068",
    };
    let nic = match spec.nic {
        NicModel::Vmxnet3 => "vmxnet3",
        NicModel::E1000 => "e1000",
    };
    let mut t = String::new();
    let mut kv = |k: &str, v: &str| {
        let _ = writeln!(t, "{k} = \"{}\"", v.replace('"', "|22"));
    };
    kv(".encoding", "UTF-8");
    kv("config.version", "8");
    kv("virtualHW.version", &spec.hw_version.to_string());
    kv("displayName", name);
    kv("guestOS", &spec.guest_os);
    kv("memsize", &memory.to_string());
    kv("numvcpus", &vcpus.to_string());
    kv("firmware", "bios");
    kv("scsi0.present", "TRUE");
    kv("scsi0.virtualDev", scsi);
    kv("scsi0:0.present", "TRUE");
    kv("scsi0:0.fileName", root_disk);
    kv("scsi0:1.present", "TRUE");
    kv("scsi0:1.fileName", results_disk);
    kv("ethernet0.present", "TRUE");
    kv("ethernet0.virtualDev", nic);
    kv("ethernet0.connectionType", "nat");
    kv("ethernet0.addressType", "generated");
    kv("serial0.present", "TRUE");
    kv("serial0.fileType", "file");
    kv("serial0.fileName", &format!("{name}-console.log"));
    kv("serial0.yieldOnMsrRead", "TRUE");
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmx_has_the_devices() {
        let spec = VmwareSpec::default();
        let text = render_vmx("m", &spec, 512, 2, "m.vmdk", "m-results.vmdk");
        for line in [
            "virtualHW.version = \"13\"",
            "scsi0.virtualDev = \"pvscsi\"",
            "scsi0:1.fileName = \"m-results.vmdk\"",
            "ethernet0.virtualDev = \"vmxnet3\"",
            "serial0.fileName = \"m-console.log\"",
            "memsize = \"512\"",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
    }

    #[test]
    fn bad_values_name_the_allowed_ones() {
        let spec = VmwareSpec {
            hw_version: 12,
            ..VmwareSpec::default()
        };
        let e = check_spec(&spec, 512).unwrap_err().to_string();
        assert!(e.contains("4, 7, 8"), "{e}");
        assert!(check_spec(&VmwareSpec::default(), 510).is_err());
    }
}
