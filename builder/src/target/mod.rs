//! Targets: one module per platform, each turning the one root filesystem into that platform's
//! package. A new target is one new module and one `Target` variant.

pub mod xen;

use std::fmt;
use std::str::FromStr;

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
