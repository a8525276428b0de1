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

use super::checksum::{fs_seed, is_zero};
use super::encode::MetaWriter;
use super::format::*;
use super::planner::Ext4Plan;
use super::{copy, group, inode, Ext4Error};
use crate::tree::Tree;

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
pub(super) struct BlockWriter<'a> {
    out: &'a Output<'a>,
    start: u64,
    buf: Vec<u8>,
}

impl<'a> BlockWriter<'a> {
    pub(super) fn new(out: &'a Output<'a>) -> Self {
        BlockWriter {
            out,
            start: 0,
            buf: Vec::with_capacity(FLUSH_BYTES),
        }
    }

    pub(super) fn put(&mut self, block: u64, data: &[u8]) -> Result<(), Ext4Error> {
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
    pub(super) fn zeros(&mut self, block: u64, count: u64) -> Result<(), Ext4Error> {
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

    pub(super) fn flush(&mut self) -> Result<(), Ext4Error> {
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
    let end = offset
        .checked_add(plan.size_bytes)
        .ok_or_else(|| Ext4Error::Io {
            image: name.clone(),
            offset,
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        })?;
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

fn write_metadata(tree: &Tree, plan: &Ext4Plan, out: &Output<'_>) -> Result<(), Ext4Error> {
    let ext4 = plan.ext4();
    let seed = ext4.then(|| fs_seed(&plan.params.uuid));
    let mut w = MetaWriter::new(tree, plan, seed, out);
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
    let journal_inode = w.journal()?;
    if let Some(rec) = &journal_inode {
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
    let journal = journal_inode.map(|rec| (rec.i_block, rec.size));
    group::write_groups(plan, out, seed, journal)
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
