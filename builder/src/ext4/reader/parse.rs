//! Parsing inodes, directory blocks and extended attributes from raw bytes, checking every
//! field that an offset or length is derived from.

use super::{Ext4ReadError, RawInode, Superblock};
use crate::ext4::checksum::{ext4_crc, inode_seed};
use crate::ext4::format::*;
use crate::ext4::inode::decode_time;
use crate::ext4::xattr::from_disk;

fn corrupt(what: impl Into<String>, offset: u64) -> Ext4ReadError {
    Ext4ReadError::Corrupt {
        what: what.into(),
        offset,
    }
}

/// Parses inode `ino` from its `buf` (inode_size bytes) read at `offset`.
pub fn inode(
    sb: &Superblock,
    ino: u32,
    buf: &[u8],
    offset: u64,
) -> Result<RawInode, Ext4ReadError> {
    let isz = buf.len();
    let mut area_start = isz;
    let mut extra = 0usize;
    if isz > GOOD_OLD_INODE_SIZE {
        extra = usize::from(le16(buf, 0x80));
        if GOOD_OLD_INODE_SIZE + extra > isz || extra % 4 != 0 {
            return Err(corrupt(
                format!("inode {ino} has i_extra_isize {extra}"),
                offset,
            ));
        }
        area_start = GOOD_OLD_INODE_SIZE + extra;
    }
    if let Some(seed) = sb.csum_seed {
        if buf.iter().any(|&b| b != 0) {
            let has_hi = extra >= 4;
            let mut copy = buf.to_vec();
            copy[0x7C..0x7E].fill(0);
            if has_hi {
                copy[0x82..0x84].fill(0);
            }
            let crc = ext4_crc(inode_seed(seed, ino, le32(buf, 0x64)), &copy);
            let stored = u32::from(le16(buf, 0x7C))
                | if has_hi {
                    u32::from(le16(buf, 0x82)) << 16
                } else {
                    0
                };
            let want = if has_hi { crc } else { crc & 0xFFFF };
            if stored != want {
                return Err(corrupt(
                    format!("inode {ino} checksum {stored:#x}, computed {want:#x}"),
                    offset,
                ));
            }
        }
    }
    let flags = le32(buf, 0x20);
    let mut sectors = u64::from(le32(buf, 0x1C));
    if sb.huge_file() {
        sectors |= u64::from(le16(buf, 0x74)) << 32;
        if flags & HUGE_FILE_FL != 0 {
            sectors = sectors.saturating_mul(sb.block_size / 512);
        }
    }
    let mut i_block = [0u8; 60];
    i_block.copy_from_slice(&buf[0x28..0x28 + 60]);
    let file_acl = u64::from(le32(buf, 0x68))
        | if sb.is_64bit() {
            u64::from(le16(buf, 0x76)) << 32
        } else {
            0
        };
    Ok(RawInode {
        ino,
        mode: le16(buf, 0x00),
        uid: u32::from(le16(buf, 0x02)) | u32::from(le16(buf, 0x78)) << 16,
        gid: u32::from(le16(buf, 0x18)) | u32::from(le16(buf, 0x7A)) << 16,
        size: u64::from(le32(buf, 0x04)) | u64::from(le32(buf, 0x6C)) << 32,
        links: le16(buf, 0x1A),
        flags,
        sectors,
        i_block,
        file_acl,
        mtime: decode_time(
            le32(buf, 0x10),
            if extra >= 12 { le32(buf, 0x88) } else { 0 },
        ),
        inline_xattr_area: buf[area_start..].to_vec(),
        offset,
    })
}

/// Appends the live entries (name, inode number) of one directory block; `.`, `..` and
/// empty slots are skipped.
pub fn dir_block(
    block: &[u8],
    block_size: u64,
    offset: u64,
    out: &mut Vec<(Vec<u8>, u32)>,
) -> Result<(), Ext4ReadError> {
    let mut pos = 0usize;
    while pos < block.len() {
        let at = offset + pos as u64;
        let head = block
            .get(pos..pos + 8)
            .ok_or_else(|| corrupt("directory entry crosses the block end", at))?;
        let ino = le32(head, 0);
        let mut rec = usize::from(le16(head, 4));
        if block_size == 65536 && (rec == 0 || rec == 65535) {
            rec = 65536;
        }
        let name_len = usize::from(head[6]);
        if rec < 8 || rec % 4 != 0 || pos + rec > block.len() || 8 + name_len > rec {
            return Err(corrupt(
                format!("directory entry with rec_len {rec}, name_len {name_len}"),
                at,
            ));
        }
        if ino != 0 && name_len > 0 {
            let name = &block[pos + 8..pos + 8 + name_len];
            if name.contains(&b'/') || name.contains(&0) {
                return Err(corrupt("directory entry name contains '/' or NUL", at));
            }
            if name != b"." && name != b".." {
                out.push((name.to_vec(), ino));
            }
        }
        pos += rec;
    }
    Ok(())
}

/// Appends the attributes in an entry table at `table` of `buf`, values at `base + e_value_offs`.
fn entries(
    buf: &[u8],
    table: usize,
    base: usize,
    offset: u64,
    out: &mut Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<(), Ext4ReadError> {
    let mut pos = table;
    loop {
        let at = offset + pos as u64;
        let Some(first) = buf.get(pos..pos + 4) else {
            return Err(corrupt("xattr entry table has no end", at));
        };
        if le32(first, 0) == 0 {
            return Ok(());
        }
        let head = buf
            .get(pos..pos + 16)
            .ok_or_else(|| corrupt("xattr entry crosses the end", at))?;
        let name_len = usize::from(head[0]);
        let index = head[1];
        let value_offs = usize::from(le16(head, 2));
        let value_inum = le32(head, 4);
        let value_size = le32(head, 8) as usize;
        if value_inum != 0 {
            return Err(Ext4ReadError::Unsupported(
                "xattr value stored in an inode".into(),
            ));
        }
        let name = buf
            .get(pos + 16..pos + 16 + name_len)
            .ok_or_else(|| corrupt("xattr name crosses the end", at))?;
        let value = if value_size == 0 {
            &[][..]
        } else {
            buf.get(base + value_offs..base + value_offs + value_size)
                .ok_or_else(|| {
                    corrupt(
                        format!("xattr value of {value_size} bytes at {value_offs} is outside"),
                        at,
                    )
                })?
        };
        let pair = from_disk(index, name, value).map_err(|e| corrupt(e, at))?;
        out.push(pair);
        pos += 16 + ((name_len + 3) & !3);
    }
}

/// Attributes stored after an inode's extra fields.
pub fn inline_xattrs(
    area: &[u8],
    offset: u64,
    out: &mut Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<(), Ext4ReadError> {
    if area.len() < 4 || le32(area, 0) != XATTR_MAGIC {
        return Ok(());
    }
    entries(area, 4, 4, offset, out)
}

/// Attributes of an xattr block.
pub fn block_xattrs(
    block: &[u8],
    offset: u64,
    out: &mut Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<(), Ext4ReadError> {
    if block.len() < 32 || le32(block, 0) != XATTR_MAGIC || le32(block, 8) != 1 {
        return Err(corrupt("not an xattr block", offset));
    }
    entries(block, 32, 0, offset, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ext4::dir::{encode, DirEntry};

    #[test]
    fn dir_blocks_parse_and_reject_bad_lengths() {
        let mut blk = Vec::new();
        let entries = [
            DirEntry {
                ino: 2,
                name: b".",
                file_type: 2,
            },
            DirEntry {
                ino: 2,
                name: b"..",
                file_type: 2,
            },
            DirEntry {
                ino: 12,
                name: b"hello",
                file_type: 1,
            },
        ];
        encode(entries.iter().copied(), Some(1), 1, &mut blk);
        let mut out = Vec::new();
        dir_block(&blk, 4096, 0, &mut out).unwrap();
        assert_eq!(out, vec![(b"hello".to_vec(), 12)]);
        blk[12 + 4] = 3; // rec_len of ".." not a multiple of 4
        assert!(dir_block(&blk, 4096, 0, &mut out).is_err());
        let mut loopy = vec![0u8; 4096];
        loopy[4] = 0; // rec_len 0 would never advance
        assert!(dir_block(&loopy, 4096, 0, &mut out).is_err());
    }

    #[test]
    fn xattr_tables_are_bounded() {
        let mut area = vec![0u8; 96];
        put32(&mut area, 0, XATTR_MAGIC);
        area[4] = 4;
        area[5] = 1;
        put16(&mut area, 6, 200); // value far outside
        put32(&mut area, 12, 10);
        area[20..24].copy_from_slice(b"name");
        let mut out = Vec::new();
        assert!(inline_xattrs(&area, 0, &mut out).is_err());
        let no_end = {
            let mut a = vec![0xffu8; 8];
            put32(&mut a, 0, XATTR_MAGIC);
            a
        };
        assert!(inline_xattrs(&no_end, 0, &mut out).is_err());
    }
}
