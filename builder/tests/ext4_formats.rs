//! Every kind of entry, written as ext4, ext3 and ext2: e2fsck is clean, our reader's digest
//! equals the tree digest, ext4-view reads the same tree, and debugfs shows the device numbers,
//! owners and extended attributes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ext4_common;

use ext4_common::*;
use imgbuild::definition::FsType;
use imgbuild::tree::{Inode, Kind, Tree};

fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

fn target(len: usize) -> Box<[u8]> {
    (0..len)
        .map(|i| {
            if i % 8 == 7 {
                b'/'
            } else {
                b'a' + (i % 26) as u8
            }
        })
        .collect()
}

/// A tree with every entry type and the tricky metadata cases.
pub fn every_kind() -> Tree {
    let mut t = Tree::new(meta(0o755, 0, 0));
    t.insert(b"etc/hostname", bytes_file(b"box\n", meta(0o644, 0, 0)))
        .unwrap();
    t.insert(b"empty", bytes_file(b"", meta(0o600, 70000, 70001)))
        .unwrap();
    t.insert(
        b"bin/su",
        bytes_file(&vec![7u8; 50_000], meta(0o4755, 0, 0)),
    )
    .unwrap();
    t.insert(b"bin/wall", bytes_file(b"#!/bin/sh\n", meta(0o2755, 0, 5)))
        .unwrap();
    t.insert(b"tmp", dir_inode(meta(0o1777, 0, 0))).unwrap();
    t.hard_link(b"bin/su-again", b"bin/su").unwrap();
    t.hard_link(b"etc/su-link", b"bin/su").unwrap();
    t.insert(
        b"fast",
        Inode::new(meta(0o777, 0, 0), Kind::Symlink((*b"etc/hostname").into())),
    )
    .unwrap();
    // Long targets are made of short components: ext4-view refuses components over 255 bytes.
    t.insert(
        b"slow",
        Inode::new(meta(0o777, 1000, 1000), Kind::Symlink(target(300))),
    )
    .unwrap();
    t.insert(
        b"edge59",
        Inode::new(meta(0o777, 0, 0), Kind::Symlink(vec![b'y'; 59].into())),
    )
    .unwrap();
    t.insert(
        b"edge60",
        Inode::new(meta(0o777, 0, 0), Kind::Symlink(vec![b'z'; 60].into())),
    )
    .unwrap();
    t.insert(
        b"maxlink",
        Inode::new(meta(0o777, 0, 0), Kind::Symlink(target(4095))),
    )
    .unwrap();
    t.insert(
        b"dev/null",
        Inode::new(meta(0o666, 0, 0), Kind::CharDevice { major: 1, minor: 3 }),
    )
    .unwrap();
    t.insert(
        b"dev/sda1",
        Inode::new(meta(0o660, 0, 6), Kind::BlockDevice { major: 8, minor: 1 }),
    )
    .unwrap();
    t.insert(
        b"dev/nvme",
        Inode::new(
            meta(0o660, 0, 6),
            Kind::BlockDevice {
                major: 259,
                minor: 300,
            },
        ),
    )
    .unwrap();
    t.insert(
        b"dev/big",
        Inode::new(
            meta(0o600, 0, 0),
            Kind::CharDevice {
                major: 4000,
                minor: 1_000_000,
            },
        ),
    )
    .unwrap();
    t.insert(b"run/fifo", Inode::new(meta(0o644, 0, 0), Kind::Fifo))
        .unwrap();
    t.hard_link(b"run/fifo-link", b"run/fifo").unwrap();
    t.hard_link(b"dev/null-link", b"dev/null").unwrap();
    t.hard_link(b"fast-link", b"fast").unwrap();
    t.insert(
        b"run/sock",
        Inode::new(meta(0o755, 65534, 65534), Kind::Socket),
    )
    .unwrap();
    // Attributes: small ones fit in a 256-byte inode, large ones need a block.
    let mut m = meta(0o755, 0, 0);
    m.set_xattr(
        b"security.capability".to_vec(),
        vec![
            1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    );
    t.insert(b"bin/ping", bytes_file(b"ping", m)).unwrap();
    let mut m = meta(0o644, 0, 0);
    m.set_xattr(
        b"security.selinux".to_vec(),
        b"system_u:object_r:etc_t:s0\0".to_vec(),
    );
    m.set_xattr(b"user.big".to_vec(), vec![b'v'; 1500]);
    m.set_xattr(b"trusted.note".to_vec(), b"t".to_vec());
    m.set_xattr(b"user.empty".to_vec(), Vec::new());
    t.insert(b"etc/labelled", bytes_file(b"x", m.clone()))
        .unwrap();
    t.insert(b"etc/labelled-too", bytes_file(b"y", m)).unwrap();
    let mut m = meta(0o770, 0, 100);
    m.set_xattr(
        b"system.posix_acl_access".to_vec(),
        acl(&[
            (1, 7, u32::MAX),
            (2, 5, 1000),
            (4, 7, u32::MAX),
            (0x10, 7, u32::MAX),
            (0x20, 0, u32::MAX),
        ]),
    );
    m.set_xattr(
        b"system.posix_acl_default".to_vec(),
        acl(&[(1, 7, u32::MAX), (4, 5, u32::MAX), (0x20, 0, u32::MAX)]),
    );
    t.insert(b"srv/shared", dir_inode(m)).unwrap();
    // 255-byte names and a 100-level path.
    let long = vec![b'n'; 255];
    let mut p = b"names/".to_vec();
    p.extend_from_slice(&long);
    t.insert(&p, bytes_file(b"long", meta(0o644, 0, 0)))
        .unwrap();
    let mut deep = Vec::new();
    for i in 0..100 {
        deep.extend_from_slice(format!("d{i}/").as_bytes());
    }
    deep.extend_from_slice(b"leaf");
    t.insert(&deep, bytes_file(b"deep", meta(0o644, 0, 0)))
        .unwrap();
    // Data with a hole and zero blocks in the middle.
    let mut holey = vec![0u8; 5 * 4096 + 17];
    holey[0] = 1;
    holey[4 * 4096] = 2;
    holey[5 * 4096 + 16] = 3;
    t.insert(b"holey", bytes_file(&holey, meta(0o644, 0, 0)))
        .unwrap();
    t
}

fn check_debugfs(path: &std::path::Path, ext4: bool) {
    let s = debugfs(path, "stat /dev/nvme");
    assert!(s.contains("Device major/minor number: 259:300"), "{s}");
    let s = debugfs(path, "stat /dev/sda1");
    assert!(
        s.contains("Device major/minor number: 08:01") || s.contains("08:01"),
        "{s}"
    );
    let s = debugfs(path, "stat /dev/big");
    assert!(s.contains("4000:1000000"), "{s}");
    let s = debugfs(path, "stat /empty");
    assert!(s.contains("User: 70000   Group: 70001"), "{s}");
    let s = debugfs(path, "ea_list /bin/ping");
    assert!(s.contains("security.capability (20)"), "{s}");
    let s = debugfs(path, "ea_list /etc/labelled");
    assert!(
        s.contains("security.selinux (27) = \"system_u:object_r:etc_t:s0\\000\""),
        "{s}"
    );
    assert!(s.contains("user.big (1500)"), "{s}");
    assert!(s.contains("trusted.note (1) = \"t\""), "{s}");
    let s = debugfs(path, "stat /etc/labelled");
    let acl_block = s.contains("File ACL: 0");
    assert!(!acl_block, "the large attribute needs an xattr block: {s}");
    let s = debugfs(path, "stat /bin/ping");
    if ext4 {
        assert!(
            s.contains("File ACL: 0"),
            "capability fits in the inode: {s}"
        );
    } else {
        assert!(
            !s.contains("File ACL: 0"),
            "128-byte inodes keep attributes in a block: {s}"
        );
    }
    let s = debugfs(path, "stat /bin/su");
    assert!(s.contains("Links: 3"), "{s}");
    assert!(s.contains("Mode:  04755"), "{s}");
    let s = debugfs(path, "stat /holey");
    if ext4 {
        assert!(
            s.contains("(0):") && s.contains("(4-5):"),
            "zero blocks are holes: {s}"
        );
    }
    assert!(s.contains("Blockcount: 24"), "three blocks stored: {s}");
}

#[test]
fn every_kind_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    for fs in [FsType::Ext4, FsType::Ext3, FsType::Ext2] {
        let mut t = every_kind();
        let (_, path) = write_image(&t, &params(fs), dir.path(), fs.name());
        check_image(&mut t, &path);
        check_debugfs(&path, fs == FsType::Ext4);
        let img = open_ours(&path);
        assert_eq!(img.fs_type(), fs);
        assert_eq!(img.uuid(), UUID);
        assert_eq!(img.label(), "imgbuild-test");
        let list = img.list().unwrap();
        let get = |p: &[u8]| {
            list.iter()
                .find(|e| e.path == p)
                .unwrap_or_else(|| panic!("{} not listed", String::from_utf8_lossy(p)))
                .clone()
        };
        assert_eq!(get(b"/dev/nvme").rdev, Some((259, 300)));
        assert_eq!(get(b"/lost+found").ino, 11);
        assert_eq!(get(b"/").ino, 2);
        assert_eq!(get(b"/empty").uid, 70000);
        assert_eq!(get(b"/tmp").mode, 0o1777);
        assert_eq!(get(b"/bin/su").links, 3);
        assert_eq!(get(b"/fast-link").ino, get(b"/fast").ino);
        assert_eq!(get(b"/run/fifo-link").links, 2);
        assert_eq!(img.read_file(b"/etc/hostname").unwrap(), b"box\n");
        assert_eq!(get(b"/srv/shared").xattrs.len(), 2);
        assert_eq!(get(b"/etc/labelled").mtime, 1_600_000_000);
    }
}

#[test]
fn lost_found_from_the_tree_keeps_its_metadata() {
    let dir = tempfile::tempdir().unwrap();
    for fs in [FsType::Ext4, FsType::Ext2] {
        let mut t = Tree::new(meta(0o755, 0, 0));
        t.insert(b"lost+found", dir_inode(meta(0o750, 0, 4)))
            .unwrap();
        t.insert(
            b"lost+found/#1234",
            bytes_file(b"orphan", meta(0o600, 0, 0)),
        )
        .unwrap();
        t.insert(b"a", bytes_file(b"a", meta(0o644, 0, 0))).unwrap();
        let (_, path) = write_image(&t, &params(fs), dir.path(), fs.name());
        check_image(&mut t, &path);
        let list = open_ours(&path).list().unwrap();
        let lf = list.iter().find(|e| e.path == b"/lost+found").unwrap();
        assert_eq!((lf.ino, lf.mode, lf.gid, lf.size), (11, 0o750, 4, 16384));
        assert!(list.iter().any(|e| e.path == b"/lost+found/#1234"));
    }
}

#[test]
fn unrepresentable_entries_are_named() {
    let mut t = Tree::new(meta(0o755, 0, 0));
    t.insert(
        b"dev/huge",
        Inode::new(
            meta(0o600, 0, 0),
            Kind::CharDevice {
                major: 5000,
                minor: 1,
            },
        ),
    )
    .unwrap();
    let err = imgbuild::ext4::plan(&t, &params(FsType::Ext4)).unwrap_err();
    assert!(err.to_string().contains("/dev/huge"), "{err}");
    let mut t = Tree::new(meta(0o755, 0, 0));
    let mut m = meta(0o644, 0, 0);
    m.set_xattr(b"user.a".to_vec(), vec![1; 3000]);
    m.set_xattr(b"user.b".to_vec(), vec![1; 3000]);
    t.insert(b"x", bytes_file(b"", m)).unwrap();
    let err = imgbuild::ext4::plan(&t, &params(FsType::Ext3)).unwrap_err();
    assert!(err.to_string().contains("/x"), "{err}");
}
