//! Enterprise Linux system files (RHEL, CentOS, Scientific Linux 5–7), rendered in the
//! finishing step from the definition's `[el]` table.
//!
//! A precreated template or an installroot carries traces of the machine it was made on: the
//! MAC address in `ifcfg-eth0` (`HWADDR=`) and udev's `70-persistent-net.rules`, which on a new
//! machine rename the NIC to `eth1` and leave `eth0`'s config unused. And a tree assembled from
//! tarballs and packages has no SELinux labels, which an enforcing guest refuses to boot with.
//! This module rewrites exactly those files; files it edits keep their owner, mode and xattrs,
//! and lines it does not own (`GATEWAY=`, `SELINUXTYPE=`) are kept.

use crate::definition::{Definition, Selinux};
use crate::sources::builtin::text_file;
use crate::tree::{Inode, Kind, Meta, Tree, TreeError};

/// The SELinux config file.
pub const SELINUX_CONFIG: &str = "/etc/selinux/config";
/// The file whose presence makes the EL init relabel the filesystem at boot.
pub const AUTORELABEL: &str = "/.autorelabel";
/// Global network settings.
pub const SYSCONFIG_NETWORK: &str = "/etc/sysconfig/network";
/// Per-interface configs.
pub const NETWORK_SCRIPTS: &str = "/etc/sysconfig/network-scripts";
/// Where EL5 and EL6's system-config-network keeps hard-linked copies of the ifcfg files.
const NETWORKING_COPIES: [&str; 2] = [
    "/etc/sysconfig/networking/devices",
    "/etc/sysconfig/networking/profiles/default",
];
/// udev's record of MAC address to interface name (EL6).
pub const PERSISTENT_NET_RULES: &str = "/etc/udev/rules.d/70-persistent-net.rules";

/// Config files larger than this are not edited (they are not config files).
const MAX_CONFIG: u64 = 1 << 20;

/// A file of `[el]` that cannot be placed.
#[derive(Debug, thiserror::Error)]
#[error("[el]: cannot write {path}: {source}")]
pub struct ElError {
    /// The tree path.
    pub path: String,
    /// Why.
    #[source]
    pub source: TreeError,
}

/// Applies the definition's `[el]` table to `tree`; returns what it did, for the build log.
pub fn apply(tree: &mut Tree, def: &Definition, mtime: i64) -> Result<Vec<String>, ElError> {
    let el = &def.el;
    let mut notes = Vec::new();
    match el.selinux {
        Selinux::Keep => {}
        Selinux::Relabel => {
            put(tree, AUTORELABEL, b"", mtime)?;
            notes.push(format!(
                "selinux: {AUTORELABEL} created; the guest's init relabels on first boot"
            ));
        }
        mode => {
            let value = mode.config_value().unwrap_or("disabled");
            let old = read_text(tree, SELINUX_CONFIG);
            let text = selinux_config(old.as_deref(), value);
            put(tree, SELINUX_CONFIG, text.as_bytes(), mtime)?;
            notes.push(format!("selinux: SELINUX={value} in {SELINUX_CONFIG}"));
        }
    }
    if el.network {
        let hostname = el.network_hostname.then_some(def.os.hostname.as_str());
        let old = read_text(tree, SYSCONFIG_NETWORK);
        put(
            tree,
            SYSCONFIG_NETWORK,
            sysconfig_network(old.as_deref(), hostname).as_bytes(),
            mtime,
        )?;
        let interface = el.interface();
        let ifcfg = format!("{NETWORK_SCRIPTS}/ifcfg-{interface}");
        put(tree, &ifcfg, ifcfg_dhcp(interface).as_bytes(), mtime)?;
        let others: Vec<String> = std::iter::once(NETWORK_SCRIPTS)
            .chain(NETWORKING_COPIES)
            .flat_map(|dir| ifcfg_files(tree, dir))
            .collect();
        for other in others {
            if other == ifcfg {
                continue;
            }
            if let Some(text) = read_text(tree, &other) {
                if let Some(stripped) = without_hwaddr(&text) {
                    put(tree, &other, stripped.as_bytes(), mtime)?;
                    notes.push(format!("network: HWADDR removed from {other}"));
                }
            }
        }
        let removed = tree
            .remove(PERSISTENT_NET_RULES.as_bytes())
            .map_err(|source| ElError {
                path: PERSISTENT_NET_RULES.into(),
                source,
            })?;
        notes.push(format!(
            "network: {ifcfg} (DHCP, no HWADDR){}",
            if removed {
                format!(", {PERSISTENT_NET_RULES} removed")
            } else {
                String::new()
            }
        ));
    }
    Ok(notes)
}

/// `/etc/selinux/config` with `SELINUX=value`: the old file's other lines kept, or the stock
/// file when there was none.
pub fn selinux_config(old: Option<&str>, value: &str) -> String {
    let Some(old) = old else {
        return format!(
            "# This file controls the state of SELinux on the system (written by imgbuild).\n\
             # SELINUX= can take one of these three values: enforcing, permissive, disabled.\n\
             SELINUX={value}\n\
             # SELINUXTYPE= targeted or mls (strict on EL5).\n\
             SELINUXTYPE=targeted\n"
        );
    };
    set_key(old, "SELINUX", Some(value))
}

/// `/etc/sysconfig/network` with `NETWORKING=yes` and, when given, `HOSTNAME=`; other lines
/// of the old file kept.
pub fn sysconfig_network(old: Option<&str>, hostname: Option<&str>) -> String {
    let text = set_key(old.unwrap_or(""), "NETWORKING", Some("yes"));
    set_key(&text, "HOSTNAME", hostname)
}

/// `ifcfg-<interface>` for DHCP, with nothing tied to one machine (no HWADDR, no UUID).
pub fn ifcfg_dhcp(interface: &str) -> String {
    format!(
        "DEVICE={interface}\n\
         TYPE=Ethernet\n\
         BOOTPROTO=dhcp\n\
         ONBOOT=yes\n\
         USERCTL=no\n\
         PEERDNS=yes\n\
         IPV6INIT=no\n"
    )
}

/// The text without its `HWADDR=` lines, or `None` when it has none.
fn without_hwaddr(text: &str) -> Option<String> {
    let is_hwaddr = |l: &str| l.trim_start().starts_with("HWADDR=");
    if !text.lines().any(is_hwaddr) {
        return None;
    }
    Some(
        text.lines()
            .filter(|l| !is_hwaddr(l))
            .map(|l| format!("{l}\n"))
            .collect(),
    )
}

/// Replaces the `KEY=` lines of a shell-style config with one `KEY=value` where the first
/// was (or appends it); with `value` `None`, drops them. Comments are kept.
fn set_key(text: &str, key: &str, value: Option<&str>) -> String {
    let prefix = format!("{key}=");
    let mut out = String::with_capacity(text.len() + 32);
    let mut done = false;
    for line in text.lines() {
        if line.trim_start().starts_with(&prefix) {
            if let (Some(v), false) = (value, done) {
                out.push_str(&format!("{key}={v}\n"));
            }
            done = true;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if let (Some(v), false) = (value, done) {
        out.push_str(&format!("{key}={v}\n"));
    }
    out
}

/// Paths of the `ifcfg-*` regular files in `dir`.
fn ifcfg_files(tree: &Tree, dir: &str) -> Vec<String> {
    let Some(resolved) = tree.resolve(dir.as_bytes()) else {
        return Vec::new();
    };
    let Some(id) = tree.lookup(&resolved) else {
        return Vec::new();
    };
    let Kind::Directory(entries) = &tree.inode(id).kind else {
        return Vec::new();
    };
    entries
        .iter()
        .filter(|(name, child)| {
            name.starts_with(b"ifcfg-") && matches!(tree.inode(**child).kind, Kind::File(_))
        })
        .map(|(name, _)| format!("{dir}/{}", String::from_utf8_lossy(name)))
        .collect()
}

/// The text of a regular file of the tree (following symlinks), when it is small enough.
fn read_text(tree: &Tree, path: &str) -> Option<String> {
    let resolved = tree.resolve(path.as_bytes())?;
    let Kind::File(data) = &tree.inode(tree.lookup(&resolved)?).kind else {
        return None;
    };
    if data.size > MAX_CONFIG {
        return None;
    }
    let mut buf = vec![0u8; usize::try_from(data.size).ok()?];
    let reader = data.content.open(data.size, path).ok()?;
    reader.read_exact_at(&mut buf, 0).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// Writes `bytes` at `path` (through symlinks the guest would follow), keeping the metadata
/// of a file already there.
fn put(tree: &mut Tree, path: &str, bytes: &[u8], mtime: i64) -> Result<(), ElError> {
    let target = match tree.resolve(path.as_bytes()) {
        Some(found) => found,
        None => {
            // Missing (or a dangling symlink): resolve the directory, keep the name.
            let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
            match tree.resolve(parent.as_bytes()) {
                Some(mut dir) => {
                    if dir != b"/" {
                        dir.push(b'/');
                    }
                    dir.extend_from_slice(name.as_bytes());
                    dir
                }
                None => path.as_bytes().to_vec(),
            }
        }
    };
    let mut inode: Inode = text_file(bytes, 0o644, mtime);
    if let Some(id) = tree.lookup(&target) {
        let old = tree.inode(id);
        if matches!(old.kind, Kind::File(_)) {
            inode.meta = Meta {
                mtime,
                ..old.meta.clone()
            };
        }
    }
    tree.insert(&target, inode)
        .map(|_| ())
        .map_err(|source| ElError {
            path: path.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::load;

    fn tree_with(files: &[(&str, &str)]) -> Tree {
        let mut t = Tree::new(Meta::root(0o755, 0));
        for (path, text) in files {
            t.insert(path.as_bytes(), text_file(text.as_bytes(), 0o600, 1))
                .unwrap();
        }
        t
    }

    fn text(t: &Tree, p: &str) -> String {
        read_text(t, p).unwrap()
    }

    #[test]
    fn edits_keep_foreign_lines_and_metadata() {
        let old = "# comment\nSELINUX=enforcing\nSELINUXTYPE=targeted\n";
        assert_eq!(
            selinux_config(Some(old), "disabled"),
            "# comment\nSELINUX=disabled\nSELINUXTYPE=targeted\n"
        );
        assert!(selinux_config(None, "permissive").contains("\nSELINUX=permissive\n"));
        let net = sysconfig_network(
            Some("NETWORKING=no\nHOSTNAME=old.example\nGATEWAY=10.0.0.1\n"),
            Some("bench"),
        );
        assert_eq!(net, "NETWORKING=yes\nHOSTNAME=bench\nGATEWAY=10.0.0.1\n");
        assert_eq!(
            sysconfig_network(Some("HOSTNAME=x\n"), None),
            "NETWORKING=yes\n"
        );
        assert_eq!(
            without_hwaddr("DEVICE=eth1\nHWADDR=52:54:00:12:34:56\nONBOOT=no\n").unwrap(),
            "DEVICE=eth1\nONBOOT=no\n"
        );
        assert!(without_hwaddr("DEVICE=eth1\n").is_none());
    }

    #[test]
    fn applies_the_el_table() {
        let mut def = load(None, &[]).unwrap().definition;
        def.el.selinux = Selinux::Disabled;
        def.el.network = true;
        def.el.network_hostname = true;
        def.os.hostname = "sl6".into();
        let mut t = tree_with(&[
            (SELINUX_CONFIG, "SELINUX=enforcing\nSELINUXTYPE=targeted\n"),
            (
                "/etc/sysconfig/network-scripts/ifcfg-eth0",
                "DEVICE=eth0\nHWADDR=00:16:3e:00:00:01\nBOOTPROTO=static\n",
            ),
            (
                "/etc/sysconfig/network-scripts/ifcfg-eth1",
                "DEVICE=eth1\nHWADDR=00:16:3e:00:00:02\n",
            ),
            (PERSISTENT_NET_RULES, "SUBSYSTEM==\"net\"\n"),
            (
                "/etc/sysconfig/networking/devices/ifcfg-eth0",
                "DEVICE=eth0\nHWADDR=00:16:3e:00:00:01\n",
            ),
        ]);
        let notes = apply(&mut t, &def, 7).unwrap();
        assert_eq!(notes.len(), 4, "{notes:?}");
        assert_eq!(
            text(&t, "/etc/sysconfig/networking/devices/ifcfg-eth0"),
            "DEVICE=eth0\n"
        );
        assert_eq!(
            text(&t, SELINUX_CONFIG),
            "SELINUX=disabled\nSELINUXTYPE=targeted\n"
        );
        let meta = &t.inode(t.lookup(SELINUX_CONFIG.as_bytes()).unwrap()).meta;
        assert_eq!((meta.mode, meta.mtime), (0o600, 7));
        assert_eq!(
            text(&t, SYSCONFIG_NETWORK),
            "NETWORKING=yes\nHOSTNAME=sl6\n"
        );
        let eth0 = text(&t, "/etc/sysconfig/network-scripts/ifcfg-eth0");
        assert!(eth0.contains("BOOTPROTO=dhcp\n") && !eth0.contains("HWADDR"));
        assert_eq!(
            text(&t, "/etc/sysconfig/network-scripts/ifcfg-eth1"),
            "DEVICE=eth1\n"
        );
        assert!(t.lookup(PERSISTENT_NET_RULES.as_bytes()).is_none());
        assert!(t.lookup(AUTORELABEL.as_bytes()).is_none());
    }

    #[test]
    fn relabel_and_keep() {
        let mut def = load(None, &[]).unwrap().definition;
        let mut t = tree_with(&[(SELINUX_CONFIG, "SELINUX=enforcing\n")]);
        assert!(apply(&mut t, &def, 0).unwrap().is_empty());
        def.el.selinux = Selinux::Relabel;
        apply(&mut t, &def, 0).unwrap();
        assert_eq!(text(&t, AUTORELABEL), "");
        assert_eq!(text(&t, SELINUX_CONFIG), "SELINUX=enforcing\n");
        assert!(t.lookup(SYSCONFIG_NETWORK.as_bytes()).is_none());
    }

    #[test]
    fn writes_through_a_symlinked_directory() {
        let mut def = load(None, &[]).unwrap().definition;
        def.el.selinux = Selinux::Permissive;
        let mut t = Tree::new(Meta::root(0o755, 0));
        t.insert(
            b"/etc/selinux.real",
            Inode::new(Meta::root(0o755, 0), Kind::empty_dir()),
        )
        .unwrap();
        t.insert(
            b"/etc/selinux",
            Inode::new(
                Meta::root(0o777, 0),
                Kind::Symlink((*b"selinux.real").into()),
            ),
        )
        .unwrap();
        apply(&mut t, &def, 0).unwrap();
        assert!(text(&t, "/etc/selinux.real/config").contains("SELINUX=permissive\n"));
    }
}
