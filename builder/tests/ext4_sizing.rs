//! Sizing, reproducibility and output modes: a fixed size that is too small fails before
//! anything is written and names the size needed; the same tree gives the same bytes twice;
//! writing over garbage with `zeroed = false` gives a clean filesystem with the same content;
//! a filesystem can be written at an offset inside a larger image.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ext4_common;

use std::os::unix::fs::FileExt;

use ext4_common::*;
use imgbuild::definition::{FreeSpace, FsType};
use imgbuild::ext4::{self, Ext4Error};
use imgbuild::image_io::Window;
use imgbuild::tree::{Inode, Kind, Tree};

fn sample_tree() -> Tree {
    let mut t = Tree::new(meta(0o755, 0, 0));
    for i in 0..300u32 {
        let body: Vec<u8> = (0..(i * 97 % 20000))
            .map(|b| (b % 251) as u8 ^ i as u8)
            .collect();
        t.insert(
            format!("usr/lib/f{i}").as_bytes(),
            bytes_file(&body, meta(0o644, 0, 0)),
        )
        .unwrap();
    }
    t.insert(
        b"usr/big",
        bytes_file(&vec![3u8; 3 << 20], meta(0o755, 0, 0)),
    )
    .unwrap();
    t.insert(
        b"bin",
        Inode::new(meta(0o777, 0, 0), Kind::Symlink((*b"usr/bin").into())),
    )
    .unwrap();
    let mut m = meta(0o644, 0, 0);
    m.set_xattr(b"user.k".to_vec(), vec![9u8; 700]);
    t.insert(b"etc/x", bytes_file(b"x", m)).unwrap();
    t
}

#[test]
fn too_small_fails_before_writing_and_names_the_size() {
    let dir = tempfile::tempdir().unwrap();
    let t = sample_tree();
    for fs in [FsType::Ext4, FsType::Ext3, FsType::Ext2] {
        let small = fixed(fs, 2 << 20);
        match ext4::plan(&t, &small) {
            Err(Ext4Error::TooSmall { needed, given }) => {
                assert_eq!(given, 2 << 20);
                assert!(needed > 3 << 20, "{needed}");
                assert!(Ext4Error::TooSmall { needed, given }
                    .to_string()
                    .contains(&needed.to_string()));
                // Exactly the size named works, and is clean.
                let mut t2 = sample_tree();
                let (plan, path) = write_image(&t2, &fixed(fs, needed), dir.path(), fs.name());
                assert_eq!(plan.size_bytes, needed);
                assert_eq!(std::fs::metadata(&path).unwrap().len(), needed);
                check_image(&mut t2, &path);
            }
            other => panic!("{fs:?}: expected TooSmall, got {other:?}"),
        }
    }
}

#[test]
fn auto_size_leaves_the_free_share() {
    let t = sample_tree();
    for (free, min_free) in [
        (FreeSpace::Percent(50.0), 0.5),
        (FreeSpace::Percent(0.0), 0.0),
    ] {
        let p = ext4::Ext4Params {
            free,
            ..params(FsType::Ext4)
        };
        let plan = ext4::plan(&t, &p).unwrap();
        let free_blocks = plan.blocks - plan.used_blocks;
        assert!(
            free_blocks as f64 >= plan.used_blocks as f64 * min_free,
            "{free_blocks} of {}",
            plan.blocks
        );
        if min_free > 0.0 {
            assert!((free_blocks as f64) < plan.used_blocks as f64 * min_free + 2048.0);
        }
    }
    // Many inodes: the inode count follows the tree, not only the ratio.
    let mut t = Tree::new(meta(0o755, 0, 0));
    for i in 0..5000 {
        t.insert(
            format!("d/e{i}").as_bytes(),
            Inode::new(meta(0o644, 0, 0), Kind::Fifo),
        )
        .unwrap();
    }
    let p = ext4::Ext4Params {
        inode_ratio: 1 << 24,
        ..fixed(FsType::Ext4, 64 << 20)
    };
    let plan = ext4::plan(&t, &p).unwrap();
    assert!(plan.inodes >= 5012, "{}", plan.inodes);
}

#[test]
fn same_tree_same_bytes_and_zeroed_modes_agree() {
    let dir = tempfile::tempdir().unwrap();
    for fs in [FsType::Ext4, FsType::Ext3] {
        let t = sample_tree();
        let (plan, a) = write_image(&t, &params(fs), dir.path(), "a.img");
        let (_, b) = write_image(&sample_tree(), &params(fs), dir.path(), "b.img");
        let (x, y) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert!(x == y, "{fs:?}: two writes differ");

        // Over garbage, as on a used block device.
        let c = dir.path().join("c.img");
        let f = std::fs::File::create(&c).unwrap();
        let junk = vec![0xA5u8; 1 << 20];
        for i in 0..plan.size_bytes.div_ceil(1 << 20) {
            f.write_all_at(&junk, i << 20).unwrap();
        }
        ext4::write(&t, &plan, &f, 0, false, &|_| {}).unwrap();
        drop(f);
        let mut t3 = sample_tree();
        check_image(&mut t3, &c);
        // Every block the filesystem uses is identical to the sparse write; free blocks may hold junk.
        let z = std::fs::read(&c).unwrap();
        let bs = 4096usize;
        let mut differing_used = 0;
        for (i, (p, q)) in x.chunks(bs).zip(z.chunks(bs)).enumerate() {
            if p != q && p.iter().any(|&v| v != 0) {
                differing_used += 1;
                eprintln!("block {i} differs");
            }
        }
        assert_eq!(differing_used, 0);
        for p in [&a, &b, &c] {
            std::fs::remove_file(p).unwrap();
        }
    }
}

#[test]
fn written_at_an_offset_inside_a_disk_image() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = sample_tree();
    let plan = ext4::plan(&t, &params(FsType::Ext4)).unwrap();
    let path = dir.path().join("disk.img");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    f.write_all_at(b"MBR!", 0).unwrap();
    let offset = 1 << 20;
    let progress = std::sync::atomic::AtomicU64::new(0);
    let summary = ext4::write(&t, &plan, &f, offset, true, &|n| {
        progress.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    })
    .unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        offset + plan.size_bytes
    );
    assert_eq!(summary.data_bytes, progress.into_inner());
    assert!(summary.data_bytes >= 3 << 20);
    let mut head = [0u8; 4];
    f.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(&head, b"MBR!");
    // e2fsck on the partition through a copy, and our reader through a window.
    let part = dir.path().join("part.img");
    let mut bytes = vec![0u8; plan.size_bytes as usize];
    f.read_exact_at(&mut bytes, offset).unwrap();
    std::fs::write(&part, &bytes).unwrap();
    check_image(&mut t, &part);
    let img =
        imgbuild::ext4::reader::Ext4Image::open(Window::new(&f, offset, plan.size_bytes)).unwrap();
    assert_eq!(
        img.digest().unwrap(),
        imgbuild::tree::tree_digest(&t).unwrap()
    );
}

#[test]
fn empty_tree_and_superblock_parameters() {
    let dir = tempfile::tempdir().unwrap();
    for fs in [FsType::Ext4, FsType::Ext3, FsType::Ext2] {
        let mut t = Tree::new(meta(0o700, 0, 0));
        let (_, path) = write_image(&t, &params(fs), dir.path(), fs.name());
        check_image(&mut t, &path);
    }
    let mut t = sample_tree();
    t.insert(b"zeros", bytes_file(&[0u8; 8192], meta(0o644, 0, 0)))
        .unwrap();
    let mut tail = vec![0u8; 3 * 4096 + 10];
    tail[3 * 4096 + 9] = 1;
    t.insert(b"tail", bytes_file(&tail, meta(0o644, 0, 0)))
        .unwrap();
    let p = ext4::Ext4Params {
        reserved_percent: 5.0,
        journal_size: Some(8 << 20),
        label: "sixteen-bytes-ok".into(),
        ..fixed(FsType::Ext4, 100 << 20)
    };
    let (plan, path) = write_image(&t, &p, dir.path(), "params.img");
    check_image(&mut t, &path);
    let out = std::process::Command::new("dumpe2fs")
        .arg("-h")
        .arg(&path)
        .env("TZ", "UTC")
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    let reserved = plan.blocks * 5 / 100;
    assert!(
        s.contains(&format!("Reserved block count:     {reserved}\n")),
        "{s}"
    );
    assert!(s.contains("Total journal blocks:     2048"), "{s}");
    assert!(
        s.contains("Filesystem volume name:   sixteen-bytes-ok"),
        "{s}"
    );
    assert!(
        s.contains("Filesystem created:       Tue Nov 14 22:13:20 2023"),
        "{s}"
    );
    assert!(
        s.contains("Directory Hash Seed:      11111111-1111-1111-1111-111111111111"),
        "{s}"
    );
    assert!(
        s.contains("Filesystem UUID:          6e0c2b41-5d1a-4c3e-9a77-102030405060"),
        "{s}"
    );
    let st = debugfs(&path, "stat /zeros");
    assert!(
        st.contains("Blockcount: 0") && st.contains("Size: 8192"),
        "{st}"
    );
    let st = debugfs(&path, "stat /tail");
    assert!(st.contains("Blockcount: 8") && st.contains("(3):"), "{st}");
    let long = ext4::Ext4Params {
        label: "seventeen-bytes!!".into(),
        ..params(FsType::Ext4)
    };
    assert!(matches!(ext4::plan(&t, &long), Err(Ext4Error::BadParam(_))));
}
