//! The root tree: every entry of the image, assembled in memory from the layers.
//!
//! The tree mirrors a filesystem: an arena of inodes, directories mapping names to inode ids, so
//! hard links are simply two names for one inode. File contents are not held in memory: a
//! [`Content`] refers to bytes in a host file, an archive or a spool file, and is read only when
//! the content is hashed and when a writer copies it.
//!
//! Insertion never follows symlinks: a path that goes through a symlink is an error, because a
//! layer must not be able to place files outside the directory it names.

mod content;
mod digest;
mod path;

use std::collections::BTreeMap;

pub use content::{ArchiveFile, Content, ContentError, ContentReader};
pub use digest::{hash_contents, sha256_of, tree_digest, UnhashedFile};
pub use path::{normalize, TreePath};

/// Index of an inode in a [`Tree`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InodeId(u32);

impl InodeId {
    /// The index as usize.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Ownership, permissions, time and extended attributes of an inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits including setuid, setgid and sticky (`0o7777`).
    pub mode: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Extended attributes (`security.capability`, `security.selinux`, `user.*`), sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Meta {
    /// Root-owned metadata with the given permissions and time.
    pub fn root(mode: u16, mtime: i64) -> Meta {
        Meta {
            mode: mode & 0o7777,
            uid: 0,
            gid: 0,
            mtime,
            xattrs: Vec::new(),
        }
    }

    /// Sets an extended attribute, keeping the list sorted.
    pub fn set_xattr(&mut self, name: Vec<u8>, value: Vec<u8>) {
        match self
            .xattrs
            .binary_search_by(|(n, _)| n.as_slice().cmp(&name))
        {
            Ok(i) => self.xattrs[i].1 = value,
            Err(i) => self.xattrs.insert(i, (name, value)),
        }
    }
}

/// A regular file: its length, where its bytes are, and (once hashed) their sha256.
#[derive(Debug, Clone)]
pub struct FileData {
    /// Length in bytes.
    pub size: u64,
    /// Where the bytes are.
    pub content: Content,
    /// sha256 of the content, filled in by [`hash_contents`].
    pub sha256: Option<[u8; 32]>,
}

/// The type of an inode with its type-specific data.
#[derive(Debug, Clone)]
pub enum Kind {
    /// A directory and its entries by name.
    Directory(BTreeMap<Box<[u8]>, InodeId>),
    /// A regular file.
    File(FileData),
    /// A symbolic link to the target bytes.
    Symlink(Box<[u8]>),
    /// A character device.
    CharDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A block device.
    BlockDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
    /// A unix socket.
    Socket,
}

impl Kind {
    /// An empty directory.
    pub fn empty_dir() -> Kind {
        Kind::Directory(BTreeMap::new())
    }

    /// A word for error messages: "directory", "file", …
    pub fn describe(&self) -> &'static str {
        match self {
            Kind::Directory(_) => "directory",
            Kind::File(_) => "regular file",
            Kind::Symlink(_) => "symlink",
            Kind::CharDevice { .. } => "character device",
            Kind::BlockDevice { .. } => "block device",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
        }
    }

    fn same_type(&self, other: &Kind) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

/// One inode of the tree.
#[derive(Debug, Clone)]
pub struct Inode {
    /// Ownership, mode, time, xattrs.
    pub meta: Meta,
    /// Type and data.
    pub kind: Kind,
    /// The layer that last placed this inode: two entries of different types at one path in
    /// the same layer are an error, while a later layer may replace anything.
    layer: u32,
}

impl Inode {
    /// A new inode.
    pub fn new(meta: Meta, kind: Kind) -> Inode {
        Inode {
            meta,
            kind,
            layer: 0,
        }
    }
}

/// Why a tree operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// A component is `..`, or the path is otherwise not acceptable inside a root.
    #[error("path {path:?} is not allowed: {reason}")]
    BadPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A name is longer than the 255 bytes a directory entry holds.
    #[error("name of {path:?} is {len} bytes long; the limit is 255")]
    NameTooLong {
        /// The path as given.
        path: String,
        /// The length of the offending component.
        len: usize,
    },
    /// An intermediate component is a symlink.
    #[error("path {path:?} goes through the symlink {symlink:?}")]
    ThroughSymlink {
        /// The path as given.
        path: String,
        /// The symlink in the way.
        symlink: String,
    },
    /// An intermediate component exists and is not a directory.
    #[error("path {path:?}: {parent:?} is a {kind}, not a directory")]
    NotADirectory {
        /// The path as given.
        path: String,
        /// The component in the way.
        parent: String,
        /// What it is.
        kind: &'static str,
    },
    /// Two entries of different types at one path within one layer.
    #[error("{path:?} appears twice in one layer, as a {first} and as a {second}")]
    Conflict {
        /// The path.
        path: String,
        /// The type placed first.
        first: &'static str,
        /// The type placed second.
        second: &'static str,
    },
    /// A hard link names a path that does not exist, or a directory.
    #[error("hard link {path:?} points to {target:?}, which {reason}")]
    BadHardLink {
        /// The link.
        path: String,
        /// Its target.
        target: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The tree has more inodes than an inode number can count.
    #[error("the tree has more than 4 billion inodes")]
    TooManyInodes,
}

/// The in-memory root tree.
#[derive(Debug, Clone)]
pub struct Tree {
    inodes: Vec<Inode>,
    layer: u32,
    /// Metadata given to directories created implicitly as parents of inserted paths.
    parent_meta: Meta,
}

impl Tree {
    /// A tree holding only its root directory.
    pub fn new(root: Meta) -> Tree {
        let parent_meta = Meta::root(0o755, root.mtime);
        Tree {
            inodes: vec![Inode::new(root, Kind::empty_dir())],
            layer: 0,
            parent_meta,
        }
    }

    /// The root directory.
    pub fn root(&self) -> InodeId {
        InodeId(0)
    }

    /// Starts a new layer: entries placed from now on may replace any earlier entry.
    pub fn begin_layer(&mut self) {
        self.layer += 1;
    }

    /// Sets the metadata used for parent directories created implicitly.
    pub fn set_parent_meta(&mut self, meta: Meta) {
        self.parent_meta = meta;
    }

    /// The inode with this id.
    pub fn inode(&self, id: InodeId) -> &Inode {
        &self.inodes[id.index()]
    }

    /// The inode with this id, mutably.
    pub fn inode_mut(&mut self, id: InodeId) -> &mut Inode {
        &mut self.inodes[id.index()]
    }

    /// Number of inodes allocated (including ones no longer reachable).
    pub fn allocated(&self) -> usize {
        self.inodes.len()
    }

    fn alloc(&mut self, mut inode: Inode) -> Result<InodeId, TreeError> {
        inode.layer = self.layer;
        let id = u32::try_from(self.inodes.len()).map_err(|_| TreeError::TooManyInodes)?;
        self.inodes.push(inode);
        Ok(InodeId(id))
    }

    /// The inode at `path`, without following symlinks.
    pub fn lookup(&self, path: &[u8]) -> Option<InodeId> {
        let path = normalize(path).ok()?;
        let mut current = self.root();
        for name in path.components() {
            match &self.inode(current).kind {
                Kind::Directory(entries) => current = *entries.get(name)?,
                _ => return None,
            }
        }
        Some(current)
    }

    /// Resolves `path` inside the tree, following the tree's own symlinks (absolute targets
    /// start at the tree's root, never the host's), as the guest would. Returns the normalized
    /// absolute path of what it names, or `None` when it does not resolve (a missing component,
    /// or more than 40 links). Used to place generated files where a distribution moved
    /// directories (`/sbin` → `usr/sbin`).
    pub fn resolve(&self, path: &[u8]) -> Option<Vec<u8>> {
        let mut pending: Vec<Vec<u8>> = path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .rev()
            .map(<[u8]>::to_vec)
            .collect();
        let mut stack: Vec<(Vec<u8>, InodeId)> = Vec::new();
        let mut hops = 0;
        while let Some(name) = pending.pop() {
            let current = stack.last().map_or(self.root(), |(_, id)| *id);
            match name.as_slice() {
                b"." => continue,
                b".." => {
                    stack.pop();
                    continue;
                }
                _ => {}
            }
            let Kind::Directory(entries) = &self.inode(current).kind else {
                return None;
            };
            let id = *entries.get(name.as_slice())?;
            if let Kind::Symlink(target) = &self.inode(id).kind {
                hops += 1;
                if hops > 40 {
                    return None;
                }
                if target.first() == Some(&b'/') {
                    stack.clear();
                }
                pending.extend(
                    target
                        .split(|&b| b == b'/')
                        .filter(|c| !c.is_empty())
                        .rev()
                        .map(<[u8]>::to_vec),
                );
                continue;
            }
            stack.push((name, id));
        }
        let mut out = Vec::new();
        for (name, _) in &stack {
            out.push(b'/');
            out.extend_from_slice(name);
        }
        if out.is_empty() {
            out.push(b'/');
        }
        Some(out)
    }

    /// The directory that will hold `path`'s last component, creating missing parents.
    fn parent_dir(&mut self, path: &TreePath, shown: &str) -> Result<InodeId, TreeError> {
        let mut current = self.root();
        let components: Vec<&[u8]> = path.components().collect();
        let parents = components.len().saturating_sub(1);
        for (depth, name) in components.iter().take(parents).enumerate() {
            let next = match &self.inode(current).kind {
                Kind::Directory(entries) => entries.get(*name).copied(),
                _ => None,
            };
            current = match next {
                Some(id) => match &self.inode(id).kind {
                    Kind::Directory(_) => id,
                    Kind::Symlink(_) => {
                        return Err(TreeError::ThroughSymlink {
                            path: shown.to_string(),
                            symlink: path.prefix_display(depth + 1),
                        })
                    }
                    other => {
                        return Err(TreeError::NotADirectory {
                            path: shown.to_string(),
                            parent: path.prefix_display(depth + 1),
                            kind: other.describe(),
                        })
                    }
                },
                None => {
                    let meta = self.parent_meta.clone();
                    let id = self.alloc(Inode::new(meta, Kind::empty_dir()))?;
                    self.entries_mut(current).insert((*name).into(), id);
                    id
                }
            };
        }
        Ok(current)
    }

    fn entries_mut(&mut self, dir: InodeId) -> &mut BTreeMap<Box<[u8]>, InodeId> {
        match &mut self.inode_mut(dir).kind {
            Kind::Directory(entries) => entries,
            // parent_dir only ever returns directories.
            _ => unreachable!("parent_dir returned a non-directory"),
        }
    }

    /// Places `inode` at `path`. Missing parents are created; an existing directory at `path`
    /// receiving a directory keeps its children and takes the new metadata; anything else is
    /// replaced. Returns the inode id now at `path`.
    pub fn insert(&mut self, path: &[u8], inode: Inode) -> Result<InodeId, TreeError> {
        let shown = String::from_utf8_lossy(path).into_owned();
        let normalized = normalize(path)?;
        let Some(name) = normalized.file_name() else {
            // The root itself: only a directory can stand there.
            if !matches!(inode.kind, Kind::Directory(_)) {
                return Err(TreeError::BadPath {
                    path: shown,
                    reason: "only a directory can be the root",
                });
            }
            let layer = self.layer;
            let root = self.inode_mut(InodeId(0));
            root.meta = inode.meta;
            root.layer = layer;
            return Ok(InodeId(0));
        };
        let name: Box<[u8]> = name.into();
        let parent = self.parent_dir(&normalized, &shown)?;
        let existing = match &self.inode(parent).kind {
            Kind::Directory(entries) => entries.get(&name).copied(),
            _ => None,
        };
        if let Some(id) = existing {
            let old = self.inode(id);
            if old.layer == self.layer && !old.kind.same_type(&inode.kind) {
                return Err(TreeError::Conflict {
                    path: shown,
                    first: old.kind.describe(),
                    second: inode.kind.describe(),
                });
            }
            if matches!(old.kind, Kind::Directory(_)) && matches!(inode.kind, Kind::Directory(_)) {
                let layer = self.layer;
                let dir = self.inode_mut(id);
                dir.meta = inode.meta;
                dir.layer = layer;
                return Ok(id);
            }
        }
        let id = self.alloc(inode)?;
        self.entries_mut(parent).insert(name, id);
        Ok(id)
    }

    /// Makes `path` a second name of the inode at `target`.
    pub fn hard_link(&mut self, path: &[u8], target: &[u8]) -> Result<InodeId, TreeError> {
        let bad = |reason| TreeError::BadHardLink {
            path: String::from_utf8_lossy(path).into_owned(),
            target: String::from_utf8_lossy(target).into_owned(),
            reason,
        };
        let id = self.lookup(target).ok_or_else(|| bad("does not exist"))?;
        if matches!(self.inode(id).kind, Kind::Directory(_)) {
            return Err(bad("is a directory"));
        }
        let shown = String::from_utf8_lossy(path).into_owned();
        let normalized = normalize(path)?;
        let name: Box<[u8]> = normalized
            .file_name()
            .ok_or_else(|| bad("cannot replace the root"))?
            .into();
        let parent = self.parent_dir(&normalized, &shown)?;
        if let Some(old) = self.lookup(path) {
            if old == id {
                return Ok(id);
            }
            if matches!(self.inode(old).kind, Kind::Directory(_)) {
                return Err(TreeError::Conflict {
                    path: shown,
                    first: "directory",
                    second: "hard link",
                });
            }
        }
        self.entries_mut(parent).insert(name, id);
        Ok(id)
    }

    /// Removes `path` and everything below it. Returns whether it existed.
    pub fn remove(&mut self, path: &[u8]) -> Result<bool, TreeError> {
        let normalized = normalize(path)?;
        let Some(name) = normalized.file_name() else {
            return Err(TreeError::BadPath {
                path: String::from_utf8_lossy(path).into_owned(),
                reason: "the root cannot be removed",
            });
        };
        let parent_path = normalized.parent();
        let Some(parent) = self.lookup(parent_path.as_bytes()) else {
            return Ok(false);
        };
        match &mut self.inode_mut(parent).kind {
            Kind::Directory(entries) => Ok(entries.remove(name).is_some()),
            _ => Ok(false),
        }
    }

    /// Every reachable entry in canonical order (depth first, names sorted by bytes), root first.
    pub fn walk(&self) -> Walk<'_> {
        Walk {
            tree: self,
            stack: vec![(b"/".to_vec(), self.root())],
        }
    }

    /// Number of names of each inode (index = inode id), counting only reachable entries.
    /// Directories count as 1 here; the filesystem writers add their own `.`/`..` rules.
    pub fn link_counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.inodes.len()];
        for (_, id) in self.walk() {
            counts[id.index()] = counts[id.index()].saturating_add(1);
        }
        counts
    }
}

/// Iterator over reachable entries: (absolute path, inode id).
pub struct Walk<'a> {
    tree: &'a Tree,
    stack: Vec<(Vec<u8>, InodeId)>,
}

impl Iterator for Walk<'_> {
    type Item = (Vec<u8>, InodeId);

    fn next(&mut self) -> Option<Self::Item> {
        let (path, id) = self.stack.pop()?;
        if let Kind::Directory(entries) = &self.tree.inode(id).kind {
            for (name, child) in entries.iter().rev() {
                let mut child_path = path.clone();
                if child_path.len() > 1 {
                    child_path.push(b'/');
                }
                child_path.extend_from_slice(name);
                self.stack.push((child_path, *child));
            }
        }
        Some((path, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(bytes: &'static [u8]) -> Inode {
        Inode::new(
            Meta::root(0o644, 0),
            Kind::File(FileData {
                size: bytes.len() as u64,
                content: Content::Bytes(bytes.into()),
                sha256: None,
            }),
        )
    }

    fn dir() -> Inode {
        Inode::new(Meta::root(0o755, 0), Kind::empty_dir())
    }

    fn paths(tree: &Tree) -> Vec<String> {
        tree.walk()
            .map(|(p, _)| String::from_utf8(p).unwrap())
            .collect()
    }

    #[test]
    fn walk_is_sorted_depth_first_with_parents_created() {
        let mut t = Tree::new(Meta::root(0o755, 0));
        t.insert(b"a-c", file(b"1")).unwrap();
        t.insert(b"./a/b/c", file(b"2")).unwrap();
        t.insert(b"a/a", file(b"3")).unwrap();
        assert_eq!(paths(&t), ["/", "/a", "/a/a", "/a/b", "/a/b/c", "/a-c"]);
    }

    #[test]
    fn directory_over_directory_keeps_children() {
        let mut t = Tree::new(Meta::root(0o755, 0));
        t.insert(b"etc/x", file(b"1")).unwrap();
        t.begin_layer();
        let mut d = dir();
        d.meta.mode = 0o700;
        t.insert(b"etc", d).unwrap();
        assert!(t.lookup(b"/etc/x").is_some());
        assert_eq!(t.inode(t.lookup(b"etc").unwrap()).meta.mode, 0o700);
    }

    #[test]
    fn later_layer_replaces_other_type_same_layer_conflicts() {
        let mut t = Tree::new(Meta::root(0o755, 0));
        t.insert(b"x", file(b"1")).unwrap();
        assert!(matches!(
            t.insert(b"x", dir()),
            Err(TreeError::Conflict { .. })
        ));
        t.insert(b"x", file(b"2")).unwrap();
        t.begin_layer();
        t.insert(b"x", dir()).unwrap();
        assert!(matches!(
            t.inode(t.lookup(b"x").unwrap()).kind,
            Kind::Directory(_)
        ));
    }

    #[test]
    fn refuses_dotdot_symlink_traversal_and_long_names() {
        let mut t = Tree::new(Meta::root(0o755, 0));
        assert!(matches!(
            t.insert(b"a/../../etc/passwd", file(b"")),
            Err(TreeError::BadPath { .. })
        ));
        t.insert(
            b"lib",
            Inode::new(Meta::root(0o777, 0), Kind::Symlink((*b"/etc").into())),
        )
        .unwrap();
        assert!(matches!(
            t.insert(b"lib/evil", file(b"")),
            Err(TreeError::ThroughSymlink { .. })
        ));
        let long = vec![b'n'; 256];
        assert!(matches!(
            t.insert(&long, file(b"")),
            Err(TreeError::NameTooLong { len: 256, .. })
        ));
        t.insert(&long[..255], file(b"")).unwrap();
    }

    #[test]
    fn hard_links_share_an_inode_and_count() {
        let mut t = Tree::new(Meta::root(0o755, 0));
        let id = t.insert(b"bin/a", file(b"x")).unwrap();
        assert_eq!(t.hard_link(b"bin/b", b"/bin/a").unwrap(), id);
        assert_eq!(t.link_counts()[id.index()], 2);
        assert!(t.hard_link(b"c", b"bin").is_err());
        assert!(t.hard_link(b"c", b"nope").is_err());
        t.remove(b"bin/a").unwrap();
        assert_eq!(t.link_counts()[id.index()], 1);
    }

    #[test]
    fn resolve_follows_links_inside_the_tree() {
        let mut t = Tree::new(Meta::root(0o755, 0));
        t.insert(b"usr/sbin", dir()).unwrap();
        let link = |target: &[u8]| Inode::new(Meta::root(0o777, 0), Kind::Symlink(target.into()));
        t.insert(b"sbin", link(b"usr/sbin")).unwrap();
        t.insert(b"abs", link(b"/usr/../usr/sbin")).unwrap();
        t.insert(b"loop", link(b"loop")).unwrap();
        assert_eq!(t.resolve(b"/sbin").unwrap(), b"/usr/sbin");
        assert_eq!(t.resolve(b"/abs").unwrap(), b"/usr/sbin");
        assert_eq!(t.resolve(b"/").unwrap(), b"/");
        assert!(t.resolve(b"/loop").is_none());
        assert!(t.resolve(b"/missing").is_none());
    }

    #[test]
    fn remove_subtree() {
        let mut t = Tree::new(Meta::root(0o755, 0));
        t.insert(b"usr/share/doc/x", file(b"x")).unwrap();
        assert!(t.remove(b"/usr/share").unwrap());
        assert!(!t.remove(b"/usr/share").unwrap());
        assert_eq!(paths(&t), ["/", "/usr"]);
        assert!(t.remove(b"/").is_err());
    }
}
