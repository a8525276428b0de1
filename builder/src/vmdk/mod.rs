//! VMDK: writers for the three forms VMware products take from a raw disk image, and a reader
//! for any of them (used by `imgbuild verify`, and a target for fuzzing).
//!
//! - [`sparse`]: monolithicSparse, for Workstation/Player/Fusion (hosted products).
//! - [`stream`]: streamOptimized, the compressed form inside OVF/OVA, imported by ESXi.
//! - [`flat`]: monolithicFlat, a descriptor plus a raw extent, what ESXi runs in place.
//!
//! Writers read only the data ranges of the raw image (SEEK_DATA/SEEK_HOLE), skip all-zero
//! grains, write to a temporary name in the destination directory and rename when complete.
//! Output depends only on the input bytes and [`VmdkOptions`], so two runs give the same bytes.

pub mod descriptor;
mod extent;
pub mod flat;
pub mod header;
pub mod reader;
pub mod source;
pub mod sparse;
pub mod stream;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::definition::{ScsiAdapter, VmdkFormat};
use crate::image_io::{block_device_or_file_size, ReadAt};

pub use extent::{MAX_CAPACITY_SECTORS, MAX_GD_BYTES, MAX_GRAIN_SECTORS, MAX_GTES_PER_GT};
pub use reader::VmdkReader;

/// Bytes per sector.
pub const SECTOR: u64 = 512;
/// Sectors per grain in what we write (64 KiB, the default of every tool).
pub const GRAIN_SECTORS: u64 = 128;
/// Bytes per grain in what we write.
pub const GRAIN_BYTES: u64 = GRAIN_SECTORS * SECTOR;
/// Grain table entries per table in what we write.
pub const GTES_PER_GT: u64 = 512;
/// Sectors reserved for the embedded descriptor (as qemu-img and VMware do).
pub const DESCRIPTOR_SECTORS: u64 = 20;

/// Errors of writing or reading a VMDK.
#[derive(Debug, thiserror::Error)]
pub enum VmdkError {
    /// Reading the raw source image failed.
    #[error("cannot read the raw disk image at byte {offset}: {source}")]
    Source {
        /// Offset in the raw image.
        offset: u64,
        /// Cause.
        source: io::Error,
    },
    /// A file operation failed.
    #[error("cannot {what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// The destination path cannot be used.
    #[error("cannot write a VMDK to {path}: {reason}")]
    BadDestination {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// The disk does not fit the format.
    #[error("a {bytes}-byte disk does not fit: {reason}")]
    TooLarge {
        /// Disk size.
        bytes: u64,
        /// Which limit.
        reason: &'static str,
    },
    /// A structure of a VMDK being read is inconsistent.
    #[error("{path}: corrupt VMDK at byte {offset}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset of the bad structure.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The descriptor cannot be parsed or names unusable extents.
    #[error("{path}: bad VMDK descriptor (line {line}): {reason}")]
    Descriptor {
        /// The file holding the descriptor.
        path: PathBuf,
        /// 1-based line (0 when not about one line).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A valid VMDK of a kind the reader does not handle.
    #[error("{path}: unsupported VMDK: {reason}")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What is not handled.
        reason: String,
    },
}

impl From<VmdkError> for io::Error {
    fn from(e: VmdkError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// The settings of a VMDK that are not its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmdkOptions {
    long_content_id: [u8; 16],
    /// Controller the disk will be attached to (see [`descriptor::adapter_type`]).
    pub adapter: ScsiAdapter,
    /// `ddb.virtualHWVersion`. 4 (what qemu-img writes) is read by every VMware product; the
    /// VM's real hardware version lives in the .vmx, and only ESX 3.x looks at this one.
    pub hw_version: u32,
    /// Flush the file and its directory to the disk before returning (as `qemu-img convert`
    /// does). A caller that renames the result again, such as a build's staging directory,
    /// gains nothing from it and can turn it off.
    pub durable: bool,
}

impl VmdkOptions {
    /// Options whose content IDs derive from `content_key` (e.g. the disk's or tree's digest),
    /// so the same content always gives the same CID.
    pub fn new(content_key: &[u8], adapter: ScsiAdapter) -> VmdkOptions {
        let digest = Sha256::digest(content_key);
        let mut long_content_id = [0u8; 16];
        long_content_id.copy_from_slice(&digest[..16]);
        // ffffffff means "no parent" and fffffffe "not computed yet": keep clear of both.
        if long_content_id[12..] == [0xff, 0xff, 0xff, 0xff]
            || long_content_id[12..] == [0xff, 0xff, 0xff, 0xfe]
        {
            long_content_id[15] = 0xfd;
        }
        VmdkOptions {
            long_content_id,
            adapter,
            hw_version: 4,
            durable: true,
        }
    }

    /// `CID`: the last 32 bits of `ddb.longContentID`, as VMware's own files have it.
    pub fn cid(&self) -> u32 {
        let b = &self.long_content_id;
        u32::from_be_bytes([b[12], b[13], b[14], b[15]])
    }

    /// `ddb.longContentID` (128 bits).
    pub fn long_content_id(&self) -> [u8; 16] {
        self.long_content_id
    }
}

/// `createType` of a form.
pub fn create_type(format: VmdkFormat) -> &'static str {
    match format {
        VmdkFormat::MonolithicSparse => "monolithicSparse",
        VmdkFormat::StreamOptimized => "streamOptimized",
        VmdkFormat::MonolithicFlat => "monolithicFlat",
    }
}

/// Writes the raw disk image `raw` as a VMDK of `format` at `dest`; returns the files written
/// (for monolithicFlat the descriptor `dest` and its `…-flat.vmdk` extent next to it).
pub fn write_vmdk(
    raw: &File,
    format: VmdkFormat,
    dest: &Path,
    opts: &VmdkOptions,
) -> Result<Vec<PathBuf>, VmdkError> {
    let size =
        block_device_or_file_size(raw).map_err(|source| VmdkError::Source { offset: 0, source })?;
    let ranges = source::file_data_ranges(raw, size)
        .map_err(|source| VmdkError::Source { offset: 0, source })?;
    write_vmdk_from(raw, &ranges, format, dest, opts)
}

/// Like [`write_vmdk`], from any image and the byte ranges `(start, end)` that may hold data
/// (everything else must read as zeros; pass `[(0, size)]` when unknown).
pub fn write_vmdk_from(
    src: &dyn ReadAt,
    ranges: &[(u64, u64)],
    format: VmdkFormat,
    dest: &Path,
    opts: &VmdkOptions,
) -> Result<Vec<PathBuf>, VmdkError> {
    let size = src
        .size()
        .map_err(|source| VmdkError::Source { offset: 0, source })?;
    if size == 0 {
        return Err(VmdkError::TooLarge {
            bytes: 0,
            reason: "an empty disk cannot be a VMDK",
        });
    }
    let ranges = source::normalize(ranges, size);
    let name = file_name(dest)?;
    match format {
        VmdkFormat::MonolithicSparse => {
            let tmp = temp_for(dest)?;
            sparse::write(src, size, &ranges, tmp.as_file(), &name, opts)?;
            persist(tmp, dest, opts.durable)?;
            Ok(vec![dest.to_path_buf()])
        }
        VmdkFormat::StreamOptimized => {
            let tmp = temp_for(dest)?;
            stream::write(src, size, &ranges, tmp.as_file(), &name, opts)?;
            persist(tmp, dest, opts.durable)?;
            Ok(vec![dest.to_path_buf()])
        }
        VmdkFormat::MonolithicFlat => {
            let flat_name = flat::extent_name(&name);
            let flat_dest = dest.with_file_name(&flat_name);
            let tmp_flat = temp_for(&flat_dest)?;
            let tmp_desc = temp_for(dest)?;
            flat::write(
                src,
                size,
                &ranges,
                tmp_flat.as_file(),
                tmp_desc.as_file(),
                &flat_name,
                opts,
            )?;
            // The extent first: a descriptor never names a file that is not all there.
            persist(tmp_flat, &flat_dest, opts.durable)?;
            persist(tmp_desc, dest, opts.durable)?;
            Ok(vec![dest.to_path_buf(), flat_dest])
        }
    }
}

/// The destination's file name, which goes into the descriptor between quotes.
fn file_name(dest: &Path) -> Result<String, VmdkError> {
    let bad = |reason| VmdkError::BadDestination {
        path: dest.to_path_buf(),
        reason,
    };
    let name = dest
        .file_name()
        .ok_or_else(|| bad("no file name"))?
        .to_str()
        .ok_or_else(|| bad("the file name is not UTF-8"))?;
    if name.chars().any(|c| c == '"' || c.is_control()) {
        return Err(bad("the file name holds a quote or a control character"));
    }
    Ok(name.to_string())
}

fn parent_dir(dest: &Path) -> &Path {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A temporary file next to `dest`, removed if the write fails.
fn temp_for(dest: &Path) -> Result<tempfile::NamedTempFile, VmdkError> {
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(parent_dir(dest))
        .map_err(|source| VmdkError::Io {
            what: "create a temporary file next to",
            path: dest.to_path_buf(),
            source,
        })
}

/// Gives `tmp` ordinary permissions, flushes it to disk when `durable`, and renames it to
/// `dest`.
fn persist(tmp: tempfile::NamedTempFile, dest: &Path, durable: bool) -> Result<(), VmdkError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |what| {
        move |source| VmdkError::Io {
            what,
            path: dest.to_path_buf(),
            source,
        }
    };
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(io("set permissions of"))?;
    if durable {
        tmp.as_file().sync_all().map_err(io("flush"))?;
    }
    tmp.persist(dest)
        .map_err(|e| io("rename into place")(e.error))?;
    if !durable {
        return Ok(());
    }
    // The rename itself must reach the disk too.
    File::open(parent_dir(dest))
        .and_then(|d| d.sync_all())
        .map_err(io("flush the directory of"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ids_are_stable_and_valid() {
        let a = VmdkOptions::new(b"x", ScsiAdapter::Lsilogic);
        let b = VmdkOptions::new(b"x", ScsiAdapter::Lsilogic);
        let c = VmdkOptions::new(b"y", ScsiAdapter::Lsilogic);
        assert_eq!(a, b);
        assert_ne!(a.cid(), c.cid());
        assert!(a.cid() < 0xffff_fffe);
        assert_eq!(a.long_content_id()[12..], a.cid().to_be_bytes());
    }

    #[test]
    fn destination_names() {
        assert!(file_name(Path::new("/tmp/a.vmdk")).is_ok());
        assert!(file_name(Path::new("/tmp/a\".vmdk")).is_err());
        assert!(file_name(Path::new("/tmp/a\n.vmdk")).is_err());
        assert!(file_name(Path::new("/")).is_err());
        assert_eq!(parent_dir(Path::new("a.vmdk")), Path::new("."));
    }
}
