//! Linear directory blocks: entries packed in order, the last entry of each block stretched to
//! its end, and with metadata_csum a 12-byte tail holding the block's checksum.
//!
//! [`block_count`] and [`encode`] run the same packing, so the plan's block count and the
//! written blocks cannot disagree.

use super::checksum::ext4_crc;
use super::format::{put16, put32, BLOCK};

/// Size of the checksum tail.
pub const TAIL: usize = 12;

/// One directory entry to write.
#[derive(Debug, Clone, Copy)]
pub struct DirEntry<'a> {
    /// Inode number.
    pub ino: u32,
    /// Name (1 to 255 bytes).
    pub name: &'a [u8],
    /// File type byte.
    pub file_type: u8,
}

/// Bytes an entry with a name of `len` bytes needs.
pub fn entry_len(len: usize) -> usize {
    8 + ((len + 3) & !3)
}

fn capacity(csum: bool) -> usize {
    if csum {
        BLOCK - TAIL
    } else {
        BLOCK
    }
}

/// Blocks needed for entries whose names have the given lengths (`.` and `..` included by the
/// caller), at least `min_blocks`.
pub fn block_count(lens: impl Iterator<Item = usize>, csum: bool, min_blocks: u64) -> u64 {
    let cap = capacity(csum);
    let mut blocks = 1u64;
    let mut used = 0usize;
    for len in lens {
        let need = entry_len(len);
        if used + need > cap {
            blocks += 1;
            used = 0;
        }
        used += need;
    }
    blocks.max(min_blocks)
}

/// Appends the directory blocks for `entries` to `out` (a multiple of 4096 bytes), padded with
/// empty blocks to `min_blocks`. `csum_seed` is the inode's checksum seed with metadata_csum.
pub fn encode<'a>(
    entries: impl Iterator<Item = DirEntry<'a>>,
    csum_seed: Option<u32>,
    min_blocks: u64,
    out: &mut Vec<u8>,
) {
    let cap = capacity(csum_seed.is_some());
    let start = out.len();
    out.resize(start + BLOCK, 0);
    let mut block = start;
    let mut used = 0usize;
    let mut last: Option<usize> = None;
    for e in entries {
        let need = entry_len(e.name.len());
        if used + need > cap {
            if let Some(l) = last {
                put16(out, l + 4, (block + cap - l) as u16);
            }
            finish(&mut out[block..block + BLOCK], csum_seed);
            block = out.len();
            out.resize(block + BLOCK, 0);
            used = 0;
        }
        let at = block + used;
        put32(out, at, e.ino);
        put16(out, at + 4, need as u16);
        out[at + 6] = e.name.len() as u8;
        out[at + 7] = e.file_type;
        out[at + 8..at + 8 + e.name.len()].copy_from_slice(e.name);
        last = Some(at);
        used += need;
    }
    match last {
        Some(l) if l >= block => put16(out, l + 4, (block + cap - l) as u16),
        _ => put16(out, block + 4, cap as u16),
    }
    finish(&mut out[block..block + BLOCK], csum_seed);
    while ((out.len() - start) / BLOCK) < min_blocks as usize {
        let b = out.len();
        out.resize(b + BLOCK, 0);
        put16(out, b + 4, cap as u16);
        finish(&mut out[b..b + BLOCK], csum_seed);
    }
}

fn finish(block: &mut [u8], csum_seed: Option<u32>) {
    let Some(seed) = csum_seed else { return };
    let t = BLOCK - TAIL;
    put32(block, t, 0);
    put16(block, t + 4, TAIL as u16);
    block[t + 6] = 0;
    block[t + 7] = 0xDE;
    let crc = ext4_crc(seed, &block[..t]);
    put32(block, t + 8, crc);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ext4::format::{le16, le32};

    fn walk(block: &[u8], cap: usize) -> Vec<(u32, Vec<u8>)> {
        let mut pos = 0;
        let mut out = Vec::new();
        while pos < cap {
            let rec = le16(block, pos + 4) as usize;
            assert!(rec >= 8 && pos + rec <= cap, "rec_len {rec} at {pos}");
            let n = block[pos + 6] as usize;
            out.push((le32(block, pos), block[pos + 8..pos + 8 + n].to_vec()));
            pos += rec;
        }
        assert_eq!(pos, cap);
        out
    }

    #[test]
    fn packs_many_entries_and_counts_match() {
        let names: Vec<Vec<u8>> = (0..2000)
            .map(|i| format!("file-{i:05}").into_bytes())
            .collect();
        for csum in [None, Some(5)] {
            let entries = names.iter().enumerate().map(|(i, n)| DirEntry {
                ino: 12 + i as u32,
                name: n,
                file_type: 1,
            });
            let mut out = Vec::new();
            encode(entries, csum, 1, &mut out);
            let count = block_count(names.iter().map(|n| n.len()), csum.is_some(), 1);
            assert_eq!(out.len() as u64, count * BLOCK as u64);
            let cap = capacity(csum.is_some());
            let mut all = Vec::new();
            for b in out.chunks(BLOCK) {
                all.extend(walk(b, cap));
                if csum.is_some() {
                    assert_eq!(b[BLOCK - 5], 0xDE);
                    assert_eq!(le32(b, BLOCK - 4), ext4_crc(5, &b[..BLOCK - TAIL]));
                }
            }
            assert_eq!(all.len(), 2000);
            assert_eq!(all[1999].1, b"file-01999");
        }
    }

    #[test]
    fn pads_to_min_blocks_with_empty_blocks() {
        let dots = [
            DirEntry {
                ino: 11,
                name: b".",
                file_type: 2,
            },
            DirEntry {
                ino: 2,
                name: b"..",
                file_type: 2,
            },
        ];
        let mut out = Vec::new();
        encode(dots.iter().copied(), None, 4, &mut out);
        assert_eq!(out.len(), 4 * BLOCK);
        assert_eq!(walk(&out[..BLOCK], BLOCK).len(), 2);
        assert_eq!(walk(&out[3 * BLOCK..], BLOCK), vec![(0, vec![])]);
        assert_eq!(block_count([1, 2].into_iter(), false, 4), 4);
    }
}
