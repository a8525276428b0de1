//! The per-target sections of a definition: `[xen]`, `[openvz]`, `[vmware]`, `[qemu]`.

use std::path::PathBuf;

use serde::Deserialize;

use super::ByteSize;

/// Xen guest type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum XenGuestType {
    /// PVH: Linux 4.11 and later.
    #[default]
    Pvh,
    /// Paravirtualized: older kernels (SL5, SL6, SL7).
    Pv,
}

/// How a Xen domU finds its kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum XenBootloader {
    /// Direct kernel boot from dom0 files (`kernel =`, `ramdisk =`).
    #[default]
    Direct,
    /// pygrub reads /boot/grub/menu.lst from a whole-disk image.
    Pygrub,
}

/// `[xen]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XenSpec {
    /// `pvh` or `pv`.
    #[serde(default, rename = "type")]
    pub guest_type: XenGuestType,
    /// `direct` or `pygrub`.
    #[serde(default)]
    pub bootloader: XenBootloader,
    /// `on_crash` action.
    #[serde(default = "default_on_crash")]
    pub on_crash: String,
    /// `vif` entries (none by default).
    #[serde(default)]
    pub vif: Vec<String>,
    /// Directory on dom0 where the files will live (absolute paths in the config).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// The PV console device on the kernel command line: `hvc0` (pvops kernels: EL6 and
    /// later), `xvc0` (the EL5 `kernel-xen`).
    #[serde(default = "default_console")]
    pub console: String,
}

fn default_console() -> String {
    "hvc0".into()
}

fn default_on_crash() -> String {
    "destroy".into()
}

impl Default for XenSpec {
    fn default() -> Self {
        XenSpec {
            guest_type: XenGuestType::default(),
            bootloader: XenBootloader::default(),
            on_crash: default_on_crash(),
            vif: Vec::new(),
            dir: None,
            console: default_console(),
        }
    }
}

/// Compression of the OpenVZ template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OpenvzCompression {
    /// `.tar.gz`.
    #[default]
    Gz,
    /// `.tar.xz`.
    Xz,
}

/// `[openvz]`: template name parts and the container's resources.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenvzSpec {
    /// Distribution part of the template name (`scientific`, `centos`).
    #[serde(default = "default_dist")]
    pub dist: String,
    /// Version part (`6`).
    #[serde(default = "default_version")]
    pub version: String,
    /// Architecture part.
    #[serde(default = "default_arch")]
    pub arch: String,
    /// Optional suffix (`bench`).
    #[serde(default)]
    pub extra: Option<String>,
    /// gz or xz.
    #[serde(default)]
    pub compression: OpenvzCompression,
    /// Container RAM (PHYSPAGES).
    #[serde(default = "default_physpages")]
    pub physpages: ByteSize,
    /// Container swap (SWAPPAGES).
    #[serde(default = "default_swappages")]
    pub swappages: ByteSize,
    /// Disk space (DISKSPACE).
    #[serde(default = "default_diskspace")]
    pub diskspace: ByteSize,
    /// Inode limit (DISKINODES).
    #[serde(default = "default_diskinodes")]
    pub diskinodes: u64,
    /// CPU weight (CPUUNITS).
    #[serde(default = "default_cpuunits")]
    pub cpuunits: u64,
    /// CPU count (CPUS); the `[vm]` vcpus when absent.
    #[serde(default)]
    pub cpus: Option<u32>,
    /// `DISTRIBUTION` in the conf sample: which of vzctl's `/etc/vz/dists/*.conf` action
    /// scripts the container uses when the template name's distribution has none (vzctl ships
    /// `redhat.conf` and `centos.conf` but no `scientific.conf`).
    #[serde(default)]
    pub distribution: Option<String>,
}

fn default_dist() -> String {
    "imgbuild".into()
}
fn default_version() -> String {
    "1".into()
}
fn default_arch() -> String {
    "x86_64".into()
}
fn default_physpages() -> ByteSize {
    ByteSize(512 << 20)
}
fn default_swappages() -> ByteSize {
    ByteSize(512 << 20)
}
fn default_diskspace() -> ByteSize {
    ByteSize(2 << 30)
}
fn default_diskinodes() -> u64 {
    200_000
}
fn default_cpuunits() -> u64 {
    1000
}

impl Default for OpenvzSpec {
    fn default() -> Self {
        OpenvzSpec {
            dist: default_dist(),
            version: default_version(),
            arch: default_arch(),
            extra: None,
            compression: OpenvzCompression::default(),
            physpages: default_physpages(),
            swappages: default_swappages(),
            diskspace: default_diskspace(),
            diskinodes: default_diskinodes(),
            cpuunits: default_cpuunits(),
            cpus: None,
            distribution: None,
        }
    }
}

/// VMware SCSI adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ScsiAdapter {
    /// VMware paravirtual SCSI (vmw_pvscsi).
    #[default]
    Pvscsi,
    /// LSI Logic parallel SCSI (mptspi).
    Lsilogic,
    /// LSI Logic SAS (mptsas).
    Lsisas1068,
}

/// VMware network card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NicModel {
    /// vmxnet3.
    #[default]
    Vmxnet3,
    /// Intel e1000.
    E1000,
}

/// VMDK flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VmdkFormat {
    /// Hosted products (Workstation, Player, GSX).
    MonolithicSparse,
    /// OVF/OVA transport into ESXi.
    StreamOptimized,
    /// Descriptor plus flat extent: what ESXi runs.
    MonolithicFlat,
}

/// `[vmware]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmwareSpec {
    /// `guestOS` (e.g. `rhel6-64`, `other5xlinux-64`).
    #[serde(default = "default_guest_os")]
    pub guest_os: String,
    /// `virtualHW.version`.
    #[serde(default = "default_hw_version")]
    pub hw_version: u32,
    /// SCSI controller.
    #[serde(default)]
    pub adapter: ScsiAdapter,
    /// Network card.
    #[serde(default)]
    pub nic: NicModel,
    /// VMDK forms to write.
    #[serde(default = "default_vmdk_formats")]
    pub formats: Vec<VmdkFormat>,
    /// Also write an OVA.
    #[serde(default)]
    pub ova: bool,
}

fn default_guest_os() -> String {
    "other5xlinux-64".into()
}
fn default_hw_version() -> u32 {
    13
}
fn default_vmdk_formats() -> Vec<VmdkFormat> {
    vec![
        VmdkFormat::MonolithicSparse,
        VmdkFormat::StreamOptimized,
        VmdkFormat::MonolithicFlat,
    ]
}

impl Default for VmwareSpec {
    fn default() -> Self {
        VmwareSpec {
            guest_os: default_guest_os(),
            hw_version: default_hw_version(),
            adapter: ScsiAdapter::default(),
            nic: NicModel::default(),
            formats: default_vmdk_formats(),
            ova: false,
        }
    }
}

/// `[qemu]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QemuSpec {
    /// Also write a qcow2 copy of the disk.
    #[serde(default)]
    pub qcow2: bool,
}
