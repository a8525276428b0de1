//! Writes a [`Tree`] out as a real directory tree: how the OpenVZ engine unpacks its template
//! (read by the project's own tar reader, which already refuses absolute paths, `..` and
//! entries through symlinks) into a fresh directory.
//!
//! Nothing is ever resolved through a symlink: every entry is created relative to a descriptor
//! of its parent directory that this code opened itself (`O_DIRECTORY|O_NOFOLLOW`), with
//! `O_CREAT|O_EXCL|O_NOFOLLOW`, `mknodat`, `symlinkat`, `linkat`; owners, modes, xattrs and times
//! are set on descriptors or with `AT_SYMLINK_NOFOLLOW`. A symlink in the template can point
//! anywhere, and it is written as a symlink and never followed. Owners, device nodes and
//! `security.*` xattrs need root.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::tree::{Inode, InodeId, Kind, Meta, Tree};

/// Directories deeper than this are refused (each level holds a descriptor open).
const MAX_DEPTH: usize = 512;

/// An entry that cannot be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {path} while unpacking: {source}")]
pub struct ExtractError {
    /// The entry, as a path under the destination.
    pub path: PathBuf,
    /// What was being done.
    pub action: &'static str,
    /// Why.
    #[source]
    pub source: io::Error,
}

/// What was written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractReport {
    /// Entries created (hard links counted once per name).
    pub entries: u64,
    /// File bytes written.
    pub bytes: u64,
}

struct Writer<'a> {
    tree: &'a Tree,
    dest: &'a Path,
    counts: Vec<u32>,
    /// First relative path of each hard-linked inode already written.
    first: HashMap<InodeId, CString>,
    report: ExtractReport,
    buffer: Vec<u8>,
}

fn cstr(bytes: &[u8], shown: &Path) -> Result<CString, ExtractError> {
    CString::new(bytes).map_err(|_| ExtractError {
        path: shown.to_path_buf(),
        action: "name",
        source: io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in a name"),
    })
}

fn check(ret: libc::c_int, path: &Path, action: &'static str) -> Result<(), ExtractError> {
    if ret < 0 {
        Err(ExtractError {
            path: path.to_path_buf(),
            action,
            source: io::Error::last_os_error(),
        })
    } else {
        Ok(())
    }
}

fn open_dir_at(dir: RawFd, name: &CString, shown: &Path) -> Result<OwnedFd, ExtractError> {
    // SAFETY: valid descriptor and NUL-terminated name.
    let fd = unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    check(fd, shown, "open directory")?;
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Writes `tree` into `dest`, which must be an empty directory this process created.
pub fn write_tree(tree: &Tree, dest: &Path) -> Result<ExtractReport, ExtractError> {
    let c_dest = cstr(dest.as_os_str().as_encoded_bytes(), dest)?;
    let root = open_dir_at(libc::AT_FDCWD, &c_dest, dest)?;
    let mut w = Writer {
        tree,
        dest,
        counts: tree.link_counts(),
        first: HashMap::new(),
        report: ExtractReport::default(),
        buffer: vec![0u8; 1 << 20],
    };
    let root_id = tree.root();
    w.directory(root.as_raw_fd(), root.as_raw_fd(), root_id, b"", 0)?;
    let meta = &tree.inode(root_id).meta;
    set_meta_fd(root.as_raw_fd(), meta, dest)?;
    Ok(w.report)
}

impl Writer<'_> {
    fn shown(&self, rel: &[u8]) -> PathBuf {
        self.dest
            .join(String::from_utf8_lossy(rel).trim_start_matches('/'))
    }

    /// Writes the entries of directory `id` (open as `fd`); `root` is the destination's fd.
    fn directory(
        &mut self,
        root: RawFd,
        fd: RawFd,
        id: InodeId,
        rel: &[u8],
        depth: usize,
    ) -> Result<(), ExtractError> {
        let Kind::Directory(entries) = &self.tree.inode(id).kind else {
            return Ok(());
        };
        if depth > MAX_DEPTH {
            return Err(ExtractError {
                path: self.shown(rel),
                action: "descend into",
                source: io::Error::other(format!("more than {MAX_DEPTH} directory levels")),
            });
        }
        for (name, child) in entries {
            let mut child_rel = rel.to_vec();
            child_rel.push(b'/');
            child_rel.extend_from_slice(name);
            let shown = self.shown(&child_rel);
            if name.is_empty() || name.contains(&b'/') || &**name == b"." || &**name == b".." {
                return Err(ExtractError {
                    path: shown,
                    action: "create",
                    source: io::Error::new(io::ErrorKind::InvalidInput, "not a single name"),
                });
            }
            let c_name = cstr(name, &shown)?;
            self.entry(root, fd, *child, &child_rel, &c_name, &shown, depth)?;
            self.report.entries += 1;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn entry(
        &mut self,
        root: RawFd,
        dir: RawFd,
        id: InodeId,
        rel: &[u8],
        name: &CString,
        shown: &Path,
        depth: usize,
    ) -> Result<(), ExtractError> {
        let inode: &Inode = self.tree.inode(id);
        let linked = !matches!(inode.kind, Kind::Directory(_)) && self.counts[id.index()] > 1;
        if linked {
            if let Some(first) = self.first.get(&id) {
                // SAFETY: valid descriptors and NUL-terminated names; flags 0 never follows.
                let ret = unsafe { libc::linkat(root, first.as_ptr(), dir, name.as_ptr(), 0) };
                return check(ret, shown, "hard-link");
            }
            let relative = cstr(rel.strip_prefix(b"/").unwrap_or(rel), shown)?;
            self.first.insert(id, relative);
        }
        let meta = &inode.meta;
        match &inode.kind {
            Kind::Directory(_) => {
                // SAFETY: valid descriptor and name.
                check(
                    unsafe { libc::mkdirat(dir, name.as_ptr(), 0o700) },
                    shown,
                    "create directory",
                )?;
                let fd = open_dir_at(dir, name, shown)?;
                self.directory(root, fd.as_raw_fd(), id, rel, depth + 1)?;
                set_meta_fd(fd.as_raw_fd(), meta, shown)
            }
            Kind::File(data) => {
                // SAFETY: valid descriptor and name.
                let fd = unsafe {
                    libc::openat(
                        dir,
                        name.as_ptr(),
                        libc::O_WRONLY
                            | libc::O_CREAT
                            | libc::O_EXCL
                            | libc::O_NOFOLLOW
                            | libc::O_CLOEXEC,
                        0o600,
                    )
                };
                check(fd, shown, "create")?;
                // SAFETY: a new descriptor nothing else owns.
                let file = unsafe { File::from_raw_fd(fd) };
                self.write_content(&file, data, shown)?;
                set_meta_fd(file.as_raw_fd(), meta, shown)
            }
            Kind::Symlink(target) => {
                let c_target = cstr(target, shown)?;
                // SAFETY: valid descriptor and NUL-terminated strings.
                let ret = unsafe { libc::symlinkat(c_target.as_ptr(), dir, name.as_ptr()) };
                check(ret, shown, "create symlink")?;
                set_meta_at(dir, name, meta, shown, false)
            }
            Kind::CharDevice { major, minor } | Kind::BlockDevice { major, minor } => {
                let kind = if matches!(inode.kind, Kind::CharDevice { .. }) {
                    libc::S_IFCHR
                } else {
                    libc::S_IFBLK
                };
                let dev = libc::makedev(*major, *minor);
                // SAFETY: valid descriptor and name.
                let ret = unsafe { libc::mknodat(dir, name.as_ptr(), kind | 0o600, dev) };
                check(ret, shown, "create device node")?;
                set_meta_at(dir, name, meta, shown, true)
            }
            Kind::Fifo => {
                // SAFETY: valid descriptor and name.
                let ret = unsafe { libc::mknodat(dir, name.as_ptr(), libc::S_IFIFO | 0o600, 0) };
                check(ret, shown, "create fifo")?;
                set_meta_at(dir, name, meta, shown, true)
            }
            // tar has no sockets; a tree from elsewhere may: a socket is only meaningful bound.
            Kind::Socket => Ok(()),
        }
    }

    fn write_content(
        &mut self,
        out: &File,
        data: &crate::tree::FileData,
        shown: &Path,
    ) -> Result<(), ExtractError> {
        let err = |action, source| ExtractError {
            path: shown.to_path_buf(),
            action,
            source,
        };
        let reader = data
            .content
            .open(data.size, &shown.display().to_string())
            .map_err(|e| err("read the content of", e.source))?;
        out.set_len(data.size).map_err(|e| err("size", e))?;
        for (start, end) in reader.data_ranges().map_err(|e| err("map", e))? {
            let mut off = start;
            while off < end {
                let n = usize::try_from(end - off)
                    .unwrap_or(usize::MAX)
                    .min(self.buffer.len());
                reader
                    .read_exact_at(&mut self.buffer[..n], off)
                    .map_err(|e| err("read the content of", e))?;
                out.write_all_at(&self.buffer[..n], off)
                    .map_err(|e| err("write", e))?;
                off += n as u64;
                self.report.bytes += n as u64;
            }
        }
        Ok(())
    }
}

/// Owner, then mode (chown clears set-id bits), then xattrs (chown clears file capabilities),
/// then times, on an open descriptor.
fn set_meta_fd(fd: RawFd, meta: &Meta, shown: &Path) -> Result<(), ExtractError> {
    // SAFETY: valid descriptor.
    check(
        unsafe { libc::fchown(fd, meta.uid, meta.gid) },
        shown,
        "chown",
    )?;
    // SAFETY: valid descriptor.
    let mode = libc::mode_t::from(meta.mode & 0o7777);
    check(unsafe { libc::fchmod(fd, mode) }, shown, "chmod")?;
    for (key, value) in &meta.xattrs {
        let c_key = cstr(key, shown)?;
        // SAFETY: valid descriptor, NUL-terminated key, value slice with its length.
        let ret =
            unsafe { libc::fsetxattr(fd, c_key.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
        check(ret, shown, "set an extended attribute of")?;
    }
    let times = timespecs(meta.mtime);
    // SAFETY: valid descriptor and a two-element array.
    check(
        unsafe { libc::futimens(fd, times.as_ptr()) },
        shown,
        "set the times of",
    )
}

/// The same for an entry that cannot be opened (symlinks, device nodes, fifos): by name in its
/// parent with AT_SYMLINK_NOFOLLOW; xattrs through the parent's /proc/self/fd path and the
/// l*xattr calls, which do not follow the last component.
fn set_meta_at(
    dir: RawFd,
    name: &CString,
    meta: &Meta,
    shown: &Path,
    chmod: bool,
) -> Result<(), ExtractError> {
    // SAFETY: valid descriptor and name.
    let ret = unsafe {
        libc::fchownat(
            dir,
            name.as_ptr(),
            meta.uid,
            meta.gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    check(ret, shown, "chown")?;
    if chmod {
        let mode = libc::mode_t::from(meta.mode & 0o7777);
        // SAFETY: valid descriptor and name; the entry is not a symlink.
        check(
            unsafe { libc::fchmodat(dir, name.as_ptr(), mode, 0) },
            shown,
            "chmod",
        )?;
    }
    if !meta.xattrs.is_empty() {
        let mut path = format!("/proc/self/fd/{dir}/").into_bytes();
        path.extend_from_slice(name.as_bytes());
        let c_path = cstr(&path, shown)?;
        for (key, value) in &meta.xattrs {
            let c_key = cstr(key, shown)?;
            // SAFETY: NUL-terminated strings and a value slice with its length.
            let ret = unsafe {
                libc::lsetxattr(
                    c_path.as_ptr(),
                    c_key.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            };
            check(ret, shown, "set an extended attribute of")?;
        }
    }
    let times = timespecs(meta.mtime);
    // SAFETY: valid descriptor, name and a two-element array.
    let ret = unsafe {
        libc::utimensat(
            dir,
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    check(ret, shown, "set the times of")
}

fn timespecs(mtime: i64) -> [libc::timespec; 2] {
    let t = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    };
    [t, t]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Content, FileData};
    use std::os::unix::fs::MetadataExt;

    fn file(bytes: &'static [u8], mode: u16) -> Inode {
        Inode::new(
            Meta::root(mode, 1_700_000_000),
            Kind::File(FileData {
                size: bytes.len() as u64,
                content: Content::Bytes(bytes.into()),
                sha256: None,
            }),
        )
    }

    fn dir(mode: u16) -> Inode {
        Inode::new(Meta::root(mode, 1_600_000_000), Kind::empty_dir())
    }

    #[test]
    fn writes_every_kind_and_never_follows_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        let mut tree = Tree::new(Meta::root(0o755, 0));
        tree.insert(b"/etc", dir(0o755)).unwrap();
        tree.insert(b"/etc/passwd", file(b"root:x:0:0::/root:/bin/sh\n", 0o644))
            .unwrap();
        tree.hard_link(b"/etc/passwd-", b"/etc/passwd").unwrap();
        // A symlink pointing out of the tree, then a directory that shares no path with it.
        let escape = outside.path().display().to_string();
        tree.insert(
            b"/escape",
            Inode::new(
                Meta::root(0o777, 0),
                Kind::Symlink(escape.as_bytes().into()),
            ),
        )
        .unwrap();
        tree.insert(b"/ro", dir(0o555)).unwrap();
        tree.insert(b"/ro/x", file(b"x", 0o4755)).unwrap();
        tree.insert(b"/fifo", Inode::new(Meta::root(0o640, 0), Kind::Fifo))
            .unwrap();
        let dest_parent = tempfile::tempdir().unwrap();
        let dest = dest_parent.path().join("root");
        std::fs::create_dir(&dest).unwrap();
        let report = write_tree(&tree, &dest).unwrap();
        assert_eq!(report.entries, 7);
        let passwd = std::fs::metadata(dest.join("etc/passwd")).unwrap();
        assert_eq!(passwd.nlink(), 2);
        assert_eq!(passwd.mtime(), 1_700_000_000);
        assert_eq!(
            std::fs::read_link(dest.join("escape")).unwrap(),
            outside.path()
        );
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        assert_eq!(
            std::fs::metadata(dest.join("ro")).unwrap().mode() & 0o7777,
            0o555
        );
        let x = std::fs::metadata(dest.join("ro/x")).unwrap();
        // Set-id bits survive only for root (chown by a user keeps the owner and drops none).
        assert_eq!(x.mode() & 0o777, 0o755);
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::symlink_metadata(dest.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
        // The written tree digests like the tree (owners only when root could set them).
        if unsafe { libc::geteuid() } == 0 {
            crate::tree::hash_contents(&mut tree, &|_| {}).unwrap();
            let want = crate::tree::tree_digest(&tree).unwrap();
            let got = imgbuild_init::digest::digest_directory(&dest).unwrap();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn refuses_a_destination_that_is_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let tree = Tree::new(Meta::root(0o755, 0));
        assert!(write_tree(&tree, &link).is_err());
    }
}
