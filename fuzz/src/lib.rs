//! Helpers shared by the fuzz targets: handing the input to readers that take a path without
//! touching the disk (a memfd named through `/proc/self/fd`), and reading every file of a tree
//! that a layer produced, so that the references a parser made into its archive are exercised
//! too, not just the headers.

#![deny(missing_docs)]

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;

use imgbuild::tree::{sha256_of, tree_digest, Kind, Meta, Tree};

/// Bound on decompressed sizes and sparse file sizes inside the fuzzers: large enough for any
/// seed, small enough that a bomb costs milliseconds.
pub const FUZZ_MAX_EXPANDED: u64 = 4 << 20;

/// An input held in an anonymous memory file; its path works with `File::open` as long as the
/// value lives.
pub struct MemInput {
    file: File,
    path: PathBuf,
}

impl MemInput {
    /// Copies `data` into a fresh memfd.
    pub fn new(data: &[u8]) -> MemInput {
        // SAFETY: the name is a NUL-terminated literal; the returned descriptor is owned below.
        let fd = unsafe { libc::memfd_create(c"fuzz-input".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0, "memfd_create failed");
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        let mut file = unsafe { File::from_raw_fd(fd) };
        file.write_all(data).expect("write to memfd");
        let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        MemInput { file, path }
    }

    /// A path that opens the input.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The memfd itself.
    pub fn file(&self) -> &File {
        &self.file
    }
}

/// An empty tree with a root directory.
pub fn empty_tree() -> Tree {
    Tree::new(Meta::root(0o755, 0))
}

/// The builtin minimal root: has `/etc/passwd` and `/etc/group` for owner-name lookups.
pub fn builtin_tree() -> Tree {
    let mut tree = empty_tree();
    imgbuild::sources::builtin::apply(&mut tree, 0).expect("the builtin layer applies");
    tree
}

/// Reads and hashes every regular file of `tree` (errors are fine: the content may reference
/// bytes the hostile archive does not have), then computes the rootfs digest.
pub fn read_all(tree: &mut Tree) {
    let mut buffer = vec![0u8; 64 << 10];
    let mut hashed = Vec::new();
    for (_, id) in tree.walk() {
        if let Kind::File(data) = &tree.inode(id).kind {
            let Ok(reader) = data.content.open(data.size, "fuzz") else {
                continue;
            };
            match sha256_of(&reader, &mut buffer, &|_| {}) {
                Ok(sha) => hashed.push((id, sha)),
                Err(_) => hashed.push((id, [0; 32])),
            }
        }
    }
    for (id, sha) in hashed {
        if let Kind::File(data) = &mut tree.inode_mut(id).kind {
            data.sha256 = Some(sha);
        }
    }
    let _ = tree_digest(tree);
}

/// Sets the environment bound on decompressed sizes for readers that take it from there.
pub fn limit_expansion() {
    std::env::set_var(
        imgbuild::sources::compression::MAX_EXPANDED_ENV,
        FUZZ_MAX_EXPANDED.to_string(),
    );
}

/// An image made of the fuzz input followed by zeros up to `size` bytes (or cut at `size`), so
/// that seeds can be stored with their empty tail trimmed and inputs can claim large disks.
pub struct Padded<'a> {
    data: &'a [u8],
    size: u64,
}

impl<'a> Padded<'a> {
    /// `data`, seen as an image of `size` bytes.
    pub fn new(data: &'a [u8], size: u64) -> Padded<'a> {
        Padded { data, size }
    }
}

impl imgbuild::image_io::ReadAt for Padded<'_> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        if offset >= self.size {
            return Ok(0);
        }
        let n = buf
            .len()
            .min((self.size - offset).min(usize::MAX as u64) as usize);
        let buf = &mut buf[..n];
        buf.fill(0);
        if let Ok(start) = usize::try_from(offset) {
            if start < self.data.len() {
                let m = n.min(self.data.len() - start);
                buf[..m].copy_from_slice(&self.data[start..start + m]);
            }
        }
        Ok(n)
    }

    fn size(&self) -> std::io::Result<u64> {
        Ok(self.size)
    }
}
