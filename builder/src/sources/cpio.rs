//! cpio archives in the "new ASCII" formats: newc (`070701`), crc (`070702`), and rpm's stripped
//! variant (`07070X`, v6 packages and large files) whose entries carry only an index into the
//! package header. Read with positional reads from an [`ArchiveFile`], so members are referenced
//! in place. Used by the RPM reader; [`apply`] also reads a standalone archive (an initramfs).
//!
//! Layout: a 110-byte header (magic and thirteen 8-digit hex fields), the NUL-terminated name,
//! padding to 4 bytes, the data, padding to 4 bytes; alignment counts from the archive start.
//! The entry named `TRAILER!!!` ends the archive. Hard links share an inode number; GNU cpio and
//! rpm store the data with the last name of the group and size 0 for the others.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::compression::{self, CompressionError};
use super::place::{PlaceError, Placer, Through};
use super::{LayerReport, Owner};
use crate::tree::{ArchiveFile, Content, FileData, Inode, Kind, Meta, Tree, TreeError};

const HEADER: u64 = 110;
/// Longest name accepted, including its NUL (Linux's PATH_MAX).
pub const MAX_NAME: u32 = 4096;
/// Longest symlink target read into memory.
const MAX_LINK: u64 = 4096;
const TRAILER: &[u8] = b"TRAILER!!!";

/// A cpio archive that cannot be read or applied.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    /// The archive cannot be opened or decompressed.
    #[error(transparent)]
    Input(#[from] CompressionError),
    /// A header is not valid.
    #[error("bad cpio archive {file}: header at byte {offset}: {reason}")]
    Format {
        /// The archive.
        file: String,
        /// Offset of the header from the archive start.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The archive cannot be read.
    #[error("cannot read cpio archive {file} at byte {offset}: {source}")]
    Io {
        /// The archive.
        file: String,
        /// Offset from the archive start.
        offset: u64,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The tree refused an entry.
    #[error("cpio archive {file}: entry {path:?} (header at byte {offset}): {source}")]
    Tree {
        /// The archive.
        file: String,
        /// Offset of the header.
        offset: u64,
        /// The entry's name.
        path: String,
        /// Why.
        #[source]
        source: Box<TreeError>,
    },
}

/// One full (newc or crc) entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpioEntry {
    /// Offset of the header from the archive start.
    pub header_offset: u64,
    /// The name, without its NUL.
    pub name: Vec<u8>,
    /// Inode number (hard links share it).
    pub ino: u32,
    /// Type and permission bits (`st_mode`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Number of links.
    pub nlink: u32,
    /// Modification time.
    pub mtime: u32,
    /// Size of the data.
    pub file_size: u32,
    /// Device holding the file, major.
    pub dev_major: u32,
    /// Device holding the file, minor.
    pub dev_minor: u32,
    /// Device number of a device node, major.
    pub rdev_major: u32,
    /// Device number of a device node, minor.
    pub rdev_minor: u32,
    /// The crc format's sum of data bytes (0 in newc).
    pub checksum: u32,
    /// Absolute offset of the data in the underlying file.
    pub data_offset: u64,
}

/// What the reader found next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpioItem {
    /// A newc or crc entry.
    Entry(CpioEntry),
    /// A stripped entry: index `index` of the package header, data at `data_offset` (absolute)
    /// and `size` bytes long as the caller said.
    Stripped {
        /// Offset of the header from the archive start.
        header_offset: u64,
        /// File index in the package header.
        index: u32,
        /// Absolute offset of the data.
        data_offset: u64,
    },
}

/// Reads the entries of a cpio archive stored in `[start, end)` of a file.
pub struct CpioReader {
    archive: Arc<ArchiveFile>,
    start: u64,
    end: u64,
    pos: u64,
    done: bool,
}

impl CpioReader {
    /// A reader over `[start, end)` of `archive`.
    pub fn new(archive: Arc<ArchiveFile>, start: u64, end: u64) -> CpioReader {
        CpioReader {
            archive,
            start,
            end,
            pos: start,
            done: false,
        }
    }

    /// The file holding the archive.
    pub fn archive(&self) -> &Arc<ArchiveFile> {
        &self.archive
    }

    fn format(&self, at: u64, reason: impl Into<String>) -> CpioError {
        CpioError::Format {
            file: self.archive.label().to_string(),
            offset: at - self.start,
            reason: reason.into(),
        }
    }

    fn read(&self, at: u64, len: u64, header: u64) -> Result<Vec<u8>, CpioError> {
        if at.checked_add(len).map_or(true, |e| e > self.end) {
            return Err(self.format(
                header,
                format!(
                    "the archive ends at byte {} inside this entry (truncated?)",
                    self.end - self.start
                ),
            ));
        }
        let mut buf = vec![0u8; len as usize];
        self.archive
            .file()
            .read_exact_at(&mut buf, at)
            .map_err(|source| CpioError::Io {
                file: self.archive.label().to_string(),
                offset: at - self.start,
                source,
            })?;
        Ok(buf)
    }

    fn align(&self, at: u64) -> u64 {
        self.start + (at - self.start).next_multiple_of(4)
    }

    /// The next entry; `None` after the trailer. A stripped entry needs its data size, which
    /// only the package header knows: `stripped_size` gives it for a file index.
    pub fn next_item(
        &mut self,
        stripped_size: &mut dyn FnMut(u32) -> Option<u64>,
    ) -> Result<Option<CpioItem>, CpioError> {
        if self.done {
            return Ok(None);
        }
        let at = self.pos;
        if at >= self.end {
            return Err(self.format(at, "the archive ends without a trailer (truncated?)"));
        }
        let magic = self.read(at, 6, at)?;
        if magic == b"07070X" {
            let index = hex(&self.read(at + 6, 8, at)?).map_err(|e| self.format(at, e))?;
            let data = self.align(at + 14);
            if index == u32::MAX {
                self.done = true;
                return Ok(None);
            }
            let size = stripped_size(index).ok_or_else(|| {
                self.format(
                    at,
                    format!(
                        "stripped entry names file index {index}, which the header does not have"
                    ),
                )
            })?;
            self.pos = self.after_data(at, data, size)?;
            return Ok(Some(CpioItem::Stripped {
                header_offset: at - self.start,
                index,
                data_offset: data,
            }));
        }
        if magic != b"070701" && magic != b"070702" {
            return Err(self.format(
                at,
                format!(
                    "bad magic {:?} (expected 070701 or 070702)",
                    String::from_utf8_lossy(&magic)
                ),
            ));
        }
        let raw = self.read(at + 6, HEADER - 6, at)?;
        let mut fields = [0u32; 13];
        for (i, field) in fields.iter_mut().enumerate() {
            *field = hex(&raw[i * 8..i * 8 + 8]).map_err(|e| self.format(at, e))?;
        }
        let [ino, mode, uid, gid, nlink, mtime, file_size, dev_major, dev_minor, rdev_major, rdev_minor, namesize, checksum] =
            fields;
        if namesize == 0 || namesize > MAX_NAME {
            return Err(self.format(at, format!("name size {namesize} is out of range")));
        }
        let mut name = self.read(at + HEADER, u64::from(namesize), at)?;
        if name.pop() != Some(0) || name.contains(&0) {
            return Err(self.format(at, "the name is not NUL-terminated where its size says"));
        }
        let data = self.align(at + HEADER + u64::from(namesize));
        if name == TRAILER {
            self.done = true;
            return Ok(None);
        }
        self.pos = self.after_data(at, data, u64::from(file_size))?;
        Ok(Some(CpioItem::Entry(CpioEntry {
            header_offset: at - self.start,
            name,
            ino,
            mode,
            uid,
            gid,
            nlink,
            mtime,
            file_size,
            dev_major,
            dev_minor,
            rdev_major,
            rdev_minor,
            checksum,
            data_offset: data,
        })))
    }

    fn after_data(&self, at: u64, data: u64, size: u64) -> Result<u64, CpioError> {
        let left = self.end.saturating_sub(data);
        if size > left {
            return Err(self.format(
                at,
                format!(
                    "the entry claims {size} bytes of data but only {left} remain (truncated?)"
                ),
            ));
        }
        Ok(self.align(data + size))
    }
}

fn hex(field: &[u8]) -> Result<u32, String> {
    std::str::from_utf8(field)
        .ok()
        .filter(|s| s.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|s| u32::from_str_radix(s, 16).ok())
        .ok_or_else(|| {
            format!(
                "{:?} is not an 8-digit hex field",
                String::from_utf8_lossy(field)
            )
        })
}

/// File type bits of `st_mode`.
pub(crate) mod mode {
    /// Mask of the type bits.
    pub const FMT: u32 = 0o170000;
    /// Socket.
    pub const SOCK: u32 = 0o140000;
    /// Symlink.
    pub const LNK: u32 = 0o120000;
    /// Regular file.
    pub const REG: u32 = 0o100000;
    /// Block device.
    pub const BLK: u32 = 0o060000;
    /// Directory.
    pub const DIR: u32 = 0o040000;
    /// Character device.
    pub const CHR: u32 = 0o020000;
    /// Fifo.
    pub const FIFO: u32 = 0o010000;
}

/// Reads a symlink target stored as entry data.
pub(crate) fn read_link(
    archive: &ArchiveFile,
    data_offset: u64,
    size: u64,
) -> Result<Vec<u8>, String> {
    if size > MAX_LINK {
        return Err(format!("symlink target of {size} bytes is too long"));
    }
    let mut target = vec![0u8; size as usize];
    archive
        .file()
        .read_exact_at(&mut target, data_offset)
        .map_err(|e| e.to_string())?;
    Ok(target)
}

/// Adds every entry of the cpio archive at `path` (plain or compressed) to `tree`. `owner`
/// replaces the owners of every entry.
pub fn apply(tree: &mut Tree, path: &Path, owner: Option<Owner>) -> Result<LayerReport, CpioError> {
    let limit = compression::max_expanded()?;
    let (spool, _) = compression::open_archive(path, limit)?;
    let mut reader = CpioReader::new(spool.archive, 0, spool.len);
    let label = path.display().to_string();
    let mut placer = Placer::new(tree, Through::Refuse);
    let mut report = LayerReport::default();
    // Hard-link groups: the name placed with data, or names waiting for the data.
    let mut placed: HashMap<(u32, u32, u32), Vec<u8>> = HashMap::new();
    let mut waiting: HashMap<(u32, u32, u32), Vec<CpioEntry>> = HashMap::new();
    let mut no_stripped = |_| None;
    while let Some(item) = reader.next_item(&mut no_stripped)? {
        let entry = match item {
            CpioItem::Entry(entry) => entry,
            CpioItem::Stripped { header_offset, .. } => {
                return Err(reader.format(
                    reader.start + header_offset,
                    "a stripped rpm entry outside a package",
                ))
            }
        };
        let key = (entry.dev_major, entry.dev_minor, entry.ino);
        let linked = entry.nlink > 1 && entry.mode & mode::FMT == mode::REG;
        if linked {
            if let Some(first) = placed.get(&key) {
                let tree_err = |e| tree_error(&label, &entry, e);
                placer.hard_link(&entry.name, first).map_err(tree_err)?;
                report.entries += 1;
                continue;
            }
            if entry.file_size == 0 {
                waiting.entry(key).or_default().push(entry);
                continue;
            }
        }
        place_entry(&mut placer, &reader, &label, &entry, owner)?;
        report.entries += 1;
        if linked {
            for other in waiting.remove(&key).unwrap_or_default() {
                let tree_err = |e| tree_error(&label, &other, e);
                placer
                    .hard_link(&other.name, &entry.name)
                    .map_err(tree_err)?;
                report.entries += 1;
            }
            placed.insert(key, entry.name.clone());
        }
    }
    // Groups whose data never came are empty files.
    let mut groups: Vec<Vec<CpioEntry>> = waiting.into_values().collect();
    groups.sort_by_key(|g| g.first().map(|e| e.header_offset));
    for group in groups {
        let Some((first, rest)) = group.split_first() else {
            continue;
        };
        place_entry(&mut placer, &reader, &label, first, owner)?;
        for other in rest {
            let tree_err = |e| tree_error(&label, other, e);
            placer
                .hard_link(&other.name, &first.name)
                .map_err(tree_err)?;
        }
        report.entries += group.len() as u64;
    }
    Ok(report)
}

fn place_entry(
    placer: &mut Placer<'_>,
    reader: &CpioReader,
    label: &str,
    entry: &CpioEntry,
    owner: Option<Owner>,
) -> Result<(), CpioError> {
    let size = u64::from(entry.file_size);
    let kind = match entry.mode & mode::FMT {
        mode::REG => Kind::File(FileData {
            size,
            content: if size == 0 {
                Content::Bytes(Arc::from(&[][..]))
            } else {
                Content::Archive {
                    archive: Arc::clone(reader.archive()),
                    offset: entry.data_offset,
                }
            },
            sha256: None,
        }),
        mode::DIR => Kind::empty_dir(),
        mode::LNK => Kind::Symlink(
            read_link(reader.archive(), entry.data_offset, size)
                .map_err(|e| reader.format(reader.start + entry.header_offset, e))?
                .into(),
        ),
        mode::CHR => Kind::CharDevice {
            major: entry.rdev_major,
            minor: entry.rdev_minor,
        },
        mode::BLK => Kind::BlockDevice {
            major: entry.rdev_major,
            minor: entry.rdev_minor,
        },
        mode::FIFO => Kind::Fifo,
        mode::SOCK => Kind::Socket,
        other => {
            return Err(reader.format(
                reader.start + entry.header_offset,
                format!("unknown file type {other:o}"),
            ))
        }
    };
    let (uid, gid) = owner.map_or((entry.uid, entry.gid), |o| (o.uid, o.gid));
    let meta = Meta {
        mode: (entry.mode & 0o7777) as u16,
        uid,
        gid,
        mtime: i64::from(entry.mtime),
        xattrs: Vec::new(),
    };
    if entry.name.starts_with(b"/") {
        return Err(reader.format(
            reader.start + entry.header_offset,
            format!(
                "absolute name {:?} is not allowed",
                String::from_utf8_lossy(&entry.name)
            ),
        ));
    }
    placer
        .insert(&entry.name, Inode::new(meta, kind))
        .map_err(|e| tree_error(label, entry, e))?;
    Ok(())
}

fn tree_error(label: &str, entry: &CpioEntry, e: PlaceError) -> CpioError {
    let path = String::from_utf8_lossy(&entry.name).into_owned();
    match e {
        PlaceError::Tree(source) => CpioError::Tree {
            file: label.to_string(),
            offset: entry.header_offset,
            path,
            source: Box::new(source),
        },
        other => CpioError::Format {
            file: label.to_string(),
            offset: entry.header_offset,
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn entry(name: &str, mode: u32, ino: u32, nlink: u32, data: &[u8]) -> Vec<u8> {
        let mut e = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0, 0, 1681068559, data.len(), 8, 1, 1, 3, name.len() + 1, 0
        )
        .into_bytes();
        e.extend(name.as_bytes());
        e.push(0);
        while e.len() % 4 != 0 {
            e.push(0);
        }
        e.extend(data);
        while e.len() % 4 != 0 {
            e.push(0);
        }
        e
    }

    fn archive(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut a: Vec<u8> = entries.concat();
        a.extend(entry("TRAILER!!!", 0, 0, 1, b""));
        a
    }

    fn apply_bytes(bytes: &[u8]) -> Result<Tree, CpioError> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        let mut tree = Tree::new(Meta::root(0o755, 0));
        apply(&mut tree, f.path(), None)?;
        Ok(tree)
    }

    #[test]
    fn reads_entries_and_hard_links_with_data_last() {
        let a = archive(&[
            entry(".", 0o40755, 1, 2, b""),
            entry("bin/a", 0o100755, 7, 2, b""),
            entry("lnk", 0o120777, 3, 1, b"bin/a"),
            entry("bin/b", 0o100755, 7, 2, b"#!/bin/sh\n"),
            entry("dev/null", 0o20666, 4, 1, b""),
        ]);
        let tree = apply_bytes(&a).unwrap();
        let a_id = tree.lookup(b"bin/a").unwrap();
        assert_eq!(tree.lookup(b"bin/b"), Some(a_id));
        assert!(matches!(&tree.inode(a_id).kind, Kind::File(f) if f.size == 10));
        assert!(
            matches!(&tree.inode(tree.lookup(b"lnk").unwrap()).kind, Kind::Symlink(t) if &**t == b"bin/a")
        );
        assert!(matches!(
            tree.inode(tree.lookup(b"dev/null").unwrap()).kind,
            Kind::CharDevice { major: 1, minor: 3 }
        ));
    }

    #[test]
    fn truncations_and_damage_are_errors() {
        let a = archive(&[
            entry("f", 0o100644, 2, 1, b"hello"),
            entry("g", 0o100644, 3, 1, b"x"),
        ]);
        apply_bytes(&a).unwrap();
        // The trailer's own padding (the last 3 bytes) is not needed.
        for cut in 0..a.len() - 3 {
            let e = apply_bytes(&a[..cut])
                .err()
                .unwrap_or_else(|| panic!("cut {cut} accepted"));
            assert!(e.to_string().contains("at byte"), "{e}");
        }
        for i in [0usize, 10, 60, 100] {
            let mut bad = a.clone();
            bad[i] = b'z';
            assert!(apply_bytes(&bad).is_err(), "byte {i}");
        }
        let mut huge = a.clone();
        huge[54..62].copy_from_slice(b"ffffffff");
        let e = apply_bytes(&huge).unwrap_err();
        assert!(e.to_string().contains("claims 4294967295 bytes"), "{e}");
        let mut long = a.clone();
        long[94..102].copy_from_slice(b"00100000");
        assert!(apply_bytes(&long)
            .unwrap_err()
            .to_string()
            .contains("name size"));
    }

    #[test]
    fn stripped_entries_take_sizes_from_the_caller() {
        let mut a = b"07070X00000001\0\0abc\0".to_vec();
        a.extend(b"07070Xffffffff\0\0");
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&a).unwrap();
        let archive = Arc::new(ArchiveFile::new("s", f));
        let mut r = CpioReader::new(archive, 0, a.len() as u64);
        let mut sizes = |i| (i == 1).then_some(3);
        assert_eq!(
            r.next_item(&mut sizes).unwrap(),
            Some(CpioItem::Stripped {
                header_offset: 0,
                index: 1,
                data_offset: 16
            })
        );
        assert_eq!(r.next_item(&mut sizes).unwrap(), None);
    }
}
