//! Sizing and block allocation. Allocation runs in one fixed order after the group metadata:
//! the journal, then the "small metadata" region (directory blocks, slow symlinks, xattr blocks,
//! and for ext2/ext3 the indirect blocks), then all file data in walk order (each file
//! contiguous as far as the metadata of later groups allows), then extent tree blocks. Automatic
//! sizing repeats the allocation until the filesystem holds the used blocks plus the free share.

use super::blockmap;
use super::collect::{self, Collected, NodeKind};
use super::extent::{self, Extent};
use super::format::{BLOCKS_PER_GROUP, BLOCK_SIZE, MAX_EXTENT_LEN};
use super::layout::{merge, Allocator, Geometry, GeometryError};
use super::{Ext4Error, Ext4Params};
use crate::definition::{FreeSpace, FsType, SizeSpec};
use crate::tree::Tree;

/// Blocks of an inode: data extents and tree blocks (extent tree or indirect blocks).
#[derive(Debug, Clone, Default)]
pub struct Alloc {
    /// Data, ascending by logical block.
    pub extents: Vec<Extent>,
    /// Extent tree blocks (leaves first) or indirect blocks (in [`blockmap::nodes`] order).
    pub tree: Vec<u64>,
}

impl Alloc {
    /// Blocks this inode owns, without its xattr block.
    pub fn blocks(&self) -> u64 {
        self.extents.iter().map(|e| e.len).sum::<u64>() + self.tree.len() as u64
    }
}

/// The computed layout of a filesystem: everything [`super::write`] needs besides the tree.
#[derive(Debug, Clone)]
pub struct Ext4Plan {
    /// Filesystem size in bytes.
    pub size_bytes: u64,
    /// Blocks of 4096 bytes.
    pub blocks: u64,
    /// Inodes.
    pub inodes: u32,
    /// Inodes in use, reserved ones included.
    pub used_inodes: u32,
    /// Blocks in use.
    pub used_blocks: u64,
    /// Journal blocks (0 for ext2).
    pub journal_blocks: u64,
    pub(crate) params: Ext4Params,
    pub(crate) geo: Geometry,
    pub(crate) collected: Collected,
    pub(crate) allocs: Vec<Alloc>,
    pub(crate) journal: Alloc,
    pub(crate) xattr_block_nums: Vec<u64>,
    pub(crate) used: Vec<(u64, u64)>,
    /// Node indices of regular files in data order.
    pub(crate) data_order: Vec<usize>,
}

impl Ext4Plan {
    /// ext4, ext3 or ext2.
    pub fn fs_type(&self) -> FsType {
        self.params.fs_type
    }

    /// Whether this is the ext4 layout (extents, csums, flex_bg).
    pub(crate) fn ext4(&self) -> bool {
        self.params.fs_type == FsType::Ext4
    }
}

struct Layout {
    geo: Geometry,
    allocs: Vec<Alloc>,
    journal: Alloc,
    xattr_block_nums: Vec<u64>,
    used: Vec<(u64, u64)>,
    used_count: u64,
    fits: bool,
    journal_blocks: u64,
    data_order: Vec<usize>,
}

/// mke2fs's default journal size for a filesystem of `blocks` 4 KiB blocks.
pub fn default_journal_blocks(blocks: u64) -> u64 {
    match blocks {
        b if b < 32768 => 1024,
        b if b < 256 * 1024 => 4096,
        b if b < 512 * 1024 => 8192,
        b if b < 4096 * 1024 => 16384,
        b if b < 8192 * 1024 => 32768,
        b if b < 16384 * 1024 => 65536,
        b if b < 32768 * 1024 => 131072,
        _ => 262144,
    }
}

/// Smallest filesystem we make: a journal needs 1024 blocks and a filesystem of at least 2048.
fn min_blocks(journal: bool) -> u64 {
    if journal {
        2048
    } else {
        256
    }
}

pub fn plan(tree: &Tree, params: &Ext4Params) -> Result<Ext4Plan, Ext4Error> {
    check_params(params)?;
    let ext4 = params.fs_type == FsType::Ext4;
    let collected = collect::collect(tree, ext4, params.timestamp)?;
    let layout = match params.size {
        SizeSpec::Auto => auto_size(&collected, params, params.free)?,
        SizeSpec::Fixed(size) => fixed_size(&collected, params, size.0)?,
    };
    let geo = layout.geo;
    let inodes = geo.inodes() as u32;
    Ok(Ext4Plan {
        size_bytes: geo.blocks * BLOCK_SIZE,
        blocks: geo.blocks,
        inodes,
        used_inodes: collected.max_ino,
        used_blocks: layout.used_count,
        journal_blocks: layout.journal_blocks,
        params: params.clone(),
        geo,
        collected,
        allocs: layout.allocs,
        journal: layout.journal,
        xattr_block_nums: layout.xattr_block_nums,
        used: layout.used,
        data_order: layout.data_order,
    })
}

fn check_params(p: &Ext4Params) -> Result<(), Ext4Error> {
    if p.label.len() > 16 {
        return Err(Ext4Error::BadParam(format!(
            "label {:?} is longer than 16 bytes",
            p.label
        )));
    }
    if p.inode_ratio < 1024 || p.inode_ratio > (1 << 26) {
        return Err(Ext4Error::BadParam(format!(
            "inode_ratio {} is outside 1024..=64M",
            p.inode_ratio
        )));
    }
    if !(0.0..=50.0).contains(&p.reserved_percent) {
        return Err(Ext4Error::BadParam(format!(
            "reserved_percent {} is outside 0..=50",
            p.reserved_percent
        )));
    }
    if let Some(j) = p.journal_size {
        if p.fs_type == FsType::Ext2 {
            return Err(Ext4Error::BadParam(
                "ext2 has no journal; journal_size must not be set".into(),
            ));
        }
        let blocks = j.div_ceil(BLOCK_SIZE);
        if !(1024..=10_240_000).contains(&blocks) {
            return Err(Ext4Error::BadParam(format!(
                "journal size {j} is outside 4 MiB..=40000 MiB"
            )));
        }
    }
    Ok(())
}

fn journal_blocks(params: &Ext4Params, blocks: u64) -> u64 {
    match params.fs_type {
        FsType::Ext2 => 0,
        _ => params
            .journal_size
            .map(|j| j.div_ceil(BLOCK_SIZE))
            .unwrap_or_else(|| default_journal_blocks(blocks)),
    }
}

fn inodes_for(c: &Collected, params: &Ext4Params, blocks: u64) -> u64 {
    (blocks.saturating_mul(BLOCK_SIZE) / params.inode_ratio).max(u64::from(c.max_ino))
}

fn too_large(params: &Ext4Params, blocks: u64) -> Ext4Error {
    Ext4Error::TooLarge {
        fs: params.fs_type.name(),
        blocks,
    }
}

fn auto_size(c: &Collected, params: &Ext4Params, free: FreeSpace) -> Result<Layout, Ext4Error> {
    let journaled = params.fs_type != FsType::Ext2;
    let demand: u64 = c
        .nodes
        .iter()
        .flat_map(|n| n.demand.iter().map(|r| r.1))
        .sum::<u64>()
        + c.xattr_blocks.len() as u64;
    let inode_blocks = u64::from(c.max_ino) * 256 / BLOCK_SIZE;
    let mut blocks = (demand + inode_blocks + 1024).max(min_blocks(journaled));
    for _ in 0..200 {
        let inodes = inodes_for(c, params, blocks);
        let geo = match Geometry::new(params.fs_type == FsType::Ext4, blocks, inodes) {
            Ok(g) => g,
            Err(GeometryError::TooFewGroups { groups }) => {
                blocks = blocks.max(groups * BLOCKS_PER_GROUP).max(blocks + 1);
                continue;
            }
            Err(GeometryError::NoRoom) => {
                // The last group cannot hold its own metadata: grow it in steps.
                blocks += 1024;
                continue;
            }
            Err(GeometryError::TooLarge) => return Err(too_large(params, blocks)),
        };
        let layout = allocate(geo, c, journal_blocks(params, blocks))?;
        let used = layout.used_count;
        let extra = free
            .bytes_for(used.saturating_mul(BLOCK_SIZE))
            .div_ceil(BLOCK_SIZE);
        let target = used
            .saturating_add(extra)
            .max(min_blocks(journaled))
            .max(layout.journal_blocks.saturating_mul(2));
        if layout.fits && target <= blocks {
            return Ok(layout);
        }
        blocks = target.max(blocks + 1);
    }
    Err(too_large(params, blocks))
}

fn fixed_size(c: &Collected, params: &Ext4Params, size: u64) -> Result<Layout, Ext4Error> {
    let given_blocks = size / BLOCK_SIZE;
    let too_small = || -> Result<Ext4Error, Ext4Error> {
        let needed = auto_size(c, params, FreeSpace::Bytes(crate::definition::ByteSize(0)))?;
        Ok(Ext4Error::TooSmall {
            needed: needed.geo.blocks * BLOCK_SIZE,
            given: size,
        })
    };
    let journaled = params.fs_type != FsType::Ext2;
    let mut blocks = given_blocks;
    let geo = loop {
        if blocks < min_blocks(journaled) {
            return Err(too_small()?);
        }
        let inodes = inodes_for(c, params, blocks);
        match Geometry::new(params.fs_type == FsType::Ext4, blocks, inodes) {
            Ok(g) => break g,
            Err(GeometryError::NoRoom) => {
                // Drop the short last group, as mke2fs does.
                let last = (blocks - 1) / BLOCKS_PER_GROUP;
                if last == 0 {
                    return Err(too_small()?);
                }
                blocks = last * BLOCKS_PER_GROUP;
            }
            Err(GeometryError::TooFewGroups { .. }) => return Err(too_small()?),
            Err(GeometryError::TooLarge) => return Err(too_large(params, blocks)),
        }
    };
    let journal = journal_blocks(params, blocks);
    if journal * 2 > blocks {
        return Err(too_small()?);
    }
    let layout = allocate(geo, c, journal)?;
    if !layout.fits {
        return Err(too_small()?);
    }
    Ok(layout)
}

/// Maps logical runs to physical blocks, cutting extents at `max_len` and at fixed metadata.
fn map_runs(a: &mut Allocator<'_>, runs: &[(u64, u64)], max_len: u64) -> Vec<Extent> {
    let mut out = Vec::with_capacity(runs.len());
    for &(logical, len) in runs {
        let mut done = 0;
        while done < len {
            let (start, got) = a.take((len - done).min(max_len));
            out.push(Extent {
                logical: logical + done,
                start,
                len: got,
            });
            done += got;
        }
    }
    out
}

fn take_n(a: &mut Allocator<'_>, n: usize) -> Vec<u64> {
    (0..n).map(|_| a.one()).collect()
}

fn allocate(geo: Geometry, c: &Collected, journal_blocks: u64) -> Result<Layout, Ext4Error> {
    let ext4 = geo.ext4;
    let max_len = if ext4 { MAX_EXTENT_LEN } else { u64::MAX };
    let fixed = geo.fixed.clone();
    let mut a = Allocator::new(&fixed);
    let mut journal = Alloc::default();
    if journal_blocks > 0 {
        let runs = [(0, journal_blocks)];
        if ext4 {
            journal.extents = map_runs(&mut a, &runs, max_len);
            let (n, _) = extent::tree_shape(journal.extents.len());
            journal.tree = take_n(&mut a, n);
        } else {
            let n = blockmap::nodes(runs.iter().copied()).len();
            journal.tree = take_n(&mut a, n);
            journal.extents = map_runs(&mut a, &runs, max_len);
        }
    }
    let mut allocs = vec![Alloc::default(); c.nodes.len()];
    let mut xattr_block_nums = vec![0u64; c.xattr_blocks.len()];
    // Small metadata region.
    for (node, alloc) in c.nodes.iter().zip(allocs.iter_mut()) {
        if let Some(x) = node.xattr_block {
            if xattr_block_nums[x] == 0 {
                xattr_block_nums[x] = a.one();
            }
        }
        if !ext4 && !node.demand.is_empty() {
            let n = blockmap::nodes(node.demand.iter().copied()).len();
            alloc.tree = take_n(&mut a, n);
        }
        if matches!(node.kind, NodeKind::Dir { .. } | NodeKind::SlowSymlink) {
            alloc.extents = map_runs(&mut a, &node.demand, max_len);
            if ext4 {
                let (n, _) = extent::tree_shape(alloc.extents.len());
                alloc.tree = take_n(&mut a, n);
            }
        }
    }
    // File data.
    let mut data_order = Vec::new();
    for (i, (node, alloc)) in c.nodes.iter().zip(allocs.iter_mut()).enumerate() {
        if node.is_file() && !node.demand.is_empty() {
            alloc.extents = map_runs(&mut a, &node.demand, max_len);
            data_order.push(i);
        }
    }
    // Extent trees of fragmented files.
    if ext4 {
        for &i in &data_order {
            let (n, _) = extent::tree_shape(allocs[i].extents.len());
            if !extent::depth_ok(allocs[i].extents.len()) {
                return Err(Ext4Error::Unrepresentable {
                    path: String::from_utf8_lossy(&c.nodes[i].path).into_owned(),
                    reason: "too fragmented for an extent tree".into(),
                });
            }
            allocs[i].tree = take_n(&mut a, n);
        }
    }
    let fits = a.end() <= geo.blocks;
    let fixed_count: u64 = fixed.iter().map(|(s, e)| e - s).sum();
    let used_count = fixed_count + a.count();
    let runs = a.into_runs();
    let mut ranges = fixed;
    ranges.extend(runs);
    let used = merge(ranges);
    Ok(Layout {
        geo,
        allocs,
        journal,
        xattr_block_nums,
        used,
        used_count,
        fits,
        journal_blocks,
        data_order,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::ByteSize;
    use crate::tree::{Content, FileData, Inode, Kind, Meta};
    use std::sync::Arc;

    pub fn params(fs_type: FsType, size: SizeSpec) -> Ext4Params {
        Ext4Params {
            fs_type,
            size,
            free: FreeSpace::Percent(25.0),
            inode_ratio: 16384,
            label: "t".into(),
            uuid: [1; 16],
            hash_seed: [2; 16],
            reserved_percent: 0.0,
            journal_size: None,
            timestamp: 1_700_000_000,
        }
    }

    fn tree_with_mib(mib: usize) -> Tree {
        let mut t = Tree::new(Meta::root(0o755, 0));
        let data: Arc<[u8]> = Arc::from(vec![1u8; mib << 20]);
        t.insert(
            b"big",
            Inode::new(
                Meta::root(0o644, 0),
                Kind::File(FileData {
                    size: data.len() as u64,
                    content: Content::Bytes(data),
                    sha256: None,
                }),
            ),
        )
        .unwrap();
        t
    }

    #[test]
    fn auto_size_holds_data_and_free_share() {
        for fs in [FsType::Ext4, FsType::Ext3, FsType::Ext2] {
            let t = tree_with_mib(40);
            let p = plan(&t, &params(fs, SizeSpec::Auto)).unwrap();
            let free = p.blocks - p.used_blocks;
            assert!(
                free * 4 >= p.used_blocks,
                "{fs:?}: {free} free of {}",
                p.blocks
            );
            assert!(p.used_blocks >= 10240);
            assert_eq!(p.size_bytes, p.blocks * 4096);
            // Deterministic.
            let q = plan(&t, &params(fs, SizeSpec::Auto)).unwrap();
            assert_eq!((p.blocks, p.inodes), (q.blocks, q.inodes));
        }
    }

    #[test]
    fn fixed_too_small_names_the_needed_size() {
        let t = tree_with_mib(40);
        let err = plan(
            &t,
            &params(FsType::Ext4, SizeSpec::Fixed(ByteSize(20 << 20))),
        )
        .unwrap_err();
        match err {
            Ext4Error::TooSmall { needed, given } => {
                assert_eq!(given, 20 << 20);
                assert!(needed > 40 << 20 && needed < 60 << 20, "{needed}");
                let ok =
                    plan(&t, &params(FsType::Ext4, SizeSpec::Fixed(ByteSize(needed)))).unwrap();
                assert_eq!(ok.size_bytes, needed);
                assert!(plan(
                    &t,
                    &params(FsType::Ext4, SizeSpec::Fixed(ByteSize(needed - 4096)))
                )
                .is_err());
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn fixed_size_drops_a_tiny_last_group_and_respects_ratio() {
        let t = tree_with_mib(1);
        let p = plan(
            &t,
            &params(FsType::Ext3, SizeSpec::Fixed(ByteSize((32768 + 10) * 4096))),
        )
        .unwrap();
        assert_eq!(p.blocks, 32768);
        assert_eq!(p.inodes, 8192);
        let p = plan(
            &t,
            &params(FsType::Ext4, SizeSpec::Fixed(ByteSize(1 << 30))),
        )
        .unwrap();
        assert_eq!(p.inodes, 65536);
        assert_eq!(p.journal_blocks, 16384 / 2);
    }
}
