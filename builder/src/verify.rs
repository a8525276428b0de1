//! `imgbuild verify DIR`: proves that every package of a build carries the same root tree.
//!
//! Every file listed in the manifest is re-hashed; every artefact that carries the root — the
//! ext4 image, the partitioned disk, each VMDK form, the OpenVZ tarball — is re-read with the
//! project's own readers, its tree digest recomputed and compared with the manifest's; a results
//! disk's header must name the same image and digest.

use std::fs::File;
use std::path::Path;

use imgbuild_init::digest::RootfsDigest;
use serde::Serialize;

use crate::disk::mbr;
use crate::ext4::reader::Ext4Image;
use crate::image_io::{ReadAt, Window};
use crate::manifest::{file_sha256, Manifest, ManifestError, Role};
use crate::tree::{hash_contents, tree_digest, Meta, Tree};
use crate::vmdk::VmdkReader;

/// What was checked for one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileCheck {
    /// Target it belongs to.
    pub target: String,
    /// Path relative to the output directory.
    pub path: String,
    /// Its role.
    pub role: Role,
    /// sha256 equals the manifest's.
    pub sha256_ok: bool,
    /// The digest recomputed from the file's content, when it carries the root.
    pub digest: Option<RootfsDigest>,
    /// What is wrong, if anything.
    pub problem: Option<String>,
}

impl FileCheck {
    /// True when nothing is wrong.
    pub fn ok(&self) -> bool {
        self.problem.is_none()
    }
}

/// The whole verification.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The manifest's image name.
    pub image: String,
    /// The manifest's rootfs digest.
    pub rootfs_digest: RootfsDigest,
    /// One entry per manifest file.
    pub files: Vec<FileCheck>,
}

impl VerifyReport {
    /// True when every file agrees.
    pub fn ok(&self) -> bool {
        self.files.iter().all(FileCheck::ok)
    }
}

/// Verifies the build in `dir`. Only an unreadable manifest is an error; every other finding
/// is reported per file.
pub fn verify(dir: &Path) -> Result<VerifyReport, ManifestError> {
    let manifest = Manifest::read(dir)?;
    let mut files = Vec::new();
    for (target, entry) in &manifest.targets {
        for file in &entry.files {
            files.push(check_file(dir, target, file, &manifest));
        }
    }
    Ok(VerifyReport {
        image: manifest.image.clone(),
        rootfs_digest: manifest.rootfs_digest,
        files,
    })
}

fn check_file(
    dir: &Path,
    target: &str,
    file: &crate::manifest::ManifestFile,
    manifest: &Manifest,
) -> FileCheck {
    let mut check = FileCheck {
        target: target.to_string(),
        path: file.path.clone(),
        role: file.role,
        sha256_ok: false,
        digest: None,
        problem: None,
    };
    let relative = Path::new(&file.path);
    if relative.is_absolute()
        || relative
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        // A real partition (--device) is named absolutely; anything else must stay inside.
        if !file.path.starts_with("/dev/") {
            check.problem = Some("path leaves the output directory".into());
            return check;
        }
    }
    let path = dir.join(relative);
    match file_sha256(&path) {
        Ok(sha) if sha == file.sha256 => check.sha256_ok = true,
        Ok(sha) => {
            check.problem = Some(format!(
                "sha256 is {sha}, the manifest says {}",
                file.sha256
            ));
        }
        Err(e) => {
            check.problem = Some(format!("cannot read: {e}"));
            return check;
        }
    }
    let digest = match file.role {
        Role::Rootfs => Some(ext4_digest(&path)),
        Role::Disk => Some(disk_digest(&path)),
        Role::Template => Some(template_digest(&path)),
        Role::Results => {
            if let Err(problem) = results_header(&path, manifest) {
                check.problem.get_or_insert(problem);
            }
            None
        }
        Role::Appliance => {
            if let Err(problem) = crate::target::vmware::ova::check_ova(&path) {
                check.problem.get_or_insert(format!("ova: {problem}"));
            }
            None
        }
        Role::Config | Role::Kernel | Role::Initrd => None,
    };
    match digest {
        Some(Ok(Some(d))) => {
            check.digest = Some(d);
            if d != manifest.rootfs_digest {
                check.problem.get_or_insert(format!(
                    "its tree digest is {d}, the manifest says {}",
                    manifest.rootfs_digest
                ));
            }
        }
        Some(Ok(None)) | None => {}
        Some(Err(problem)) => {
            check.problem.get_or_insert(problem);
        }
    }
    check
}

fn ext4_digest_of(dev: impl ReadAt) -> Result<RootfsDigest, String> {
    Ext4Image::open(dev)
        .and_then(|image| image.digest())
        .map_err(|e| format!("ext4: {e}"))
}

fn ext4_digest(path: &Path) -> Result<Option<RootfsDigest>, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    ext4_digest_of(file).map(Some)
}

/// A whole disk: the filesystem of its first partition. A VMDK descriptor or sparse file is
/// read through the VMDK reader; the `-flat` extent of a monolithicFlat disk is a raw disk.
fn disk_digest(path: &Path) -> Result<Option<RootfsDigest>, String> {
    let mut magic = [0u8; 21];
    let file = File::open(path).map_err(|e| e.to_string())?;
    let n = file.read_at(&mut magic, 0).map_err(|e| e.to_string())?;
    let magic = &magic[..n];
    if magic.starts_with(b"KDMV") || magic.starts_with(b"# Disk DescriptorFile") {
        let reader = VmdkReader::open(path).map_err(|e| format!("vmdk: {e}"))?;
        partition_digest(reader).map(Some)
    } else {
        partition_digest(file).map(Some)
    }
}

fn partition_digest(disk: impl ReadAt) -> Result<RootfsDigest, String> {
    let partitions = mbr::read_partitions(&disk).map_err(|e| format!("partition table: {e}"))?;
    let first = partitions
        .first()
        .ok_or_else(|| "the partition table has no partition".to_string())?;
    ext4_digest_of(Window::new(&disk, first.start_bytes(), first.len_bytes()))
}

fn template_digest(path: &Path) -> Result<Option<RootfsDigest>, String> {
    let mut tree = Tree::new(Meta::root(0o755, 0));
    crate::sources::tar::apply(&mut tree, path, None).map_err(|e| format!("tar: {e}"))?;
    hash_contents(&mut tree, &|_| {}).map_err(|e| e.to_string())?;
    tree_digest(&tree).map(Some).map_err(|e| e.to_string())
}

fn results_header(path: &Path, manifest: &Manifest) -> Result<(), String> {
    let collected = crate::collect::collect(path).map_err(|e| e.to_string())?;
    if collected.image != manifest.image {
        return Err(format!(
            "results disk is for image {:?}, not {:?}",
            collected.image, manifest.image
        ));
    }
    if collected.rootfs_digest != Some(manifest.rootfs_digest) {
        return Err("results disk names another rootfs digest".into());
    }
    Ok(())
}
