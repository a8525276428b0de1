//! The binary structures of an RPM file: the 96-byte lead, and header blocks (magic, index
//! entries, data store) used for both the signature header and the main header.
//!
//! All integers are big-endian. Every index entry is checked against the store before its data
//! is read, so a hostile header yields an error, never an out-of-bounds read or a huge allocation.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// Size of the lead.
pub(crate) const LEAD_SIZE: u64 = 96;
const LEAD_MAGIC: [u8; 4] = [0xed, 0xab, 0xee, 0xdb];
const HEADER_MAGIC: [u8; 4] = [0x8e, 0xad, 0xe8, 0x01];
/// rpm's own bounds (`hdrblobVerifyInfo`): index entries and store size.
const MAX_ENTRIES: u32 = 0xffff;
const MAX_STORE: u32 = 256 << 20;
/// Most strings read from one tag. An empty string is one byte of the store and 24 bytes of
/// `Vec` here: without this bound a 256 MiB store of NULs would become 6 GiB. The largest
/// packages list a few ten thousand files.
const MAX_STRINGS: u32 = 1 << 20;

/// Index entry data types.
mod ty {
    pub const INT16: u32 = 3;
    pub const INT32: u32 = 4;
    pub const INT64: u32 = 5;
    pub const STRING: u32 = 6;
    pub const STRING_ARRAY: u32 = 8;
    pub const I18NSTRING: u32 = 9;
}

/// A problem at a byte offset of the file.
#[derive(Debug)]
pub(crate) struct At {
    /// Offset in the package file.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

fn at(offset: u64, reason: impl Into<String>) -> At {
    At {
        offset,
        reason: reason.into(),
    }
}

fn read_exact(file: &File, buf: &mut [u8], offset: u64, what: &str) -> Result<(), At> {
    file.read_exact_at(buf, offset)
        .map_err(|e| at(offset, format!("cannot read the {what}: {e}")))
}

/// Checks the lead; returns the package format version from its major number (3 for v4
/// packages, 4 for v6).
pub(crate) fn read_lead(file: &File) -> Result<u8, At> {
    let mut lead = [0u8; LEAD_SIZE as usize];
    read_exact(
        file,
        &mut lead,
        0,
        "lead (the file is shorter than 96 bytes)",
    )?;
    if lead[..4] != LEAD_MAGIC {
        return Err(at(0, "not an RPM package (bad lead magic)"));
    }
    match lead[4] {
        3 | 4 => Ok(lead[4]),
        v => Err(at(
            4,
            format!("RPM lead version {v} is not supported (only 3 and 4)"),
        )),
    }
}

#[derive(Debug, Clone, Copy)]
struct IndexEntry {
    ty: u32,
    offset: u32,
    count: u32,
    /// Offset of the entry itself in the file, for messages.
    at: u64,
}

/// One header block: its index and data store.
#[derive(Debug)]
pub(crate) struct HeaderBlock {
    entries: HashMap<u32, IndexEntry>,
    store: Vec<u8>,
    store_at: u64,
}

impl HeaderBlock {
    /// Reads the header block at `offset` of a file of `file_len` bytes; returns it and the
    /// offset just after it.
    pub fn read(file: &File, offset: u64, file_len: u64) -> Result<(HeaderBlock, u64), At> {
        let mut intro = [0u8; 16];
        read_exact(file, &mut intro, offset, "header (truncated package?)")?;
        if intro[..4] != HEADER_MAGIC {
            return Err(at(offset, "bad header magic"));
        }
        let count = be32(&intro[8..12]);
        let store_len = be32(&intro[12..16]);
        if count == 0 || count > MAX_ENTRIES {
            return Err(at(offset, format!("{count} index entries is out of range")));
        }
        if store_len > MAX_STORE {
            return Err(at(
                offset,
                format!("a data store of {store_len} bytes is too large"),
            ));
        }
        let index_at = offset + 16;
        let store_at = index_at + 16 * u64::from(count);
        let end = store_at + u64::from(store_len);
        if end > file_len {
            return Err(at(
                offset,
                format!(
                    "the header claims {} bytes but the file ends at {file_len}",
                    end - offset
                ),
            ));
        }
        let mut index = vec![0u8; 16 * count as usize];
        read_exact(file, &mut index, index_at, "header index")?;
        let mut store = vec![0u8; store_len as usize];
        read_exact(file, &mut store, store_at, "header store")?;
        let mut entries = HashMap::with_capacity(count as usize);
        for (i, raw) in index.chunks_exact(16).enumerate() {
            let entry = IndexEntry {
                ty: be32(&raw[4..8]),
                offset: be32(&raw[8..12]),
                count: be32(&raw[12..16]),
                at: index_at + 16 * i as u64,
            };
            entries.insert(be32(&raw[..4]), entry);
        }
        Ok((
            HeaderBlock {
                entries,
                store,
                store_at,
            },
            end,
        ))
    }

    /// True when `tag` is present.
    pub fn has(&self, tag: u32) -> bool {
        self.entries.contains_key(&tag)
    }

    /// The bytes of `tag`'s fixed-size data, checked against the store.
    fn fixed(&self, tag: u32, types: &[u32], size: usize) -> Result<Option<(&[u8], usize)>, At> {
        let Some(e) = self.entries.get(&tag) else {
            return Ok(None);
        };
        if !types.contains(&e.ty) {
            return Err(at(
                e.at,
                format!("tag {tag} has type {} (expected {types:?})", e.ty),
            ));
        }
        let start = e.offset as usize;
        let len = (e.count as usize)
            .checked_mul(size)
            .and_then(|l| l.checked_add(start))
            .filter(|end| *end <= self.store.len())
            .ok_or_else(|| {
                at(
                    e.at,
                    format!("tag {tag}: {} values run past the store", e.count),
                )
            })?;
        Ok(Some((&self.store[start..len], e.count as usize)))
    }

    /// An INT16 array.
    pub fn u16s(&self, tag: u32) -> Result<Option<Vec<u16>>, At> {
        Ok(self.fixed(tag, &[ty::INT16], 2)?.map(|(raw, _)| {
            raw.chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect()
        }))
    }

    /// An INT32 array.
    pub fn u32s(&self, tag: u32) -> Result<Option<Vec<u32>>, At> {
        Ok(self
            .fixed(tag, &[ty::INT32], 4)?
            .map(|(raw, _)| raw.chunks_exact(4).map(be32).collect()))
    }

    /// An INT64 array.
    pub fn u64s(&self, tag: u32) -> Result<Option<Vec<u64>>, At> {
        Ok(self.fixed(tag, &[ty::INT64], 8)?.map(|(raw, _)| {
            raw.chunks_exact(8)
                .map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    u64::from_be_bytes(b)
                })
                .collect()
        }))
    }

    /// A STRING, STRING_ARRAY or I18NSTRING as a list of strings (without NULs).
    pub fn strings(&self, tag: u32) -> Result<Option<Vec<Vec<u8>>>, At> {
        let Some(e) = self.entries.get(&tag) else {
            return Ok(None);
        };
        if ![ty::STRING, ty::STRING_ARRAY, ty::I18NSTRING].contains(&e.ty) {
            return Err(at(
                e.at,
                format!("tag {tag} has type {}, not a string", e.ty),
            ));
        }
        if e.ty == ty::STRING && e.count != 1 {
            return Err(at(
                e.at,
                format!("tag {tag}: a STRING with count {}", e.count),
            ));
        }
        // Each string takes at least one byte: a count beyond the store is a lie.
        if e.count as usize > self.store.len() || e.count > MAX_STRINGS {
            return Err(at(
                e.at,
                format!(
                    "tag {tag}: {} strings cannot fit (the store holds {} bytes; at most \
                     {MAX_STRINGS} strings are read)",
                    e.count,
                    self.store.len()
                ),
            ));
        }
        let mut out = Vec::with_capacity(e.count as usize);
        let mut pos = e.offset as usize;
        for _ in 0..e.count {
            let rest = self
                .store
                .get(pos..)
                .ok_or_else(|| at(e.at, format!("tag {tag}: string offset past the store")))?;
            let len = rest.iter().position(|&b| b == 0).ok_or_else(|| {
                at(
                    self.store_at + pos as u64,
                    format!("tag {tag}: string not terminated inside the store"),
                )
            })?;
            out.push(rest[..len].to_vec());
            pos += len + 1;
        }
        Ok(Some(out))
    }

    /// The first string of a string tag.
    pub fn string(&self, tag: u32) -> Result<Option<String>, At> {
        Ok(self
            .strings(tag)?
            .and_then(|s| s.into_iter().next())
            .map(|s| String::from_utf8_lossy(&s).into_owned()))
    }
}

fn be32(raw: &[u8]) -> u32 {
    u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn block(entries: &[(u32, u32, u32, u32)], store: &[u8]) -> Vec<u8> {
        let mut b = HEADER_MAGIC.to_vec();
        b.extend([0; 4]);
        b.extend((entries.len() as u32).to_be_bytes());
        b.extend((store.len() as u32).to_be_bytes());
        for (tag, t, off, count) in entries {
            for v in [tag, t, off, count] {
                b.extend(v.to_be_bytes());
            }
        }
        b.extend(store);
        b
    }

    fn file_of(bytes: &[u8]) -> (File, u64) {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        (f, bytes.len() as u64)
    }

    #[test]
    fn reads_typed_values() {
        let store = b"abc\0de\0\0\0\x01\0\x02\0\0\0\0\0\0\0\x05";
        let b = block(
            &[
                (1000, ty::STRING, 0, 1),
                (1001, ty::STRING_ARRAY, 0, 2),
                (1002, ty::INT16, 8, 2),
                (1003, ty::INT64, 12, 1),
            ],
            store,
        );
        let (f, len) = file_of(&b);
        let (h, end) = HeaderBlock::read(&f, 0, len).unwrap();
        assert_eq!(end, len);
        assert_eq!(h.string(1000).unwrap().unwrap(), "abc");
        assert_eq!(
            h.strings(1001).unwrap().unwrap(),
            vec![b"abc".to_vec(), b"de".to_vec()]
        );
        assert_eq!(h.u16s(1002).unwrap().unwrap(), vec![1, 2]);
        assert_eq!(h.u64s(1003).unwrap().unwrap(), vec![5]);
        assert!(h.u32s(1000).is_err());
        assert!(h.u32s(9999).unwrap().is_none());
    }

    #[test]
    fn hostile_indexes_are_errors() {
        let cases = [
            block(&[(1000, ty::STRING, 0, 1)], b"abc"),
            block(&[(1000, ty::INT32, 2, 1)], b"abcd"),
            block(&[(1000, ty::INT32, 0, u32::MAX)], b"abcd"),
            block(&[(1000, ty::STRING_ARRAY, 0, 1_000_000)], b"a\0"),
            block(&[(1000, ty::STRING, 99, 1)], b"a\0"),
        ];
        for (i, b) in cases.iter().enumerate() {
            let (f, len) = file_of(b);
            let (h, _) = HeaderBlock::read(&f, 0, len).unwrap();
            let bad = h.strings(1000).err().or(h.u32s(1000).err());
            assert!(bad.is_some(), "case {i}");
        }
        // More strings than any package has, each one NUL of a real store.
        let nuls = vec![0u8; MAX_STRINGS as usize + 1];
        let b = block(&[(1000, ty::STRING_ARRAY, 0, MAX_STRINGS + 1)], &nuls);
        let (f, len) = file_of(&b);
        let (h, _) = HeaderBlock::read(&f, 0, len).unwrap();
        let e = h.strings(1000).unwrap_err();
        assert!(e.reason.contains("strings cannot fit"), "{}", e.reason);
        let mut huge = block(&[(1000, ty::STRING, 0, 1)], b"a\0");
        huge[12..16].copy_from_slice(&(300u32 << 20).to_be_bytes());
        let (f, len) = file_of(&huge);
        assert!(HeaderBlock::read(&f, 0, len).is_err());
        let mut short = block(&[(1000, ty::STRING, 0, 1)], b"a\0");
        short.truncate(short.len() - 1);
        let (f, len) = file_of(&short);
        let e = HeaderBlock::read(&f, 0, len).unwrap_err();
        assert!(e.reason.contains("file ends"), "{}", e.reason);
    }
}
