//! `manifest.json`: what a build produced, with the sha256 of every file and the rootfs digest.
//!
//! The keys `image`, `rootfs_digest`, `targets.*.files[].{role,path,sha256}` are a stable
//! interface (documented in the README); later keys are only ever added.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

use imgbuild_init::digest::RootfsDigest;
use serde::{Deserialize, Serialize};

use crate::tree::{sha256_of, Content};

/// File name of the manifest in the output directory.
pub const MANIFEST_NAME: &str = "manifest.json";

/// The manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Image name.
    pub image: String,
    /// Digest of the root tree every target carries.
    pub rootfs_digest: RootfsDigest,
    /// Files per target (`xen`, `openvz`, `vmware`, `qemu`).
    pub targets: BTreeMap<String, TargetFiles>,
    /// The filesystem written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FilesystemInfo>,
    /// Packages installed by RPM and deb layers, in installation order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<ManifestPackage>,
    /// The kernel the VM targets boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// imgbuild version that wrote the manifest.
    #[serde(default)]
    pub imgbuild_version: String,
}

/// Facts about the filesystem image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FilesystemInfo {
    /// ext4, ext3 or ext2.
    pub fs_type: String,
    /// Filesystem UUID.
    pub uuid: String,
    /// Size in bytes.
    pub size: u64,
}

/// The files of one target.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TargetFiles {
    /// Each file.
    pub files: Vec<ManifestFile>,
}

/// What a file is for.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The bare filesystem image.
    Rootfs,
    /// A whole-disk image (raw or VMDK).
    Disk,
    /// An OS template tarball.
    Template,
    /// A configuration file (xl.cfg, .vmx, conf-sample, command line).
    Config,
    /// The kernel.
    Kernel,
    /// The initramfs.
    Initrd,
    /// The results disk.
    Results,
    /// An appliance (OVA) holding a VM's description and its disks.
    Appliance,
}

/// One package a layer installed: enough to trace a result to the exact package build.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestPackage {
    /// `name-version-release.arch` (RPM) or `name_version_arch` (deb).
    pub nevra: String,
    /// File name of the package.
    pub file: String,
    /// sha256 of the package file, hex.
    pub sha256: String,
    /// Entries it placed in the tree (files, directories, links, nodes; not `%ghost`s).
    pub files: u64,
    /// Index of the layer that installed it.
    pub layer: usize,
}

/// One file of a target.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ManifestFile {
    /// What it is for.
    pub role: Role,
    /// Path relative to the output directory.
    pub path: String,
    /// sha256, hex.
    pub sha256: String,
}

/// A manifest that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file cannot be read.
    #[error("cannot read manifest {path}: {source}")]
    Read {
        /// The manifest path.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The JSON is not a manifest.
    #[error("manifest {path} is not valid: {source}")]
    Parse {
        /// The manifest path.
        path: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// Manifests larger than this are not manifests.
const MAX_MANIFEST: u64 = 16 << 20;

impl Manifest {
    /// Reads `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<Manifest, ManifestError> {
        let path = dir.join(MANIFEST_NAME);
        let shown = path.display().to_string();
        let read_err = |source| ManifestError::Read {
            path: shown.clone(),
            source,
        };
        let file = File::open(&path).map_err(read_err)?;
        let len = file.metadata().map_err(read_err)?.len();
        if len > MAX_MANIFEST {
            return Err(read_err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{len} bytes is too large for a manifest"),
            )));
        }
        serde_json::from_reader(io::BufReader::new(file)).map_err(|source| ManifestError::Parse {
            path: shown.clone(),
            source,
        })
    }
}

/// sha256 (hex) of a file, skipping over its holes.
pub fn file_sha256(path: &Path) -> io::Result<String> {
    let len = std::fs::metadata(path)?.len();
    let content = Content::HostFile(Arc::from(path));
    let reader = content
        .open(len, &path.display().to_string())
        .map_err(|e| e.source)?;
    let mut buffer = vec![0u8; 1 << 20];
    let sha = sha256_of(&reader, &mut buffer, &|_| {})?;
    Ok(hex(&sha))
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_stable_keys() {
        let mut targets = BTreeMap::new();
        targets.insert(
            "xen".to_string(),
            TargetFiles {
                files: vec![ManifestFile {
                    role: Role::Rootfs,
                    path: "xen/minimal.ext4".into(),
                    sha256: "00".into(),
                }],
            },
        );
        let m = Manifest {
            image: "minimal".into(),
            rootfs_digest: RootfsDigest([1; 32]),
            targets,
            filesystem: None,
            packages: vec![ManifestPackage {
                nevra: "bash-4.1.2-48.el6.x86_64".into(),
                file: "bash-4.1.2-48.el6.x86_64.rpm".into(),
                sha256: "ab".into(),
                files: 73,
                layer: 1,
            }],
            kernel: None,
            imgbuild_version: "0.1.0".into(),
        };
        let text = serde_json::to_string(&m).unwrap();
        assert!(text.contains("\"rootfs_digest\":\"sha256:0101"));
        assert!(text.contains("\"role\":\"rootfs\""));
        assert!(text.contains("\"packages\":[{\"nevra\":\"bash-4.1.2-48.el6.x86_64\""));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST_NAME), &text).unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap(), m);
        std::fs::write(dir.path().join(MANIFEST_NAME), "{\"image\": 3}").unwrap();
        assert!(Manifest::read(dir.path()).is_err());
    }

    #[test]
    fn sha256_of_sparse_file_matches_dense() {
        let dir = tempfile::tempdir().unwrap();
        let sparse = dir.path().join("s");
        let f = File::create(&sparse).unwrap();
        f.set_len(3 << 20).unwrap();
        std::os::unix::fs::FileExt::write_at(&f, b"x", 1 << 20).unwrap();
        let mut dense = vec![0u8; 3 << 20];
        dense[1 << 20] = b'x';
        let dense_path = dir.path().join("d");
        std::fs::write(&dense_path, &dense).unwrap();
        assert_eq!(
            file_sha256(&sparse).unwrap(),
            file_sha256(&dense_path).unwrap()
        );
    }
}
