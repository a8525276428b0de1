//! Shared helpers of the ext4 integration tests: tree building, writing images, and running
//! the real e2fsprogs tools on them.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use imgbuild::definition::{ByteSize, FreeSpace, FsType, SizeSpec};
use imgbuild::ext4::{self, Ext4Params, Ext4Plan};
use imgbuild::tree::{Content, FileData, Inode, Kind, Meta, Tree};

pub const UUID: [u8; 16] = [
    0x6e, 0x0c, 0x2b, 0x41, 0x5d, 0x1a, 0x4c, 0x3e, 0x9a, 0x77, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60,
];

pub fn params(fs_type: FsType) -> Ext4Params {
    Ext4Params {
        fs_type,
        size: SizeSpec::Auto,
        free: FreeSpace::Percent(20.0),
        inode_ratio: 16384,
        label: "imgbuild-test".into(),
        uuid: UUID,
        hash_seed: [0x11; 16],
        reserved_percent: 0.0,
        journal_size: None,
        timestamp: 1_700_000_000,
    }
}

pub fn fixed(fs_type: FsType, bytes: u64) -> Ext4Params {
    Ext4Params {
        size: SizeSpec::Fixed(ByteSize(bytes)),
        ..params(fs_type)
    }
}

pub fn meta(mode: u16, uid: u32, gid: u32) -> Meta {
    Meta {
        mode,
        uid,
        gid,
        mtime: 1_600_000_000,
        xattrs: Vec::new(),
    }
}

pub fn bytes_file(data: &[u8], m: Meta) -> Inode {
    Inode::new(
        m,
        Kind::File(FileData {
            size: data.len() as u64,
            content: Content::Bytes(Arc::from(data)),
            sha256: None,
        }),
    )
}

pub fn host_file(path: &Path, m: Meta) -> Inode {
    let size = std::fs::metadata(path).unwrap().len();
    Inode::new(
        m,
        Kind::File(FileData {
            size,
            content: Content::HostFile(Arc::from(path)),
            sha256: None,
        }),
    )
}

pub fn dir_inode(m: Meta) -> Inode {
    Inode::new(m, Kind::empty_dir())
}

/// Plans and writes `tree` into a fresh sparse file, checks it with e2fsck; returns the plan
/// and the path.
pub fn write_image(tree: &Tree, p: &Ext4Params, dir: &Path, name: &str) -> (Ext4Plan, PathBuf) {
    let plan = ext4::plan(tree, p).unwrap();
    let path = dir.join(name);
    let file = std::fs::File::create(&path).unwrap();
    ext4::write(tree, &plan, &file, 0, true, &|_| {}).unwrap();
    drop(file);
    e2fsck(&path);
    (plan, path)
}

/// Runs `e2fsck -fn` and asserts a clean result.
pub fn e2fsck(path: &Path) {
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "e2fsck -fn {} failed ({}):\n{}\n{}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Output of `debugfs -R CMD`.
pub fn debugfs(path: &Path, cmd: &str) -> String {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(cmd)
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "debugfs {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Opens an image with our reader.
pub fn open_ours(path: &Path) -> imgbuild::ext4::reader::Ext4Image<std::fs::File> {
    imgbuild::ext4::reader::Ext4Image::open(std::fs::File::open(path).unwrap()).unwrap()
}

/// sha256 of `debugfs -R "cat PATH"`, streamed.
pub fn debugfs_sha256(image: &Path, path: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    use std::io::Read;
    let mut child = Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat \"{}\"", String::from_utf8_lossy(path)))
        .arg(image)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    assert!(child.wait().unwrap().success());
    h.finalize().into()
}

/// Every entry of the image as ext4-view lists it (recursive read_dir), by path.
fn ext4_view_listing(
    fs: &ext4_view::Ext4,
) -> std::collections::HashMap<Vec<u8>, ext4_view::Metadata> {
    let mut out = std::collections::HashMap::new();
    out.insert(b"/".to_vec(), fs.metadata("/").unwrap());
    let mut stack = vec![b"/".to_vec()];
    while let Some(dir) = stack.pop() {
        for entry in fs.read_dir(dir.as_slice()).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().as_ref().to_vec();
            if name == b"." || name == b".." {
                continue;
            }
            let path = entry.path().as_ref().to_vec();
            let md = entry.metadata().unwrap();
            if md.is_dir() {
                stack.push(path.clone());
            }
            out.insert(path, md);
        }
    }
    out
}

/// Everything a test checks on an image written from `tree` (which gets hashed here):
/// e2fsck is clean, our reader's digest is the tree digest, and the independent ext4-view
/// crate sees the same types, modes, owners and sizes for every entry, and the same symlink
/// targets and contents for up to ~400 entries (all of them in small trees). ext4-view cannot
/// read block-mapped files whose holes cover a whole indirect block; for those, debugfs checks
/// the content instead.
pub fn check_image(tree: &mut Tree, path: &Path) {
    use sha2::Digest as _;
    e2fsck(path);
    imgbuild::tree::hash_contents(tree, &|_| {}).unwrap();
    let want = imgbuild::tree::tree_digest(tree).unwrap();
    let img = open_ours(path);
    assert_eq!(img.digest().unwrap(), want, "digest of {}", path.display());
    let block_mapped = img.fs_type() != FsType::Ext4;

    let fs = ext4_view::Ext4::load_from_path(path).unwrap();
    let listing = ext4_view_listing(&fs);
    let entries: Vec<(Vec<u8>, imgbuild::tree::InodeId)> = tree
        .walk()
        .filter(|(p, _)| !imgbuild_init::digest::is_excluded(p))
        .collect();
    assert_eq!(
        listing
            .keys()
            .filter(|p| !imgbuild_init::digest::is_excluded(p))
            .count(),
        entries.len(),
        "number of entries"
    );
    let step = (entries.len() / 400).max(1);
    for (i, (p, id)) in entries.iter().enumerate() {
        let shown = String::from_utf8_lossy(p).into_owned();
        let inode = tree.inode(*id);
        let md = listing
            .get(p)
            .unwrap_or_else(|| panic!("{shown} missing for ext4-view"));
        assert_eq!(md.mode() & 0o7777, inode.meta.mode, "{shown} mode");
        assert_eq!(md.uid(), inode.meta.uid, "{shown} uid");
        assert_eq!(md.gid(), inode.meta.gid, "{shown} gid");
        let ft = md.file_type();
        let deep = i % step == 0;
        match &inode.kind {
            Kind::Directory(_) => assert!(ft.is_dir(), "{shown}"),
            Kind::File(data) => {
                assert!(ft.is_regular_file(), "{shown}");
                assert_eq!(md.len(), data.size, "{shown} size");
                if deep {
                    let mut f = fs.open(p.as_slice()).unwrap();
                    let mut h = sha2::Sha256::new();
                    let mut buf = vec![0u8; 1 << 20];
                    let mut failed = false;
                    loop {
                        match f.read_bytes(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => h.update(&buf[..n]),
                            Err(e) => {
                                assert!(block_mapped, "{shown}: ext4-view: {e}");
                                failed = true;
                                break;
                            }
                        }
                    }
                    let got: [u8; 32] = if failed {
                        debugfs_sha256(path, p)
                    } else {
                        h.finalize().into()
                    };
                    assert_eq!(Some(got), data.sha256, "{shown} content");
                }
            }
            Kind::Symlink(target) => {
                assert!(ft.is_symlink(), "{shown}");
                if deep {
                    assert_eq!(
                        fs.read_link(p.as_slice()).unwrap().as_ref(),
                        &**target,
                        "{shown} target"
                    );
                }
            }
            Kind::CharDevice { .. } => assert!(ft.is_char_dev(), "{shown}"),
            Kind::BlockDevice { .. } => assert!(ft.is_block_dev(), "{shown}"),
            Kind::Fifo => assert!(ft.is_fifo(), "{shown}"),
            Kind::Socket => assert!(ft.is_socket(), "{shown}"),
        }
    }
}
