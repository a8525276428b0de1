//! Encoding each inode with the blocks it owns: directory blocks, slow symlink blocks, shared
//! xattr blocks, extent tree or indirect blocks, and the journal. Blocks go out through
//! coalescing writers in the order the plan allocated them.

use std::collections::BTreeMap;

use super::checksum::inode_seed;
use super::collect::{lost_found_meta, split_xattrs, NodeKind, LOST_FOUND_BLOCKS};
use super::dir::{self, DirEntry};
use super::format::*;
use super::inode::{self, InodeRecord};
use super::planner::{Alloc, Ext4Plan};
use super::write::{mismatch, BlockWriter, Output};
use super::{blockmap, extent, journal, xattr, Ext4Error};
use crate::tree::{InodeId, Kind, Tree};

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

/// Encodes inodes and writes their blocks.
pub(super) struct MetaWriter<'a> {
    tree: &'a Tree,
    plan: &'a Ext4Plan,
    seed: Option<u32>,
    /// Blocks of the small-metadata region (and the journal).
    pub small: BlockWriter<'a>,
    /// Extent tree blocks of regular files, after all file data.
    pub trees: BlockWriter<'a>,
    xattr_done: Vec<bool>,
}

impl<'a> MetaWriter<'a> {
    pub(super) fn new(
        tree: &'a Tree,
        plan: &'a Ext4Plan,
        seed: Option<u32>,
        out: &'a Output<'a>,
    ) -> Self {
        MetaWriter {
            tree,
            plan,
            seed,
            small: BlockWriter::new(out),
            trees: BlockWriter::new(out),
            xattr_done: vec![false; plan.collected.xattr_blocks.len()],
        }
    }

    /// Writes the journal blocks; returns the journal inode.
    pub(super) fn journal(&mut self) -> Result<Option<InodeRecord>, Ext4Error> {
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
        Ok(Some(rec))
    }

    pub(super) fn node(&mut self, idx: usize, out: &mut [u8]) -> Result<(), Ext4Error> {
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
