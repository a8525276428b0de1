//! Helpers shared by the `sources_*` integration tests: running real tools, digests of trees and
//! of extracted directories, and a root holding the account files packages refer to.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[path = "../shell/mod.rs"]
mod shell;
pub use shell::{q, sh};

use imgbuild::tree::{hash_contents, tree_digest, Content, FileData, Inode, Kind, Meta, Tree};
use imgbuild_init::digest::{digest_directory, RootfsDigest};

/// `/etc/passwd` of test roots: `jane` and `bob` exist only here.
pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\njane:x:1001:1001::/home/jane:/bin/sh\nbob:x:1002:2002::/home/bob:/bin/sh\n";
/// `/etc/group` of test roots.
pub const GROUP: &str = "root:x:0:\njane:x:1001:\nbob:x:2002:jane\n";

/// The shared RPM fixtures.
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/rpm")
}

/// Every fixture RPM, sorted.
pub fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rpm"))
        .collect();
    v.sort();
    assert!(v.len() >= 7, "fixtures missing: {v:?}");
    v
}

/// True when running as root (device nodes, ownership); the container runs tests as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// An empty tree whose root looks like a fresh 0755 directory.
pub fn empty_tree() -> Tree {
    Tree::new(Meta::root(0o755, 0))
}

fn bytes_file(text: &str, mode: u16) -> Inode {
    Inode::new(
        Meta::root(mode, 0),
        Kind::File(FileData {
            size: text.len() as u64,
            content: Content::Bytes(Arc::from(text.as_bytes())),
            sha256: None,
        }),
    )
}

/// A tree holding `/etc/passwd` and `/etc/group` with `jane` and `bob`.
pub fn tree_with_accounts() -> Tree {
    let mut t = empty_tree();
    t.insert(b"etc", Inode::new(Meta::root(0o755, 0), Kind::empty_dir()))
        .unwrap();
    t.insert(b"etc/passwd", bytes_file(PASSWD, 0o644)).unwrap();
    t.insert(b"etc/group", bytes_file(GROUP, 0o644)).unwrap();
    t
}

/// A fresh directory laid out like [`tree_with_accounts`].
pub fn root_with_accounts() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir(dir.path().join("etc")).unwrap();
    fs::set_permissions(dir.path().join("etc"), fs::Permissions::from_mode(0o755)).unwrap();
    for (name, text) in [("passwd", PASSWD), ("group", GROUP)] {
        let p = dir.path().join("etc").join(name);
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    }
    dir
}

/// An empty directory with mode 0755, standing for `/`.
pub fn empty_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// The rootfs digest of a tree (hashing its contents first).
pub fn tree_digest_of(tree: &mut Tree) -> RootfsDigest {
    hash_contents(tree, &|_| {}).unwrap();
    tree_digest(tree).unwrap()
}

/// The rootfs digest of a directory.
pub fn dir_digest(dir: &Path) -> RootfsDigest {
    digest_directory(dir).unwrap()
}

/// Every path of a tree with a one-line description, for diffs when digests differ.
pub fn describe_tree(tree: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for (path, id) in tree.walk() {
        let i = tree.inode(id);
        let what = match &i.kind {
            Kind::Directory(_) => "d".to_string(),
            Kind::File(f) => format!("f {}", f.size),
            Kind::Symlink(t) => format!("l {}", String::from_utf8_lossy(t)),
            Kind::CharDevice { major, minor } => format!("c {major},{minor}"),
            Kind::BlockDevice { major, minor } => format!("b {major},{minor}"),
            Kind::Fifo => "p".into(),
            Kind::Socket => "s".into(),
        };
        out.push(format!(
            "{} {what} {:o} {}:{} x{}",
            String::from_utf8_lossy(&path),
            i.meta.mode,
            i.meta.uid,
            i.meta.gid,
            i.meta.xattrs.len()
        ));
    }
    out
}

/// The same description of a directory, via find(1).
pub fn describe_dir(dir: &Path) -> String {
    sh(&format!(
        "cd {} && find . -printf '%p %y %s %m %U:%G %l\\n' | sort",
        q(dir)
    ))
}

/// Reads a whole file of the tree.
pub fn tree_file(tree: &Tree, path: &[u8]) -> Vec<u8> {
    let id = tree
        .lookup(path)
        .unwrap_or_else(|| panic!("{} missing", String::from_utf8_lossy(path)));
    let Kind::File(f) = &tree.inode(id).kind else {
        panic!("{} is not a file", String::from_utf8_lossy(path))
    };
    let r = f.content.open(f.size, "t").unwrap();
    let mut buf = vec![0u8; f.size as usize];
    r.read_exact_at(&mut buf, 0).unwrap();
    buf
}

/// Asserts that every regular file and symlink below `dir` has the same content or target in
/// `tree` (at the same path), and that the tree has no file the directory lacks.
pub fn assert_same_contents(tree: &Tree, dir: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let mut seen = 0;
    for line in sh(&format!("cd {} && find . -type f -o -type l", q(dir))).lines() {
        let rel = line.trim_start_matches('.');
        let host = dir.join(rel.trim_start_matches('/'));
        let meta = fs::symlink_metadata(&host).unwrap();
        let id = tree
            .lookup(rel.as_bytes())
            .unwrap_or_else(|| panic!("{rel} extracted by the tool but missing from the tree"));
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&host).unwrap();
            match &tree.inode(id).kind {
                Kind::Symlink(t) => assert_eq!(&**t, target.as_os_str().as_bytes(), "{rel}"),
                _ => panic!("{rel} should be a symlink"),
            }
        } else {
            assert_eq!(
                tree_file(tree, rel.as_bytes()),
                fs::read(&host).unwrap(),
                "{rel}"
            );
        }
        seen += 1;
    }
    assert!(seen > 0, "nothing extracted below {}", dir.display());
}
