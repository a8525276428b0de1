//! Producing the image from a plan. File data is copied by worker threads in units of up to
//! 4 MiB of physically contiguous blocks (many small files share one `pwrite`); meanwhile the
//! calling thread encodes inodes, directories, trees, bitmaps and descriptors and writes them
//! through coalescing writers, in ascending block order.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use super::checksum::{fs_seed, inode_seed, is_zero};
use super::collect::{lost_found_meta, split_xattrs, NodeKind, LOST_FOUND_BLOCKS};
use super::dir::{self, DirEntry};
use super::format::*;
use super::group::{self, GroupCounts};
use super::inode::{self, InodeRecord};
use super::planner::{Alloc, Ext4Plan};
use super::superblock::{self, SuperInfo};
use super::{blockmap, copy, extent, journal, xattr, Ext4Error};
use crate::tree::{InodeId, Kind, Tree};

/// What [`super::write`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteSummary {
    /// Filesystem size in bytes.
    pub size_bytes: u64,
    /// Bytes of file data copied.
    pub data_bytes: u64,
    /// Inodes in use.
    pub used_inodes: u32,
    /// Blocks in use.
    pub used_blocks: u64,
}

const FLUSH_BYTES: usize = 4 << 20;

/// The image being written.
pub struct Output<'a> {
    /// The image file or device.
    pub file: &'a File,
    /// Byte offset of the filesystem in it.
    pub offset: u64,
    /// Its name, for errors.
    pub name: String,
    /// Whether it reads as zeros where nothing is written.
    pub zeroed: bool,
}

impl Output<'_> {
    /// Writes `data` at filesystem block `block`.
    pub fn pwrite(&self, block: u64, data: &[u8]) -> Result<(), Ext4Error> {
        let at = self.offset + block * BLOCK_SIZE;
        self.file
            .write_all_at(data, at)
            .map_err(|source| Ext4Error::Io {
                image: self.name.clone(),
                offset: at,
                source,
            })
    }
}

/// Collects consecutive blocks into one buffer and writes them with one call; skips all-zero
/// blocks when the output already reads as zeros.
struct BlockWriter<'a> {
    out: &'a Output<'a>,
    start: u64,
    buf: Vec<u8>,
}

impl<'a> BlockWriter<'a> {
    fn new(out: &'a Output<'a>) -> Self {
        BlockWriter {
            out,
            start: 0,
            buf: Vec::with_capacity(FLUSH_BYTES),
        }
    }

    fn put(&mut self, block: u64, data: &[u8]) -> Result<(), Ext4Error> {
        for (i, chunk) in data.chunks(BLOCK).enumerate() {
            let b = block + i as u64;
            if self.out.zeroed && is_zero(chunk) {
                self.flush()?;
                continue;
            }
            if !self.buf.is_empty() && self.start + (self.buf.len() / BLOCK) as u64 != b {
                self.flush()?;
            }
            if self.buf.is_empty() {
                self.start = b;
            }
            self.buf.extend_from_slice(chunk);
            self.buf.resize(self.buf.len().next_multiple_of(BLOCK), 0);
            if self.buf.len() >= FLUSH_BYTES {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Writes `count` zero blocks, unless the output is known to be zero already.
    fn zeros(&mut self, block: u64, count: u64) -> Result<(), Ext4Error> {
        if self.out.zeroed || count == 0 {
            return Ok(());
        }
        self.flush()?;
        let zero = vec![0u8; FLUSH_BYTES];
        let mut done = 0;
        while done < count {
            let n = (count - done).min((FLUSH_BYTES / BLOCK) as u64);
            self.out.pwrite(block + done, &zero[..n as usize * BLOCK])?;
            done += n;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Ext4Error> {
        if !self.buf.is_empty() {
            self.out.pwrite(self.start, &self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }
}

fn image_name(file: &File) -> String {
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "<image>".into())
}

pub(super) fn mismatch(what: impl Into<String>) -> Ext4Error {
    Ext4Error::PlanMismatch(what.into())
}

pub fn write(
    tree: &Tree,
    plan: &Ext4Plan,
    file: &File,
    offset: u64,
    zeroed: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<WriteSummary, Ext4Error> {
    if tree.allocated() != plan.collected.ino_of.len() {
        return Err(mismatch("it has a different number of inodes"));
    }
    let name = image_name(file);
    let end = offset + plan.size_bytes;
    let io_err = |source| Ext4Error::Io {
        image: name.clone(),
        offset: end,
        source,
    };
    let meta = file.metadata().map_err(io_err)?;
    if meta.is_file() && meta.len() < end {
        file.set_len(end).map_err(io_err)?;
    }
    let out = Output {
        file,
        offset,
        name: name.clone(),
        zeroed,
    };
    let cursor = Mutex::new(copy::DataCursor::default());
    let abort = AtomicBool::new(false);
    let data_bytes = AtomicU64::new(0);
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4);
    let (meta_result, data_result) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let r =
                        copy::copy_data(tree, plan, &out, &cursor, &abort, &data_bytes, progress);
                    if r.is_err() {
                        abort.store(true, Ordering::Relaxed);
                    }
                    r
                })
            })
            .collect();
        let m = write_metadata(tree, plan, &out);
        if m.is_err() {
            abort.store(true, Ordering::Relaxed);
        }
        let mut d = Ok(());
        for h in handles {
            let r = h
                .join()
                .unwrap_or_else(|_| Err(mismatch("a data thread panicked")));
            if d.is_ok() {
                d = r;
            }
        }
        (m, d)
    });
    data_result?;
    meta_result?;
    Ok(WriteSummary {
        size_bytes: plan.size_bytes,
        data_bytes: data_bytes.into_inner(),
        used_inodes: plan.used_inodes,
        used_blocks: plan.used_blocks,
    })
}

fn file_type(kind: &Kind) -> u8 {
    match kind {
        Kind::Directory(_) => FT_DIR,
        Kind::File(_) => FT_REG,
        Kind::Symlink(_) => FT_SYMLINK,
        Kind::CharDevice { .. } => FT_CHR,
        Kind::BlockDevice { .. } => FT_BLK,
        Kind::Fifo => FT_FIFO,
        Kind::Socket => FT_SOCK,
    }
}

struct MetaWriter<'a> {
    tree: &'a Tree,
    plan: &'a Ext4Plan,
    seed: Option<u32>,
    small: BlockWriter<'a>,
    trees: BlockWriter<'a>,
    xattr_done: Vec<bool>,
}

fn write_metadata(tree: &Tree, plan: &Ext4Plan, out: &Output<'_>) -> Result<(), Ext4Error> {
    let ext4 = plan.ext4();
    let seed = ext4.then(|| fs_seed(&plan.params.uuid));
    let mut w = MetaWriter {
        tree,
        plan,
        seed,
        small: BlockWriter::new(out),
        trees: BlockWriter::new(out),
        xattr_done: vec![false; plan.collected.xattr_blocks.len()],
    };
    let geo = &plan.geo;
    let isz = usize::from(geo.inode_size);
    let ipg = u64::from(geo.inodes_per_group);
    let max_ino = u64::from(plan.collected.max_ino);
    let used_in = |g: u64| -> u64 { max_ino.saturating_sub(g * ipg).min(ipg) };
    let mut tables: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut table_writer = BlockWriter::new(out);
    let slot = |tables: &mut BTreeMap<u64, Vec<u8>>, ino: u32| -> (u64, usize) {
        let i = u64::from(ino - 1);
        let g = i / ipg;
        let len = (used_in(g) as usize * isz).next_multiple_of(BLOCK);
        tables.entry(g).or_insert_with(|| vec![0u8; len]);
        (g, (i % ipg) as usize * isz)
    };

    // Reserved inodes: zero, with a checksum as mke2fs writes them.
    for ino in 1..LOST_FOUND_INO {
        if ino == ROOT_INO || ino == JOURNAL_INO {
            continue;
        }
        let (g, at) = slot(&mut tables, ino);
        if let (Some(s), Some(t)) = (seed, tables.get_mut(&g)) {
            inode::set_checksum(&mut t[at..at + isz], s, ino);
        }
    }
    let journal_i_block = w.journal()?;
    if let Some((rec, _)) = &journal_i_block {
        let (g, at) = slot(&mut tables, JOURNAL_INO);
        if let Some(t) = tables.get_mut(&g) {
            inode::encode(
                rec,
                &mut t[at..at + isz],
                seed.map(|s| (s, JOURNAL_INO)),
                &[],
            );
        }
    }
    for idx in 0..plan.collected.nodes.len() {
        let ino = plan.collected.nodes[idx].ino;
        let (g, at) = slot(&mut tables, ino);
        if let Some(t) = tables.get_mut(&g) {
            w.node(idx, &mut t[at..at + isz])?;
        }
        // Groups before this one are complete (group 0 waits: lost+found may come late).
        while let Some((&first, _)) = tables.range(1..g.max(1)).next() {
            if let Some(buf) = tables.remove(&first) {
                write_table(&mut table_writer, plan, first, &buf)?;
            }
        }
    }
    for (g, buf) in std::mem::take(&mut tables) {
        write_table(&mut table_writer, plan, g, &buf)?;
    }
    // Inode tables of groups without inodes: ext2/ext3 have no "uninit" flag, so they must be
    // zero; ext4 marks them INODE_UNINIT.
    if !ext4 {
        for g in 0..geo.groups {
            if used_in(g) == 0 {
                table_writer.zeros(geo.meta[g as usize].inode_table, geo.itable_blocks)?;
            }
        }
    }
    table_writer.flush()?;
    w.small.flush()?;
    w.trees.flush()?;
    let journal = journal_i_block.map(|(rec, _)| (rec.i_block, rec.size));
    write_groups(plan, out, seed, journal)
}

fn write_table(
    w: &mut BlockWriter<'_>,
    plan: &Ext4Plan,
    g: u64,
    buf: &[u8],
) -> Result<(), Ext4Error> {
    let start = plan.geo.meta[g as usize].inode_table;
    w.put(start, buf)?;
    let written = (buf.len() / BLOCK) as u64;
    w.zeros(start + written, plan.geo.itable_blocks - written)
}

impl MetaWriter<'_> {
    /// Writes the journal blocks; returns the journal inode.
    fn journal(&mut self) -> Result<Option<(InodeRecord, ())>, Ext4Error> {
        let plan = self.plan;
        let jb = plan.journal_blocks;
        if jb == 0 {
            return Ok(None);
        }
        let j = &plan.journal;
        let ext4 = plan.ext4();
        let jseed = self.seed.map(|s| inode_seed(s, JOURNAL_INO, 0));
        let (i_block, tree_blocks) = if ext4 {
            extent::encode(&j.extents, &j.tree, jseed)
        } else {
            blockmap::encode(&j.extents, &j.tree)
        };
        if !ext4 {
            for (b, data) in &tree_blocks {
                self.small.put(*b, data)?;
            }
        }
        let sb = journal::superblock(jb, &plan.params.uuid, ext4, plan.geo.is_64bit);
        let mut first = true;
        for e in &j.extents {
            if first {
                self.small.put(e.start, &sb)?;
                self.small.zeros(e.start + 1, e.len - 1)?;
                first = false;
            } else {
                self.small.zeros(e.start, e.len)?;
            }
        }
        if ext4 {
            for (b, data) in &tree_blocks {
                self.small.put(*b, data)?;
            }
        }
        let rec = InodeRecord {
            mode: S_IFREG | 0o600,
            uid: 0,
            gid: 0,
            size: jb * BLOCK_SIZE,
            links: 1,
            sectors: j.blocks() * 8,
            flags: if ext4 { EXTENTS_FL } else { 0 },
            i_block,
            file_acl: 0,
            time: plan.params.timestamp,
        };
        Ok(Some((rec, ())))
    }

    fn node(&mut self, idx: usize, out: &mut [u8]) -> Result<(), Ext4Error> {
        let plan = self.plan;
        let node = &plan.collected.nodes[idx];
        let alloc: &Alloc = &plan.allocs[idx];
        let ext4 = plan.ext4();
        let meta_owned;
        let meta = match node.tree {
            Some(id) => &self.tree.inode(id).meta,
            None => {
                meta_owned = lost_found_meta(plan.params.timestamp);
                &meta_owned
            }
        };
        let iseed = self.seed.map(|s| inode_seed(s, node.ino, 0));
        let (inline, rest) = split_xattrs(meta, &node.path, ext4)?;
        if rest.is_empty() != node.xattr_block.is_none() {
            return Err(mismatch(format!(
                "{}: extended attributes changed",
                String::from_utf8_lossy(&node.path)
            )));
        }
        let mut file_acl = 0;
        if let Some(x) = node.xattr_block {
            file_acl = plan.xattr_block_nums[x];
            if !self.xattr_done[x] {
                self.xattr_done[x] = true;
                let xb = &plan.collected.xattr_blocks[x];
                let mut bytes = xb.bytes.clone();
                xattr::finish_block(&mut bytes, xb.refs, file_acl, self.seed);
                self.small.put(file_acl, &bytes)?;
            }
        }
        let mut i_block = [0u8; 60];
        let mut flags = 0;
        match &node.kind {
            NodeKind::Dir { .. } | NodeKind::SlowSymlink | NodeKind::File => {
                let (root, tree_blocks) = if ext4 {
                    extent::encode(&alloc.extents, &alloc.tree, iseed)
                } else {
                    blockmap::encode(&alloc.extents, &alloc.tree)
                };
                i_block = root;
                if ext4 {
                    flags |= EXTENTS_FL;
                } else {
                    for (b, data) in &tree_blocks {
                        self.small.put(*b, data)?;
                    }
                }
                if node.kind != NodeKind::File {
                    let data = self.content_of(idx, iseed)?;
                    let planned: u64 = alloc.extents.iter().map(|e| e.len).sum();
                    if data.len() as u64 != planned * BLOCK_SIZE {
                        return Err(mismatch(format!(
                            "{} changed size",
                            String::from_utf8_lossy(&node.path)
                        )));
                    }
                    for e in &alloc.extents {
                        let s = (e.logical * BLOCK_SIZE) as usize;
                        self.small
                            .put(e.start, &data[s..s + (e.len * BLOCK_SIZE) as usize])?;
                    }
                }
                if ext4 {
                    let w = if node.kind == NodeKind::File {
                        &mut self.trees
                    } else {
                        &mut self.small
                    };
                    for (b, data) in &tree_blocks {
                        w.put(*b, data)?;
                    }
                }
            }
            NodeKind::FastSymlink => {
                if let Some(Kind::Symlink(t)) = node.tree.map(|id| &self.tree.inode(id).kind) {
                    if t.len() < 60 {
                        i_block[..t.len()].copy_from_slice(t);
                    }
                }
            }
            NodeKind::Special { i_block: b } => i_block = *b,
        }
        let xattr_blocks = u64::from(node.xattr_block.is_some());
        let rec = InodeRecord {
            mode: node.mode,
            uid: meta.uid,
            gid: meta.gid,
            size: node.size,
            links: node.links,
            sectors: (alloc.blocks() + xattr_blocks) * 8,
            flags,
            i_block,
            file_acl,
            time: meta.mtime,
        };
        inode::encode(&rec, out, self.seed.map(|s| (s, node.ino)), &inline);
        Ok(())
    }

    /// The data blocks of a directory or slow symlink.
    fn content_of(&self, idx: usize, iseed: Option<u32>) -> Result<Vec<u8>, Ext4Error> {
        let plan = self.plan;
        let node = &plan.collected.nodes[idx];
        let shown = || String::from_utf8_lossy(&node.path).into_owned();
        let kind = node.tree.map(|id| &self.tree.inode(id).kind);
        let mut data = Vec::new();
        match (&node.kind, kind) {
            (NodeKind::SlowSymlink, Some(Kind::Symlink(t))) => {
                data.extend_from_slice(t);
                data.resize(BLOCK, 0);
            }
            (NodeKind::Dir { parent }, kind) => {
                let empty = BTreeMap::new();
                let entries: &BTreeMap<Box<[u8]>, InodeId> = match kind {
                    Some(Kind::Directory(e)) => e,
                    None => &empty,
                    Some(_) => {
                        return Err(mismatch(format!("{} is no longer a directory", shown())))
                    }
                };
                let mut list: Vec<DirEntry<'_>> = Vec::with_capacity(entries.len() + 3);
                list.push(DirEntry {
                    ino: node.ino,
                    name: b".",
                    file_type: FT_DIR,
                });
                list.push(DirEntry {
                    ino: *parent,
                    name: b"..",
                    file_type: FT_DIR,
                });
                let add_lf = node.ino == ROOT_INO && plan.collected.added_lost_found;
                let mut lf_done = !add_lf;
                for (name, child) in entries {
                    if !lf_done && **name > b"lost+found"[..] {
                        list.push(DirEntry {
                            ino: LOST_FOUND_INO,
                            name: b"lost+found",
                            file_type: FT_DIR,
                        });
                        lf_done = true;
                    }
                    let ino = plan
                        .collected
                        .ino_of
                        .get(child.index())
                        .copied()
                        .unwrap_or(0);
                    if ino == 0 {
                        return Err(mismatch(format!("{} has a new entry", shown())));
                    }
                    list.push(DirEntry {
                        ino,
                        name,
                        file_type: file_type(&self.tree.inode(*child).kind),
                    });
                }
                if !lf_done {
                    list.push(DirEntry {
                        ino: LOST_FOUND_INO,
                        name: b"lost+found",
                        file_type: FT_DIR,
                    });
                }
                let min = if node.ino == LOST_FOUND_INO {
                    LOST_FOUND_BLOCKS
                } else {
                    1
                };
                dir::encode(list.into_iter(), iseed, min, &mut data);
            }
            _ => return Err(mismatch(format!("{} changed type", shown()))),
        }
        Ok(data)
    }
}

fn write_groups(
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
        let bm = group::block_bitmap(&plan.used, geo.group_start(g), len);
        let used: u64 = bm[..(len as usize).div_ceil(8)]
            .iter()
            .map(|b| u64::from(b.count_ones()))
            .sum::<u64>()
            - (len.next_multiple_of(8) - len);
        counts[g as usize].free_blocks = (len - used) as u32;
        if let Some(s) = seed {
            bb_csums[g as usize] = group::block_bitmap_csum(s, &bm);
        }
        w.put(geo.meta[g as usize].block_bitmap, &bm)?;
    }
    for g in 0..geo.groups {
        let used = max_ino
            .saturating_sub(g * u64::from(ipg))
            .min(u64::from(ipg)) as u32;
        let bm = group::inode_bitmap(used, ipg);
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
            ib_csums[g as usize] = group::inode_bitmap_csum(s, &bm, ipg);
        }
        w.put(geo.meta[g as usize].inode_bitmap, &bm)?;
    }
    w.flush()?;
    let ds = usize::from(geo.desc_size);
    let mut gdt = vec![0u8; (geo.gdt_blocks as usize) * BLOCK];
    for g in 0..geo.groups as usize {
        let csum = seed.map(|s| (s, g as u32, bb_csums[g], ib_csums[g]));
        group::encode_desc(
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
