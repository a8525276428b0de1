//! Reads a VMDK of any of our three forms (and qemu-img's or VMware's) as the virtual disk it
//! holds, through [`ReadAt`]. The input is untrusted: table sizes and the capacity are bounded
//! before anything is allocated, every pointer is checked against the end of its file, a
//! compressed grain's length is bounded and it must inflate to exactly what the disk needs.
//!
//! Forms: a file starting with `KDMV` (monolithicSparse, streamOptimized, or one sparse
//! extent), or a text descriptor whose extents are FLAT, VMFS, ZERO or SPARSE files named
//! relative to it (absolute names and `..` are refused).

use std::fs::File;
use std::path::{Component, Path, PathBuf};

use crate::image_io::{block_device_or_file_size, ReadAt};

use super::descriptor::{self, Descriptor, MAX_DESCRIPTOR_BYTES};
use super::extent::{read_exact, SparseExtent, MAX_CAPACITY_SECTORS};
use super::header::SparseHeader;
use super::source::file_data_ranges;
use super::{VmdkError, SECTOR};

/// A VMDK opened for reading.
pub struct VmdkReader {
    path: PathBuf,
    descriptor: Option<Descriptor>,
    header: Option<SparseHeader>,
    capacity: u64,
    extents: Vec<Extent>,
}

struct Extent {
    start: u64,
    len: u64,
    backing: Backing,
}

enum Backing {
    Zero,
    Flat {
        file: File,
        path: PathBuf,
        offset: u64,
    },
    Sparse(Box<SparseExtent>),
}

impl VmdkReader {
    /// Opens the VMDK at `path` (a sparse file or a descriptor).
    pub fn open(path: &Path) -> Result<VmdkReader, VmdkError> {
        let file = open_image_file(path)?;
        let file_len = block_device_or_file_size(&file).map_err(|source| VmdkError::Io {
            what: "get the size of",
            path: path.to_path_buf(),
            source,
        })?;
        let mut magic = [0u8; 4];
        if file_len >= 512 {
            read_exact(&file, path, &mut magic, 0)?;
        }
        if &magic == b"KDMV" {
            let (sparse, header, text) = SparseExtent::open(file, path, file_len)?;
            let descriptor =
                match text {
                    Some(t) => Some(descriptor::parse(&t).map_err(|(line, reason)| {
                        VmdkError::Descriptor {
                            path: path.to_path_buf(),
                            line,
                            reason,
                        }
                    })?),
                    None => None,
                };
            let capacity = sparse.capacity;
            return Ok(VmdkReader {
                path: path.to_path_buf(),
                descriptor,
                header: Some(header),
                capacity,
                extents: vec![Extent {
                    start: 0,
                    len: capacity,
                    backing: Backing::Sparse(Box::new(sparse)),
                }],
            });
        }
        if &magic == b"COWD" {
            return Err(VmdkError::Unsupported {
                path: path.to_path_buf(),
                reason: "ESX vmfsSparse (COWD) extents".into(),
            });
        }
        Self::open_descriptor(path, &file, file_len)
    }

    fn open_descriptor(path: &Path, file: &File, file_len: u64) -> Result<VmdkReader, VmdkError> {
        let derr = |line, reason: String| VmdkError::Descriptor {
            path: path.to_path_buf(),
            line,
            reason,
        };
        if file_len > MAX_DESCRIPTOR_BYTES as u64 {
            return Err(derr(
                0,
                format!("no KDMV magic, and {file_len} bytes is too long for a descriptor"),
            ));
        }
        let mut raw = vec![0u8; file_len as usize];
        read_exact(file, path, &mut raw, 0)?;
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        let text = std::str::from_utf8(&raw[..end])
            .map_err(|e| derr(0, format!("not UTF-8 text (byte {})", e.valid_up_to())))?;
        let d = descriptor::parse(text).map_err(|(line, reason)| derr(line, reason))?;
        if d.extents.is_empty() {
            return Err(derr(0, "no extents".into()));
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut extents = Vec::with_capacity(d.extents.len());
        let mut start: u64 = 0;
        for (i, e) in d.extents.iter().enumerate() {
            let ebad = |reason: String| derr(0, format!("extent {}: {reason}", i + 1));
            let len = e
                .sectors
                .checked_mul(SECTOR)
                .filter(|_| {
                    start / SECTOR + e.sectors <= MAX_CAPACITY_SECTORS
                        && e.sectors <= MAX_CAPACITY_SECTORS
                })
                .ok_or_else(|| ebad("the disk would exceed 64 TiB".into()))?;
            let backing = match e.kind.as_str() {
                "ZERO" => Backing::Zero,
                "FLAT" | "VMFS" | "SPARSE" => {
                    let name = e.file.as_deref().unwrap_or("");
                    let epath = dir.join(safe_extent_name(name).map_err(ebad)?);
                    let f = open_image_file(&epath)?;
                    let flen = block_device_or_file_size(&f).map_err(|source| VmdkError::Io {
                        what: "get the size of",
                        path: epath.clone(),
                        source,
                    })?;
                    if e.kind == "SPARSE" {
                        let (s, _, _) = SparseExtent::open(f, &epath, flen)?;
                        if s.capacity < len {
                            return Err(ebad(format!(
                                "{name} holds {} bytes, the descriptor says {len}",
                                s.capacity
                            )));
                        }
                        Backing::Sparse(Box::new(s))
                    } else {
                        let need = e
                            .offset
                            .checked_mul(SECTOR)
                            .and_then(|o| o.checked_add(len))
                            .ok_or_else(|| ebad("offset out of range".into()))?;
                        if flen < need {
                            return Err(ebad(format!(
                                "{name} holds {flen} bytes, the descriptor needs {need}"
                            )));
                        }
                        Backing::Flat {
                            file: f,
                            path: epath,
                            offset: e.offset * SECTOR,
                        }
                    }
                }
                other => {
                    return Err(VmdkError::Unsupported {
                        path: path.to_path_buf(),
                        reason: format!("extent type {other}"),
                    })
                }
            };
            if len > 0 {
                extents.push(Extent {
                    start,
                    len,
                    backing,
                });
            }
            start += len;
        }
        Ok(VmdkReader {
            path: path.to_path_buf(),
            descriptor: Some(d),
            header: None,
            capacity: start,
            extents,
        })
    }

    /// The file opened.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Virtual disk size in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The descriptor (embedded or the file itself), if any.
    pub fn descriptor(&self) -> Option<&Descriptor> {
        self.descriptor.as_ref()
    }

    /// `createType` from the descriptor ("" if none).
    pub fn create_type(&self) -> &str {
        self.descriptor
            .as_ref()
            .map_or("", |d| d.create_type.as_str())
    }

    /// The sparse header in effect (the footer's, for a stream), for a `KDMV` file.
    pub fn sparse_header(&self) -> Option<&SparseHeader> {
        self.header.as_ref()
    }

    /// Byte ranges `(start, end)` of the virtual disk that are allocated; the rest reads as
    /// zeros. Lets a verifier skip the empty part of a large disk.
    pub fn allocated_ranges(&self) -> Result<Vec<(u64, u64)>, VmdkError> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut push = |s: u64, e: u64| match out.last_mut() {
            Some(last) if last.1 >= s => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        };
        for ext in &self.extents {
            match &ext.backing {
                Backing::Zero => {}
                Backing::Flat { file, path, offset } => {
                    let ranges = file_data_ranges(file, offset + ext.len).map_err(|source| {
                        VmdkError::Io {
                            what: "find the data of",
                            path: path.clone(),
                            source,
                        }
                    })?;
                    for (s, e) in ranges {
                        let (s, e) = (s.max(*offset), e);
                        if s < e {
                            push(ext.start + s - offset, ext.start + e - offset);
                        }
                    }
                }
                Backing::Sparse(sp) => {
                    for (s, e) in sp.allocated(ext.len)? {
                        push(ext.start + s, ext.start + e);
                    }
                }
            }
        }
        Ok(out)
    }

    fn read_extent(&self, ext: &Extent, buf: &mut [u8], rel: u64) -> Result<usize, VmdkError> {
        let n = (buf.len() as u64).min(ext.len - rel) as usize;
        match &ext.backing {
            Backing::Zero => {
                buf[..n].fill(0);
                Ok(n)
            }
            Backing::Flat { file, path, offset } => {
                read_exact(file, path, &mut buf[..n], offset + rel)?;
                Ok(n)
            }
            Backing::Sparse(sp) => sp.read(&mut buf[..n], rel),
        }
    }
}

impl ReadAt for VmdkReader {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        if offset >= self.capacity || buf.is_empty() {
            return Ok(0);
        }
        let i = self.extents.partition_point(|e| e.start + e.len <= offset);
        let Some(ext) = self.extents.get(i) else {
            return Ok(0);
        };
        Ok(self.read_extent(ext, buf, offset - ext.start)?)
    }

    fn size(&self) -> std::io::Result<u64> {
        Ok(self.capacity)
    }
}

/// Opens a regular file or block device; anything else (a FIFO would block forever) is
/// refused before opening.
fn open_image_file(path: &Path) -> Result<File, VmdkError> {
    use std::os::unix::fs::FileTypeExt;
    let io = |source| VmdkError::Io {
        what: "open",
        path: path.to_path_buf(),
        source,
    };
    let ft = std::fs::metadata(path).map_err(io)?.file_type();
    if !ft.is_file() && !ft.is_block_device() {
        return Err(VmdkError::Unsupported {
            path: path.to_path_buf(),
            reason: "not a regular file or block device".into(),
        });
    }
    File::open(path).map_err(io)
}

/// An extent name must stay inside the descriptor's directory.
fn safe_extent_name(name: &str) -> Result<&Path, String> {
    let p = Path::new(name);
    if name.is_empty() || name.contains('\0') {
        return Err("empty extent file name".into());
    }
    if !p
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "extent file {name:?} is absolute or leaves the descriptor's directory"
        ));
    }
    Ok(p)
}
