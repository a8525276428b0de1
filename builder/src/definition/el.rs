//! `[el]` and `[init]`: what an Enterprise Linux guest (RHEL, CentOS, Scientific Linux 5–7)
//! needs beyond its identity, and which build of the guest init an image carries.
//!
//! The files themselves are rendered by [`crate::el`] in the finishing step, after every layer,
//! so a template tarball's own copies (with the MAC address of the machine it was made on) never
//! survive into the image.

use serde::Deserialize;

/// What to do about SELinux labels, which a tree assembled from tarballs or packages lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Selinux {
    /// Leave `/etc/selinux/config` as the layers made it.
    #[default]
    Keep,
    /// `SELINUX=disabled`: the unlabeled tree is used as is (what OpenVZ containers run with).
    Disabled,
    /// `SELINUX=permissive`: denials are logged, not enforced.
    Permissive,
    /// An empty `/.autorelabel`: the distribution's init relabels every file on its first boot
    /// (`fixfiles -F relabel`) and then deletes it; the config is left as is.
    Relabel,
}

impl Selinux {
    /// The `SELINUX=` value written, for the modes that write one.
    pub fn config_value(self) -> Option<&'static str> {
        match self {
            Selinux::Disabled => Some("disabled"),
            Selinux::Permissive => Some("permissive"),
            Selinux::Keep | Selinux::Relabel => None,
        }
    }
}

/// `[el]`: Enterprise Linux system files. Every key defaults to "leave the tree alone", so
/// images of other families are unaffected.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElSpec {
    /// SELinux handling.
    #[serde(default)]
    pub selinux: Selinux,
    /// Write `/etc/sysconfig/network` (`NETWORKING=yes`) and a DHCP
    /// `/etc/sysconfig/network-scripts/ifcfg-<interface>` without `HWADDR`, strip `HWADDR=` from
    /// every other `ifcfg-*`, and delete `/etc/udev/rules.d/70-persistent-net.rules`, so the
    /// first NIC of any machine is the configured one.
    #[serde(default)]
    pub network: bool,
    /// Put `HOSTNAME=<os.hostname>` in `/etc/sysconfig/network` (EL5 and EL6 read it there;
    /// EL7 reads `/etc/hostname`).
    #[serde(default)]
    pub network_hostname: bool,
    /// The interface configured by `network` (default `eth0`).
    #[serde(default)]
    pub interface: Option<String>,
    /// Also write the grub-legacy config as `/boot/grub/grub.conf`, the name Red Hat's
    /// GRUB 0.97 and grubby use on EL5 and EL6 (`menu.lst` is always written).
    #[serde(default)]
    pub grub_conf: bool,
}

impl ElSpec {
    /// The interface `network` configures.
    pub fn interface(&self) -> &str {
        self.interface.as_deref().unwrap_or("eth0")
    }
}

/// Which C library the guest init was built against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum InitLibc {
    /// glibc, statically linked (the workspace default). glibc's static startup refuses kernels
    /// older than the version in the binary's ABI note (3.2 for glibc 2.26 and later).
    #[default]
    Gnu,
    /// musl, statically linked (`--target x86_64-unknown-linux-musl`): no minimum kernel check,
    /// for SL5 (2.6.18) and SL6 or OpenVZ 6 (2.6.32) guests.
    Musl,
}

impl InitLibc {
    /// The Rust target triple the init is built for.
    pub fn triple(self) -> &'static str {
        match self {
            InitLibc::Gnu => "x86_64-unknown-linux-gnu",
            InitLibc::Musl => "x86_64-unknown-linux-musl",
        }
    }
}

/// `[init]`: the guest init binary.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitSpec {
    /// `gnu` or `musl`: which build of `imgbuild-init` to look for when `--init` and
    /// `IMGBUILD_INIT` name none.
    #[serde(default)]
    pub libc: InitLibc,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_defaults() {
        let spec: ElSpec = toml::from_str("selinux = \"relabel\"\nnetwork = true\n").unwrap();
        assert_eq!(spec.selinux, Selinux::Relabel);
        assert!(spec.network && !spec.network_hostname);
        assert_eq!(spec.interface(), "eth0");
        assert_eq!(Selinux::Relabel.config_value(), None);
        assert_eq!(Selinux::Disabled.config_value(), Some("disabled"));
        assert!(toml::from_str::<ElSpec>("selinux = \"off\"\n").is_err());
        assert!(toml::from_str::<ElSpec>("colour = 1\n").is_err());
        let init: InitSpec = toml::from_str("libc = \"musl\"\n").unwrap();
        assert_eq!(init.libc.triple(), "x86_64-unknown-linux-musl");
        assert_eq!(InitSpec::default().libc, InitLibc::Gnu);
    }
}
