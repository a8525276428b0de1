//! From an inode to its data: extent trees (descending strictly by depth, so they cannot loop)
//! and block maps, both checked against the filesystem size; then streaming the content with
//! holes as zeros.

use super::{Ext4Image, Ext4ReadError, RawInode};
use crate::ext4::format::*;
use crate::image_io::ReadAt;

/// Logical blocks `[logical, logical + len)` stored at `phys..`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// First logical block.
    pub logical: u64,
    /// First physical block.
    pub phys: u64,
    /// Length in blocks.
    pub len: u64,
}

fn corrupt(what: impl Into<String>, offset: u64) -> Ext4ReadError {
    Ext4ReadError::Corrupt {
        what: what.into(),
        offset,
    }
}

struct Mapper<'a, R: ReadAt> {
    img: &'a Ext4Image<R>,
    inode: &'a RawInode,
    runs: Vec<Run>,
    /// Logical blocks of the file, from its size.
    nblocks: u64,
    /// Blocks read for the tree, bounded like the runs.
    nodes: usize,
}

impl<R: ReadAt> Mapper<'_, R> {
    fn push(&mut self, logical: u64, phys: u64, len: u64, at: u64) -> Result<(), Ext4ReadError> {
        let sb = self.img.superblock();
        if phys == 0
            || phys
                .checked_add(len)
                .map_or(true, |end| end > sb.blocks_count)
        {
            return Err(corrupt(
                format!(
                    "inode {} maps blocks {phys}+{len} outside the filesystem",
                    self.inode.ino
                ),
                at,
            ));
        }
        if let Some(last) = self.runs.last_mut() {
            if logical < last.logical + last.len {
                return Err(corrupt(
                    format!(
                        "inode {} maps logical block {logical} twice or out of order",
                        self.inode.ino
                    ),
                    at,
                ));
            }
            if last.logical + last.len == logical && last.phys + last.len == phys {
                last.len += len;
                return Ok(());
            }
        }
        if self.runs.len() >= self.img.limits().max_runs {
            return Err(Ext4ReadError::Limit(format!(
                "inode {} has more than {} extents",
                self.inode.ino,
                self.img.limits().max_runs
            )));
        }
        self.runs.push(Run { logical, phys, len });
        Ok(())
    }

    fn read_block(&mut self, block: u64, at: u64) -> Result<Vec<u8>, Ext4ReadError> {
        let sb = self.img.superblock();
        if block == 0 || block >= sb.blocks_count {
            return Err(corrupt(
                format!(
                    "inode {} points to block {block} outside the filesystem",
                    self.inode.ino
                ),
                at,
            ));
        }
        self.nodes += 1;
        if self.nodes > self.img.limits().max_runs {
            return Err(Ext4ReadError::Limit(format!(
                "inode {} has too many mapping blocks",
                self.inode.ino
            )));
        }
        let mut buf = vec![0u8; sb.block_size as usize];
        self.img.read_at(&mut buf, block * sb.block_size)?;
        Ok(buf)
    }

    /// One extent tree node (`buf` holds it, `cap` entries fit) at `depth`.
    fn extent_node(
        &mut self,
        buf: &[u8],
        cap: usize,
        depth: Option<u16>,
        at: u64,
    ) -> Result<(), Ext4ReadError> {
        let ino = self.inode.ino;
        if le16(buf, 0) != EXTENT_MAGIC {
            return Err(corrupt(format!("inode {ino}: bad extent header magic"), at));
        }
        let entries = usize::from(le16(buf, 2));
        let max = usize::from(le16(buf, 4));
        let d = le16(buf, 6);
        if max > cap || entries > max || d > MAX_EXTENT_DEPTH || depth.is_some_and(|want| want != d)
        {
            return Err(corrupt(
                format!("inode {ino}: extent header entries {entries}, max {max}, depth {d}"),
                at,
            ));
        }
        for i in 0..entries {
            let e = &buf[12 + 12 * i..24 + 12 * i];
            let logical = u64::from(le32(e, 0));
            if d == 0 {
                let raw_len = u64::from(le16(e, 4));
                let start = u64::from(le16(e, 6)) << 32 | u64::from(le32(e, 8));
                if raw_len > MAX_EXTENT_LEN {
                    // An unwritten extent reads as zeros: a hole for us.
                    continue;
                }
                if raw_len == 0 || logical + raw_len > 1 << 32 {
                    return Err(corrupt(
                        format!("inode {ino}: extent of length {raw_len} at {logical}"),
                        at,
                    ));
                }
                if logical >= self.nblocks {
                    continue;
                }
                let len = raw_len.min(self.nblocks - logical);
                self.push(logical, start, len, at)?;
            } else {
                let child = u64::from(le16(e, 8)) << 32 | u64::from(le32(e, 4));
                let block = self.read_block(child, at)?;
                let cap = (block.len() - 12) / 12;
                let child_at = child * self.img.superblock().block_size;
                self.extent_node(&block, cap, Some(d - 1), child_at)?;
            }
        }
        Ok(())
    }

    /// An indirect block of `level` (1 single, 2 double, 3 triple) mapping from `first`.
    fn indirect(
        &mut self,
        block: u64,
        level: u32,
        first: u64,
        at: u64,
    ) -> Result<(), Ext4ReadError> {
        let buf = self.read_block(block, at)?;
        let per = buf.len() as u64 / 4;
        let span = per.pow(level - 1);
        let block_at = block * self.img.superblock().block_size;
        for i in 0..per {
            let logical = first + i * span;
            if logical >= self.nblocks {
                break;
            }
            let ptr = u64::from(le32(&buf, 4 * i as usize));
            if ptr == 0 {
                continue;
            }
            if level == 1 {
                self.push(logical, ptr, 1, block_at)?;
            } else {
                self.indirect(ptr, level - 1, logical, block_at)?;
            }
        }
        Ok(())
    }
}

/// The data runs of `inode` within its size, ascending.
pub fn runs<R: ReadAt>(img: &Ext4Image<R>, inode: &RawInode) -> Result<Vec<Run>, Ext4ReadError> {
    if inode.flags & INLINE_DATA_FL != 0 {
        return Err(Ext4ReadError::Unsupported(format!(
            "inode {} has inline data",
            inode.ino
        )));
    }
    let bs = img.superblock().block_size;
    let mut m = Mapper {
        img,
        inode,
        runs: Vec::new(),
        nblocks: inode.size.div_ceil(bs),
        nodes: 0,
    };
    if inode.flags & EXTENTS_FL != 0 {
        m.extent_node(&inode.i_block, EXTENTS_IN_INODE, None, inode.offset + 0x28)?;
    } else {
        let at = inode.offset + 0x28;
        let per = bs / 4;
        for i in 0..12u64 {
            let ptr = u64::from(le32(&inode.i_block, 4 * i as usize));
            if i < m.nblocks && ptr != 0 {
                m.push(i, ptr, 1, at)?;
            }
        }
        let mut first = 12u64;
        for (slot, level) in [(12usize, 1u32), (13, 2), (14, 3)] {
            let ptr = u64::from(le32(&inode.i_block, 4 * slot));
            if ptr != 0 && first < m.nblocks {
                m.indirect(ptr, level, first, at)?;
            }
            first = first.saturating_add(per.pow(level));
        }
    }
    Ok(m.runs)
}

const CHUNK: usize = 1 << 20;

/// Streams the first `i_size` bytes of `inode` to `sink`, holes as zeros.
pub fn read_content<R: ReadAt>(
    img: &Ext4Image<R>,
    inode: &RawInode,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), Ext4ReadError>,
) -> Result<(), Ext4ReadError> {
    if inode.size > img.limits().max_file_size {
        return Err(Ext4ReadError::Limit(format!(
            "inode {} is {} bytes long",
            inode.ino, inode.size
        )));
    }
    let bs = img.superblock().block_size;
    let runs = runs(img, inode)?;
    let zeros = vec![0u8; CHUNK];
    let mut buf = vec![0u8; CHUNK.min(inode.size as usize)];
    let mut pos = 0u64;
    let feed_zeros = |sink: &mut dyn FnMut(&[u8]) -> Result<(), Ext4ReadError>, mut n: u64| {
        while n > 0 {
            let k = n.min(CHUNK as u64) as usize;
            sink(&zeros[..k])?;
            n -= k as u64;
        }
        Ok::<(), Ext4ReadError>(())
    };
    for r in runs {
        let start = r.logical * bs;
        if start >= inode.size {
            break;
        }
        feed_zeros(sink, start - pos)?;
        let end = (start + r.len * bs).min(inode.size);
        let mut off = start;
        while off < end {
            let n = ((end - off) as usize).min(buf.len());
            let phys_at = r.phys * bs + (off - start);
            img.read_at(&mut buf[..n], phys_at)?;
            sink(&buf[..n])?;
            off += n as u64;
        }
        pos = end;
    }
    feed_zeros(sink, inode.size - pos)
}
