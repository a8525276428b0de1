//! The reader treats images as hostile: mutated, truncated and crafted images give errors,
//! never panics or endless loops; directory cycles and self-referencing extent trees are caught.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ext4_common;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use ext4_common::*;
use imgbuild::definition::FsType;
use imgbuild::ext4::reader::{Ext4Image, Ext4ReadError, Limits};
use imgbuild::tree::{Inode, Kind, Tree};

fn small_tree() -> Tree {
    let mut t = Tree::new(meta(0o755, 0, 0));
    t.insert(b"a/b/c", bytes_file(&vec![1u8; 70_000], meta(0o644, 0, 0)))
        .unwrap();
    t.insert(
        b"a/link",
        Inode::new(meta(0o777, 0, 0), Kind::Symlink(vec![b'q'; 100].into())),
    )
    .unwrap();
    t.insert(
        b"dev/x",
        Inode::new(
            meta(0o600, 0, 0),
            Kind::CharDevice {
                major: 300,
                minor: 5,
            },
        ),
    )
    .unwrap();
    let mut m = meta(0o644, 5, 5);
    m.set_xattr(b"user.a".to_vec(), vec![b'a'; 300]);
    m.set_xattr(b"security.selinux".to_vec(), b"x_t\0".to_vec());
    t.insert(b"etc/f", bytes_file(b"hello", m)).unwrap();
    for i in 0..60 {
        t.insert(
            format!("many/{i:03}-{}", "n".repeat(40)).as_bytes(),
            bytes_file(&[i as u8; 10], meta(0o600, 0, 0)),
        )
        .unwrap();
    }
    t
}

fn limits() -> Limits {
    Limits {
        max_file_size: 16 << 20,
        max_dir_entries: 100_000,
        max_depth: 64,
        max_runs: 100_000,
        max_entries: 100_000,
    }
}

/// Everything the reader can be asked, on an image in memory; errors are fine.
fn exercise(bytes: &Vec<u8>) {
    let Ok(img) = Ext4Image::open_with_limits(bytes, limits()) else {
        return;
    };
    let _ = img.digest();
    if let Ok(list) = img.list() {
        for e in list.iter().take(50) {
            let _ = img.read_file(&e.path);
        }
    }
    let _ = img.read_file(b"/a/b/c");
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn mutated_images_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    for (k, fs) in [FsType::Ext4, FsType::Ext3, FsType::Ext2]
        .into_iter()
        .enumerate()
    {
        let (_, path) = write_image(&small_tree(), &params(fs), dir.path(), fs.name());
        let mut bytes = std::fs::read(&path).unwrap();
        // The original reads fine.
        let img = Ext4Image::open_with_limits(&bytes, limits()).unwrap();
        img.digest().unwrap();
        // Metadata sits in the first blocks; mutate there, mostly.
        let used: usize = (1200 * 4096).min(bytes.len());
        let mut rng = Rng(0x1234_5678 + k as u64);
        let rounds: u64 = std::env::var("EXT4_FUZZ_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(400);
        for round in 0..rounds {
            let flips = 1 + (rng.next() % 16) as usize;
            let mut saved = Vec::with_capacity(flips);
            for _ in 0..flips {
                let at = if round % 4 == 0 {
                    1024 + (rng.next() % 1024) as usize
                } else {
                    (rng.next() as usize) % used
                };
                saved.push((at, bytes[at]));
                bytes[at] = rng.next() as u8;
            }
            exercise(&bytes);
            for (at, v) in saved.into_iter().rev() {
                bytes[at] = v;
            }
        }
        // Truncated images are refused up front.
        let short = bytes[..bytes.len() / 2].to_vec();
        assert!(matches!(
            Ext4Image::open(&short),
            Err(Ext4ReadError::BadSuperblock(_))
        ));
        // Random blocks with a valid-looking superblock.
        let mut garbage: Vec<u8> = (0..(4u64 << 20)).map(|_| rng.next() as u8).collect();
        garbage[1024..2048].copy_from_slice(&bytes[1024..2048]);
        exercise(&garbage);
    }
}

/// Physical blocks of `path` as debugfs lists them.
fn blocks_of(image: &Path, path: &str) -> Vec<u64> {
    debugfs(image, &format!("blocks {path}"))
        .split_whitespace()
        .map(|b| b.parse().unwrap())
        .collect()
}

#[test]
fn directory_cycle_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    for fs in [FsType::Ext2, FsType::Ext4] {
        let (_, path) = write_image(&small_tree(), &params(fs), dir.path(), fs.name());
        let block = blocks_of(&path, "/a")[0];
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut buf = vec![0u8; 4096];
        f.read_exact_at(&mut buf, block * 4096).unwrap();
        // Point the entry "b" back at the root.
        let mut pos = 0;
        let mut patched = false;
        while pos < 4096 {
            let rec = u16::from_le_bytes([buf[pos + 4], buf[pos + 5]]) as usize;
            let len = buf[pos + 6] as usize;
            if &buf[pos + 8..pos + 8 + len] == b"b" {
                buf[pos..pos + 4].copy_from_slice(&2u32.to_le_bytes());
                patched = true;
            }
            pos += rec;
        }
        assert!(patched);
        f.write_all_at(&buf, block * 4096).unwrap();
        let img = Ext4Image::open(std::fs::File::open(&path).unwrap()).unwrap();
        let err = img.digest().unwrap_err();
        assert!(err.to_string().contains("reached twice"), "{err}");
        assert!(img.list().is_err());
    }
}

#[test]
fn extent_tree_pointing_at_itself_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("frag");
    let f = std::fs::File::create(&src).unwrap();
    for i in 0..2000u64 {
        f.write_all_at(&i.to_le_bytes(), i * 2 * 4096).unwrap();
    }
    let mut t = Tree::new(meta(0o755, 0, 0));
    t.insert(b"frag", host_file(&src, meta(0o644, 0, 0)))
        .unwrap();
    let (_, path) = write_image(&t, &params(FsType::Ext4), dir.path(), "frag.img");
    // "ex" lists the tree: the level-0 line names the index block.
    let ex = debugfs(&path, "ex /frag");
    let index_block: u64 = ex
        .lines()
        .find(|l| l.trim_start().starts_with("0/ 2"))
        .and_then(|l| l.split_whitespace().rev().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    let img_file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut buf = vec![0u8; 4096];
    img_file
        .read_exact_at(&mut buf, index_block * 4096)
        .unwrap();
    assert_eq!(&buf[..2], &0xF30Au16.to_le_bytes());
    // The first index entry now points at the index block itself.
    buf[12 + 4..12 + 8].copy_from_slice(&(index_block as u32).to_le_bytes());
    img_file.write_all_at(&buf, index_block * 4096).unwrap();
    let img = Ext4Image::open(std::fs::File::open(&path).unwrap()).unwrap();
    let err = img.read_file(b"/frag").unwrap_err();
    assert!(matches!(err, Ext4ReadError::Corrupt { .. }), "{err}");
    assert!(img.digest().is_err());
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success(), "e2fsck must see the damage too");
}
