//! Reading ext2/ext3/ext4 images: listing, file contents and the rootfs digest.
//!
//! The image is hostile input. Every length is bounded before anything is allocated, every
//! offset is checked against the image, extent trees must descend strictly (so they cannot
//! loop), directory walks refuse to enter a directory twice, and errors say what was wrong
//! where. Supported: 1–64 KiB blocks, extents (any depth the kernel allows), block maps,
//! xattrs in the inode and in a block, fast and slow symlinks, devices, hashed directories
//! (read linearly). Not supported: inline data, xattr inodes, meta_bg, encryption.

mod map;
mod parse;
mod sb;
mod walk;

use std::io;

use imgbuild_init::digest::RootfsDigest;

use crate::definition::FsType;
use crate::image_io::ReadAt;

pub use sb::Superblock;
pub use walk::{EntryType, ListedEntry};

/// Why an image cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum Ext4ReadError {
    /// Reading the image failed.
    #[error("cannot read the filesystem image at byte {offset}: {source}")]
    Io {
        /// Byte offset.
        offset: u64,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The image is not an ext2/3/4 filesystem or its superblock is inconsistent.
    #[error("bad superblock: {0}")]
    BadSuperblock(String),
    /// The filesystem uses something this reader does not handle.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A structure is invalid.
    #[error("corrupt filesystem: {what} (at byte {offset})")]
    Corrupt {
        /// What is wrong.
        what: String,
        /// Byte offset of the structure in the image.
        offset: u64,
    },
    /// A bound of [`Limits`] was reached.
    #[error("limit exceeded: {0}")]
    Limit(String),
    /// A path does not exist.
    #[error("{0}: no such file or directory")]
    NotFound(String),
}

/// Bounds on work and memory when reading an untrusted image.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest file size accepted (holes included).
    pub max_file_size: u64,
    /// Most entries in one directory.
    pub max_dir_entries: usize,
    /// Deepest directory nesting.
    pub max_depth: usize,
    /// Most extents or block runs of one file.
    pub max_runs: usize,
    /// Most entries in the whole walk.
    pub max_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_size: 1 << 44,
            max_dir_entries: 10_000_000,
            max_depth: 4096,
            max_runs: 1 << 24,
            max_entries: 100_000_000,
        }
    }
}

/// An open ext2/ext3/ext4 image.
pub struct Ext4Image<R: ReadAt> {
    dev: R,
    sb: Superblock,
    /// Raw group descriptor table.
    gdt: Vec<u8>,
    limits: Limits,
}

/// An inode as the reader needs it.
#[derive(Debug, Clone)]
pub(crate) struct RawInode {
    pub ino: u32,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub links: u16,
    pub flags: u32,
    pub sectors: u64,
    pub i_block: [u8; 60],
    pub file_acl: u64,
    pub mtime: i64,
    /// The bytes after the extra fields (in-inode xattrs), possibly empty.
    pub inline_xattr_area: Vec<u8>,
    /// Byte offset of the inode, for errors.
    pub offset: u64,
}

impl<R: ReadAt> Ext4Image<R> {
    /// Opens an image with default [`Limits`].
    pub fn open(dev: R) -> Result<Self, Ext4ReadError> {
        Self::open_with_limits(dev, Limits::default())
    }

    /// Opens an image with the given limits.
    pub fn open_with_limits(dev: R, limits: Limits) -> Result<Self, Ext4ReadError> {
        let size = dev
            .size()
            .map_err(|source| Ext4ReadError::Io { offset: 0, source })?;
        let mut raw = [0u8; 1024];
        read_exact(&dev, &mut raw, 1024)?;
        let sb = Superblock::parse(&raw, size)?;
        let gdt_len = sb.gdt_bytes();
        let mut gdt = vec![0u8; gdt_len as usize];
        read_exact(&dev, &mut gdt, sb.gdt_offset())?;
        Ok(Ext4Image {
            dev,
            sb,
            gdt,
            limits,
        })
    }

    /// The parsed superblock.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// Filesystem UUID.
    pub fn uuid(&self) -> [u8; 16] {
        self.sb.uuid
    }

    /// Volume label (up to its first NUL).
    pub fn label(&self) -> String {
        self.sb.label.clone()
    }

    /// ext4 when extents or other ext4-only features are on, ext3 with a journal, else ext2.
    pub fn fs_type(&self) -> FsType {
        self.sb.fs_type()
    }

    /// Every entry in canonical order (lost+found included).
    pub fn list(&self) -> Result<Vec<ListedEntry>, Ext4ReadError> {
        walk::list(self)
    }

    /// The rootfs digest of the filesystem's tree.
    pub fn digest(&self) -> Result<RootfsDigest, Ext4ReadError> {
        walk::digest(self)
    }

    /// The content of the regular file at `path` (absolute), read into memory.
    pub fn read_file(&self, path: &[u8]) -> Result<Vec<u8>, Ext4ReadError> {
        let ino = walk::lookup(self, path)?;
        let inode = self.inode(ino)?;
        if inode.mode & 0o170000 != 0o100000 {
            return Err(Ext4ReadError::NotFound(format!(
                "{} (not a regular file)",
                String::from_utf8_lossy(path)
            )));
        }
        let mut out = Vec::new();
        map::read_content(self, &inode, &mut |chunk| {
            out.extend_from_slice(chunk);
            Ok(())
        })?;
        Ok(out)
    }

    /// Streams the content of inode `ino` to `sink` in chunks.
    pub fn read_inode_content(
        &self,
        ino: u32,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), Ext4ReadError>,
    ) -> Result<(), Ext4ReadError> {
        let inode = self.inode(ino)?;
        map::read_content(self, &inode, sink)
    }

    pub(crate) fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), Ext4ReadError> {
        read_exact(&self.dev, buf, offset)
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Reads and checks inode `ino`.
    pub(crate) fn inode(&self, ino: u32) -> Result<RawInode, Ext4ReadError> {
        let sb = &self.sb;
        if ino == 0 || ino > sb.inodes_count {
            return Err(Ext4ReadError::Corrupt {
                what: format!("inode number {ino} out of range 1..={}", sb.inodes_count),
                offset: 0,
            });
        }
        let group = u64::from((ino - 1) / sb.inodes_per_group);
        let index = u64::from((ino - 1) % sb.inodes_per_group);
        let table = sb.group_inode_table(&self.gdt, group);
        let isz = u64::from(sb.inode_size);
        let offset = table
            .checked_mul(sb.block_size)
            .and_then(|o| o.checked_add(index * isz))
            .filter(|o| o.saturating_add(isz) <= sb.blocks_count.saturating_mul(sb.block_size))
            .ok_or_else(|| Ext4ReadError::Corrupt {
                what: format!(
                    "inode table of group {group} at block {table} is outside the filesystem"
                ),
                offset: sb.gdt_offset(),
            })?;
        let mut buf = vec![0u8; isz as usize];
        self.read_at(&mut buf, offset)?;
        parse::inode(sb, ino, &buf, offset)
    }
}

fn read_exact<R: ReadAt>(dev: &R, buf: &mut [u8], offset: u64) -> Result<(), Ext4ReadError> {
    dev.read_exact_at(buf, offset)
        .map_err(|source| Ext4ReadError::Io { offset, source })
}
