//! `tar = "PATH"`: a tarball (an OpenVZ precreated template, a rootfs export), plain or compressed
//! with gzip, xz, zstd or bzip2, in ustar, GNU or pax format.
//!
//! The archive is parsed natively ([`reader`]): file contents are referenced in place (plain
//! archives) or in the decompressed spool, never copied into memory. GNU sparse members are laid
//! out in a second sparse spool. Extended attributes come from pax records, so file capabilities
//! stored with `tar --xattrs` survive. Paths must stay inside the root: absolute paths, `..`,
//! names over 255 bytes, entries through symlinks and two types at one path are refused with the
//! archive's name and the header's byte offset (a leading `./` is fine).

mod header;
mod pax;
pub(crate) mod reader;
mod sparse;

use std::path::Path;
use std::sync::Arc;

use super::accounts::Accounts;
use super::compression::{self, CompressionError};
use super::place::{PlaceError, Placer, Through};
use super::{LayerReport, Owner};
use crate::tree::{Content, FileData, Inode, Kind, Meta, Tree, TreeError};
use reader::{Data, Entry, EntryKind, ReadErrorKind, TarReader};
use sparse::SparseSpool;

/// A tar layer that cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    /// The archive cannot be opened or decompressed.
    #[error(transparent)]
    Input(#[from] CompressionError),
    /// A header is not valid.
    #[error("bad tar archive {file}: header at byte {offset}: {reason}")]
    Format {
        /// The archive.
        file: String,
        /// Byte offset of the header (in the decompressed stream for compressed archives).
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The archive or a spool cannot be read or written.
    #[error("cannot read tar archive {file} at the header at byte {offset}: {source}")]
    Io {
        /// The archive.
        file: String,
        /// Byte offset of the header.
        offset: u64,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The tree refused an entry.
    #[error("tar archive {file}: entry {path:?} (header at byte {offset}): {source}")]
    Tree {
        /// The archive.
        file: String,
        /// Byte offset of the header.
        offset: u64,
        /// The entry's path as stored.
        path: String,
        /// Why.
        #[source]
        source: Box<TreeError>,
    },
    /// An entry is not acceptable: an absolute path, a loop of symlinks (package layers).
    #[error("tar archive {file}: entry {path:?} (header at byte {offset}): {reason}")]
    Entry {
        /// The archive.
        file: String,
        /// Byte offset of the header.
        offset: u64,
        /// The entry's path as stored.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Adds every member of the tar archive at `path` to `tree`. `owner` replaces the uid and gid of
/// every entry. Decompression is bounded by [`compression::max_expanded`].
pub fn apply(tree: &mut Tree, path: &Path, owner: Option<Owner>) -> Result<LayerReport, TarError> {
    apply_with_limit(tree, path, owner, compression::max_expanded()?)
}

/// [`apply`] with an explicit bound on the decompressed size (and on sparse file sizes).
pub fn apply_with_limit(
    tree: &mut Tree,
    path: &Path,
    owner: Option<Owner>,
    max_expanded: u64,
) -> Result<LayerReport, TarError> {
    let (spool, _format) = compression::open_archive(path, max_expanded)?;
    let label = path.display().to_string();
    let reader = TarReader::new(spool.archive, 0, spool.len, max_expanded);
    let mut placer = Placer::new(tree, Through::Refuse);
    Ok(LayerReport {
        entries: apply_entries(&mut placer, reader, &label, Ids::Numeric(owner))?,
        ..LayerReport::default()
    })
}

/// Where the owners of entries come from.
pub(crate) enum Ids<'a> {
    /// The numeric ids of the archive, or the override.
    Numeric(Option<Owner>),
    /// The stored names mapped through the tree's accounts, else the numeric ids (dpkg's rule).
    Names(&'a Accounts),
}

/// Places every member read by `reader`; returns the number of entries placed.
pub(crate) fn apply_entries(
    placer: &mut Placer<'_>,
    mut reader: TarReader,
    label: &str,
    ids: Ids<'_>,
) -> Result<u64, TarError> {
    let mut sparse: Option<SparseSpool> = None;
    let mut placed = 0u64;
    while let Some(entry) = reader.next_entry().map_err(|e| read_error(label, e))? {
        let (uid, gid) = match &ids {
            Ids::Numeric(Some(o)) => (o.uid, o.gid),
            Ids::Numeric(None) => (entry.uid, entry.gid),
            Ids::Names(accounts) => (
                entry
                    .uname
                    .as_deref()
                    .and_then(|n| accounts.uid(n))
                    .unwrap_or(entry.uid),
                entry
                    .gname
                    .as_deref()
                    .and_then(|n| accounts.gid(n))
                    .unwrap_or(entry.gid),
            ),
        };
        let place_err = |e: PlaceError| place_error(label, &entry, e);
        let absolute = match &entry.kind {
            EntryKind::HardLink(target) => entry.path.starts_with(b"/") || target.starts_with(b"/"),
            _ => entry.path.starts_with(b"/"),
        };
        if absolute {
            return Err(TarError::Entry {
                file: label.to_string(),
                offset: entry.offset,
                path: String::from_utf8_lossy(&entry.path).into_owned(),
                reason: "absolute paths are not allowed in an archive (make it relative to the \
                         root, e.g. with tar -C)"
                    .into(),
            });
        }
        let meta = Meta {
            mode: entry.mode,
            uid,
            gid,
            mtime: entry.mtime,
            xattrs: entry.xattrs.clone(),
        };
        let kind = match &entry.kind {
            EntryKind::HardLink(target) => {
                placer.hard_link(&entry.path, target).map_err(place_err)?;
                placed += 1;
                continue;
            }
            EntryKind::File { size, data } => Kind::File(FileData {
                size: *size,
                content: content(&mut sparse, &reader, label, &entry, *size, data)?,
                sha256: None,
            }),
            EntryKind::Directory => Kind::empty_dir(),
            EntryKind::Symlink(target) => Kind::Symlink(target.as_slice().into()),
            EntryKind::CharDevice(major, minor) => Kind::CharDevice {
                major: *major,
                minor: *minor,
            },
            EntryKind::BlockDevice(major, minor) => Kind::BlockDevice {
                major: *major,
                minor: *minor,
            },
            EntryKind::Fifo => Kind::Fifo,
        };
        placer
            .insert(&entry.path, Inode::new(meta, kind))
            .map_err(place_err)?;
        placed += 1;
    }
    Ok(placed)
}

fn content(
    sparse: &mut Option<SparseSpool>,
    reader: &TarReader,
    label: &str,
    entry: &Entry,
    size: u64,
    data: &Data,
) -> Result<Content, TarError> {
    if size == 0 {
        return Ok(Content::Bytes(Arc::from(&[][..])));
    }
    match data {
        Data::At(offset) => Ok(Content::Archive {
            archive: Arc::clone(reader.archive()),
            offset: *offset,
        }),
        Data::Sparse { map, at } => {
            let io_err = |source| TarError::Io {
                file: label.to_string(),
                offset: entry.offset,
                source,
            };
            let spool = match sparse {
                Some(s) => s,
                None => sparse
                    .insert(SparseSpool::new(format!("{label} (sparse members)")).map_err(io_err)?),
            };
            let (archive, offset) = spool.add(reader.archive(), *at, map).map_err(io_err)?;
            Ok(Content::Archive { archive, offset })
        }
    }
}

/// A reader error with the archive's name.
pub(crate) fn read_error(label: &str, e: reader::ReadError) -> TarError {
    match e.kind {
        ReadErrorKind::Format(reason) => TarError::Format {
            file: label.to_string(),
            offset: e.offset,
            reason,
        },
        ReadErrorKind::Io(source) => TarError::Io {
            file: label.to_string(),
            offset: e.offset,
            source,
        },
    }
}

fn place_error(label: &str, entry: &Entry, e: PlaceError) -> TarError {
    let path = String::from_utf8_lossy(&entry.path).into_owned();
    match e {
        PlaceError::Tree(source) => TarError::Tree {
            file: label.to_string(),
            offset: entry.offset,
            path,
            source: Box::new(source),
        },
        other => TarError::Entry {
            file: label.to_string(),
            offset: entry.offset,
            path,
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests;
