//! Where a kernel's files are: on the host (`/boot`, `/lib/modules/X`) or inside a root tree that
//! a package reader (deb, rpm) assembled.
//!
//! Everything downstream (header checks, module metadata, the initramfs) reads through
//! [`KernelFile`] and [`ModulesDir`], so a kernel from a package is handled exactly like one on
//! the host. Relative paths taken from metadata files (`modules.dep`) are checked before use:
//! a hostile `../../etc/shadow` must not pull a host file into the initramfs.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::tree::{Content, InodeId, Kind, Tree};

/// Deepest directory nesting followed when listing a modules directory.
const MAX_DEPTH: usize = 32;
/// Most files accepted in one modules directory (a full distribution kernel has ~6000).
const MAX_FILES: usize = 200_000;

/// A kernel file that cannot be read or used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Reading failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The host path or `origin:tree path`.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file is larger than anything of its kind should be.
    #[error("{path} is {size} bytes, more than the {limit} bytes accepted for it")]
    TooLarge {
        /// The file.
        path: String,
        /// Its size.
        size: u64,
        /// The bound.
        limit: u64,
    },
    /// A relative path from metadata leaves the modules directory or is malformed.
    #[error("path {path:?} in {dir} is not acceptable: {reason}")]
    BadPath {
        /// The path as found.
        path: String,
        /// The modules directory.
        dir: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The modules directory holds more entries than accepted.
    #[error("{dir} holds more than {limit} files or is nested deeper than {depth} levels")]
    TooManyFiles {
        /// The modules directory.
        dir: String,
        /// File bound.
        limit: usize,
        /// Depth bound.
        depth: usize,
    },
}

/// One file of a kernel: on the host or in a tree.
#[derive(Debug, Clone)]
pub enum KernelFile {
    /// A host file.
    Host(PathBuf),
    /// A regular file of a tree.
    Tree {
        /// `origin:/path`, for messages.
        label: String,
        /// Its length.
        size: u64,
        /// Its bytes.
        content: Content,
    },
}

impl KernelFile {
    /// Name for messages: the host path or `origin:/tree/path`.
    pub fn label(&self) -> String {
        match self {
            KernelFile::Host(p) => p.display().to_string(),
            KernelFile::Tree { label, .. } => label.clone(),
        }
    }

    /// The host path, when the file is one (QEMU's `-kernel` and Xen's `kernel=` want a path).
    pub fn host_path(&self) -> Option<&Path> {
        match self {
            KernelFile::Host(p) => Some(p),
            KernelFile::Tree { .. } => None,
        }
    }

    fn read_err(&self, source: io::Error) -> FileError {
        FileError::Read {
            path: self.label(),
            source,
        }
    }

    /// Length in bytes.
    pub fn size(&self) -> Result<u64, FileError> {
        match self {
            KernelFile::Host(p) => Ok(fs::metadata(p).map_err(|e| self.read_err(e))?.len()),
            KernelFile::Tree { size, .. } => Ok(*size),
        }
    }

    /// The first `n` bytes (fewer when the file is shorter).
    pub fn read_prefix(&self, n: usize) -> Result<Vec<u8>, FileError> {
        let size = self.size()?;
        let want = usize::try_from(size).unwrap_or(usize::MAX).min(n);
        let mut buf = vec![0u8; want];
        let mut done = 0;
        while done < want {
            let got = self.read_at(&mut buf[done..], done as u64)?;
            if got == 0 {
                break;
            }
            done += got;
        }
        buf.truncate(done);
        Ok(buf)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize, FileError> {
        match self {
            KernelFile::Host(p) => {
                let f = File::open(p).map_err(|e| self.read_err(e))?;
                f.read_at(buf, offset).map_err(|e| self.read_err(e))
            }
            KernelFile::Tree {
                label,
                size,
                content,
            } => {
                let r = content.open(*size, label).map_err(|e| FileError::Read {
                    path: e.path,
                    source: e.source,
                })?;
                r.read_at(buf, offset).map_err(|e| self.read_err(e))
            }
        }
    }

    /// The whole file, refused when larger than `limit`.
    pub fn read_all(&self, limit: u64) -> Result<Vec<u8>, FileError> {
        let size = self.size()?;
        if size > limit {
            return Err(FileError::TooLarge {
                path: self.label(),
                size,
                limit,
            });
        }
        let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        self.copy_to(&mut out)?;
        if out.len() as u64 > limit {
            // A host file that grew while being read.
            return Err(FileError::TooLarge {
                path: self.label(),
                size: out.len() as u64,
                limit,
            });
        }
        Ok(out)
    }

    /// Copies the whole file to `out`; returns the bytes copied.
    pub fn copy_to(&self, out: &mut impl Write) -> Result<u64, FileError> {
        match self {
            KernelFile::Host(p) => {
                let f = File::open(p).map_err(|e| self.read_err(e))?;
                let size = f.metadata().map_err(|e| self.read_err(e))?.len();
                // Read one byte past the size seen, so a file that grows is not silently cut.
                let mut limited = f.take(size.saturating_add(1));
                io::copy(&mut limited, out).map_err(|e| self.read_err(e))
            }
            KernelFile::Tree { size, .. } => {
                let mut buf = vec![0u8; 1 << 16];
                let mut offset = 0u64;
                while offset < *size {
                    let n = self.read_at(&mut buf, offset)?;
                    if n == 0 {
                        return Err(self.read_err(io::ErrorKind::UnexpectedEof.into()));
                    }
                    out.write_all(&buf[..n]).map_err(|e| self.read_err(e))?;
                    offset += n as u64;
                }
                Ok(offset)
            }
        }
    }
}

/// A kernel's modules directory (`/lib/modules/<release>`), on the host or in a tree.
#[derive(Debug, Clone)]
pub enum ModulesDir {
    /// A host directory.
    Host(PathBuf),
    /// Files of a tree below one directory, by path relative to it.
    Tree {
        /// `origin:/lib/modules/X`, for messages.
        label: String,
        /// Regular files: relative path → (size, content).
        files: BTreeMap<String, (u64, Content)>,
    },
}

impl ModulesDir {
    /// Collects the regular files below `dir` of `tree`. `origin` names the tree's source (the
    /// package) in messages. `None` when `dir` is not a directory of the tree.
    pub fn from_tree(
        tree: &Tree,
        dir: &str,
        origin: &str,
    ) -> Result<Option<ModulesDir>, FileError> {
        let label = format!("{origin}:{dir}");
        let Some(id) = tree.lookup(dir.as_bytes()) else {
            return Ok(None);
        };
        if !matches!(tree.inode(id).kind, Kind::Directory(_)) {
            return Ok(None);
        }
        let mut files = BTreeMap::new();
        collect_tree(tree, id, String::new(), 0, &mut files, &label)?;
        Ok(Some(ModulesDir::Tree { label, files }))
    }

    /// Name for messages.
    pub fn label(&self) -> String {
        match self {
            ModulesDir::Host(p) => p.display().to_string(),
            ModulesDir::Tree { label, .. } => label.clone(),
        }
    }

    /// Checks that `rel` stays inside the directory: relative, no `..`, `.` or empty parts.
    pub fn check_rel(&self, rel: &str) -> Result<(), FileError> {
        let bad = |reason| FileError::BadPath {
            path: rel.to_string(),
            dir: self.label(),
            reason,
        };
        if rel.is_empty() || rel.starts_with('/') {
            return Err(bad("it must be a non-empty relative path"));
        }
        if rel.contains('\0') {
            return Err(bad("it contains a NUL byte"));
        }
        if rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(bad("it has an empty, `.` or `..` component"));
        }
        Ok(())
    }

    /// The file at `rel`, or `None` when there is no regular file there.
    pub fn file(&self, rel: &str) -> Result<Option<KernelFile>, FileError> {
        self.check_rel(rel)?;
        match self {
            ModulesDir::Host(dir) => {
                let p = dir.join(rel);
                // Following a symlink is fine on the host: EL's weak-updates are symlinks, and
                // the host is where the builder runs, not an untrusted archive.
                match fs::metadata(&p) {
                    Ok(m) if m.is_file() => Ok(Some(KernelFile::Host(p))),
                    Ok(_) => Ok(None),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                    Err(source) => Err(FileError::Read {
                        path: p.display().to_string(),
                        source,
                    }),
                }
            }
            ModulesDir::Tree { label, files } => {
                Ok(files.get(rel).map(|(size, content)| KernelFile::Tree {
                    label: format!("{label}/{rel}"),
                    size: *size,
                    content: content.clone(),
                }))
            }
        }
    }

    /// Relative paths of every file whose name ends with one of `suffixes`, sorted.
    pub fn list(&self, suffixes: &[&str]) -> Result<Vec<String>, FileError> {
        let wanted = |name: &str| suffixes.iter().any(|s| name.ends_with(s));
        let mut out = match self {
            ModulesDir::Host(dir) => {
                let mut out = Vec::new();
                let mut count = 0usize;
                list_host(dir, "", 0, &mut count, &mut out, &self.label())?;
                out.retain(|p: &String| wanted(p));
                out
            }
            ModulesDir::Tree { files, .. } => files.keys().filter(|p| wanted(p)).cloned().collect(),
        };
        out.sort();
        Ok(out)
    }
}

fn too_many(dir: &str) -> FileError {
    FileError::TooManyFiles {
        dir: dir.to_string(),
        limit: MAX_FILES,
        depth: MAX_DEPTH,
    }
}

fn collect_tree(
    tree: &Tree,
    dir: InodeId,
    prefix: String,
    depth: usize,
    out: &mut BTreeMap<String, (u64, Content)>,
    label: &str,
) -> Result<(), FileError> {
    if depth > MAX_DEPTH {
        return Err(too_many(label));
    }
    let Kind::Directory(entries) = &tree.inode(dir).kind else {
        return Ok(());
    };
    for (name, &child) in entries {
        // Module and metadata names are ASCII; a name that is not UTF-8 cannot be a module.
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        let rel = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        match &tree.inode(child).kind {
            Kind::Directory(_) => collect_tree(tree, child, rel, depth + 1, out, label)?,
            Kind::File(data) => {
                if out.len() >= MAX_FILES {
                    return Err(too_many(label));
                }
                out.insert(rel, (data.size, data.content.clone()));
            }
            _ => {}
        }
    }
    Ok(())
}

fn list_host(
    dir: &Path,
    prefix: &str,
    depth: usize,
    count: &mut usize,
    out: &mut Vec<String>,
    label: &str,
) -> Result<(), FileError> {
    if depth > MAX_DEPTH {
        return Err(too_many(label));
    }
    let read_err = |source| FileError::Read {
        path: dir.display().to_string(),
        source,
    };
    for entry in fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        *count += 1;
        if *count > MAX_FILES {
            return Err(too_many(label));
        }
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let ft = entry.file_type().map_err(read_err)?;
        if ft.is_dir() {
            list_host(&entry.path(), &rel, depth + 1, count, out, label)?;
        } else if ft.is_file() {
            out.push(rel);
        } else if ft.is_symlink() {
            // A symlinked module (EL weak-updates) counts; symlinked directories (`build`,
            // `source` pointing at kernel headers) are not descended into.
            if fs::metadata(entry.path())
                .map(|m| m.is_file())
                .unwrap_or(false)
            {
                out.push(rel);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{FileData, Inode, Meta};

    fn tree_with(files: &[(&str, &'static [u8])]) -> Tree {
        let mut t = Tree::new(Meta::root(0o755, 0));
        for (path, bytes) in files {
            let inode = Inode::new(
                Meta::root(0o644, 0),
                Kind::File(FileData {
                    size: bytes.len() as u64,
                    content: Content::Bytes((*bytes).into()),
                    sha256: None,
                }),
            );
            t.insert(path.as_bytes(), inode).unwrap();
        }
        t
    }

    #[test]
    fn tree_dir_lists_reads_and_refuses_escapes() {
        let t = tree_with(&[
            ("/lib/modules/1.0/kernel/a.ko", b"AAAA"),
            ("/lib/modules/1.0/kernel/sub/b.ko.xz", b"BB"),
            ("/lib/modules/1.0/modules.dep", b"x"),
            ("/etc/shadow", b"secret"),
        ]);
        let dir = ModulesDir::from_tree(&t, "/lib/modules/1.0", "pkg.deb")
            .unwrap()
            .unwrap();
        assert_eq!(
            dir.list(&[".ko", ".ko.xz"]).unwrap(),
            ["kernel/a.ko", "kernel/sub/b.ko.xz"]
        );
        let f = dir.file("kernel/a.ko").unwrap().unwrap();
        assert_eq!(f.read_all(10).unwrap(), b"AAAA");
        assert_eq!(f.read_prefix(2).unwrap(), b"AA");
        assert_eq!(f.label(), "pkg.deb:/lib/modules/1.0/kernel/a.ko");
        assert!(matches!(f.read_all(3), Err(FileError::TooLarge { .. })));
        assert!(dir.file("kernel/none.ko").unwrap().is_none());
        for bad in ["../../../etc/shadow", "/etc/shadow", "a//b", "./a", ""] {
            assert!(
                matches!(dir.file(bad), Err(FileError::BadPath { .. })),
                "{bad}"
            );
        }
        assert!(ModulesDir::from_tree(&t, "/lib/modules/2.0", "pkg.deb")
            .unwrap()
            .is_none());
    }

    #[test]
    fn host_dir_lists_without_following_dir_symlinks() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("kernel/x")).unwrap();
        fs::write(d.path().join("kernel/x/m.ko"), b"m").unwrap();
        fs::write(d.path().join("modules.dep"), b"").unwrap();
        std::os::unix::fs::symlink("/usr", d.path().join("build")).unwrap();
        std::os::unix::fs::symlink("kernel/x/m.ko", d.path().join("l.ko")).unwrap();
        let dir = ModulesDir::Host(d.path().to_path_buf());
        assert_eq!(dir.list(&[".ko"]).unwrap(), ["kernel/x/m.ko", "l.ko"]);
        let f = dir.file("l.ko").unwrap().unwrap();
        let mut out = Vec::new();
        assert_eq!(f.copy_to(&mut out).unwrap(), 1);
        assert!(dir.file("kernel").unwrap().is_none());
    }
}
