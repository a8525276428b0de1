//! A real root: `debootstrap --variant=minbase bookworm`, built once and cached outside the
//! repository under `${IMGBUILD_CACHE:-$HOME/.cache/imgbuild}/debootstrap-minbase`.
//! - It round-trips: e2fsck is clean and the image's digest equals both the tree digest and
//!   `digest_directory` of the directory itself.
//! - `mke2fs -t ext4 -d` of the same directory, at the same size, lists the same names, modes,
//!   owners and sizes in debugfs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ext4_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use ext4_common::*;
use imgbuild::definition::FsType;
use imgbuild::tree::{Meta, Tree};

static BUILD: Mutex<()> = Mutex::new(());

/// The cached minbase tree, built with debootstrap when missing.
fn minbase() -> PathBuf {
    let _guard = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    let cache = match std::env::var_os("IMGBUILD_CACHE") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cache/imgbuild"),
    };
    let root = cache.join("debootstrap-minbase");
    if root.join("etc/debian_version").is_file() {
        return root;
    }
    if Command::new("debootstrap")
        .arg("--version")
        .output()
        .is_err()
    {
        let st = Command::new("apt-get")
            .args(["install", "-y", "debootstrap"])
            .status()
            .unwrap();
        assert!(st.success(), "cannot install debootstrap");
    }
    std::fs::create_dir_all(&cache).unwrap();
    let tmp = cache.join("debootstrap-minbase.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    let st = Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm"])
        .arg(&tmp)
        .arg("http://deb.debian.org/debian")
        .status()
        .unwrap();
    assert!(st.success(), "debootstrap failed");
    std::fs::rename(&tmp, &root).unwrap();
    root
}

fn load(root: &Path) -> Tree {
    let mut tree = Tree::new(Meta::root(0o755, 0));
    imgbuild::sources::dir::apply(&mut tree, root, None).unwrap();
    tree
}

#[test]
fn minbase_round_trips_in_every_format() {
    let root = minbase();
    let host_digest = imgbuild_init::digest::digest_directory(&root).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for fs in [FsType::Ext4, FsType::Ext3, FsType::Ext2] {
        let mut tree = load(&root);
        let (plan, path) = write_image(&tree, &params(fs), dir.path(), fs.name());
        assert!(plan.used_inodes > 6000, "{}", plan.used_inodes);
        check_image(&mut tree, &path);
        let tree_digest = imgbuild::tree::tree_digest(&tree).unwrap();
        assert_eq!(tree_digest, host_digest, "tree digest vs digest_directory");
        assert_eq!(open_ours(&path).digest().unwrap(), host_digest);
        std::fs::remove_file(&path).unwrap();
    }
}

/// (directory, name) → (mode, uid, gid, size or "dir") from `debugfs ls -p` over every directory.
fn debugfs_listing(
    image: &Path,
    dirs: &[Vec<u8>],
    work: &Path,
) -> BTreeMap<(String, String), String> {
    let cmds = work.join("cmds");
    let mut text = String::new();
    for d in dirs {
        text.push_str(&format!("ls -p \"{}\"\n", String::from_utf8_lossy(d)));
    }
    std::fs::write(&cmds, text).unwrap();
    let out = Command::new("debugfs")
        .arg("-f")
        .arg(&cmds)
        .arg(image)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut map = BTreeMap::new();
    let mut current = String::new();
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("debugfs: ls -p ") {
            current = rest.trim_matches('"').to_string();
            continue;
        }
        let fields: Vec<&str> = line.split('/').collect();
        if fields.len() < 7 || !fields[0].is_empty() {
            continue;
        }
        let name = fields[5].to_string();
        if name == "." || name == ".." {
            continue;
        }
        let value = format!(
            "mode={} uid={} gid={} size={}",
            fields[2], fields[3], fields[4], fields[6]
        );
        map.insert((current.clone(), name), value);
    }
    map
}

#[test]
fn same_listing_as_mke2fs() {
    let root = minbase();
    let dir = tempfile::tempdir().unwrap();
    let tree = load(&root);
    let (plan, ours) = write_image(&tree, &params(FsType::Ext4), dir.path(), "ours.img");
    let theirs = dir.path().join("mke2fs.img");
    let st = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-d"])
        .arg(&root)
        .arg(&theirs)
        .arg(format!("{}k", plan.size_bytes / 1024))
        .status()
        .unwrap();
    assert!(st.success());
    e2fsck(&theirs);
    let dirs: Vec<Vec<u8>> = open_ours(&ours)
        .list()
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == imgbuild::ext4::reader::EntryType::Directory)
        .map(|e| e.path)
        .collect();
    assert!(dirs.len() > 500, "{}", dirs.len());
    let a = debugfs_listing(&ours, &dirs, dir.path());
    let b = debugfs_listing(&theirs, &dirs, dir.path());
    assert!(a.len() > 6000, "{}", a.len());
    let only_ours: Vec<_> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .take(10)
        .collect();
    let only_theirs: Vec<_> = b
        .iter()
        .filter(|(k, v)| a.get(*k) != Some(*v))
        .take(10)
        .collect();
    assert!(
        only_ours.is_empty() && only_theirs.is_empty(),
        "ours: {only_ours:?}\nmke2fs: {only_theirs:?}"
    );
}
