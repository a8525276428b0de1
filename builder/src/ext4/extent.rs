//! Extent trees: the root in the inode's i_block (up to 4 entries), leaf and index blocks of
//! 340 entries below it when a file has more extents than that.

use super::checksum::ext4_crc;
use super::format::{
    put16, put32, BLOCK, EXTENTS_IN_INODE, EXTENTS_PER_BLOCK, EXTENT_MAGIC, MAX_EXTENT_DEPTH,
};

/// A run of logical blocks mapped to consecutive physical blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// First logical block.
    pub logical: u64,
    /// First physical block.
    pub start: u64,
    /// Number of blocks.
    pub len: u64,
}

/// Tree blocks (leaves and index blocks) needed for `n` extents, and the tree depth.
pub fn tree_shape(n: usize) -> (usize, u16) {
    let mut level = n;
    let mut blocks = 0;
    let mut depth = 0u16;
    while level > EXTENTS_IN_INODE {
        level = level.div_ceil(EXTENTS_PER_BLOCK);
        blocks += level;
        depth += 1;
    }
    (blocks, depth)
}

/// True when the kernel accepts a tree for `n` extents.
pub fn depth_ok(n: usize) -> bool {
    tree_shape(n).1 <= MAX_EXTENT_DEPTH
}

fn header(buf: &mut [u8], entries: usize, max: usize, depth: u16) {
    put16(buf, 0, EXTENT_MAGIC);
    put16(buf, 2, entries as u16);
    put16(buf, 4, max as u16);
    put16(buf, 6, depth);
    put32(buf, 8, 0);
}

fn leaf_entry(buf: &mut [u8], at: usize, e: &Extent) {
    put32(buf, at, e.logical as u32);
    put16(buf, at + 4, e.len as u16);
    put16(buf, at + 6, (e.start >> 32) as u16);
    put32(buf, at + 8, e.start as u32);
}

fn index_entry(buf: &mut [u8], at: usize, logical: u64, child: u64) {
    put32(buf, at, logical as u32);
    put32(buf, at + 4, child as u32);
    put16(buf, at + 8, (child >> 32) as u16);
    put16(buf, at + 10, 0);
}

/// Builds the tree: returns i_block's 60 bytes and the tree blocks `(block, bytes)`. The caller
/// supplies `tree_blocks` as many physical blocks as [`tree_shape`] says: leaves first, then
/// each index level upward. `csum_seed` is the inode's seed with metadata_csum.
pub fn encode(
    extents: &[Extent],
    tree_blocks: &[u64],
    csum_seed: Option<u32>,
) -> ([u8; 60], Vec<(u64, Vec<u8>)>) {
    let mut root = [0u8; 60];
    let mut blocks = Vec::with_capacity(tree_blocks.len());
    if extents.len() <= EXTENTS_IN_INODE {
        header(&mut root, extents.len(), EXTENTS_IN_INODE, 0);
        for (i, e) in extents.iter().enumerate() {
            leaf_entry(&mut root, 12 + 12 * i, e);
        }
        return (root, blocks);
    }
    let mut next_block = tree_blocks.iter();
    // (first logical block, physical block) of the nodes of the level being built.
    let mut level: Vec<(u64, u64)> = Vec::new();
    for chunk in extents.chunks(EXTENTS_PER_BLOCK) {
        let phys = *next_block.next().unwrap_or(&0);
        let mut buf = vec![0u8; BLOCK];
        header(&mut buf, chunk.len(), EXTENTS_PER_BLOCK, 0);
        for (i, e) in chunk.iter().enumerate() {
            leaf_entry(&mut buf, 12 + 12 * i, e);
        }
        seal(&mut buf, csum_seed);
        level.push((chunk[0].logical, phys));
        blocks.push((phys, buf));
    }
    let mut depth = 1u16;
    while level.len() > EXTENTS_IN_INODE {
        let mut upper = Vec::new();
        for chunk in level.chunks(EXTENTS_PER_BLOCK) {
            let phys = *next_block.next().unwrap_or(&0);
            let mut buf = vec![0u8; BLOCK];
            header(&mut buf, chunk.len(), EXTENTS_PER_BLOCK, depth);
            for (i, (logical, child)) in chunk.iter().enumerate() {
                index_entry(&mut buf, 12 + 12 * i, *logical, *child);
            }
            seal(&mut buf, csum_seed);
            upper.push((chunk[0].0, phys));
            blocks.push((phys, buf));
        }
        level = upper;
        depth += 1;
    }
    header(&mut root, level.len(), EXTENTS_IN_INODE, depth);
    for (i, (logical, child)) in level.iter().enumerate() {
        index_entry(&mut root, 12 + 12 * i, *logical, *child);
    }
    (root, blocks)
}

fn seal(buf: &mut [u8], csum_seed: Option<u32>) {
    if let Some(seed) = csum_seed {
        let tail = 12 + 12 * EXTENTS_PER_BLOCK;
        let crc = ext4_crc(seed, &buf[..tail]);
        put32(buf, tail, crc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ext4::format::{le16, le32};

    #[test]
    fn shapes() {
        assert_eq!(tree_shape(0), (0, 0));
        assert_eq!(tree_shape(4), (0, 0));
        assert_eq!(tree_shape(5), (1, 1));
        assert_eq!(tree_shape(340 * 4), (4, 1));
        assert_eq!(tree_shape(340 * 4 + 1), (6, 2));
        assert!(depth_ok(1 << 24));
    }

    #[test]
    fn two_level_tree_points_at_its_blocks() {
        let extents: Vec<Extent> = (0..2000u64)
            .map(|i| Extent {
                logical: i * 2,
                start: 1000 + i * 3,
                len: 1,
            })
            .collect();
        let (n, depth) = tree_shape(extents.len());
        assert_eq!((n, depth), (7, 2));
        let phys: Vec<u64> = (500..500 + n as u64).collect();
        let (root, blocks) = encode(&extents, &phys, Some(1));
        assert_eq!(le16(&root, 0), EXTENT_MAGIC);
        assert_eq!(le16(&root, 2), 1);
        assert_eq!(le16(&root, 6), 2);
        assert_eq!(le32(&root, 16), 506); // the single index block, allocated last
        let index = &blocks[6].1;
        assert_eq!(le16(index, 2), 6);
        assert_eq!(le32(index, 12 + 12 + 4), 501);
        assert_eq!(le32(index, 12 + 12), 340 * 2); // first logical of the second leaf
        let leaf = &blocks[0].1;
        assert_eq!(le32(leaf, 12 + 12 * 339 + 8), 1000 + 339 * 3);
        assert_eq!(le32(leaf, 4092), ext4_crc(1, &leaf[..4092]));
    }
}
