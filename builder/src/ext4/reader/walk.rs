//! Walking the directory tree in canonical order (depth first, names sorted by bytes) to list
//! it or compute its rootfs digest. A directory reached twice (a cycle or a directory hard
//! link) is an error.

use std::collections::{HashMap, HashSet};

use imgbuild_init::digest::{is_excluded, DigestBuilder, Entry, EntryKind, RootfsDigest};
use sha2::{Digest as _, Sha256};

use super::map::read_content;
use super::parse;
use super::{Ext4Image, Ext4ReadError, RawInode};
use crate::ext4::format::*;
use crate::image_io::ReadAt;

/// The type of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    /// Directory.
    Directory,
    /// Regular file.
    File,
    /// Symbolic link.
    Symlink,
    /// Character device.
    CharDevice,
    /// Block device.
    BlockDevice,
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
}

/// One entry of the filesystem tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedEntry {
    /// Absolute path.
    pub path: Vec<u8>,
    /// Inode number.
    pub ino: u32,
    /// Type.
    pub kind: EntryType,
    /// Permission bits (`0o7777`).
    pub mode: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count.
    pub links: u16,
    /// i_size.
    pub size: u64,
    /// Device number (major, minor) of devices.
    pub rdev: Option<(u32, u32)>,
    /// Target of symlinks.
    pub target: Option<Vec<u8>>,
    /// Extended attributes by full name, sorted, ACLs in `getxattr` form.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Modification time in seconds.
    pub mtime: i64,
}

fn corrupt(what: impl Into<String>, offset: u64) -> Ext4ReadError {
    Ext4ReadError::Corrupt {
        what: what.into(),
        offset,
    }
}

fn kind_of(inode: &RawInode) -> Result<EntryType, Ext4ReadError> {
    Ok(match inode.mode & S_IFMT {
        S_IFDIR => EntryType::Directory,
        S_IFREG => EntryType::File,
        S_IFLNK => EntryType::Symlink,
        S_IFCHR => EntryType::CharDevice,
        S_IFBLK => EntryType::BlockDevice,
        S_IFIFO => EntryType::Fifo,
        S_IFSOCK => EntryType::Socket,
        other => {
            return Err(corrupt(
                format!("inode {} has file type {other:#o}", inode.ino),
                inode.offset,
            ))
        }
    })
}

fn rdev(i_block: &[u8; 60]) -> (u32, u32) {
    let old = le32(i_block, 0);
    if old != 0 {
        ((old >> 8) & 0xff, old & 0xff)
    } else {
        let v = le32(i_block, 4);
        ((v & 0xfff00) >> 8, (v & 0xff) | ((v >> 12) & 0xfff00))
    }
}

impl<R: ReadAt> Ext4Image<R> {
    /// The entry for `inode` at `path`.
    fn entry(&self, path: Vec<u8>, inode: &RawInode) -> Result<ListedEntry, Ext4ReadError> {
        let kind = kind_of(inode)?;
        let mut xattrs = Vec::new();
        parse::inline_xattrs(&inode.inline_xattr_area, inode.offset, &mut xattrs)?;
        if inode.file_acl != 0 {
            let sb = self.superblock();
            if inode.file_acl >= sb.blocks_count {
                return Err(corrupt(
                    format!(
                        "inode {} has xattr block {} outside the filesystem",
                        inode.ino, inode.file_acl
                    ),
                    inode.offset,
                ));
            }
            let mut block = vec![0u8; sb.block_size as usize];
            let at = inode.file_acl * sb.block_size;
            self.read_at(&mut block, at)?;
            parse::block_xattrs(&block, at, &mut xattrs)?;
        }
        xattrs.sort();
        let target = match kind {
            EntryType::Symlink => Some(self.symlink_target(inode)?),
            _ => None,
        };
        let rdev = matches!(kind, EntryType::CharDevice | EntryType::BlockDevice)
            .then(|| rdev(&inode.i_block));
        Ok(ListedEntry {
            path,
            ino: inode.ino,
            kind,
            mode: inode.mode & 0o7777,
            uid: inode.uid,
            gid: inode.gid,
            links: inode.links,
            size: inode.size,
            rdev,
            target,
            xattrs,
            mtime: inode.mtime,
        })
    }

    fn symlink_target(&self, inode: &RawInode) -> Result<Vec<u8>, Ext4ReadError> {
        let bs = self.superblock().block_size;
        if inode.size == 0 || inode.size >= bs {
            return Err(corrupt(
                format!("symlink inode {} has size {}", inode.ino, inode.size),
                inode.offset,
            ));
        }
        let ea_sectors = if inode.file_acl != 0 { bs / 512 } else { 0 };
        let data_sectors = inode.sectors.saturating_sub(ea_sectors);
        if inode.size < 60 && data_sectors == 0 && inode.flags & EXTENTS_FL == 0 {
            return Ok(inode.i_block[..inode.size as usize].to_vec());
        }
        if inode.size < 60 && data_sectors == 0 {
            // An extents flag on a short target is still a fast symlink for the kernel.
            return Ok(inode.i_block[..inode.size as usize].to_vec());
        }
        let mut out = Vec::with_capacity(inode.size as usize);
        read_content(self, inode, &mut |c| {
            out.extend_from_slice(c);
            Ok(())
        })?;
        Ok(out)
    }

    /// Names and inode numbers of a directory, sorted by name.
    fn dir_entries(&self, inode: &RawInode) -> Result<Vec<(Vec<u8>, u32)>, Ext4ReadError> {
        let bs = self.superblock().block_size;
        let max_bytes = (self.limits().max_dir_entries as u64)
            .saturating_mul(16)
            .max(bs);
        if inode.size % bs != 0 || inode.size > max_bytes {
            return Err(corrupt(
                format!("directory inode {} has size {}", inode.ino, inode.size),
                inode.offset,
            ));
        }
        let mut entries = Vec::new();
        let mut block = Vec::with_capacity(bs as usize);
        let mut index = 0u64;
        let mut failure = None;
        read_content(self, inode, &mut |chunk| {
            let mut c = chunk;
            while !c.is_empty() {
                let take = (bs as usize - block.len()).min(c.len());
                block.extend_from_slice(&c[..take]);
                c = &c[take..];
                if block.len() == bs as usize {
                    if let Err(e) = parse::dir_block(&block, bs, index * bs, &mut entries) {
                        failure.get_or_insert(e);
                    }
                    block.clear();
                    index += 1;
                    if entries.len() > self.limits().max_dir_entries {
                        return Err(Ext4ReadError::Limit(format!(
                            "directory inode {} has too many entries",
                            inode.ino
                        )));
                    }
                }
            }
            Ok(())
        })?;
        if let Some(Ext4ReadError::Corrupt { what, .. }) = failure {
            return Err(corrupt(
                format!("directory inode {}: {what}", inode.ino),
                inode.offset,
            ));
        }
        entries.sort();
        if entries.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(corrupt(
                format!("directory inode {} has a name twice", inode.ino),
                inode.offset,
            ));
        }
        Ok(entries)
    }

    /// Visits every entry in canonical order; `skip` prunes subtrees (and their root).
    fn walk(
        &self,
        skip: &dyn Fn(&[u8]) -> bool,
        visit: &mut dyn FnMut(&ListedEntry, &RawInode) -> Result<(), Ext4ReadError>,
    ) -> Result<(), Ext4ReadError> {
        let root = self.inode(ROOT_INO)?;
        if root.mode & S_IFMT != S_IFDIR {
            return Err(corrupt("the root inode is not a directory", root.offset));
        }
        let mut seen_dirs: HashSet<u32> = HashSet::new();
        let mut stack: Vec<(Vec<u8>, u32, usize)> = vec![(b"/".to_vec(), ROOT_INO, 0)];
        let mut count = 0usize;
        while let Some((path, ino, depth)) = stack.pop() {
            if skip(&path) {
                continue;
            }
            count += 1;
            if count > self.limits().max_entries {
                return Err(Ext4ReadError::Limit("too many entries".into()));
            }
            let inode = self.inode(ino)?;
            let entry = self.entry(path, &inode)?;
            visit(&entry, &inode)?;
            if entry.kind != EntryType::Directory {
                continue;
            }
            if !seen_dirs.insert(ino) {
                return Err(corrupt(
                    format!("directory inode {ino} is reached twice"),
                    inode.offset,
                ));
            }
            if depth >= self.limits().max_depth {
                return Err(Ext4ReadError::Limit(format!(
                    "directories nested deeper than {}",
                    self.limits().max_depth
                )));
            }
            let children = self.dir_entries(&inode)?;
            for (name, child) in children.into_iter().rev() {
                let mut p = entry.path.clone();
                if p.len() > 1 {
                    p.push(b'/');
                }
                p.extend_from_slice(&name);
                stack.push((p, child, depth + 1));
            }
        }
        Ok(())
    }
}

/// Every entry, lost+found included.
pub fn list<R: ReadAt>(img: &Ext4Image<R>) -> Result<Vec<ListedEntry>, Ext4ReadError> {
    let mut out = Vec::new();
    img.walk(&|_| false, &mut |e, _| {
        out.push(e.clone());
        Ok(())
    })?;
    Ok(out)
}

/// The inode number at `path`.
pub fn lookup<R: ReadAt>(img: &Ext4Image<R>, path: &[u8]) -> Result<u32, Ext4ReadError> {
    let mut ino = ROOT_INO;
    for name in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        let inode = img.inode(ino)?;
        if inode.mode & S_IFMT != S_IFDIR {
            return Err(Ext4ReadError::NotFound(
                String::from_utf8_lossy(path).into_owned(),
            ));
        }
        let entries = img.dir_entries(&inode)?;
        ino = match entries.binary_search_by(|(n, _)| n.as_slice().cmp(name)) {
            Ok(i) => entries[i].1,
            Err(_) => {
                return Err(Ext4ReadError::NotFound(
                    String::from_utf8_lossy(path).into_owned(),
                ))
            }
        };
    }
    Ok(ino)
}

/// The rootfs digest.
pub fn digest<R: ReadAt>(img: &Ext4Image<R>) -> Result<RootfsDigest, Ext4ReadError> {
    let mut builder = DigestBuilder::new();
    let mut first_names: HashMap<u32, Vec<u8>> = HashMap::new();
    // Content hashes of hard-linked files, so that each is read once.
    let mut linked: HashMap<u32, [u8; 32]> = HashMap::new();
    img.walk(&is_excluded, &mut |e, inode| {
        let sha: [u8; 32];
        let kind = match e.kind {
            EntryType::Directory => EntryKind::Directory,
            EntryType::File => {
                sha = match linked.get(&e.ino) {
                    Some(s) => *s,
                    None => {
                        let mut h = Sha256::new();
                        read_content(img, inode, &mut |c| {
                            h.update(c);
                            Ok(())
                        })?;
                        let s: [u8; 32] = h.finalize().into();
                        if e.links > 1 {
                            linked.insert(e.ino, s);
                        }
                        s
                    }
                };
                EntryKind::File {
                    size: e.size,
                    sha256: sha,
                }
            }
            EntryType::Symlink => EntryKind::Symlink {
                target: e.target.as_deref().unwrap_or_default(),
            },
            EntryType::CharDevice | EntryType::BlockDevice => {
                let (major, minor) = e.rdev.unwrap_or_default();
                if e.kind == EntryType::CharDevice {
                    EntryKind::CharDevice { major, minor }
                } else {
                    EntryKind::BlockDevice { major, minor }
                }
            }
            EntryType::Fifo => EntryKind::Fifo,
            EntryType::Socket => EntryKind::Socket,
        };
        let mut hard_link_of = None;
        if e.kind != EntryType::Directory && e.links > 1 {
            match first_names.get(&e.ino) {
                Some(first) => hard_link_of = Some(first.clone()),
                None => {
                    first_names.insert(e.ino, e.path.clone());
                }
            }
        }
        builder.add(&Entry {
            path: &e.path,
            kind,
            mode: u32::from(e.mode),
            uid: e.uid,
            gid: e.gid,
            hard_link_of: hard_link_of.as_deref(),
            xattrs: &e.xattrs,
        });
        Ok(())
    })?;
    Ok(builder.finish())
}
