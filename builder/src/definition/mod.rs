//! Image definitions: the TOML a user writes, as typed data.
//!
//! Every key is documented in the README's "Image definition" section; keep the two in step.
//! Loading (files, `extends`, `--set`, relative paths) is in [`load`]; this module only says
//! what a definition is.

mod el;
mod inputs;
mod load;
mod size;
mod targets;
mod validate;

use std::path::PathBuf;

use serde::Deserialize;

pub use el::{ElSpec, InitLibc, InitSpec, Selinux};
pub use inputs::{check_inputs, MissingInput};
pub use load::{load, DefinitionError, LoadedDefinition, SetArg, DEFAULT_DEFINITION};
pub use size::{BadSize, ByteSize, FreeSpace, SizeSpec};
pub use targets::{
    NicModel, OpenvzCompression, OpenvzSpec, QemuSpec, ScsiAdapter, VmdkFormat, VmwareSpec,
    XenBootloader, XenGuestType, XenSpec,
};

/// A whole image definition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    /// Image name: names output files and the default output directory.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Another definition this one starts from (resolved while loading).
    #[serde(default)]
    pub extends: Option<PathBuf>,
    /// Clamp every timestamp to this time (like SOURCE_DATE_EPOCH, which overrides it).
    #[serde(default)]
    pub source_date_epoch: Option<i64>,
    /// OS identity files.
    #[serde(default)]
    pub os: OsIdentity,
    /// Enterprise Linux system files (SELinux, network scripts).
    #[serde(default)]
    pub el: ElSpec,
    /// The guest init binary.
    #[serde(default)]
    pub init: InitSpec,
    /// The filesystem to write.
    #[serde(default)]
    pub filesystem: FilesystemSpec,
    /// Layers, applied in order.
    #[serde(default)]
    pub layers: Vec<LayerSpec>,
    /// Kernel for the VM targets; the host's newest kernel when absent.
    #[serde(default)]
    pub kernel: Option<KernelSpec>,
    /// Virtual machine size, shared by every target.
    #[serde(default)]
    pub vm: VmSpec,
    /// Benchmark workloads the guest init runs.
    #[serde(default)]
    pub workloads: WorkloadsSpec,
    /// Xen domU packaging.
    #[serde(default)]
    pub xen: XenSpec,
    /// OpenVZ template packaging.
    #[serde(default)]
    pub openvz: OpenvzSpec,
    /// VMware packaging.
    #[serde(default)]
    pub vmware: VmwareSpec,
    /// QEMU packaging.
    #[serde(default)]
    pub qemu: QemuSpec,
}

/// OS identity: `/etc/os-release`, `/etc/redhat-release`, `/etc/hostname`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OsIdentity {
    /// os-release `ID`.
    #[serde(default = "default_os_id")]
    pub id: String,
    /// os-release `NAME`.
    #[serde(default = "default_os_name")]
    pub name: String,
    /// os-release `VERSION_ID`.
    #[serde(default)]
    pub version_id: Option<String>,
    /// os-release `VERSION`.
    #[serde(default)]
    pub version: Option<String>,
    /// os-release `ID_LIKE`.
    #[serde(default)]
    pub id_like: Option<String>,
    /// os-release `PRETTY_NAME` (default: NAME VERSION).
    #[serde(default)]
    pub pretty_name: Option<String>,
    /// Write `/etc/os-release` (EL5 and EL6 had none).
    #[serde(default = "yes")]
    pub os_release: bool,
    /// One line for `/etc/redhat-release` (EL family), e.g. "Scientific Linux release 6.10 (Carbon)".
    #[serde(default)]
    pub redhat_release: Option<String>,
    /// More files that hold the `redhat_release` line (`/etc/sl-release` on SL6).
    #[serde(default)]
    pub release_files: Vec<String>,
    /// `/etc/hostname`.
    #[serde(default = "default_hostname")]
    pub hostname: String,
}

fn default_os_id() -> String {
    "imgbuild".into()
}
fn default_os_name() -> String {
    "imgbuild".into()
}
fn default_hostname() -> String {
    "imgbuild".into()
}
fn yes() -> bool {
    true
}

impl Default for OsIdentity {
    fn default() -> Self {
        OsIdentity {
            id: default_os_id(),
            name: default_os_name(),
            version_id: None,
            version: None,
            id_like: None,
            pretty_name: None,
            os_release: true,
            redhat_release: None,
            release_files: Vec::new(),
            hostname: default_hostname(),
        }
    }
}

/// Filesystem type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    /// ext4: extents, flex_bg, metadata checksums, journal.
    #[default]
    Ext4,
    /// ext3: block maps with a journal, for kernels before ext4 (SL5).
    Ext3,
    /// ext2: block maps, no journal.
    Ext2,
}

impl FsType {
    /// "ext4", "ext3" or "ext2".
    pub fn name(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Ext3 => "ext3",
            FsType::Ext2 => "ext2",
        }
    }
}

/// The filesystem to write.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesystemSpec {
    /// ext4, ext3 or ext2.
    #[serde(default)]
    pub fs: FsType,
    /// `"auto"` or a fixed size.
    #[serde(default)]
    pub size: SizeSpec,
    /// Free space added by `size = "auto"`.
    #[serde(default)]
    pub free: FreeSpace,
    /// Bytes of filesystem per inode.
    #[serde(default = "default_inode_ratio")]
    pub inode_ratio: u64,
    /// Volume label (up to 16 bytes).
    #[serde(default = "default_label")]
    pub label: String,
    /// Filesystem UUID; derived from the image name and the tree when absent.
    #[serde(default)]
    pub uuid: Option<String>,
    /// Directory hash seed (a UUID); derived like the filesystem UUID when absent.
    #[serde(default)]
    pub hash_seed: Option<String>,
    /// Percentage of blocks reserved for root.
    #[serde(default)]
    pub reserved_percent: f64,
    /// Journal size for ext3/ext4; chosen from the filesystem size when absent.
    #[serde(default)]
    pub journal_size: Option<ByteSize>,
    /// Write (or fix) the root line of `/etc/fstab` with `UUID=`.
    #[serde(default = "yes")]
    pub fstab: bool,
}

fn default_inode_ratio() -> u64 {
    16384
}
fn default_label() -> String {
    "imgbuild-root".into()
}

impl Default for FilesystemSpec {
    fn default() -> Self {
        FilesystemSpec {
            fs: FsType::Ext4,
            size: SizeSpec::Auto,
            free: FreeSpace::default(),
            inode_ratio: default_inode_ratio(),
            label: default_label(),
            uuid: None,
            hash_seed: None,
            reserved_percent: 0.0,
            journal_size: None,
            fstab: true,
        }
    }
}

/// One layer as written in TOML: exactly one source key (`builtin`, `dir`, `tar`, `rpm`, `deb`,
/// `files`), optionally with `remove`; or `remove` alone.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSpec {
    /// A name, so `--set NAME.KEY=VALUE` can address this layer.
    #[serde(default)]
    pub name: Option<String>,
    /// The minimal embedded root.
    #[serde(default)]
    pub builtin: Option<bool>,
    /// A directory tree on the host.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// A tar archive (plain, gzip, xz, zstd, bzip2).
    #[serde(default)]
    pub tar: Option<PathBuf>,
    /// RPM packages (paths or glob patterns).
    #[serde(default)]
    pub rpm: Option<Vec<String>>,
    /// Debian packages (paths or glob patterns).
    #[serde(default)]
    pub deb: Option<Vec<String>>,
    /// Inline files, directories, symlinks and nodes.
    #[serde(default)]
    pub files: Option<Vec<FileSpec>>,
    /// Paths deleted after this layer's source is applied.
    #[serde(default)]
    pub remove: Option<Vec<String>>,
    /// `"UID:GID"` given to every entry of a `dir` or `tar` layer.
    #[serde(default)]
    pub owner: Option<String>,
}

/// An inline entry of a `files` layer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Absolute path in the image.
    pub path: String,
    /// `file` (default), `dir`, `symlink`, `fifo`, `char`, `block`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// File content as text.
    #[serde(default)]
    pub content: Option<String>,
    /// File content from a host file.
    #[serde(default)]
    pub source: Option<PathBuf>,
    /// Symlink target (implies `type = "symlink"`).
    #[serde(default)]
    pub target: Option<String>,
    /// Octal permissions as a string ("0644") or an integer.
    #[serde(default)]
    pub mode: Option<toml::Value>,
    /// `"UID:GID"`.
    #[serde(default)]
    pub owner: Option<String>,
    /// Device major number.
    #[serde(default)]
    pub major: Option<u32>,
    /// Device minor number.
    #[serde(default)]
    pub minor: Option<u32>,
    /// Extended attributes: name to value; a value `"hex:…"` is hex-decoded.
    #[serde(default)]
    pub xattrs: std::collections::BTreeMap<String, String>,
}

/// The kernel booted by VM targets.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelSpec {
    /// A kernel image on the host (`/boot/vmlinuz-X`).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Its modules directory (`/lib/modules/X`).
    #[serde(default)]
    pub modules: Option<PathBuf>,
    /// A Debian kernel package (`linux-image-….deb`).
    #[serde(default)]
    pub deb: Option<PathBuf>,
    /// An RPM kernel package (`kernel-….rpm`).
    #[serde(default)]
    pub rpm: Option<PathBuf>,
    /// Narrow the initramfs drivers to these module names.
    #[serde(default)]
    pub drivers: Option<Vec<String>>,
    /// Extra kernel command line.
    #[serde(default)]
    pub cmdline: Option<String>,
}

/// Machine size, the same for every target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// Memory in MiB.
    #[serde(default = "default_memory")]
    pub memory: u32,
    /// Virtual CPUs.
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
    /// Size of the results disk.
    #[serde(default = "default_results_size")]
    pub results_disk: ByteSize,
}

fn default_memory() -> u32 {
    512
}
fn default_vcpus() -> u32 {
    1
}
fn default_results_size() -> ByteSize {
    ByteSize(8 << 20)
}

impl Default for VmSpec {
    fn default() -> Self {
        VmSpec {
            memory: default_memory(),
            vcpus: default_vcpus(),
            results_disk: default_results_size(),
        }
    }
}

/// Which workloads the guest runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadsSpec {
    /// Profile name: a built-in one (`smoke`, `quick`, `paper`) or one of `profiles`.
    #[serde(default = "default_profile")]
    pub profile: String,
    /// Profiles written in the definition, by name (format: the README's "Profiles").
    #[serde(default)]
    pub profiles: toml::Table,
}

fn default_profile() -> String {
    "smoke".into()
}

impl Default for WorkloadsSpec {
    fn default() -> Self {
        WorkloadsSpec {
            profile: default_profile(),
            profiles: toml::Table::new(),
        }
    }
}
