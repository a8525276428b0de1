//! `imgbuild build`: the whole pipeline for one definition and a set of targets.
//!
//! definition → layers → finished tree (digest, UUID) → filesystem plan → each target's package
//! in a staging directory → manifest → rename into place. The filesystem is written once and
//! shared; nothing reaches the output directory unless every step succeeded.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::artefacts::Artefacts;
use crate::assemble::{assemble, AssembleError};
use crate::definition::{
    check_inputs, Definition, FsType, InitLibc, LayerSpec, LoadedDefinition, MissingInput,
};
use crate::disk::grub;
use crate::ext4::{self, Ext4Params};
use crate::finish::{finish, format_uuid, BootFiles, FinishError, FinishInputs};
use crate::kernel::{self, elf_check, initramfs::InitramfsOptions, KernelError, KernelFile};
use crate::manifest::{
    file_sha256, FilesystemInfo, Manifest, ManifestFile, ManifestPackage, TargetFiles,
    MANIFEST_NAME,
};
use crate::output::{OutputError, Staging};
use crate::progress::Progress;
use crate::target::{package_all, CheckContext, PackageContext, Target, TargetError};
use crate::tree::{Content, FileData};

/// Time stamped on generated entries when neither SOURCE_DATE_EPOCH nor the definition sets
/// one (2026-01-01T00:00:00Z): a fixed value keeps builds reproducible.
pub const DEFAULT_EPOCH: i64 = 1_767_225_600;

/// What to build, besides the definition.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Targets to package.
    pub targets: Vec<Target>,
    /// Output directory; `out/<image name>` when absent.
    pub out_dir: Option<PathBuf>,
    /// Layers from `--layer`, applied after the definition's.
    pub extra_layers: Vec<LayerSpec>,
    /// The init binary (`--init`); found next to the imgbuild binary when absent.
    pub init: Option<PathBuf>,
    /// Write the filesystem to this block device (`--device`).
    pub device: Option<PathBuf>,
    /// Where the Xen files will live on dom0 (`--xen-dir`).
    pub xen_dir: Option<PathBuf>,
    /// No progress output.
    pub quiet: bool,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A file the definition names is missing.
    #[error(transparent)]
    Input(#[from] MissingInput),
    /// SOURCE_DATE_EPOCH is not a number.
    #[error("SOURCE_DATE_EPOCH={0:?} is not a number of seconds")]
    BadEpoch(String),
    /// A layer failed.
    #[error(transparent)]
    Assemble(#[from] AssembleError),
    /// The kernel or initramfs.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// The init binary.
    #[error(transparent)]
    Init(#[from] elf_check::ElfCheckError),
    /// The finishing step.
    #[error(transparent)]
    Finish(#[from] FinishError),
    /// Planning the filesystem.
    #[error(transparent)]
    Ext4(#[from] ext4::Ext4Error),
    /// A boot loader config.
    #[error(transparent)]
    Grub(#[from] grub::GrubError),
    /// A target.
    #[error("target {target}: {source}")]
    Target {
        /// Which.
        target: Target,
        /// Why.
        #[source]
        source: TargetError,
    },
    /// Writing outputs.
    #[error(transparent)]
    Output(#[from] OutputError),
}

impl BuildError {
    /// 2 for bad input (the user can fix it), 1 for failures of the tool or its environment:
    /// writing an output, or any step whose underlying cause is a full, read-only or failing
    /// filesystem (a spool in TMPDIR that ran out of space is not the archive's fault).
    pub fn exit_code(&self) -> u8 {
        use crate::artefacts::ArtefactError as A;
        let writing = match self {
            BuildError::Output(_) => true,
            BuildError::Ext4(e) => matches!(e, ext4::Ext4Error::Io { .. }),
            BuildError::Target { source, .. } => matches!(
                source,
                TargetError::Io { .. }
                    | TargetError::Vmdk(_)
                    | TargetError::Artefact(A::Io { .. } | A::Ext4(ext4::Ext4Error::Io { .. }))
            ),
            _ => false,
        };
        if writing || caused_by_environment(self) {
            1
        } else {
            2
        }
    }
}

/// True when an I/O error in the chain of `e` says the host failed: no space, no quota, a
/// read-only filesystem, no memory, a device error.
fn caused_by_environment(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.raw_os_error(),
                Some(libc::ENOSPC | libc::EDQUOT | libc::EROFS | libc::ENOMEM | libc::EIO)
            ) {
                return true;
            }
        }
        next = e.source();
    }
    false
}

/// The result of a build.
#[derive(Debug)]
pub struct BuildOutput {
    /// The manifest written.
    pub manifest: Manifest,
    /// Where.
    pub out_dir: PathBuf,
}

fn epochs(def: &Definition) -> Result<(i64, Option<i64>), BuildError> {
    let clamp = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(text) => Some(
            text.trim()
                .parse::<i64>()
                .map_err(|_| BuildError::BadEpoch(text.clone()))?,
        ),
        Err(_) => def.source_date_epoch,
    };
    Ok((clamp.unwrap_or(DEFAULT_EPOCH), clamp))
}

/// Builds `loaded` for `options.targets`.
pub fn build(loaded: &LoadedDefinition, options: &BuildOptions) -> Result<BuildOutput, BuildError> {
    let progress = Progress::new(options.quiet);
    let mut def = loaded.definition.clone();
    def.layers.extend(options.extra_layers.iter().cloned());
    let (mtime, clamp) = epochs(&def)?;
    crate::target::check_all(
        &options.targets,
        &CheckContext {
            definition: &def,
            device: options.device.as_deref(),
            xen_dir: options.xen_dir.as_deref(),
        },
    )
    .map_err(|(target, source)| BuildError::Target { target, source })?;

    check_inputs(&def)?;
    let init = match def.init.libc {
        InitLibc::Gnu => elf_check::locate_init(options.init.as_deref())?,
        InitLibc::Musl => elf_check::locate_musl_init(options.init.as_deref())?,
    };
    let (init_bytes, _) = elf_check::read_checked(&init, elf_check::EM_X86_64)?;

    let needs_kernel = options.targets.iter().any(|t| t.needs_kernel());
    let kernel = match kernel::resolve(def.kernel.as_ref()) {
        Ok(k) => Some(k),
        Err(e) if def.kernel.is_none() && !needs_kernel => {
            progress.log(format!("no kernel in this image: {e}"));
            None
        }
        Err(e) => return Err(e.into()),
    };
    let boot = match &kernel {
        Some(k) => {
            elf_check::check_kernel_compat(&init, &init_bytes, &k.version)?;
            let fs_drivers = filesystem_drivers(&def, k, &progress)?;
            let drivers = def
                .kernel
                .as_ref()
                .and_then(|s| s.drivers.as_deref())
                .or(fs_drivers.as_deref());
            let mut initrd = Vec::new();
            let report = kernel::build_initramfs_with(
                k,
                &InitramfsOptions {
                    drivers,
                    init: &init,
                    mtime: u32::try_from(mtime.max(0)).unwrap_or(u32::MAX),
                    compression: kernel::initramfs::Compression::Gzip,
                    machine: elf_check::EM_X86_64,
                },
                &mut initrd,
            )?;
            progress.log(format!(
                "kernel {} ({}), initramfs {} KiB with {} modules{}",
                k.version,
                k.image.label(),
                initrd.len() / 1024,
                report.modules.len(),
                if report.missing.is_empty() {
                    String::new()
                } else {
                    format!("; not in this kernel: {}", report.missing.join(", "))
                }
            ));
            let kernel_file = match &k.image {
                KernelFile::Host(path) => FileData {
                    size: k.image.size().map_err(KernelError::from)?,
                    content: Content::HostFile(Arc::from(path.as_path())),
                    sha256: None,
                },
                KernelFile::Tree { size, content, .. } => FileData {
                    size: *size,
                    content: content.clone(),
                    sha256: None,
                },
            };
            Some(BootFiles {
                version: k.version.clone(),
                kernel: kernel_file,
                initrd: Arc::from(initrd),
            })
        }
        None => None,
    };

    let assembled = assemble(&def, mtime, &progress)?;
    let cmdline_extra = def
        .kernel
        .as_ref()
        .and_then(|k| k.cmdline.clone())
        .unwrap_or_default();
    let grub_error = std::cell::RefCell::new(None);
    // One command line for both configs: pygrub reads either file (grub.cfg first), and the
    // consoles that do not exist on a platform are skipped, the last present one being
    // /dev/console (the PV console on Xen, the serial port under GRUB 2 on QEMU and VMware).
    let boot_args = format!(
        "quiet panic=-1 console={} console=ttyS0,115200 {cmdline_extra}",
        def.xen.console
    );
    let uuid_files = |uuid: &str| -> Vec<(String, Vec<u8>)> {
        let Some(boot) = &boot else {
            return Vec::new();
        };
        let args = boot_args.trim();
        let files =
            grub::grub_cfg(uuid, &boot.kernel_path(), &boot.initrd_path(), args).and_then(|cfg| {
                let legacy = grub::menu_lst(uuid, &boot.kernel_path(), &boot.initrd_path(), args)?;
                let mut files = vec![
                    ("/boot/grub/grub.cfg".to_string(), cfg.into_bytes()),
                    (
                        "/boot/grub/menu.lst".to_string(),
                        legacy.clone().into_bytes(),
                    ),
                ];
                // Red Hat's GRUB 0.97 and grubby read grub.conf (menu.lst is their symlink).
                if def.el.grub_conf {
                    files.push(("/boot/grub/grub.conf".to_string(), legacy.into_bytes()));
                }
                Ok(files)
            });
        files.unwrap_or_else(|e| {
            grub_error.borrow_mut().get_or_insert(e);
            Vec::new()
        })
    };
    let finished = finish(
        assembled.tree,
        &FinishInputs {
            definition: &def,
            init_binary: &init,
            boot: boot.as_ref(),
            uuid_files: &uuid_files,
            mtime,
            clamp,
        },
    )?;
    if let Some(e) = grub_error.into_inner() {
        return Err(e.into());
    }
    for note in &finished.notes {
        progress.log(note.clone());
    }
    progress.log(format!("rootfs digest {}", finished.digest));

    let fs = &def.filesystem;
    let plan = ext4::plan(
        &finished.tree,
        &Ext4Params {
            fs_type: fs.fs,
            size: fs.size,
            free: fs.free,
            inode_ratio: fs.inode_ratio,
            label: fs.label.clone(),
            uuid: finished.uuid,
            hash_seed: finished.hash_seed,
            reserved_percent: fs.reserved_percent,
            journal_size: fs.journal_size.map(|s| s.0),
            timestamp: mtime,
        },
    )?;

    // Only now, with the tree known to fit, is anything written.
    let out_dir = options
        .out_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("out").join(&def.name));
    let staging = Staging::new(&out_dir)?;
    let artefacts = Artefacts::new(
        &def.name,
        &finished,
        &plan,
        boot.as_ref(),
        &staging,
        &progress,
    );
    let cx = PackageContext {
        definition: &def,
        finished: &finished,
        boot: boot.as_ref(),
        artefacts: &artefacts,
        out_dir: staging.out_dir(),
        xen_dir: options.xen_dir.as_deref(),
        device: options.device.as_deref(),
    };
    let mut targets = BTreeMap::new();
    let spinner = progress.spinner("packaging");
    let packaged = package_all(&options.targets, &cx)
        .map_err(|(target, source)| BuildError::Target { target, source })?;
    spinner.finish_and_clear();
    for (target, packaged_files) in packaged {
        let files: Vec<ManifestFile> = packaged_files
            .into_iter()
            .map(|f| ManifestFile {
                role: f.role,
                path: f.path,
                sha256: f.sha256,
            })
            .collect();
        progress.log(format!("{target}: {} files", files.len()));
        targets.insert(target.name().to_string(), TargetFiles { files });
    }

    let manifest = Manifest {
        image: def.name.clone(),
        rootfs_digest: finished.digest,
        targets,
        filesystem: Some(FilesystemInfo {
            fs_type: fs.fs.name().to_string(),
            uuid: format_uuid(&finished.uuid),
            size: plan.size_bytes,
        }),
        packages: manifest_packages(&assembled.reports)?,
        kernel: kernel.as_ref().map(|k| k.version.clone()),
        imgbuild_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let shared = staging.stage_dir().join(".shared");
    if shared.exists() {
        std::fs::remove_dir_all(&shared).map_err(|source| OutputError {
            path: shared.clone(),
            source,
        })?;
    }
    let manifest_path = staging.path(MANIFEST_NAME)?;
    let text = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    std::fs::write(&manifest_path, text).map_err(|source| OutputError {
        path: manifest_path.clone(),
        source,
    })?;
    let out_dir = staging.out_dir().to_path_buf();
    staging.commit(MANIFEST_NAME)?;
    Ok(BuildOutput { manifest, out_dir })
}

/// The packages every layer installed, each with the sha256 of its file.
fn manifest_packages(
    reports: &[(String, crate::sources::LayerReport)],
) -> Result<Vec<ManifestPackage>, OutputError> {
    let mut out = Vec::new();
    for (layer, (_, report)) in reports.iter().enumerate() {
        for p in &report.packages {
            let sha256 = file_sha256(&p.path).map_err(|source| OutputError {
                path: p.path.clone(),
                source,
            })?;
            out.push(ManifestPackage {
                nevra: p.nevra.clone(),
                file: p
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                sha256,
                files: p.files,
                layer,
            });
        }
    }
    Ok(out)
}

/// With no `kernel.drivers` and a root that is not ext4, the default driver set plus the
/// root's own filesystem driver (EL5 mounts ext3 only through `ext3.ko`), keeping the drivers
/// this kernel has; `None` (the default set) otherwise.
fn filesystem_drivers(
    def: &Definition,
    kernel: &kernel::Kernel,
    progress: &Progress,
) -> Result<Option<Vec<String>>, KernelError> {
    let explicit = def.kernel.as_ref().is_some_and(|k| k.drivers.is_some());
    if explicit || def.filesystem.fs == FsType::Ext4 {
        return Ok(None);
    }
    let index = kernel.module_index()?;
    let mut wanted = kernel::default_drivers();
    wanted.push(def.filesystem.fs.name().to_string());
    let (have, lacking): (Vec<String>, Vec<String>) = wanted
        .into_iter()
        .partition(|d| index.has_module(d) || index.is_builtin(d));
    if !lacking.is_empty() {
        progress.log(format!(
            "{} root; not in kernel {}: {}",
            def.filesystem.fs.name(),
            kernel.version,
            lacking.join(", ")
        ));
    }
    Ok(Some(have))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::load;
    use crate::kernel::{Kernel, KernelOrigin, ModulesDir};
    use crate::sources::builtin::text_file;
    use crate::tree::{Meta, Tree};

    /// A package kernel whose modules directory holds (empty) files of these paths: the
    /// driver choice reads names only.
    fn kernel_with(modules: &[&str]) -> Kernel {
        let mut tree = Tree::new(Meta::root(0o755, 0));
        for m in modules {
            tree.insert(
                format!("/lib/modules/2.6.18-398.el5/{m}").as_bytes(),
                text_file(b"", 0o644, 0),
            )
            .unwrap();
        }
        Kernel {
            version: "2.6.18-398.el5".into(),
            version_string: "2.6.18-398.el5 (mockbuild@sl5)".into(),
            image: KernelFile::Tree {
                label: "kernel.rpm:/boot/vmlinuz-2.6.18-398.el5".into(),
                size: 0,
                content: Content::Bytes(Arc::from(&b""[..])),
            },
            modules: ModulesDir::from_tree(&tree, "/lib/modules/2.6.18-398.el5", "kernel.rpm")
                .unwrap(),
            origin: KernelOrigin::Package("kernel.rpm".into()),
        }
    }

    #[test]
    fn an_ext3_root_asks_for_the_kernels_ext3_driver() {
        let el5 = kernel_with(&[
            "kernel/fs/ext3/ext3.ko",
            "kernel/fs/jbd/jbd.ko",
            "kernel/drivers/message/fusion/mptspi.ko",
            "kernel/drivers/scsi/sd_mod.ko",
            "kernel/drivers/net/e1000/e1000.ko",
        ]);
        let quiet = Progress::new(true);
        let mut def = load(None, &[]).unwrap().definition;
        assert_eq!(filesystem_drivers(&def, &el5, &quiet).unwrap(), None);
        def.filesystem.fs = FsType::Ext3;
        let drivers = filesystem_drivers(&def, &el5, &quiet).unwrap().unwrap();
        assert_eq!(drivers, ["mptspi", "sd_mod", "e1000", "ext3"]);
        // A kernel without ext3.ko (its ext4 driver mounts ext3) gets the default set only.
        let modern = kernel_with(&["kernel/drivers/block/virtio_blk.ko"]);
        let drivers = filesystem_drivers(&def, &modern, &quiet).unwrap().unwrap();
        assert_eq!(drivers, ["virtio_blk"]);
        // An explicit list is the user's.
        def.kernel = Some(crate::definition::KernelSpec {
            drivers: Some(vec!["xenblk".into()]),
            ..Default::default()
        });
        assert_eq!(filesystem_drivers(&def, &el5, &quiet).unwrap(), None);
    }

    #[test]
    fn exit_codes_tell_input_from_environment() {
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let output = BuildError::Output(OutputError {
            path: "out".into(),
            source: std::io::Error::other("x"),
        });
        assert_eq!(output.exit_code(), 1);
        let layer = |source| {
            BuildError::Assemble(AssembleError {
                index: 1,
                label: "tar a.tar".into(),
                source: crate::assemble::LayerError::Tar(source),
            })
        };
        let spool_full = layer(crate::sources::tar::TarError::Io {
            file: "a.tar".into(),
            offset: 0,
            source: full,
        });
        assert_eq!(spool_full.exit_code(), 1);
        let bad_header = layer(crate::sources::tar::TarError::Format {
            file: "a.tar".into(),
            offset: 0,
            reason: "checksum".into(),
        });
        assert_eq!(bad_header.exit_code(), 2);
        assert_eq!(BuildError::BadEpoch("x".into()).exit_code(), 2);
    }
}
