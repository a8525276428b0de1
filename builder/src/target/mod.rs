//! Targets: one module per platform, each turning the one root filesystem into that platform's
//! package. A new target is one new module and one `Target` variant.

pub mod openvz;
mod packaging;
pub mod qemu;
pub mod vmware;
pub mod xen;

pub use packaging::{check_all, package_all, PackagedFile};

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::artefacts::{ArtefactError, Artefacts};
use crate::definition::Definition;
use crate::finish::{BootFiles, Finished};
use crate::manifest::Role;

/// A platform to package for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// Xen domU: bare filesystem image, kernel, initramfs, xl config.
    Xen,
    /// OpenVZ: precreated OS template tarball and conf sample.
    Openvz,
    /// VMware: VMDK disks and a .vmx.
    Vmware,
    /// QEMU/KVM: raw whole-disk image and the command line.
    Qemu,
}

impl Target {
    /// Every target, in build order.
    pub const ALL: [Target; 4] = [Target::Xen, Target::Qemu, Target::Vmware, Target::Openvz];

    /// The name used on the command line, in the manifest and as the output folder.
    pub fn name(self) -> &'static str {
        match self {
            Target::Xen => "xen",
            Target::Openvz => "openvz",
            Target::Vmware => "vmware",
            Target::Qemu => "qemu",
        }
    }

    /// Whether the target boots a kernel of ours (OpenVZ containers use the host's).
    pub fn needs_kernel(self) -> bool {
        self != Target::Openvz
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a packager works from.
pub struct PackageContext<'a> {
    /// The definition.
    pub definition: &'a Definition,
    /// The finished tree, its digest and UUID.
    pub finished: &'a Finished,
    /// Kernel and initramfs, when the build has them.
    pub boot: Option<&'a BootFiles>,
    /// Shared images.
    pub artefacts: &'a Artefacts<'a>,
    /// The final output directory (for absolute paths in configs).
    pub out_dir: &'a Path,
    /// Where the Xen files will live on dom0 (`--xen-dir`).
    pub xen_dir: Option<&'a Path>,
    /// A real partition to write the filesystem to (`--device`).
    pub device: Option<&'a Path>,
}

impl PackageContext<'_> {
    /// The kernel command line every VM target shares, for `console`.
    pub fn cmdline(&self, console: &str) -> String {
        let uuid = crate::finish::format_uuid(&self.finished.uuid);
        let mut line = format!("root=UUID={uuid} ro quiet panic=-1 console={console}");
        if let Some(extra) = self
            .definition
            .kernel
            .as_ref()
            .and_then(|k| k.cmdline.as_ref())
        {
            line.push(' ');
            line.push_str(extra);
        }
        line
    }
}

/// One file a packager produced, relative to the output directory.
#[derive(Debug, Clone)]
pub struct Output {
    /// What it is for.
    pub role: Role,
    /// Path relative to the output directory.
    pub path: String,
}

/// A target that cannot be packaged.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// A shared image cannot be made.
    #[error(transparent)]
    Artefact(#[from] ArtefactError),
    /// A VMDK cannot be written.
    #[error(transparent)]
    Vmdk(#[from] crate::vmdk::VmdkError),
    /// A file cannot be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A definition value this target cannot use.
    #[error("{0}")]
    Invalid(String),
}

/// What the targets check before anything is built: the definition and the options.
pub struct CheckContext<'a> {
    /// The definition, with `--set` applied.
    pub definition: &'a Definition,
    /// `--device`.
    pub device: Option<&'a Path>,
    /// `--xen-dir`.
    pub xen_dir: Option<&'a Path>,
}

/// Turns the one root filesystem into one platform's package.
pub trait Packager: Sync {
    /// Refuses what the target could only refuse later (values of its definition section, a
    /// device that must not be written), before the build reads a layer or writes a byte.
    fn check(&self, _cx: &CheckContext<'_>) -> Result<(), TargetError> {
        Ok(())
    }

    /// Writes the package into the staging directory and lists its files.
    fn package(&self, cx: &PackageContext<'_>) -> Result<Vec<Output>, TargetError>;
}

/// The packager of a target.
pub fn packager(target: Target) -> Box<dyn Packager> {
    match target {
        Target::Xen => Box::new(xen::Xen),
        Target::Qemu => Box::new(qemu::Qemu),
        Target::Vmware => Box::new(vmware::Vmware),
        Target::Openvz => Box::new(openvz::Openvz),
    }
}

/// The last component of `path` (lossy), as files are named in configs and the manifest.
pub(crate) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Writes a small text file into the staging directory.
pub(crate) fn write_text(
    cx: &PackageContext<'_>,
    relative: &str,
    text: &str,
) -> Result<(), TargetError> {
    let path = cx.artefacts.staged(relative)?;
    std::fs::write(&path, text).map_err(|source| TargetError::Io { path, source })
}

/// A target name that is not one of the known ones.
#[derive(Debug, thiserror::Error)]
#[error("unknown target {0:?}; the targets are xen, openvz, vmware, qemu and all")]
pub struct UnknownTarget(pub String);

impl FromStr for Target {
    type Err = UnknownTarget;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Target::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| UnknownTarget(s.to_string()))
    }
}

/// Parses a list such as `xen,qemu` or `all`, sorted and without duplicates.
pub fn parse_targets(items: &[String]) -> Result<Vec<Target>, UnknownTarget> {
    let mut out = Vec::new();
    for item in items.iter().flat_map(|s| s.split(',')) {
        let item = item.trim();
        if item == "all" {
            out.extend(Target::ALL);
        } else {
            out.push(item.parse()?);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists() {
        let t = parse_targets(&["qemu,xen".into(), "xen".into()]).unwrap();
        assert_eq!(t, vec![Target::Xen, Target::Qemu]);
        assert_eq!(parse_targets(&["all".into()]).unwrap().len(), 4);
        let e = parse_targets(&["esx".into()]).unwrap_err().to_string();
        assert!(e.contains("xen, openvz, vmware, qemu"), "{e}");
    }
}
