//! Placing archive and package entries into the tree, under the path policy of each source.
//!
//! A tarball is a whole tree: an entry that goes through a symlink the archive placed earlier is
//! refused (the tree's own rule), since following it could put files anywhere. Package managers
//! are different: rpm and dpkg write through directory symlinks that already exist in the root
//! (`/lib -> usr/lib` on merged-/usr systems), so for packages intermediate symlinks are resolved
//! the way a chroot would, never leaving the root: absolute targets start at `/`, `..` stops at
//! `/`, and a package directory that lands on a symlink to a directory keeps the symlink. dpkg
//! also leaves directories that already exist as they are ([`Placer::keep_existing_dirs`]).

use crate::tree::{normalize, Inode, InodeId, Kind, Tree, TreeError};

/// How paths through symlinks are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Through {
    /// Refuse (tarballs, cpio archives).
    Refuse,
    /// Resolve inside the root (rpm, deb).
    Resolve,
}

/// Most symlinks followed while resolving one path, as Linux's `MAXSYMLINKS`.
const MAX_HOPS: u32 = 40;

/// Longest symlink target a filesystem stores (`PATH_MAX` - 1; ext4's limit with 4 KiB blocks).
pub(crate) const MAX_LINK_TARGET: usize = 4095;

/// An entry that could not be placed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PlaceError {
    /// The tree refused it.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// Resolving intermediate symlinks did not end.
    #[error("resolving {path:?} follows more than {MAX_HOPS} symlinks (a loop?)")]
    SymlinkLoop {
        /// The path as given.
        path: String,
    },
    /// A symlink target longer than any filesystem stores.
    #[error("symlink {path:?} has a target of {len} bytes; the limit is {MAX_LINK_TARGET}")]
    LinkTooLong {
        /// The symlink.
        path: String,
        /// Length of its target.
        len: usize,
    },
}

/// Places entries in a tree under one policy.
pub(crate) struct Placer<'t> {
    /// The tree receiving entries.
    pub tree: &'t mut Tree,
    policy: Through,
    keep_dirs: bool,
}

impl<'t> Placer<'t> {
    /// A placer over `tree`.
    pub fn new(tree: &'t mut Tree, policy: Through) -> Placer<'t> {
        Placer {
            tree,
            policy,
            keep_dirs: false,
        }
    }

    /// Directory entries for directories that already exist leave them untouched (dpkg's rule)
    /// instead of taking the entry's metadata.
    pub fn keep_existing_dirs(mut self) -> Self {
        self.keep_dirs = true;
        self
    }

    /// Places `inode` at `path` (see [`Tree::insert`]).
    pub fn insert(&mut self, path: &[u8], inode: Inode) -> Result<InodeId, PlaceError> {
        if let Kind::Symlink(target) = &inode.kind {
            if target.len() > MAX_LINK_TARGET {
                return Err(PlaceError::LinkTooLong {
                    path: String::from_utf8_lossy(path).into_owned(),
                    len: target.len(),
                });
            }
        }
        if self.policy == Through::Refuse {
            return Ok(self.tree.insert(path, inode)?);
        }
        let resolved = self.resolve_parents(path)?;
        if matches!(inode.kind, Kind::Directory(_)) {
            if let Some(existing) = self.tree.lookup(&resolved) {
                if self.keep_dirs && matches!(self.tree.inode(existing).kind, Kind::Directory(_)) {
                    return Ok(existing);
                }
                if let Kind::Symlink(_) = self.tree.inode(existing).kind {
                    let through = self.resolve_full(&resolved)?;
                    if let Some(dir) = self.tree.lookup(&through) {
                        if matches!(self.tree.inode(dir).kind, Kind::Directory(_)) {
                            return Ok(dir);
                        }
                    }
                }
            }
        }
        Ok(self.tree.insert(&resolved, inode)?)
    }

    /// Makes `path` another name of the inode at `target` (see [`Tree::hard_link`]).
    pub fn hard_link(&mut self, path: &[u8], target: &[u8]) -> Result<InodeId, PlaceError> {
        if self.policy == Through::Refuse {
            return Ok(self.tree.hard_link(path, target)?);
        }
        let path = self.resolve_parents(path)?;
        let target = self.resolve_parents(target)?;
        Ok(self.tree.hard_link(&path, &target)?)
    }

    /// `path` with every symlink among its parent directories resolved inside the root.
    fn resolve_parents(&self, path: &[u8]) -> Result<Vec<u8>, PlaceError> {
        let normalized = normalize(path)?;
        let Some(name) = normalized.file_name() else {
            return Ok(Vec::new());
        };
        let mut dir = self.resolve(path, &normalized.parent().absolute())?;
        if !dir.is_empty() {
            dir.push(b'/');
        }
        dir.extend_from_slice(name);
        Ok(dir)
    }

    /// `path` with every symlink resolved, the last component included.
    fn resolve_full(&self, path: &[u8]) -> Result<Vec<u8>, PlaceError> {
        self.resolve(path, path)
    }

    /// Resolves `walk` component by component; `shown` names it in errors.
    fn resolve(&self, shown: &[u8], walk: &[u8]) -> Result<Vec<u8>, PlaceError> {
        let mut todo: Vec<Vec<u8>> = split(walk).rev().map(<[u8]>::to_vec).collect();
        let mut resolved: Vec<Vec<u8>> = Vec::new();
        // The inode reached so far; None once a component does not exist yet.
        let mut current = Some(self.tree.root());
        let mut hops = 0;
        while let Some(component) = todo.pop() {
            match component.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    resolved.pop();
                    current = self.tree.lookup(&resolved.join(&b'/'));
                    continue;
                }
                _ => {}
            }
            let child = current.and_then(|dir| match &self.tree.inode(dir).kind {
                Kind::Directory(entries) => entries.get(component.as_slice()).copied(),
                _ => None,
            });
            match child.map(|id| (id, &self.tree.inode(id).kind)) {
                Some((_, Kind::Symlink(target))) => {
                    hops += 1;
                    if hops > MAX_HOPS || target.len() > MAX_LINK_TARGET {
                        return Err(PlaceError::SymlinkLoop {
                            path: String::from_utf8_lossy(shown).into_owned(),
                        });
                    }
                    if target.starts_with(b"/") {
                        resolved.clear();
                    }
                    todo.extend(split(target).rev().map(<[u8]>::to_vec));
                    current = self.tree.lookup(&resolved.join(&b'/'));
                }
                other => {
                    resolved.push(component);
                    current = other.map(|(id, _)| id);
                }
            }
        }
        Ok(resolved.join(&b'/'))
    }
}

fn split(path: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    path.split(|&b| b == b'/').filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Meta;

    fn dir() -> Inode {
        Inode::new(Meta::root(0o755, 0), Kind::empty_dir())
    }

    fn link(target: &str) -> Inode {
        Inode::new(
            Meta::root(0o777, 0),
            Kind::Symlink(target.as_bytes().into()),
        )
    }

    fn fifo() -> Inode {
        Inode::new(Meta::root(0o644, 0), Kind::Fifo)
    }

    #[test]
    fn resolve_follows_directory_symlinks_inside_the_root() {
        let mut tree = Tree::new(Meta::root(0o755, 0));
        tree.insert(b"usr/lib", dir()).unwrap();
        tree.insert(b"lib", link("usr/lib")).unwrap();
        tree.insert(b"usr/lib/up", link("../../../../etc")).unwrap();
        tree.insert(b"abs", link("/usr/lib")).unwrap();
        let mut p = Placer::new(&mut tree, Through::Resolve);
        p.insert(b"/lib/modules/x", fifo()).unwrap();
        p.insert(b"/usr/lib/up/passwd", fifo()).unwrap();
        p.insert(b"/abs/y", fifo()).unwrap();
        // A directory entry on the symlink keeps the symlink.
        p.insert(b"/lib", dir()).unwrap();
        p.hard_link(b"/lib/z", b"/abs/y").unwrap();
        let mut kept = Inode::new(Meta::root(0o700, 0), Kind::empty_dir());
        kept.meta.uid = 7;
        p.insert(b"/usr", kept.clone()).unwrap();
        let mut p = Placer::new(&mut tree, Through::Resolve).keep_existing_dirs();
        kept.meta.uid = 8;
        p.insert(b"/usr", kept).unwrap();
        assert_eq!(tree.inode(tree.lookup(b"usr").unwrap()).meta.uid, 7);
        assert!(tree.lookup(b"usr/lib/modules/x").is_some());
        assert!(tree.lookup(b"etc/passwd").is_some());
        assert!(tree.lookup(b"usr/lib/y").is_some());
        assert_eq!(tree.lookup(b"usr/lib/z"), tree.lookup(b"usr/lib/y"));
        assert!(matches!(
            tree.inode(tree.lookup(b"lib").unwrap()).kind,
            Kind::Symlink(_)
        ));
    }

    #[test]
    fn loops_and_refusal() {
        let mut tree = Tree::new(Meta::root(0o755, 0));
        tree.insert(b"a", link("b")).unwrap();
        tree.insert(b"b", link("a")).unwrap();
        let mut p = Placer::new(&mut tree, Through::Resolve);
        assert!(matches!(
            p.insert(b"a/x", fifo()),
            Err(PlaceError::SymlinkLoop { .. })
        ));
        let mut p = Placer::new(&mut tree, Through::Refuse);
        assert!(matches!(
            p.insert(b"a/x", fifo()),
            Err(PlaceError::Tree(TreeError::ThroughSymlink { .. }))
        ));
        let long = "x/".repeat(3000);
        assert!(matches!(
            p.insert(b"long", link(&long)),
            Err(PlaceError::LinkTooLong { len: 6000, .. })
        ));
    }
}
