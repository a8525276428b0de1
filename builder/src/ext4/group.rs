//! Group descriptors and the block and inode bitmaps they point to, with their checksums, and
//! writing them together with every superblock copy.

use super::checksum::ext4_crc;
use super::collect::NodeKind;
use super::format::*;
use super::layout::GroupMeta;
use super::planner::Ext4Plan;
use super::superblock::{self, SuperInfo};
use super::write::{BlockWriter, Output};
use super::Ext4Error;

/// Counters and flags of one group.
#[derive(Debug, Clone, Copy, Default)]
pub struct GroupCounts {
    /// Free blocks.
    pub free_blocks: u32,
    /// Free inodes.
    pub free_inodes: u32,
    /// Directories.
    pub used_dirs: u32,
    /// `bg_flags`.
    pub flags: u16,
    /// Inodes at the end of the table never used (ext4 only).
    pub itable_unused: u32,
}

/// Block bitmap of a group: bits for `used` ranges (sorted `[start, end)`, any extent) that fall
/// in `[first, first + len)`; bits past `len` (a short last group) are set.
pub fn block_bitmap(used: &[(u64, u64)], first: u64, len: u64) -> Vec<u8> {
    let mut bm = vec![0u8; BLOCK];
    let end = first + len;
    let from = used.partition_point(|r| r.1 <= first);
    for &(s, e) in &used[from..] {
        if s >= end {
            break;
        }
        set_bits(&mut bm, s.max(first) - first, e.min(end) - first);
    }
    set_bits(&mut bm, len, BLOCKS_PER_GROUP);
    bm
}

/// Inode bitmap of a group whose first `used` inodes are in use, with `per_group` inodes.
pub fn inode_bitmap(used: u32, per_group: u32) -> Vec<u8> {
    let mut bm = vec![0u8; BLOCK];
    set_bits(&mut bm, 0, u64::from(used));
    set_bits(&mut bm, u64::from(per_group), (BLOCK * 8) as u64);
    bm
}

/// Sets bits `[from, to)`.
fn set_bits(bm: &mut [u8], from: u64, to: u64) {
    let (mut i, to) = (from as usize, to as usize);
    while i < to && i % 8 != 0 {
        bm[i / 8] |= 1 << (i % 8);
        i += 1;
    }
    while i + 8 <= to {
        bm[i / 8] = 0xff;
        i += 8;
    }
    while i < to {
        bm[i / 8] |= 1 << (i % 8);
        i += 1;
    }
}

/// Writes one descriptor into `out` (`desc_size` bytes). `csum` = (filesystem seed, group,
/// block bitmap crc, inode bitmap crc) with metadata_csum.
pub fn encode_desc(
    out: &mut [u8],
    meta: &GroupMeta,
    counts: &GroupCounts,
    csum: Option<(u32, u32, u32, u32)>,
) {
    out.fill(0);
    let wide = out.len() >= 64;
    put32(out, 0x00, meta.block_bitmap as u32);
    put32(out, 0x04, meta.inode_bitmap as u32);
    put32(out, 0x08, meta.inode_table as u32);
    put16(out, 0x0C, counts.free_blocks as u16);
    put16(out, 0x0E, counts.free_inodes as u16);
    put16(out, 0x10, counts.used_dirs as u16);
    put16(out, 0x12, counts.flags);
    put16(out, 0x1C, counts.itable_unused as u16);
    if wide {
        put32(out, 0x20, (meta.block_bitmap >> 32) as u32);
        put32(out, 0x24, (meta.inode_bitmap >> 32) as u32);
        put32(out, 0x28, (meta.inode_table >> 32) as u32);
        put16(out, 0x2C, (counts.free_blocks >> 16) as u16);
        put16(out, 0x2E, (counts.free_inodes >> 16) as u16);
        put16(out, 0x30, (counts.used_dirs >> 16) as u16);
        put16(out, 0x32, (counts.itable_unused >> 16) as u16);
    }
    if let Some((seed, group, bb, ib)) = csum {
        put16(out, 0x18, bb as u16);
        put16(out, 0x1A, ib as u16);
        if wide {
            put16(out, 0x38, (bb >> 16) as u16);
            put16(out, 0x3A, (ib >> 16) as u16);
        }
        let crc = ext4_crc(seed, &group.to_le_bytes());
        let crc = ext4_crc(crc, &out[..0x1E]);
        let crc = ext4_crc(crc, &[0, 0]);
        let crc = ext4_crc(crc, &out[0x20..]);
        put16(out, 0x1E, crc as u16);
    }
}

/// Checksum of a block bitmap.
pub fn block_bitmap_csum(seed: u32, bm: &[u8]) -> u32 {
    ext4_crc(seed, &bm[..(BLOCKS_PER_GROUP / 8) as usize])
}

/// Checksum of an inode bitmap.
pub fn inode_bitmap_csum(seed: u32, bm: &[u8], per_group: u32) -> u32 {
    ext4_crc(seed, &bm[..(per_group / 8) as usize])
}

/// Writes the block and inode bitmaps, the descriptor table and every superblock copy.
pub(super) fn write_groups(
    plan: &Ext4Plan,
    out: &Output<'_>,
    seed: Option<u32>,
    journal: Option<([u8; 60], u64)>,
) -> Result<(), Ext4Error> {
    let geo = &plan.geo;
    let ext4 = plan.ext4();
    let ipg = geo.inodes_per_group;
    let max_ino = u64::from(plan.collected.max_ino);
    let mut counts = vec![GroupCounts::default(); geo.groups as usize];
    for n in &plan.collected.nodes {
        if matches!(n.kind, NodeKind::Dir { .. }) {
            counts[((n.ino - 1) / ipg) as usize].used_dirs += 1;
        }
    }
    let mut bb_csums = vec![0u32; geo.groups as usize];
    let mut ib_csums = vec![0u32; geo.groups as usize];
    let mut w = BlockWriter::new(out);
    for g in 0..geo.groups {
        let len = geo.group_len(g);
        let bm = block_bitmap(&plan.used, geo.group_start(g), len);
        let used: u64 = bm[..(len as usize).div_ceil(8)]
            .iter()
            .map(|b| u64::from(b.count_ones()))
            .sum::<u64>()
            - (len.next_multiple_of(8) - len);
        counts[g as usize].free_blocks = (len - used) as u32;
        if let Some(s) = seed {
            bb_csums[g as usize] = block_bitmap_csum(s, &bm);
        }
        w.put(geo.meta[g as usize].block_bitmap, &bm)?;
    }
    for g in 0..geo.groups {
        let used = max_ino
            .saturating_sub(g * u64::from(ipg))
            .min(u64::from(ipg)) as u32;
        let bm = inode_bitmap(used, ipg);
        let c = &mut counts[g as usize];
        c.free_inodes = ipg - used;
        if ext4 {
            c.itable_unused = ipg - used;
            c.flags = if used == 0 {
                BG_INODE_UNINIT
            } else {
                BG_INODE_ZEROED
            };
            if used == 0 {
                // Neither the kernel nor e2fsck reads the inode bitmap of an INODE_UNINIT
                // group (mke2fs leaves it unwritten with a zero checksum too), so large
                // filesystems need not write one block per group.
                continue;
            }
        }
        if let Some(s) = seed {
            ib_csums[g as usize] = inode_bitmap_csum(s, &bm, ipg);
        }
        w.put(geo.meta[g as usize].inode_bitmap, &bm)?;
    }
    w.flush()?;
    let ds = usize::from(geo.desc_size);
    let mut gdt = vec![0u8; (geo.gdt_blocks as usize) * BLOCK];
    for g in 0..geo.groups as usize {
        let csum = seed.map(|s| (s, g as u32, bb_csums[g], ib_csums[g]));
        encode_desc(
            &mut gdt[g * ds..(g + 1) * ds],
            &geo.meta[g],
            &counts[g],
            csum,
        );
    }
    let free_blocks: u64 = counts.iter().map(|c| u64::from(c.free_blocks)).sum();
    let free_inodes: u64 = counts.iter().map(|c| u64::from(c.free_inodes)).sum();
    let info = SuperInfo {
        geo,
        fs: plan.params.fs_type,
        free_blocks,
        free_inodes,
        reserved_blocks: (geo.blocks as f64 * plan.params.reserved_percent / 100.0) as u64,
        uuid: plan.params.uuid,
        label: plan.params.label.as_bytes(),
        hash_seed: plan.params.hash_seed,
        timestamp: plan.params.timestamp,
        journal,
    };
    for g in 0..geo.groups {
        if geo.super_blocks(g) == 0 {
            continue;
        }
        let sb = superblock::encode(&info, g);
        let mut first = vec![0u8; BLOCK];
        let at = if g == 0 {
            SUPERBLOCK_OFFSET as usize
        } else {
            0
        };
        first[at..at + 1024].copy_from_slice(&sb);
        let start = geo.group_start(g);
        w.put(start, &first)?;
        w.put(start + 1, &gdt)?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ext4::format::le16;

    #[test]
    fn bitmaps_mark_ranges_and_padding() {
        let used = [(0, 3), (32770, 32780), (40000, 70000)];
        let bm = block_bitmap(&used, 32768, 32768);
        assert_eq!(bm[0], 0b1111_1100);
        assert_eq!(bm[1], 0b0000_1111);
        let bm = block_bitmap(&used, 0, 10);
        assert_eq!(bm[0], 0b0000_0111);
        assert_eq!(bm[1], 0b1111_1100);
        assert_eq!(bm[BLOCK - 1], 0xff);
        let ib = inode_bitmap(11, 16);
        assert_eq!(ib[0], 0xff);
        assert_eq!(ib[1], 0b0000_0111);
        assert_eq!(ib[2], 0xff);
        let ib = inode_bitmap(11, 32);
        assert_eq!(ib[1], 0b0000_0111);
        assert_eq!(ib[3], 0);
        assert_eq!(ib[4], 0xff);
    }

    #[test]
    fn descriptor_checksum_covers_the_group_number() {
        let meta = GroupMeta {
            block_bitmap: 2,
            inode_bitmap: 3,
            inode_table: 4,
        };
        let counts = GroupCounts {
            free_blocks: 10,
            ..Default::default()
        };
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        encode_desc(&mut a, &meta, &counts, Some((1, 0, 0, 0)));
        encode_desc(&mut b, &meta, &counts, Some((1, 1, 0, 0)));
        assert_ne!(le16(&a, 0x1E), le16(&b, 0x1E));
        assert_eq!(le16(&a, 0x0C), 10);
    }
}
