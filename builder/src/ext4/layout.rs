//! Filesystem geometry: block groups, where each group's bitmaps and inode table go (packed per
//! flex group of 16 for ext4, inside each group for ext2/ext3), and a block allocator that
//! hands out runs in a fixed order around that metadata.

use super::format::{group_has_super, BLOCKS_PER_GROUP, BLOCK_SIZE};

/// Groups per flex group (log2 = 4, as mke2fs uses).
pub const FLEX_LOG: u8 = 4;
const FLEX: u64 = 1 << FLEX_LOG;
/// Largest filesystem we lay out, in blocks (256 TiB): keeps the group table in memory bounded.
pub const MAX_BLOCKS: u64 = 1 << 36;

/// Where one group's metadata is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupMeta {
    /// Block bitmap block.
    pub block_bitmap: u64,
    /// Inode bitmap block.
    pub inode_bitmap: u64,
    /// First inode table block.
    pub inode_table: u64,
}

/// Why a block count cannot be laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeometryError {
    /// More inodes are needed than `groups` groups can hold.
    TooFewGroups {
        /// Groups needed for the inodes.
        groups: u64,
    },
    /// The metadata does not fit (the last group is too small to hold its own).
    NoRoom,
    /// The filesystem is larger than this format (or this writer) supports.
    TooLarge,
}

/// The shape of a filesystem.
#[derive(Debug, Clone)]
pub struct Geometry {
    /// ext4 layout (flex_bg, 256-byte inodes); else ext2/ext3.
    pub ext4: bool,
    /// Total blocks.
    pub blocks: u64,
    /// Number of block groups.
    pub groups: u64,
    /// Inodes per group.
    pub inodes_per_group: u32,
    /// Inode size in bytes.
    pub inode_size: u16,
    /// Inode table blocks per group.
    pub itable_blocks: u64,
    /// Group descriptor size (32, or 64 with the 64bit feature).
    pub desc_size: u16,
    /// Blocks of the group descriptor table.
    pub gdt_blocks: u64,
    /// Needs the 64bit feature.
    pub is_64bit: bool,
    /// Metadata location of every group.
    pub meta: Vec<GroupMeta>,
    /// Every block used by superblocks, descriptor tables, bitmaps and inode tables, as sorted
    /// non-overlapping `[start, end)` ranges.
    pub fixed: Vec<(u64, u64)>,
}

impl Geometry {
    /// Lays out `blocks` blocks with at least `inodes` inodes.
    pub fn new(ext4: bool, blocks: u64, inodes: u64) -> Result<Geometry, GeometryError> {
        let limit = if ext4 {
            MAX_BLOCKS
        } else {
            u64::from(u32::MAX)
        };
        if blocks > limit {
            return Err(GeometryError::TooLarge);
        }
        if blocks < 16 {
            return Err(GeometryError::NoRoom);
        }
        let groups = blocks.div_ceil(BLOCKS_PER_GROUP);
        let inode_size: u16 = if ext4 { 256 } else { 128 };
        let per_block = BLOCK_SIZE / u64::from(inode_size);
        let ipg = inodes.div_ceil(groups).max(1).div_ceil(per_block) * per_block;
        if ipg > BLOCKS_PER_GROUP {
            return Err(GeometryError::TooFewGroups {
                groups: inodes.div_ceil(BLOCKS_PER_GROUP),
            });
        }
        if ipg * groups > u64::from(u32::MAX) {
            return Err(GeometryError::TooLarge);
        }
        let is_64bit = blocks > u64::from(u32::MAX);
        let desc_size: u16 = if is_64bit { 64 } else { 32 };
        let gdt_blocks = (groups * u64::from(desc_size)).div_ceil(BLOCK_SIZE);
        let mut geo = Geometry {
            ext4,
            blocks,
            groups,
            inodes_per_group: ipg as u32,
            inode_size,
            itable_blocks: ipg * u64::from(inode_size) / BLOCK_SIZE,
            desc_size,
            gdt_blocks,
            is_64bit,
            meta: Vec::with_capacity(groups as usize),
            fixed: Vec::new(),
        };
        if ext4 {
            geo.place_flex()?;
        } else {
            geo.place_per_group()?;
        }
        geo.collect_fixed();
        Ok(geo)
    }

    /// First block of group `g`.
    pub fn group_start(&self, g: u64) -> u64 {
        g * BLOCKS_PER_GROUP
    }

    /// Blocks in group `g` (the last one may be short).
    pub fn group_len(&self, g: u64) -> u64 {
        BLOCKS_PER_GROUP.min(self.blocks - self.group_start(g))
    }

    /// Blocks at the start of group `g` taken by a superblock copy and descriptor table.
    pub fn super_blocks(&self, g: u64) -> u64 {
        if group_has_super(g) {
            1 + self.gdt_blocks
        } else {
            0
        }
    }

    /// Total inodes.
    pub fn inodes(&self) -> u64 {
        u64::from(self.inodes_per_group) * self.groups
    }

    /// First block at or after `at` where `len` blocks avoid every superblock region.
    fn fit(&self, mut at: u64, len: u64) -> Result<u64, GeometryError> {
        loop {
            let g = at / BLOCKS_PER_GROUP;
            if g >= self.groups {
                return Err(GeometryError::NoRoom);
            }
            let after_super = self.group_start(g) + self.super_blocks(g);
            if at < after_super {
                at = after_super;
                continue;
            }
            let end = at + len;
            if end > self.blocks {
                return Err(GeometryError::NoRoom);
            }
            let next = self.group_start(g + 1);
            if end > next && g + 1 < self.groups && self.super_blocks(g + 1) > 0 {
                at = next;
                continue;
            }
            return Ok(at);
        }
    }

    fn place_flex(&mut self) -> Result<(), GeometryError> {
        let mut cursor = 0u64;
        let mut leader = 0u64;
        while leader < self.groups {
            let members = FLEX.min(self.groups - leader);
            cursor = cursor.max(self.group_start(leader));
            let mut bb = Vec::with_capacity(members as usize);
            for _ in 0..members {
                let at = self.fit(cursor, 1)?;
                bb.push(at);
                cursor = at + 1;
            }
            let mut ib = Vec::with_capacity(members as usize);
            for _ in 0..members {
                let at = self.fit(cursor, 1)?;
                ib.push(at);
                cursor = at + 1;
            }
            for i in 0..members as usize {
                let at = self.fit(cursor, self.itable_blocks)?;
                self.meta.push(GroupMeta {
                    block_bitmap: bb[i],
                    inode_bitmap: ib[i],
                    inode_table: at,
                });
                cursor = at + self.itable_blocks;
            }
            leader += FLEX;
        }
        Ok(())
    }

    fn place_per_group(&mut self) -> Result<(), GeometryError> {
        for g in 0..self.groups {
            let at = self.group_start(g) + self.super_blocks(g);
            if at + 2 + self.itable_blocks > self.group_start(g) + self.group_len(g) {
                return Err(GeometryError::NoRoom);
            }
            self.meta.push(GroupMeta {
                block_bitmap: at,
                inode_bitmap: at + 1,
                inode_table: at + 2,
            });
        }
        Ok(())
    }

    fn collect_fixed(&mut self) {
        let mut ranges = Vec::with_capacity(self.groups as usize * 4);
        for g in 0..self.groups {
            let s = self.super_blocks(g);
            if s > 0 {
                ranges.push((self.group_start(g), self.group_start(g) + s));
            }
            let m = self.meta[g as usize];
            ranges.push((m.block_bitmap, m.block_bitmap + 1));
            ranges.push((m.inode_bitmap, m.inode_bitmap + 1));
            ranges.push((m.inode_table, m.inode_table + self.itable_blocks));
        }
        self.fixed = merge(ranges);
    }
}

/// Sorts and merges `[start, end)` ranges.
pub fn merge(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Hands out blocks in ascending order, skipping the fixed metadata. It may run past the end of
/// the filesystem; [`Allocator::end`] then tells how far, which sizing uses.
pub struct Allocator<'a> {
    fixed: &'a [(u64, u64)],
    next_fixed: usize,
    cursor: u64,
    runs: Vec<(u64, u64)>,
    count: u64,
}

impl<'a> Allocator<'a> {
    /// An allocator over everything outside `fixed`, from block 0.
    pub fn new(fixed: &'a [(u64, u64)]) -> Allocator<'a> {
        Allocator {
            fixed,
            next_fixed: 0,
            cursor: 0,
            runs: Vec::new(),
            count: 0,
        }
    }

    /// Up to `want` (≥ 1) contiguous blocks at the cursor: `(start, len)`.
    pub fn take(&mut self, want: u64) -> (u64, u64) {
        while let Some(&(s, e)) = self.fixed.get(self.next_fixed) {
            if e <= self.cursor {
                self.next_fixed += 1;
            } else if s <= self.cursor {
                self.cursor = e;
                self.next_fixed += 1;
            } else {
                break;
            }
        }
        let limit = self
            .fixed
            .get(self.next_fixed)
            .map_or(u64::MAX, |&(s, _)| s);
        let len = want.max(1).min(limit - self.cursor);
        let start = self.cursor;
        match self.runs.last_mut() {
            Some(last) if last.1 == start => last.1 = start + len,
            _ => self.runs.push((start, start + len)),
        }
        self.cursor += len;
        self.count += len;
        (start, len)
    }

    /// One block.
    pub fn one(&mut self) -> u64 {
        self.take(1).0
    }

    /// One past the last block handed out.
    pub fn end(&self) -> u64 {
        self.cursor
    }

    /// Blocks handed out.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The runs handed out, `[start, end)`, ascending.
    pub fn into_runs(self) -> Vec<(u64, u64)> {
        self.runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flex_layout_packs_metadata_in_group_zero() {
        let g = Geometry::new(true, 5 * BLOCKS_PER_GROUP + 1000, 40000).unwrap();
        assert_eq!(g.groups, 6);
        assert_eq!(g.inodes_per_group, 6672);
        assert_eq!(g.gdt_blocks, 1);
        // sb + gdt, then 6 block bitmaps, 6 inode bitmaps, 6 inode tables.
        assert_eq!(g.meta[0].block_bitmap, 2);
        assert_eq!(g.meta[5].block_bitmap, 7);
        assert_eq!(g.meta[0].inode_bitmap, 8);
        assert_eq!(g.meta[0].inode_table, 14);
        assert_eq!(g.meta[1].inode_table, 14 + g.itable_blocks);
        assert_eq!(g.fixed[0], (0, 14 + 6 * g.itable_blocks));
        // Group 1's superblock backup is a separate fixed range.
        assert_eq!(g.fixed[1], (BLOCKS_PER_GROUP, BLOCKS_PER_GROUP + 2));
    }

    #[test]
    fn per_group_layout_and_limits() {
        let g = Geometry::new(false, 3 * BLOCKS_PER_GROUP, 100).unwrap();
        assert_eq!(g.inode_size, 128);
        assert_eq!(g.inodes_per_group, 64);
        assert_eq!(g.meta[1].block_bitmap, BLOCKS_PER_GROUP + 2);
        assert_eq!(g.meta[2].block_bitmap, 2 * BLOCKS_PER_GROUP);
        assert!(matches!(
            Geometry::new(true, 1000, 1_000_000),
            Err(GeometryError::TooFewGroups { groups: 31 })
        ));
        // A last group too small for its inode table.
        assert_eq!(
            Geometry::new(false, BLOCKS_PER_GROUP + 100, 2 * 32768).err(),
            Some(GeometryError::NoRoom)
        );
        assert_eq!(
            Geometry::new(false, 1 << 33, 10).err(),
            Some(GeometryError::TooLarge)
        );
        let big = Geometry::new(true, 1 << 33, 10).unwrap();
        assert!(big.is_64bit);
        assert_eq!(big.desc_size, 64);
    }

    #[test]
    fn allocator_skips_fixed_ranges() {
        let fixed = [(0, 10), (20, 25)];
        let mut a = Allocator::new(&fixed);
        assert_eq!(a.take(5), (10, 5));
        assert_eq!(a.take(100), (15, 5));
        assert_eq!(a.take(3), (25, 3));
        assert_eq!(a.count(), 13);
        assert_eq!(a.end(), 28);
        assert_eq!(a.into_runs(), vec![(10, 20), (25, 28)]);
    }
}
