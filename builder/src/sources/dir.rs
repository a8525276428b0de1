//! `dir = "PATH"`: a directory tree on the host (a debootstrap or `dnf --installroot` result).
//!
//! Files are referenced in place, never copied. Ownership comes from the files unless the layer
//! sets `owner`, because a tree extracted by a non-root user carries that user's ids.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{LayerReport, Owner};
use crate::tree::{Content, FileData, Inode, Kind, Meta, Tree, TreeError};

/// A directory layer that cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    /// An entry cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The host path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The layer's path is not a directory.
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    /// The tree refused an entry.
    #[error("{path}: {source}")]
    Tree {
        /// The host path.
        path: PathBuf,
        /// Why.
        #[source]
        source: TreeError,
    },
}

/// Adds every entry below `root` to `tree` (the directory itself becomes `/`).
pub fn apply(tree: &mut Tree, root: &Path, owner: Option<Owner>) -> Result<LayerReport, DirError> {
    let meta = fs::symlink_metadata(root).map_err(|source| DirError::Read {
        path: root.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(DirError::NotADirectory(root.to_path_buf()));
    }
    let mut scan = Scan {
        tree,
        owner,
        links: HashMap::new(),
        report: LayerReport::default(),
    };
    scan.entry(root, Vec::new(), &meta)?;
    Ok(scan.report)
}

struct Scan<'t> {
    tree: &'t mut Tree,
    owner: Option<Owner>,
    links: HashMap<(u64, u64), Vec<u8>>,
    report: LayerReport,
}

impl Scan<'_> {
    fn entry(&mut self, host: &Path, path: Vec<u8>, meta: &fs::Metadata) -> Result<(), DirError> {
        let read_err = |source| DirError::Read {
            path: host.to_path_buf(),
            source,
        };
        let tree_err = |source| DirError::Tree {
            path: host.to_path_buf(),
            source,
        };
        let ft = meta.file_type();
        if !ft.is_dir() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key) {
                self.tree.hard_link(&path, first).map_err(tree_err)?;
                self.report.entries += 1;
                return Ok(());
            }
            self.links.insert(key, path.clone());
        }
        let kind = if ft.is_dir() {
            Kind::empty_dir()
        } else if ft.is_file() {
            Kind::File(FileData {
                size: meta.len(),
                content: if meta.len() == 0 {
                    Content::Bytes(Arc::from(&[][..]))
                } else {
                    Content::HostFile(Arc::from(host))
                },
                sha256: None,
            })
        } else if ft.is_symlink() {
            let target = fs::read_link(host).map_err(read_err)?;
            Kind::Symlink(target.as_os_str().as_bytes().into())
        } else if ft.is_char_device() || ft.is_block_device() {
            let rdev = meta.rdev();
            let (major, minor) = (libc::major(rdev), libc::minor(rdev));
            if ft.is_char_device() {
                Kind::CharDevice { major, minor }
            } else {
                Kind::BlockDevice { major, minor }
            }
        } else if ft.is_fifo() {
            Kind::Fifo
        } else {
            Kind::Socket
        };
        let (uid, gid) = match self.owner {
            Some(o) => (o.uid, o.gid),
            None => (meta.uid(), meta.gid()),
        };
        let xattrs = imgbuild_init::xattr::read(host).map_err(read_err)?;
        let inode = Inode::new(
            Meta {
                mode: (meta.mode() & 0o7777) as u16,
                uid,
                gid,
                mtime: meta.mtime(),
                xattrs,
            },
            kind,
        );
        self.tree.insert(&path, inode).map_err(tree_err)?;
        self.report.entries += 1;
        if ft.is_dir() {
            let mut children = Vec::new();
            for child in fs::read_dir(host).map_err(read_err)? {
                children.push(child.map_err(read_err)?.file_name());
            }
            children.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            for name in children {
                let child_host = host.join(&name);
                let child_meta =
                    fs::symlink_metadata(&child_host).map_err(|source| DirError::Read {
                        path: child_host.clone(),
                        source,
                    })?;
                let mut child_path = path.clone();
                child_path.push(b'/');
                child_path.extend_from_slice(name.as_bytes());
                self.entry(&child_host, child_path, &child_meta)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{hash_contents, tree_digest};

    #[test]
    fn reads_a_tree_with_links_and_owner_override() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        fs::write(root.join("usr/bin/a"), b"#!/bin/sh\n").unwrap();
        fs::hard_link(root.join("usr/bin/a"), root.join("usr/bin/b")).unwrap();
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
        fs::write(root.join("empty"), b"").unwrap();

        let mut tree = Tree::new(Meta::root(0o755, 0));
        let report = apply(&mut tree, root, Some(Owner { uid: 0, gid: 0 })).unwrap();
        assert_eq!(report.entries, 7);
        let a = tree.lookup(b"/usr/bin/a").unwrap();
        assert_eq!(tree.lookup(b"/usr/bin/b"), Some(a));
        assert!(
            matches!(&tree.inode(tree.lookup(b"/bin").unwrap()).kind, Kind::Symlink(t) if &**t == b"usr/bin")
        );
        assert_eq!(tree.inode(a).meta.uid, 0);

        hash_contents(&mut tree, &|_| {}).unwrap();
        let digest = tree_digest(&tree).unwrap();
        // As root (CI), the host walk sees the same owners and must agree.
        if unsafe { libc::geteuid() } == 0 {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(root).unwrap().permissions().mode() & 0o7777;
            tree.inode_mut(tree.root()).meta.mode = mode as u16;
            let digest = tree_digest(&tree).unwrap();
            assert_eq!(
                imgbuild_init::digest::digest_directory(root).unwrap(),
                digest
            );
        }
        let _ = digest;
    }

    #[test]
    fn missing_directory_is_named() {
        let mut tree = Tree::new(Meta::root(0o755, 0));
        let e = apply(&mut tree, Path::new("/nonexistent/tree"), None).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/tree"), "{e}");
    }
}
