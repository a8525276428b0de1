//! A filesystem above 2^32 blocks (16 TiB) gets the 64bit feature, 64-byte group descriptors
//! and high halves of block numbers. The image is sparse (a few hundred MiB really written), in
//! /dev/shm because ext4 hosts cannot hold files that large; e2fsck checks it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ext4_common;

use ext4_common::*;
use imgbuild::definition::FsType;
use imgbuild::ext4;
use imgbuild::tree::Tree;

#[test]
fn above_16_tib_uses_64bit() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let mut t = Tree::new(meta(0o755, 0, 0));
    t.insert(b"f", bytes_file(&vec![5u8; 100_000], meta(0o644, 0, 0)))
        .unwrap();
    let size = (1u64 << 44) + (1 << 30);
    let p = ext4::Ext4Params {
        inode_ratio: 1 << 26,
        ..fixed(FsType::Ext4, size)
    };
    let (plan, path) = write_image(&t, &p, dir.path(), "big.img");
    assert!(plan.blocks > 1 << 32);
    let s = std::process::Command::new("dumpe2fs")
        .arg("-h")
        .arg(&path)
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&s.stdout);
    assert!(s.contains("64bit"), "{s}");
    assert!(s.contains("Group descriptor size:    64"), "{s}");
    let allocated =
        std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&path).unwrap()) * 512;
    assert!(allocated < 512 << 20, "{allocated} bytes really written");
    check_image(&mut t, &path);
}
