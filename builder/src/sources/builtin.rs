//! `builtin = true`: the minimal embedded root.
//!
//! A directory skeleton, the /etc basics a benchmark guest needs (passwd, group, shadow, hosts,
//! nsswitch.conf) and the /dev nodes that must exist before devtmpfs is mounted (console, null,
//! zero, tty, random, urandom). Identity files (hostname, os-release, fstab) and the init are
//! added by the build's finishing step, because they depend on the definition and the tree.

use std::sync::Arc;

use super::LayerReport;
use crate::tree::{Content, FileData, Inode, Kind, Meta, Tree, TreeError};

const DIRECTORIES: &[(&str, u16)] = &[
    ("bin", 0o755),
    ("boot", 0o755),
    ("dev", 0o755),
    ("dev/pts", 0o755),
    ("dev/shm", 0o1777),
    ("etc", 0o755),
    ("etc/imgbuild", 0o755),
    ("home", 0o755),
    ("lib", 0o755),
    ("mnt", 0o755),
    ("proc", 0o555),
    ("root", 0o700),
    ("run", 0o755),
    ("sbin", 0o755),
    ("sys", 0o555),
    ("tmp", 0o1777),
    ("usr", 0o755),
    ("usr/bin", 0o755),
    ("usr/lib", 0o755),
    ("usr/sbin", 0o755),
    ("var", 0o755),
    ("var/lib", 0o755),
    ("var/lib/imgbuild", 0o755),
    ("var/log", 0o755),
    ("var/tmp", 0o1777),
];

const FILES: &[(&str, u16, &str)] = &[
    (
        "etc/passwd",
        0o644,
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n",
    ),
    (
        "etc/group",
        0o644,
        "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n",
    ),
    (
        "etc/shadow",
        0o600,
        "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n",
    ),
    (
        "etc/hosts",
        0o644,
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    ),
    (
        "etc/nsswitch.conf",
        0o644,
        "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n",
    ),
];

/// (path, mode, major, minor): character devices.
const DEVICES: &[(&str, u16, u32, u32)] = &[
    ("dev/console", 0o600, 5, 1),
    ("dev/null", 0o666, 1, 3),
    ("dev/zero", 0o666, 1, 5),
    ("dev/tty", 0o666, 5, 0),
    ("dev/random", 0o666, 1, 8),
    ("dev/urandom", 0o666, 1, 9),
];

/// Adds the minimal root. `mtime` stamps every entry.
pub fn apply(tree: &mut Tree, mtime: i64) -> Result<LayerReport, TreeError> {
    let mut report = LayerReport::default();
    tree.insert(
        b"/",
        Inode::new(Meta::root(0o755, mtime), Kind::empty_dir()),
    )?;
    for (path, mode) in DIRECTORIES {
        tree.insert(
            path.as_bytes(),
            Inode::new(Meta::root(*mode, mtime), Kind::empty_dir()),
        )?;
        report.entries += 1;
    }
    for (path, mode, text) in FILES {
        tree.insert(path.as_bytes(), text_file(text.as_bytes(), *mode, mtime))?;
        report.entries += 1;
    }
    for (path, mode, major, minor) in DEVICES {
        tree.insert(
            path.as_bytes(),
            Inode::new(
                Meta::root(*mode, mtime),
                Kind::CharDevice {
                    major: *major,
                    minor: *minor,
                },
            ),
        )?;
        report.entries += 1;
    }
    Ok(report)
}

/// A root-owned regular file holding `bytes`.
pub fn text_file(bytes: &[u8], mode: u16, mtime: i64) -> Inode {
    Inode::new(
        Meta::root(mode, mtime),
        Kind::File(FileData {
            size: bytes.len() as u64,
            content: Content::Bytes(Arc::from(bytes)),
            sha256: None,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_the_basics() {
        let mut t = Tree::new(Meta::root(0o755, 0));
        apply(&mut t, 42).unwrap();
        for p in [
            "/etc/passwd",
            "/dev/console",
            "/dev/null",
            "/tmp",
            "/var/lib/imgbuild",
        ] {
            assert!(t.lookup(p.as_bytes()).is_some(), "{p}");
        }
        let null = t.inode(t.lookup(b"/dev/null").unwrap());
        assert!(matches!(null.kind, Kind::CharDevice { major: 1, minor: 3 }));
        assert_eq!(t.inode(t.lookup(b"/tmp").unwrap()).meta.mode, 0o1777);
        assert_eq!(t.inode(t.root()).meta.mtime, 42);
    }
}
