//! GNU sparse files: the maps of old GNU `S` headers and of pax formats 0.0, 0.1 and 1.0, and the
//! spool in which a sparse member is laid out at its real offsets (holes stay holes), so that it
//! can be referenced like any other content.

use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::header::{number, Header, BLOCK};
use super::pax::{self, Records};
use crate::tree::ArchiveFile;

/// Most segments accepted in one map; real maps have a handful, hostile ones millions.
const MAX_SEGMENTS: usize = 1 << 20;

/// Alignment of files in the sparse spool, so their holes fall on filesystem block boundaries.
const ALIGN: u64 = 1 << 16;

/// Where the data of a sparse file goes: `(offset, length)` pairs, and the full size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SparseMap {
    /// Size of the file with its holes.
    pub real_size: u64,
    /// Data segments in file order; the stored data is their concatenation.
    pub segments: Vec<(u64, u64)>,
}

impl SparseMap {
    /// Checks that the segments are ordered, inside the file, and add up to `stored` bytes.
    pub fn validate(&self, stored: u64, limit: u64) -> Result<(), String> {
        if self.real_size > limit {
            return Err(format!(
                "sparse file of {} bytes exceeds the limit of {limit} bytes (raise {} if the \
                 input is genuine)",
                self.real_size,
                crate::sources::compression::MAX_EXPANDED_ENV
            ));
        }
        let mut end = 0u64;
        let mut total = 0u64;
        for &(offset, len) in &self.segments {
            let seg_end = offset
                .checked_add(len)
                .filter(|e| *e <= self.real_size)
                .ok_or_else(|| {
                    format!(
                        "sparse segment {offset}+{len} lies beyond the file size {}",
                        self.real_size
                    )
                })?;
            if offset < end {
                return Err(format!(
                    "sparse segment at {offset} overlaps the previous one"
                ));
            }
            end = seg_end;
            total = total.checked_add(len).ok_or("sparse map overflows")?;
        }
        if total != stored {
            return Err(format!(
                "sparse map describes {total} bytes of data but the member stores {stored}"
            ));
        }
        Ok(())
    }
}

/// Reads 512-byte blocks at increasing offsets (the extension blocks after an old GNU header).
pub(crate) type BlockSource<'a> = dyn FnMut(u64) -> Result<[u8; BLOCK as usize], String> + 'a;

/// The map of an old GNU `S` header, reading extension blocks from `next_block` (called with
/// their index). Returns the map and how many extension blocks were consumed.
pub(crate) fn old_gnu(
    header: &Header,
    next_block: &mut BlockSource<'_>,
) -> Result<(SparseMap, u64), String> {
    let real_size = field(&header.0[483..495], "realsize")?;
    let mut segments = Vec::new();
    push_entries(&header.0[386..482], &mut segments)?;
    let mut extended = header.0[482] != 0;
    let mut blocks = 0u64;
    while extended {
        if segments.len() > MAX_SEGMENTS {
            return Err(format!("sparse map has more than {MAX_SEGMENTS} segments"));
        }
        let block = next_block(blocks)?;
        blocks += 1;
        push_entries(&block[..504], &mut segments)?;
        extended = block[504] != 0;
    }
    Ok((
        SparseMap {
            real_size,
            segments,
        },
        blocks,
    ))
}

fn push_entries(area: &[u8], segments: &mut Vec<(u64, u64)>) -> Result<(), String> {
    for entry in area.chunks_exact(24) {
        if entry.iter().all(|&b| b == 0) {
            break;
        }
        let offset = field(&entry[..12], "sparse offset")?;
        let len = field(&entry[12..], "sparse length")?;
        segments.push((offset, len));
    }
    Ok(())
}

fn field(raw: &[u8], name: &str) -> Result<u64, String> {
    number(raw)
        .ok()
        .and_then(|v| u64::try_from(v).ok())
        .ok_or_else(|| format!("bad {name} field in a sparse header"))
}

/// The sparse format a pax header announces, if any.
pub(crate) enum PaxSparse {
    /// 0.0 or 0.1: the map is in the pax records.
    InHeader(SparseMap),
    /// 1.0: the map starts the member's data; only the real size is in the header.
    InData {
        /// Size of the file with its holes.
        real_size: u64,
    },
}

/// Detects GNU sparse records in a pax header.
pub(crate) fn from_pax(records: &Records) -> Result<Option<PaxSparse>, String> {
    let size = |key: &str| -> Result<Option<u64>, String> {
        pax::get(records, key)
            .map(|v| pax::decimal(key, v))
            .transpose()
    };
    if pax::get(records, "GNU.sparse.major").is_some() {
        let major = size("GNU.sparse.major")?;
        let minor = size("GNU.sparse.minor")?;
        if (major, minor) != (Some(1), Some(0)) {
            return Err(format!(
                "GNU sparse format {major:?}.{minor:?} is not supported (only 0.0, 0.1, 1.0)"
            ));
        }
        let real_size = size("GNU.sparse.realsize")?
            .ok_or("GNU sparse 1.0 header without GNU.sparse.realsize")?;
        return Ok(Some(PaxSparse::InData { real_size }));
    }
    let Some(real_size) = size("GNU.sparse.size")?.or(size("GNU.sparse.realsize")?) else {
        return Ok(None);
    };
    let mut segments = Vec::new();
    if let Some(map) = pax::get(records, "GNU.sparse.map") {
        // 0.1: "offset,length,offset,length,…"
        let text = std::str::from_utf8(map).map_err(|_| "GNU.sparse.map is not text")?;
        let numbers: Vec<&str> = if text.is_empty() {
            Vec::new()
        } else {
            text.split(',').collect()
        };
        if numbers.len() % 2 != 0 || numbers.len() / 2 > MAX_SEGMENTS {
            return Err("GNU.sparse.map has a bad number of entries".into());
        }
        for pair in numbers.chunks_exact(2) {
            let parse = |s: &str| {
                s.parse::<u64>()
                    .map_err(|_| format!("GNU.sparse.map entry {s:?} is not a number"))
            };
            segments.push((parse(pair[0])?, parse(pair[1])?));
        }
    } else {
        // 0.0: repeated GNU.sparse.offset / GNU.sparse.numbytes records, in order.
        let mut offset = None;
        for (key, value) in records {
            match key.as_str() {
                "GNU.sparse.offset" => offset = Some(pax::decimal(key, value)?),
                "GNU.sparse.numbytes" => {
                    let o = offset
                        .take()
                        .ok_or("GNU.sparse.numbytes without an offset")?;
                    segments.push((o, pax::decimal(key, value)?));
                    if segments.len() > MAX_SEGMENTS {
                        return Err(format!("sparse map has more than {MAX_SEGMENTS} segments"));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(Some(PaxSparse::InHeader(SparseMap {
        real_size,
        segments,
    })))
}

/// Parses the 1.0 map at the start of a member's data: decimal lines (count, then offset and
/// length pairs), padded to a block. `read` reads `n` bytes at a data offset. Returns the map and
/// the bytes it occupies (a multiple of 512).
pub(crate) fn map_in_data(
    real_size: u64,
    data_size: u64,
    read: &mut dyn FnMut(u64, usize) -> Result<Vec<u8>, String>,
) -> Result<(SparseMap, u64), String> {
    let mut text: Vec<u8> = Vec::new();
    let mut numbers: Vec<u64> = Vec::new();
    let mut consumed = 0u64;
    let mut pos_in_text = 0;
    let mut wanted: Option<usize> = None;
    loop {
        if let Some(w) = wanted {
            if numbers.len() == 1 + 2 * w {
                break;
            }
        }
        // Parse whole lines already read.
        if let Some(nl) = text[pos_in_text..].iter().position(|&b| b == b'\n') {
            let line = &text[pos_in_text..pos_in_text + nl];
            let n: u64 = std::str::from_utf8(line)
                .ok()
                .filter(|s| s.len() <= 20)
                .and_then(|s| s.parse().ok())
                .ok_or("the sparse map in the member data is not decimal lines")?;
            numbers.push(n);
            pos_in_text += nl + 1;
            if numbers.len() == 1 {
                let count = usize::try_from(n).unwrap_or(usize::MAX);
                if count > MAX_SEGMENTS {
                    return Err(format!("sparse map has more than {MAX_SEGMENTS} segments"));
                }
                wanted = Some(count);
            }
            continue;
        }
        if text.len() - pos_in_text > 20 {
            return Err("the sparse map in the member data has an overlong line".into());
        }
        if consumed + BLOCK > data_size {
            return Err("the sparse map runs past the member data".into());
        }
        text.extend(read(consumed, BLOCK as usize)?);
        consumed += BLOCK;
    }
    let segments = numbers[1..].chunks_exact(2).map(|p| (p[0], p[1])).collect();
    Ok((
        SparseMap {
            real_size,
            segments,
        },
        consumed,
    ))
}

/// A spool file holding sparse members laid out with their holes.
pub(crate) struct SparseSpool {
    archive: Arc<ArchiveFile>,
    end: u64,
}

impl SparseSpool {
    /// A new, empty spool.
    pub fn new(label: String) -> io::Result<SparseSpool> {
        Ok(SparseSpool {
            archive: Arc::new(ArchiveFile::new(label, tempfile::tempfile()?)),
            end: 0,
        })
    }

    /// Copies the stored data at `data` in `source` to its place; returns the spool and the
    /// offset at which the file starts.
    pub fn add(
        &mut self,
        source: &ArchiveFile,
        data: u64,
        map: &SparseMap,
    ) -> io::Result<(Arc<ArchiveFile>, u64)> {
        let base = self
            .end
            .checked_next_multiple_of(ALIGN)
            .ok_or_else(|| io::Error::other("sparse spool offset overflows"))?;
        let file = self.archive.file();
        let mut buf = vec![0u8; 1 << 20];
        let mut from = data;
        for &(offset, len) in &map.segments {
            let mut done = 0u64;
            while done < len {
                let n = buf.len().min((len - done) as usize);
                source.file().read_exact_at(&mut buf[..n], from)?;
                crate::sources::compression::write_sparse(file, &buf[..n], base + offset + done)?;
                from += n as u64;
                done += n as u64;
            }
        }
        self.end = base
            .checked_add(map.real_size)
            .ok_or_else(|| io::Error::other("sparse spool size overflows"))?;
        if file.metadata()?.len() < self.end {
            file.set_len(self.end)?;
        }
        Ok((Arc::clone(&self.archive), base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        let m = SparseMap {
            real_size: 100,
            segments: vec![(0, 10), (50, 10), (100, 0)],
        };
        m.validate(20, 1000).unwrap();
        assert!(m.validate(21, 1000).is_err());
        assert!(m.validate(20, 99).is_err());
        let overlap = SparseMap {
            real_size: 100,
            segments: vec![(0, 10), (5, 10)],
        };
        assert!(overlap.validate(20, 1000).is_err());
        let beyond = SparseMap {
            real_size: 100,
            segments: vec![(95, 10)],
        };
        assert!(beyond.validate(10, 1000).is_err());
        let wrap = SparseMap {
            real_size: u64::MAX,
            segments: vec![(u64::MAX - 1, 10)],
        };
        assert!(wrap.validate(10, u64::MAX).is_err());
    }

    #[test]
    fn map_in_data_spans_blocks() {
        let mut text = b"3\n".to_vec();
        for i in 0..3u64 {
            text.extend(format!("{}\n{}\n", i * 100_000_000_000, 4096).bytes());
        }
        text.resize(1024, 0);
        let mut read = |at: u64, n: usize| Ok(text[at as usize..at as usize + n].to_vec());
        let (m, used) = map_in_data(1 << 40, 1024 + 3 * 4096, &mut read).unwrap();
        assert_eq!(used, 512);
        assert_eq!(m.segments.len(), 3);
        assert_eq!(m.segments[2], (200_000_000_000, 4096));
        let mut junk = |_: u64, _: usize| Ok(vec![b'x'; 512]);
        assert!(map_in_data(1, 4096, &mut junk).is_err());
        let mut endless = |_: u64, _: usize| Ok(vec![b'9'; 512]);
        assert!(map_in_data(1, 4096, &mut endless).is_err());
    }
}
