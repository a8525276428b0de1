//! From the tree to the list of inodes to write: inode numbers in walk order (root 2,
//! lost+found 11, the rest from 12), link counts, modes, directory sizes, symlink and device
//! encodings, xattr placement (in the inode or in a shared block), and which logical blocks of
//! each inode need storage.

use std::collections::HashMap;

use super::dir;
use super::format::*;
use super::scan::{self, ScanJob};
use super::xattr::{self, DiskXattr};
use super::Ext4Error;
use crate::tree::{InodeId, Kind, Meta, Tree};

/// What an inode is, with what the writer needs beyond the node's common fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    /// A directory; `parent` is the inode number of `..`.
    Dir {
        /// Inode number of the parent.
        parent: u32,
    },
    /// A regular file.
    File,
    /// A symlink whose target fits in i_block.
    FastSymlink,
    /// A symlink stored in one data block.
    SlowSymlink,
    /// A device, fifo or socket; `i_block` holds the device number if any.
    Special {
        /// The 60 bytes of i_block.
        i_block: [u8; 60],
    },
}

/// One inode to write.
#[derive(Debug, Clone)]
pub struct Node {
    /// Inode number.
    pub ino: u32,
    /// The tree inode, or `None` for a lost+found the writer adds.
    pub tree: Option<InodeId>,
    /// First path, for messages.
    pub path: Box<[u8]>,
    /// Kind.
    pub kind: NodeKind,
    /// i_mode: type and permission bits.
    pub mode: u16,
    /// Link count as stored.
    pub links: u16,
    /// i_size.
    pub size: u64,
    /// Logical block runs that need blocks.
    pub demand: Vec<(u64, u64)>,
    /// Index of its xattr block in [`Collected::xattr_blocks`].
    pub xattr_block: Option<usize>,
}

impl Node {
    /// Whether the node's data goes in the file data region (regular files).
    pub fn is_file(&self) -> bool {
        self.kind == NodeKind::File
    }
}

/// A shared xattr block: its content (refcount and checksum unset) and how many inodes use it.
#[derive(Debug, Clone)]
pub struct XattrBlock {
    /// The block as [`xattr::encode_block`] made it.
    pub bytes: Vec<u8>,
    /// Inodes referring to it.
    pub refs: u32,
}

/// Everything about the tree the layout needs, independent of the filesystem size.
#[derive(Debug, Clone)]
pub struct Collected {
    /// Inodes in walk order (root first, lost+found second when added).
    pub nodes: Vec<Node>,
    /// Inode number of every tree inode (0 for unreachable ones).
    pub ino_of: Vec<u32>,
    /// Highest inode number used.
    pub max_ino: u32,
    /// Whether lost+found is added by the writer (the tree has none).
    pub added_lost_found: bool,
    /// Distinct xattr blocks.
    pub xattr_blocks: Vec<XattrBlock>,
}

/// Kernel limit on hard links to a file, and on ext4 directory link counts before dir_nlink.
const LINK_MAX: u32 = 65000;
/// ext2/ext3 limit on subdirectories plus two.
const OLD_LINK_MAX: u32 = 32000;
/// Blocks preallocated for lost+found (16 KiB, as mke2fs does).
pub const LOST_FOUND_BLOCKS: u64 = 4;
/// A shared xattr block serves at most this many inodes (the kernel's own sharing limit).
const XATTR_REFCOUNT_MAX: u32 = 1024;

fn shown(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

fn unrepresentable(path: &[u8], reason: impl Into<String>) -> Ext4Error {
    Ext4Error::Unrepresentable {
        path: shown(path),
        reason: reason.into(),
    }
}

/// The meta given to a lost+found the writer adds.
pub fn lost_found_meta(timestamp: i64) -> Meta {
    Meta::root(0o700, timestamp)
}

/// Walks the tree and reads every file once.
pub fn collect(tree: &Tree, ext4: bool, timestamp: i64) -> Result<Collected, Ext4Error> {
    let mut ino_of = vec![0u32; tree.allocated()];
    let mut node_of: Vec<u32> = vec![u32::MAX; tree.allocated()];
    let mut nodes: Vec<Node> = Vec::new();
    let mut next_ino = FIRST_FREE_INO;
    let root_entries = match &tree.inode(tree.root()).kind {
        Kind::Directory(e) => e,
        _ => return Err(unrepresentable(b"/", "the root is not a directory")),
    };
    let added_lost_found = match root_entries.get(&b"lost+found"[..]) {
        None => true,
        Some(id) if matches!(tree.inode(*id).kind, Kind::Directory(_)) => false,
        Some(_) => return Err(unrepresentable(b"/lost+found", "is not a directory")),
    };
    let mut xattr_index: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut xattr_blocks: Vec<XattrBlock> = Vec::new();

    // Depth-first, names in byte order: (tree inode, parent inode number, path).
    let mut stack: Vec<(InodeId, u32, Vec<u8>)> = vec![(tree.root(), ROOT_INO, b"/".to_vec())];
    while let Some((id, parent, path)) = stack.pop() {
        let inode = tree.inode(id);
        if ino_of[id.index()] != 0 {
            if matches!(inode.kind, Kind::Directory(_)) {
                return Err(unrepresentable(
                    &path,
                    "a directory appears under two names",
                ));
            }
            let node = &mut nodes[node_of[id.index()] as usize];
            let links = u32::from(node.links) + 1;
            if links > LINK_MAX {
                return Err(unrepresentable(
                    &path,
                    format!("more than {LINK_MAX} hard links"),
                ));
            }
            node.links = links as u16;
            continue;
        }
        let ino = if id == tree.root() {
            ROOT_INO
        } else if parent == ROOT_INO && path == b"/lost+found" {
            LOST_FOUND_INO
        } else {
            let i = next_ino;
            next_ino = next_ino
                .checked_add(1)
                .ok_or_else(|| unrepresentable(&path, "more than 2^32 inodes"))?;
            i
        };
        ino_of[id.index()] = ino;
        node_of[id.index()] = nodes.len() as u32;
        let mut node = make_node(tree, id, ino, parent, &path, ext4, added_lost_found)?;
        place_xattrs(
            &mut node,
            &inode.meta,
            ext4,
            &mut xattr_index,
            &mut xattr_blocks,
        )?;
        nodes.push(node);
        if id == tree.root() && added_lost_found {
            let mut lf = lost_found_node(ext4);
            place_xattrs(
                &mut lf,
                &lost_found_meta(timestamp),
                ext4,
                &mut xattr_index,
                &mut xattr_blocks,
            )?;
            nodes.push(lf);
        }
        if let Kind::Directory(entries) = &inode.kind {
            for (name, child) in entries.iter().rev() {
                let mut child_path = path.clone();
                if child_path.len() > 1 {
                    child_path.push(b'/');
                }
                child_path.extend_from_slice(name);
                let bad_name = name.is_empty()
                    || name.len() > 255
                    || &**name == b"."
                    || &**name == b".."
                    || name.iter().any(|&b| b == b'/' || b == 0);
                if bad_name {
                    return Err(unrepresentable(
                        &child_path,
                        "is not a valid directory entry name",
                    ));
                }
                stack.push((*child, ino, child_path));
            }
        }
    }
    scan_files(tree, &mut nodes, ext4)?;
    Ok(Collected {
        nodes,
        ino_of,
        max_ino: next_ino - 1,
        added_lost_found,
        xattr_blocks,
    })
}

fn lost_found_node(ext4: bool) -> Node {
    let blocks = dir::block_count([1usize, 2].into_iter(), ext4, LOST_FOUND_BLOCKS);
    Node {
        ino: LOST_FOUND_INO,
        tree: None,
        path: b"/lost+found"[..].into(),
        kind: NodeKind::Dir { parent: ROOT_INO },
        mode: S_IFDIR | 0o700,
        links: 2,
        size: blocks * BLOCK_SIZE,
        demand: vec![(0, blocks)],
        xattr_block: None,
    }
}

/// i_block of a device: the old 16-bit encoding when it fits, else the new one in word 1.
pub fn device_i_block(major: u32, minor: u32) -> Option<[u8; 60]> {
    let mut b = [0u8; 60];
    if major < 256 && minor < 256 {
        put32(&mut b, 0, (major << 8) | minor);
    } else if major < 4096 && minor < (1 << 20) {
        put32(
            &mut b,
            4,
            (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12),
        );
    } else {
        return None;
    }
    Some(b)
}

fn make_node(
    tree: &Tree,
    id: InodeId,
    ino: u32,
    parent: u32,
    path: &[u8],
    ext4: bool,
    added_lost_found: bool,
) -> Result<Node, Ext4Error> {
    let inode = tree.inode(id);
    let perm = inode.meta.mode & 0o7777;
    let mut node = Node {
        ino,
        tree: Some(id),
        path: path.into(),
        kind: NodeKind::File,
        mode: perm,
        links: 1,
        size: 0,
        demand: Vec::new(),
        xattr_block: None,
    };
    match &inode.kind {
        Kind::Directory(entries) => {
            let is_root = id == tree.root();
            let extra = usize::from(is_root && added_lost_found);
            let mut subdirs = entries
                .values()
                .filter(|c| matches!(tree.inode(**c).kind, Kind::Directory(_)))
                .count()
                + extra;
            subdirs = subdirs.min(u32::MAX as usize - 2);
            let links = 2 + subdirs as u32;
            let links = if links > LINK_MAX && ext4 {
                1
            } else if links > OLD_LINK_MAX && !ext4 {
                return Err(unrepresentable(
                    path,
                    format!(
                        "{subdirs} subdirectories; ext2/ext3 allow {}",
                        OLD_LINK_MAX - 2
                    ),
                ));
            } else {
                links
            };
            let mut lens: Vec<usize> = vec![1, 2];
            lens.extend(entries.keys().map(|k| k.len()));
            if is_root && added_lost_found {
                lens.push(b"lost+found".len());
            }
            let min = if ino == LOST_FOUND_INO {
                LOST_FOUND_BLOCKS
            } else {
                1
            };
            let blocks = dir::block_count(lens.into_iter(), ext4, min);
            node.kind = NodeKind::Dir { parent };
            node.mode |= S_IFDIR;
            node.links = links as u16;
            node.size = blocks * BLOCK_SIZE;
            node.demand = vec![(0, blocks)];
        }
        Kind::File(data) => {
            node.mode |= S_IFREG;
            node.size = data.size;
            let max = if ext4 {
                (1u64 << 32) * BLOCK_SIZE
            } else {
                // i_blocks counts 512-byte sectors in 32 bits without huge_file.
                (u64::from(u32::MAX) / 8 - 1024) * BLOCK_SIZE
            };
            if data.size > max {
                return Err(unrepresentable(
                    path,
                    format!("{} bytes is over the {max}-byte file size limit", data.size),
                ));
            }
        }
        Kind::Symlink(target) => {
            node.mode |= S_IFLNK;
            node.size = target.len() as u64;
            if target.is_empty() || target.len() >= BLOCK {
                return Err(unrepresentable(
                    path,
                    format!(
                        "a symlink target of {} bytes (1 to 4095 allowed)",
                        target.len()
                    ),
                ));
            }
            if target.len() < 60 {
                node.kind = NodeKind::FastSymlink;
            } else {
                node.kind = NodeKind::SlowSymlink;
                node.demand = vec![(0, 1)];
            }
        }
        Kind::CharDevice { major, minor } | Kind::BlockDevice { major, minor } => {
            let is_char = matches!(inode.kind, Kind::CharDevice { .. });
            node.mode |= if is_char { S_IFCHR } else { S_IFBLK };
            let i_block = device_i_block(*major, *minor).ok_or_else(|| {
                unrepresentable(
                    path,
                    format!(
                        "device number {major}:{minor} does not fit (major < 4096, minor < 2^20)"
                    ),
                )
            })?;
            node.kind = NodeKind::Special { i_block };
        }
        Kind::Fifo => {
            node.mode |= S_IFIFO;
            node.kind = NodeKind::Special { i_block: [0; 60] };
        }
        Kind::Socket => {
            node.mode |= S_IFSOCK;
            node.kind = NodeKind::Special { i_block: [0; 60] };
        }
    }
    Ok(node)
}

/// Bytes available for xattrs inside a 256-byte inode, after the magic.
pub const INLINE_XATTR_SPACE: usize = 256 - GOOD_OLD_INODE_SIZE - EXTRA_ISIZE as usize - 4;

/// The attributes of `meta` in disk form, split into those in the inode and those in the block
/// (errors name `path`).
pub fn split_xattrs(
    meta: &Meta,
    path: &[u8],
    ext4: bool,
) -> Result<(Vec<DiskXattr>, Vec<DiskXattr>), Ext4Error> {
    if meta.xattrs.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let list = xattr::disk_list(&meta.xattrs).map_err(|e| unrepresentable(path, e.to_string()))?;
    let space = if ext4 { INLINE_XATTR_SPACE } else { 0 };
    Ok(xattr::split(list, space))
}

fn place_xattrs(
    node: &mut Node,
    meta: &Meta,
    ext4: bool,
    index: &mut HashMap<Vec<u8>, usize>,
    blocks: &mut Vec<XattrBlock>,
) -> Result<(), Ext4Error> {
    if meta.xattrs.is_empty() {
        return Ok(());
    }
    let (_, rest) = split_xattrs(meta, &node.path, ext4)?;
    if rest.is_empty() {
        return Ok(());
    }
    if !xattr::fits_block(&rest) {
        return Err(unrepresentable(
            &node.path,
            "its extended attributes do not fit in one 4 KiB block",
        ));
    }
    let bytes = xattr::encode_block(&rest);
    let slot = match index.get(&bytes) {
        Some(&i) if blocks[i].refs < XATTR_REFCOUNT_MAX => {
            blocks[i].refs += 1;
            i
        }
        _ => {
            blocks.push(XattrBlock {
                bytes: bytes.clone(),
                refs: 1,
            });
            index.insert(bytes, blocks.len() - 1);
            blocks.len() - 1
        }
    };
    node.xattr_block = Some(slot);
    Ok(())
}

fn scan_files(tree: &Tree, nodes: &mut [Node], ext4: bool) -> Result<(), Ext4Error> {
    let mut jobs = Vec::new();
    let mut which = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        if let (NodeKind::File, Some(id)) = (&node.kind, node.tree) {
            if let Kind::File(data) = &tree.inode(id).kind {
                if data.size > 0 {
                    jobs.push(ScanJob {
                        content: &data.content,
                        size: data.size,
                        path: shown(&node.path),
                    });
                    which.push(i);
                }
            }
        }
    }
    let results = scan::scan_all(&jobs)?;
    drop(jobs);
    for (i, runs) in which.into_iter().zip(results) {
        let blocks: u64 = runs.iter().map(|r| r.1).sum();
        if !ext4 && blocks.saturating_mul(8) > u64::from(u32::MAX) {
            return Err(unrepresentable(
                &nodes[i].path,
                "too many blocks for ext2/ext3",
            ));
        }
        nodes[i].demand = runs;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Content, FileData, Inode};
    use std::sync::Arc;

    fn file(bytes: &[u8]) -> Inode {
        Inode::new(
            Meta::root(0o644, 5),
            Kind::File(FileData {
                size: bytes.len() as u64,
                content: Content::Bytes(Arc::from(bytes)),
                sha256: None,
            }),
        )
    }

    #[test]
    fn numbers_links_and_lost_found() {
        let mut t = Tree::new(Meta::root(0o755, 0));
        t.insert(b"b/x", file(b"1")).unwrap();
        t.insert(b"a", file(&[0u8; 9000])).unwrap();
        t.hard_link(b"b/y", b"b/x").unwrap();
        let c = collect(&t, true, 0).unwrap();
        let names: Vec<(u32, &[u8])> = c.nodes.iter().map(|n| (n.ino, &*n.path)).collect();
        assert_eq!(
            names,
            [
                (2, &b"/"[..]),
                (11, b"/lost+found"),
                (12, b"/a"),
                (13, b"/b"),
                (14, b"/b/x")
            ]
        );
        assert!(c.added_lost_found);
        assert_eq!(c.nodes[0].links, 4);
        assert_eq!(c.nodes[4].links, 2);
        assert!(
            c.nodes[2].demand.is_empty(),
            "all-zero file is one big hole"
        );
        assert_eq!(c.nodes[4].demand, vec![(0, 1)]);
        assert_eq!(c.nodes[1].size, 4 * BLOCK_SIZE);
        assert_eq!(c.max_ino, 14);
    }

    #[test]
    fn device_encodings() {
        let old = device_i_block(8, 1).unwrap();
        assert_eq!(le32(&old, 0), 0x801);
        let new = device_i_block(259, 70000).unwrap();
        assert_eq!(le32(&new, 0), 0);
        let v = le32(&new, 4);
        assert_eq!((v & 0xfff00) >> 8, 259);
        assert_eq!((v & 0xff) | ((v >> 12) & 0xfff00), 70000);
        assert!(device_i_block(5000, 0).is_none());
    }

    #[test]
    fn xattr_blocks_are_shared() {
        let mut t = Tree::new(Meta::root(0o755, 0));
        for name in [&b"p"[..], b"q"] {
            let mut f = file(b"x");
            f.meta.set_xattr(b"user.big".to_vec(), vec![7u8; 200]);
            t.insert(name, f).unwrap();
        }
        let c = collect(&t, true, 0).unwrap();
        assert_eq!(c.xattr_blocks.len(), 1);
        assert_eq!(c.xattr_blocks[0].refs, 2);
        assert_eq!(c.nodes[2].xattr_block, Some(0));
    }
}
