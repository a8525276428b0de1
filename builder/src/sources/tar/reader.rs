//! Walking a tar archive held in a file: header blocks, GNU long names, pax records and sparse maps
//! are combined into one [`Entry`] per member. Every length is checked against the archive before
//! it is used, and every error carries the byte offset of the header concerned.

use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::header::{Header, BLOCK};
use super::pax::{self, Records};
use super::sparse::{self, PaxSparse, SparseMap};
use crate::tree::ArchiveFile;

/// Longest GNU long name or link name accepted.
const MAX_LONG_NAME: u64 = 64 << 10;
/// Largest pax header accepted (xattrs included).
const MAX_PAX: u64 = 1 << 20;

/// A member of the archive.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Offset of the first header block belonging to this member (its long name or pax header
    /// when it has one).
    pub offset: u64,
    /// Path as stored.
    pub path: Vec<u8>,
    /// Type and data.
    pub kind: EntryKind,
    /// Permission bits.
    pub mode: u16,
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Owner name, if stored.
    pub uname: Option<Vec<u8>>,
    /// Group name, if stored.
    pub gname: Option<Vec<u8>>,
    /// Modification time.
    pub mtime: i64,
    /// Extended attributes from pax records.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Type of a member.
#[derive(Debug, Clone)]
pub(crate) enum EntryKind {
    /// Regular file of `size` bytes.
    File {
        /// Size with holes.
        size: u64,
        /// Where the bytes are.
        data: Data,
    },
    /// Directory.
    Directory,
    /// Symbolic link.
    Symlink(Vec<u8>),
    /// Hard link to an earlier member.
    HardLink(Vec<u8>),
    /// Character device.
    CharDevice(u32, u32),
    /// Block device.
    BlockDevice(u32, u32),
    /// Named pipe.
    Fifo,
}

/// Where a regular file's bytes are in the archive.
#[derive(Debug, Clone)]
pub(crate) enum Data {
    /// Contiguous from this offset.
    At(u64),
    /// A sparse file whose segments are stored one after another from `at`.
    Sparse {
        /// The segments.
        map: SparseMap,
        /// Offset of the first stored byte.
        at: u64,
    },
}

/// Why the archive cannot be read, with the offset of the header concerned.
#[derive(Debug)]
pub(crate) struct ReadError {
    /// Header offset.
    pub offset: u64,
    /// What went wrong.
    pub kind: ReadErrorKind,
}

/// The two kinds of read failure.
#[derive(Debug)]
pub(crate) enum ReadErrorKind {
    /// The bytes are not a valid archive.
    Format(String),
    /// The file cannot be read.
    Io(io::Error),
}

fn format_err(offset: u64) -> impl Fn(String) -> ReadError {
    move |reason| ReadError {
        offset,
        kind: ReadErrorKind::Format(reason),
    }
}

/// Iterates the members of a tar archive stored in `[start, end)` of a file.
pub(crate) struct TarReader {
    archive: Arc<ArchiveFile>,
    pos: u64,
    end: u64,
    global: Records,
    limit: u64,
    done: bool,
}

impl TarReader {
    /// A reader over `[start, end)` of `archive`; sparse files may be at most `limit` bytes.
    pub fn new(archive: Arc<ArchiveFile>, start: u64, end: u64, limit: u64) -> TarReader {
        TarReader {
            archive,
            pos: start,
            end,
            global: Vec::new(),
            limit,
            done: false,
        }
    }

    /// The file holding the archive.
    pub fn archive(&self) -> &Arc<ArchiveFile> {
        &self.archive
    }

    fn read(&self, at: u64, len: u64, header: u64) -> Result<Vec<u8>, ReadError> {
        let mut buf = vec![0u8; len as usize];
        self.archive
            .file()
            .read_exact_at(&mut buf, at)
            .map_err(|e| ReadError {
                offset: header,
                kind: ReadErrorKind::Io(e),
            })?;
        Ok(buf)
    }

    fn read_block(&self, at: u64, header: u64) -> Result<[u8; BLOCK as usize], ReadError> {
        if at.checked_add(BLOCK).map_or(true, |e| e > self.end) {
            return Err(format_err(header)(if at >= self.end {
                format!(
                    "the archive ends at byte {} without an end-of-archive marker (truncated?)",
                    self.end
                )
            } else {
                format!(
                    "the archive ends inside a header block (at byte {}; truncated?)",
                    self.end
                )
            }));
        }
        let mut block = [0u8; BLOCK as usize];
        self.archive
            .file()
            .read_exact_at(&mut block, at)
            .map_err(|e| ReadError {
                offset: header,
                kind: ReadErrorKind::Io(e),
            })?;
        Ok(block)
    }

    /// Checks that `size` bytes of data at `data` lie inside the archive.
    fn check_extent(&self, at: u64, data: u64, size: u64) -> Result<u64, ReadError> {
        let left = self.end.saturating_sub(data);
        if size > left {
            return Err(format_err(at)(format!(
                "the member claims {size} bytes of data but only {left} remain in the archive \
                 (truncated, or a damaged size field)"
            )));
        }
        // Blocks count from the archive's start, which need not be aligned in the file (a
        // data.tar inside a .deb).
        size.checked_next_multiple_of(BLOCK)
            .and_then(|padded| data.checked_add(padded))
            .ok_or_else(|| format_err(at)("member size overflows".into()))
    }

    /// The next member; `None` at the end-of-archive marker.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, ReadError> {
        if self.done {
            return Ok(None);
        }
        let first = self.pos;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut local: Records = Vec::new();
        loop {
            let at = self.pos;
            let header = Header(self.read_block(at, at)?);
            if header.is_zero() {
                if long_name.is_some() || long_link.is_some() || !local.is_empty() {
                    return Err(format_err(first)(
                        "metadata headers are not followed by a member".into(),
                    ));
                }
                self.done = true;
                return Ok(None);
            }
            let err = format_err(at);
            header.verify_checksum().map_err(&err)?;
            let data = at + BLOCK;
            let flag = header.typeflag();
            let meta_size = || -> Result<u64, ReadError> {
                let size = header.size().map_err(&err)?;
                self.check_extent(at, data, size)?;
                Ok(size)
            };
            match flag {
                b'L' | b'K' => {
                    let size = meta_size()?;
                    if size > MAX_LONG_NAME {
                        return Err(err(format!("a GNU long name of {size} bytes is too long")));
                    }
                    let text = self.read(data, size, at)?;
                    let name = super::header::cstr(&text).to_vec();
                    self.pos = self.check_extent(at, data, size)?;
                    if flag == b'L' {
                        long_name = Some(name);
                    } else {
                        long_link = Some(name);
                    }
                }
                b'x' | b'X' | b'g' => {
                    let size = meta_size()?;
                    if size > MAX_PAX {
                        return Err(err(format!("a pax header of {size} bytes is too large")));
                    }
                    let records = pax::parse(&self.read(data, size, at)?).map_err(&err)?;
                    self.pos = self.check_extent(at, data, size)?;
                    if flag == b'g' {
                        self.merge_global(records).map_err(&err)?;
                    } else {
                        local.extend(records);
                    }
                }
                b'V' => {
                    let size = meta_size()?;
                    self.pos = self.check_extent(at, data, size)?;
                }
                b'M' | b'N' => {
                    return Err(err(format!(
                        "entry type {:?} (multi-volume or old GNU long names) is not supported",
                        flag as char
                    )))
                }
                _ => {
                    let entry = self.member(&header, at, first, long_name, long_link, &local)?;
                    return Ok(Some(entry));
                }
            }
        }
    }

    fn merge_global(&mut self, records: Records) -> Result<(), String> {
        for (key, value) in records {
            self.global.retain(|(k, _)| *k != key);
            self.global.push((key, value));
        }
        let total: usize = self.global.iter().map(|(k, v)| k.len() + v.len()).sum();
        if total as u64 > MAX_PAX {
            return Err("global pax headers grow too large".into());
        }
        Ok(())
    }

    /// Builds the member whose main header is `header` at `at`.
    fn member(
        &mut self,
        header: &Header,
        at: u64,
        first: u64,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
        local: &Records,
    ) -> Result<Entry, ReadError> {
        let err = format_err(at);
        let mut records = self.global.clone();
        records.extend(local.iter().cloned());
        let number = |key: &str| -> Result<Option<u64>, ReadError> {
            pax::get(&records, key)
                .map(|v| pax::decimal(key, v))
                .transpose()
                .map_err(&err)
        };
        let id = |value: u64, what: &str| {
            u32::try_from(value).map_err(|_| err(format!("{what} {value} does not fit 32 bits")))
        };
        let size = match number("size")? {
            Some(s) => s,
            None => header.size().map_err(&err)?,
        };
        let uid = id(
            number("uid")?
                .map_or_else(|| header.uid(), Ok)
                .map_err(&err)?,
            "uid",
        )?;
        let gid = id(
            number("gid")?
                .map_or_else(|| header.gid(), Ok)
                .map_err(&err)?,
            "gid",
        )?;
        let mtime = match pax::get(&records, "mtime") {
            Some(v) => pax::time(v).map_err(&err)?,
            None => header.mtime().map_err(&err)?,
        };
        let mode = (header.mode().map_err(&err)? & 0o7777) as u16;
        let mut path = pax::get(&records, "path")
            .map(<[u8]>::to_vec)
            .or(long_name)
            .unwrap_or_else(|| header.path());
        let link = pax::get(&records, "linkpath")
            .map(<[u8]>::to_vec)
            .or(long_link)
            .unwrap_or_else(|| header.link_name());
        let uname = pax::get(&records, "uname")
            .map(<[u8]>::to_vec)
            .or_else(|| header.uname());
        let gname = pax::get(&records, "gname")
            .map(<[u8]>::to_vec)
            .or_else(|| header.gname());
        let mut xattrs = Vec::new();
        for (key, value) in &records {
            if let Some(x) = pax::xattr(key, value).map_err(&err)? {
                xattrs.retain(|(n, _): &(Vec<u8>, Vec<u8>)| *n != x.0);
                xattrs.push(x);
            }
        }
        xattrs.sort();
        let device = |key: &str, field: Result<u64, String>| -> Result<u32, ReadError> {
            let value = number(key)?.map_or(field, Ok).map_err(&err)?;
            id(value, "device number")
        };

        let data = at + BLOCK;
        self.pos = self.check_extent(at, data, size)?;
        let flag = header.typeflag();
        let kind = match flag {
            b'0' | 0 | b'7' if flag == 0 && path.ends_with(b"/") => EntryKind::Directory,
            b'0' | 0 | b'7' => match sparse::from_pax(local).map_err(&err)? {
                None => EntryKind::File {
                    size,
                    data: Data::At(data),
                },
                Some(PaxSparse::InHeader(map)) => {
                    map.validate(size, self.limit).map_err(&err)?;
                    EntryKind::File {
                        size: map.real_size,
                        data: Data::Sparse { map, at: data },
                    }
                }
                Some(PaxSparse::InData { real_size }) => {
                    let archive = Arc::clone(&self.archive);
                    let mut read = |offset: u64, n: usize| {
                        let mut buf = vec![0u8; n];
                        archive
                            .file()
                            .read_exact_at(&mut buf, data + offset)
                            .map_err(|e| e.to_string())?;
                        Ok(buf)
                    };
                    let (map, used) =
                        sparse::map_in_data(real_size, size, &mut read).map_err(&err)?;
                    map.validate(size - used, self.limit).map_err(&err)?;
                    EntryKind::File {
                        size: map.real_size,
                        data: Data::Sparse {
                            map,
                            at: data + used,
                        },
                    }
                }
            },
            b'S' => {
                let archive = Arc::clone(&self.archive);
                let end = self.end;
                let mut next_block = |i: u64| -> Result<[u8; BLOCK as usize], String> {
                    let block_at = data + i * BLOCK;
                    if block_at + BLOCK > end {
                        return Err("sparse extension headers run past the archive".into());
                    }
                    let mut block = [0u8; BLOCK as usize];
                    archive
                        .file()
                        .read_exact_at(&mut block, block_at)
                        .map_err(|e| e.to_string())?;
                    Ok(block)
                };
                let (map, blocks) = sparse::old_gnu(header, &mut next_block).map_err(&err)?;
                let stored_at = data + blocks * BLOCK;
                self.pos = self.check_extent(at, stored_at, size)?;
                map.validate(size, self.limit).map_err(&err)?;
                EntryKind::File {
                    size: map.real_size,
                    data: Data::Sparse { map, at: stored_at },
                }
            }
            b'1' => EntryKind::HardLink(link),
            b'2' => EntryKind::Symlink(link),
            b'3' => EntryKind::CharDevice(
                device("SCHILY.devmajor", header.dev_major())?,
                device("SCHILY.devminor", header.dev_minor())?,
            ),
            b'4' => EntryKind::BlockDevice(
                device("SCHILY.devmajor", header.dev_major())?,
                device("SCHILY.devminor", header.dev_minor())?,
            ),
            b'5' | b'D' => EntryKind::Directory,
            b'6' => EntryKind::Fifo,
            other => {
                return Err(err(format!(
                    "entry type {:?} is not supported",
                    char::from(other)
                )))
            }
        };
        if let EntryKind::File {
            data: Data::Sparse { .. },
            ..
        } = &kind
        {
            if let Some(name) = pax::get(local, "GNU.sparse.name") {
                path = name.to_vec();
            }
        }
        Ok(Entry {
            offset: first,
            path,
            kind,
            mode,
            uid,
            gid,
            uname,
            gname,
            mtime,
            xattrs,
        })
    }
}
