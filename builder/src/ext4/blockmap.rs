//! ext2/ext3 block maps: 12 direct pointers, then single, double and triple indirect blocks.
//!
//! Indirect blocks are only created over ranges that hold data, so holes stay holes. Their
//! count depends only on which logical blocks are mapped, so the plan can allocate them before
//! the data. [`nodes`] fixes their order; [`encode`] fills them in that same order.

use std::collections::HashMap;

use super::extent::Extent;
use super::format::{put32, ADDR_PER_BLOCK, BLOCK, DIRECT_BLOCKS};

const PER: u64 = ADDR_PER_BLOCK;
/// First logical block mapped through the double indirect block.
pub const BASE_DIND: u64 = DIRECT_BLOCKS + PER;
/// First logical block mapped through the triple indirect block.
pub const BASE_TIND: u64 = BASE_DIND + PER * PER;

/// An indirect block: its level (1 single, 2 double, 3 triple) and the first logical block below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Node {
    /// 1, 2 or 3.
    pub level: u8,
    /// First logical block it covers.
    pub first: u64,
}

/// The indirect blocks above logical block `b` (≥ 12), top level first.
fn chain(b: u64) -> ([Node; 3], usize) {
    let ind = Node {
        level: 1,
        first: DIRECT_BLOCKS + (b - DIRECT_BLOCKS) / PER * PER,
    };
    let empty = Node { level: 0, first: 0 };
    if b < BASE_DIND {
        ([ind, empty, empty], 1)
    } else if b < BASE_TIND {
        let dind = Node {
            level: 2,
            first: BASE_DIND,
        };
        ([dind, ind, empty], 2)
    } else {
        let tind = Node {
            level: 3,
            first: BASE_TIND,
        };
        let dind = Node {
            level: 2,
            first: BASE_TIND + (b - BASE_TIND) / (PER * PER) * (PER * PER),
        };
        ([tind, dind, ind], 3)
    }
}

/// The indirect blocks needed to map `runs` (logical start, length; ascending), in allocation
/// order: each parent before its children, in logical order.
pub fn nodes(runs: impl Iterator<Item = (u64, u64)>) -> Vec<Node> {
    let mut out = Vec::new();
    let mut last: [Option<u64>; 4] = [None; 4];
    for (start, len) in runs {
        let end = start + len;
        let mut b = start.max(DIRECT_BLOCKS);
        while b < end {
            let (nodes, n) = chain(b);
            for node in &nodes[..n] {
                let slot = &mut last[node.level as usize];
                if *slot != Some(node.first) {
                    *slot = Some(node.first);
                    out.push(*node);
                }
            }
            b = nodes[n - 1].first + PER;
        }
    }
    out
}

/// Builds the block map: i_block's 15 pointers and the indirect blocks. `tree_blocks` are the
/// physical blocks for [`nodes`] of the same logical blocks, in that order.
pub fn encode(extents: &[Extent], tree_blocks: &[u64]) -> ([u8; 60], Vec<(u64, Vec<u8>)>) {
    let list = nodes(extents.iter().map(|e| (e.logical, e.len)));
    let mut index: HashMap<Node, usize> = HashMap::with_capacity(list.len());
    let mut blocks: Vec<(u64, Vec<u8>)> = Vec::with_capacity(list.len());
    for (node, phys) in list.iter().zip(tree_blocks) {
        index.insert(*node, blocks.len());
        blocks.push((*phys, vec![0u8; BLOCK]));
    }
    let mut root = [0u8; 60];
    let phys_of = |node: &Node, blocks: &[(u64, Vec<u8>)]| -> u64 {
        index.get(node).map(|&i| blocks[i].0).unwrap_or(0)
    };
    // Pointers from parents to children, and from the inode to the top nodes.
    for node in &list {
        let p = phys_of(node, &blocks) as u32;
        match node.level {
            1 if node.first == DIRECT_BLOCKS => put32(&mut root, 4 * 12, p),
            2 if node.first == BASE_DIND => put32(&mut root, 4 * 13, p),
            3 => put32(&mut root, 4 * 14, p),
            _ => {
                let (up, n) = chain(node.first);
                let parent = up[..n]
                    .iter()
                    .position(|c| c.level == node.level)
                    .and_then(|i| i.checked_sub(1))
                    .map(|i| up[i]);
                if let Some(parent) = parent {
                    let span = PER.pow(u32::from(node.level));
                    let slot = ((node.first - parent.first) / span) as usize;
                    if let Some(&i) = index.get(&parent) {
                        put32(&mut blocks[i].1, 4 * slot, p);
                    }
                }
            }
        }
    }
    for e in extents {
        let mut b = e.logical;
        let end = e.logical + e.len;
        while b < end {
            let phys = e.start + (b - e.logical);
            if b < DIRECT_BLOCKS {
                put32(&mut root, 4 * b as usize, phys as u32);
                b += 1;
                continue;
            }
            let (nodes, n) = chain(b);
            let ind = nodes[n - 1];
            let stop = end.min(ind.first + PER);
            if let Some(&i) = index.get(&ind) {
                let buf = &mut blocks[i].1;
                for k in b..stop {
                    let slot = (k - ind.first) as usize;
                    put32(buf, 4 * slot, (e.start + (k - e.logical)) as u32);
                }
            }
            b = stop;
        }
    }
    (root, blocks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ext4::format::le32;

    #[test]
    fn node_order_and_counts() {
        assert!(nodes([(0, 12)].into_iter()).is_empty());
        let n = nodes([(0, 13)].into_iter());
        assert_eq!(
            n,
            vec![Node {
                level: 1,
                first: 12
            }]
        );
        // Into the double indirect range: IND, DIND, IND, IND.
        let n = nodes([(0, BASE_DIND + 2 * PER)].into_iter());
        assert_eq!(n.len(), 4);
        assert_eq!(
            n[1],
            Node {
                level: 2,
                first: BASE_DIND
            }
        );
        // A hole skips the indirect blocks it would need.
        let n = nodes([(5, 1), (BASE_TIND + 7, 1)].into_iter());
        let levels: Vec<u8> = n.iter().map(|n| n.level).collect();
        assert_eq!(levels, [3, 2, 1]);
    }

    #[test]
    fn pointers_reach_every_block() {
        let extents = [
            Extent {
                logical: 0,
                start: 100,
                len: 20,
            },
            Extent {
                logical: BASE_DIND + PER + 3,
                start: 5000,
                len: 2,
            },
            Extent {
                logical: BASE_TIND,
                start: 9000,
                len: 1,
            },
        ];
        let list = nodes(extents.iter().map(|e| (e.logical, e.len)));
        let phys: Vec<u64> = (1..=list.len() as u64).map(|i| 70000 + i).collect();
        let (root, blocks) = encode(&extents, &phys);
        let get = |blk: u32| -> &Vec<u8> {
            &blocks.iter().find(|(p, _)| *p == u64::from(blk)).unwrap().1
        };
        assert_eq!(le32(&root, 0), 100);
        assert_eq!(le32(&root, 44), 111);
        let ind = get(le32(&root, 48));
        assert_eq!(le32(ind, 0), 112);
        assert_eq!(le32(ind, 4 * 7), 119);
        assert_eq!(le32(ind, 4 * 8), 0);
        let dind = get(le32(&root, 52));
        let ind2 = get(le32(dind, 4));
        assert_eq!(le32(ind2, 12), 5000);
        assert_eq!(le32(dind, 0), 0);
        let tind = get(le32(&root, 56));
        let dind3 = get(le32(tind, 0));
        let ind3 = get(le32(dind3, 0));
        assert_eq!(le32(ind3, 0), 9000);
    }
}
