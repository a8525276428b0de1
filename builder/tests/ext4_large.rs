//! Sizes that exercise the deeper structures: a 20,000-entry directory, a sparse file over
//! 1 GiB with data at its start, middle and end, a fragmented file that needs extent index
//! blocks (depth 2), and block maps through double and triple indirect blocks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ext4_common;

use std::os::unix::fs::FileExt;

use ext4_common::*;
use imgbuild::definition::FsType;
use imgbuild::tree::Tree;

#[test]
fn directory_of_20000_entries() {
    let dir = tempfile::tempdir().unwrap();
    for fs in [FsType::Ext4, FsType::Ext3] {
        let mut t = Tree::new(meta(0o755, 0, 0));
        for i in 0..20_000u32 {
            let name = format!("many/entry-with-a-longish-name-{i:05}");
            t.insert(
                name.as_bytes(),
                bytes_file(&i.to_le_bytes(), meta(0o644, i, i)),
            )
            .unwrap();
        }
        let (_, path) = write_image(&t, &params(fs), dir.path(), fs.name());
        check_image(&mut t, &path);
        let s = debugfs(&path, "stat /many");
        assert!(
            s.contains("Size: 806912") || fs != FsType::Ext4,
            "a large linear directory: {s}"
        );
        assert_eq!(
            open_ours(&path)
                .read_file(b"/many/entry-with-a-longish-name-19999")
                .unwrap(),
            19999u32.to_le_bytes()
        );
    }
}

/// A sparse host file of `len` bytes with `marks` written at the given offsets.
fn sparse_file(path: &std::path::Path, len: u64, marks: &[(u64, &[u8])]) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(len).unwrap();
    for (at, data) in marks {
        f.write_all_at(data, *at).unwrap();
    }
}

#[test]
fn sparse_file_over_one_gib() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big");
    let len = (1u64 << 30) + 12345;
    let chunk = vec![0x5au8; 3 << 20];
    sparse_file(
        &src,
        len,
        &[(0, b"start"), (512 << 20, &chunk), (len - 3, b"end")],
    );
    for fs in [FsType::Ext4, FsType::Ext3, FsType::Ext2] {
        let mut t = Tree::new(meta(0o755, 0, 0));
        t.insert(b"data/big", host_file(&src, meta(0o640, 1, 2)))
            .unwrap();
        let (plan, path) = write_image(&t, &params(fs), dir.path(), &format!("{}.img", fs.name()));
        // Only the blocks with data are stored: the filesystem stays small.
        assert!(plan.size_bytes < 64 << 20, "{} bytes", plan.size_bytes);
        check_image(&mut t, &path);
        let s = debugfs(&path, "stat /data/big");
        assert!(s.contains(&format!("Size: {len}")), "{s}");
        // 1 + 768 + 1 blocks of data (+ indirect blocks for ext2/3).
        let blocks = (1 + 768 + 1) * 8;
        if fs == FsType::Ext4 {
            assert!(s.contains(&format!("Blockcount: {blocks}")), "{s}");
        } else {
            assert!(s.contains("(DIND)"), "double indirect block expected: {s}");
        }
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn ext3_triple_indirect_and_ext4_beyond_4gib() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("huge");
    let len = 6u64 << 30;
    sparse_file(
        &src,
        len,
        &[
            (5 << 30, b"past the double indirect range"),
            (len - 1, b"!"),
        ],
    );
    for fs in [FsType::Ext3, FsType::Ext4] {
        let mut t = Tree::new(meta(0o755, 0, 0));
        t.insert(b"huge", host_file(&src, meta(0o600, 0, 0)))
            .unwrap();
        let (_, path) = write_image(&t, &params(fs), dir.path(), fs.name());
        check_image(&mut t, &path);
        if fs == FsType::Ext3 {
            let s = debugfs(&path, "stat /huge");
            assert!(s.contains("(TIND)"), "triple indirect block expected: {s}");
        }
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn fragmented_file_needs_extent_index_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("frag");
    // 2000 single data blocks separated by holes: 2000 extents, 6 leaves, one index block.
    let f = std::fs::File::create(&src).unwrap();
    for i in 0..2000u64 {
        f.write_all_at(&i.to_le_bytes(), i * 2 * 4096).unwrap();
    }
    drop(f);
    let mut t = Tree::new(meta(0o755, 0, 0));
    t.insert(b"frag", host_file(&src, meta(0o644, 0, 0)))
        .unwrap();
    let (_, path) = write_image(&t, &params(FsType::Ext4), dir.path(), "frag.img");
    check_image(&mut t, &path);
    let s = debugfs(&path, "ex /frag");
    assert!(
        s.lines().any(|l| l.trim_start().starts_with("0/ 2")),
        "depth 2 tree expected:\n{s}"
    );
    assert!(s.lines().any(|l| l.trim_start().starts_with("1/ 2")), "{s}");
    // ext2 and ext3 map the same file through indirect blocks.
    for fs in [FsType::Ext2, FsType::Ext3] {
        let mut t = Tree::new(meta(0o755, 0, 0));
        t.insert(b"frag", host_file(&src, meta(0o644, 0, 0)))
            .unwrap();
        let (_, path) = write_image(&t, &params(fs), dir.path(), fs.name());
        check_image(&mut t, &path);
    }
}
