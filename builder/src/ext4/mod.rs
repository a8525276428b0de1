//! Our own ext4/ext3/ext2 writer, and a reader for checking what was written.
//!
//! [`plan`] walks a [`Tree`], reads every file once to find its all-zero blocks (which become
//! holes, so the image depends only on the content), and lays out the whole filesystem: group
//! geometry, inode numbers in walk order, every block of every inode. [`write`] then produces the
//! image from that plan: metadata in large coalesced writes, file data copied by worker threads
//! with `copy_file_range` (or through one bounded buffer where the kernel cannot), so memory does
//! not grow with the data. Nothing depends on the host or on time: UUID, hash seed and the
//! superblock timestamp are parameters; inode times come from the tree.
//!
//! Formats:
//! - ext4: extents (with index blocks), flex_bg, metadata_csum, 256-byte inodes with in-inode
//!   xattrs, has_journal, huge_file, dir_nlink, extra_isize, dir_index (directories are written
//!   linear), 64bit only above 2^32 blocks.
//! - ext3: block maps, has_journal, ext_attr, dir_index, filetype, sparse_super, large_file,
//!   and 128-byte inodes (xattrs therefore always in a block, shared between inodes with the
//!   same set): features every ext3 driver knows, back to 2.6.9 which predates large inodes.
//!   No uninit_bg, so all inode tables are zero.
//! - ext2: as ext3 without the journal.

mod blockmap;
mod checksum;
mod collect;
mod copy;
mod dir;
mod encode;
mod extent;
mod format;
mod group;
mod inode;
mod journal;
mod layout;
mod planner;
pub mod reader;
mod scan;
mod superblock;
mod write;
mod xattr;

use std::io;

use crate::definition::{FreeSpace, FsType, SizeSpec};
use crate::tree::{ContentError, Tree};

pub use planner::Ext4Plan;
pub use write::WriteSummary;

/// What to build.
#[derive(Debug, Clone)]
pub struct Ext4Params {
    /// ext4, ext3 or ext2.
    pub fs_type: FsType,
    /// Fixed size, or computed from the contents.
    pub size: SizeSpec,
    /// Free space added by [`SizeSpec::Auto`].
    pub free: FreeSpace,
    /// Bytes of filesystem per inode (the inode count is at least what the tree needs).
    pub inode_ratio: u64,
    /// Volume label, at most 16 bytes.
    pub label: String,
    /// Filesystem UUID.
    pub uuid: [u8; 16],
    /// Directory hash seed.
    pub hash_seed: [u8; 16],
    /// Percentage of blocks reserved for root.
    pub reserved_percent: f64,
    /// Journal size in bytes (ext3/ext4); chosen from the filesystem size when `None`.
    pub journal_size: Option<u64>,
    /// Superblock times (creation, last write, last check), seconds since the epoch.
    pub timestamp: i64,
}

/// Why a filesystem cannot be planned or written.
#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    /// A fixed size is too small for the tree.
    #[error("the filesystem needs {needed} bytes ({} MiB) but its size is fixed at {given} bytes", needed.div_ceil(1 << 20))]
    TooSmall {
        /// Smallest size that holds the tree, in bytes.
        needed: u64,
        /// The size given, in bytes.
        given: u64,
    },
    /// The filesystem would exceed what the format (or this writer) supports.
    #[error("a {fs} filesystem of {blocks} blocks is larger than supported")]
    TooLarge {
        /// ext4, ext3 or ext2.
        fs: &'static str,
        /// Blocks it would need.
        blocks: u64,
    },
    /// A parameter is out of range.
    #[error("invalid filesystem parameter: {0}")]
    BadParam(String),
    /// An entry of the tree cannot be represented in this filesystem.
    #[error("{path}: {reason}")]
    Unrepresentable {
        /// Path in the tree.
        path: String,
        /// What does not fit.
        reason: String,
    },
    /// A file's content cannot be read.
    #[error(transparent)]
    Content(#[from] ContentError),
    /// Reading or writing the image failed.
    #[error("cannot write the filesystem image {image} at byte {offset}: {source}")]
    Io {
        /// The image file.
        image: String,
        /// Byte offset in the image file.
        offset: u64,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The tree given to [`write`] is not the one the plan was made for.
    #[error("the tree changed since the filesystem was planned: {0}")]
    PlanMismatch(String),
}

/// Plans the filesystem for `tree`: size, geometry and every block. Reads all file contents
/// once (to turn zero blocks into holes). Fails with [`Ext4Error::TooSmall`] before anything is
/// written when a fixed size cannot hold the tree.
pub fn plan(tree: &Tree, params: &Ext4Params) -> Result<Ext4Plan, Ext4Error> {
    planner::plan(tree, params)
}

/// Writes the planned filesystem into `out` at byte `offset`. A regular file shorter than the
/// filesystem's end is extended with `set_len` (so it stays sparse). With `zeroed` the output
/// is known to read as zeros and all-zero blocks are skipped; without it (a block device), all
/// metadata that must read as zeros is written. `progress` receives bytes of file data written.
pub fn write(
    tree: &Tree,
    plan: &Ext4Plan,
    out: &std::fs::File,
    offset: u64,
    zeroed: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<WriteSummary, Ext4Error> {
    write::write(tree, plan, out, offset, zeroed, progress)
}
