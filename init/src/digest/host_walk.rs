//! Computes the rootfs digest of a directory on a mounted filesystem.
//!
//! The guest init runs this over its root (through a non-recursive bind mount, so that /proc, /dev
//! and other mounts do not hide the directories below them); tests run it over extracted trees.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::{DigestBuilder, Entry, EntryKind, RootfsDigest};

/// A directory walk that could not read an entry.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path} while computing the rootfs digest: {source}")]
pub struct WalkError {
    /// The host path that failed.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: io::Error,
}

/// The rootfs digest of the tree below `root`, which stands for `/`.
pub fn digest_directory(root: &Path) -> Result<RootfsDigest, WalkError> {
    digest_directory_with(root, WalkOptions::default()).map(|s| s.digest)
}

/// How [`digest_directory_with`] walks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalkOptions {
    /// Do not descend into directories on another device than `root` (mount points); their
    /// own entry is still covered, with the metadata of what is mounted there. For a root
    /// that cannot be bind-mounted (containers), this approximates the filesystem's own tree.
    pub same_device: bool,
}

/// The result of [`digest_directory_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkSummary {
    /// The digest.
    pub digest: RootfsDigest,
    /// Entries covered.
    pub entries: u64,
    /// Paths (as in the image) of entries on another device than `root`: mount points not
    /// descended into with `same_device`, and bind-mounted files.
    pub other_device: Vec<Vec<u8>>,
}

/// [`digest_directory`] with options, and what the walk saw.
///
/// The walk first records every entry's metadata, then hashes the regular files on every CPU
/// (largest first, so one big file does not end up last on one thread), then feeds the
/// entries in order: the guest digests its root before the first workload, and under
/// emulation SHA-256 is slow enough for the second vCPU to matter.
pub fn digest_directory_with(root: &Path, options: WalkOptions) -> Result<WalkSummary, WalkError> {
    let root_dev = fs::symlink_metadata(root).map_err(at(root))?.dev();
    let mut walk = Walk {
        entries: Vec::new(),
        files: Vec::new(),
        first_names: HashMap::new(),
        root_dev,
        options,
        other_device: Vec::new(),
    };
    walk.visit(root, b"/".to_vec())?;
    let hashes = hash_files(&walk.files)?;
    let mut builder = DigestBuilder::new();
    for e in &walk.entries {
        let kind = match &e.kind {
            Kind::Directory => EntryKind::Directory,
            Kind::File { size, index } => EntryKind::File {
                size: *size,
                sha256: hashes[*index],
            },
            Kind::Symlink(target) => EntryKind::Symlink { target },
            Kind::CharDevice(major, minor) => EntryKind::CharDevice {
                major: *major,
                minor: *minor,
            },
            Kind::BlockDevice(major, minor) => EntryKind::BlockDevice {
                major: *major,
                minor: *minor,
            },
            Kind::Fifo => EntryKind::Fifo,
            Kind::Socket => EntryKind::Socket,
        };
        builder.add(&Entry {
            path: &e.path,
            kind,
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            hard_link_of: e.hard_link_of.as_deref(),
            xattrs: &e.xattrs,
        });
    }
    let entries = builder.entries();
    Ok(WalkSummary {
        digest: builder.finish(),
        entries,
        other_device: walk.other_device,
    })
}

/// What the walk recorded of one entry, owned, until the file hashes are known.
struct Walked {
    path: Vec<u8>,
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    hard_link_of: Option<Vec<u8>>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

enum Kind {
    Directory,
    /// `index` into the walk's list of files to hash.
    File {
        size: u64,
        index: usize,
    },
    Symlink(Vec<u8>),
    CharDevice(u32, u32),
    BlockDevice(u32, u32),
    Fifo,
    Socket,
}

struct Walk {
    entries: Vec<Walked>,
    /// Regular files to hash: host path and size.
    files: Vec<(PathBuf, u64)>,
    first_names: HashMap<(u64, u64), Vec<u8>>,
    root_dev: u64,
    options: WalkOptions,
    other_device: Vec<Vec<u8>>,
}

/// sha256 of every file, in the order given, on every CPU.
fn hash_files(files: &[(PathBuf, u64)]) -> Result<Vec<[u8; 32]>, WalkError> {
    crate::largest_first::map_largest_first(
        files,
        |f| f.1,
        1 << 20,
        |f, buffer| hash_file(&f.0, buffer),
    )
}

fn hash_file(host: &Path, buffer: &mut [u8]) -> Result<[u8; 32], WalkError> {
    let mut file = File::open(host).map_err(at(host))?;
    let mut hasher = Sha256::new();
    loop {
        let n = file.read(buffer).map_err(at(host))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher.finalize().into())
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> WalkError + '_ {
    move |source| WalkError {
        path: path.to_path_buf(),
        source,
    }
}

impl Walk {
    fn visit(&mut self, host: &Path, path: Vec<u8>) -> Result<(), WalkError> {
        if super::is_excluded(&path) {
            return Ok(());
        }
        let meta = fs::symlink_metadata(host).map_err(at(host))?;
        let file_type = meta.file_type();
        let kind = if file_type.is_dir() {
            Kind::Directory
        } else if file_type.is_file() {
            self.files.push((host.to_path_buf(), meta.len()));
            Kind::File {
                size: meta.len(),
                index: self.files.len() - 1,
            }
        } else if file_type.is_symlink() {
            let target = fs::read_link(host).map_err(at(host))?;
            Kind::Symlink(target.into_os_string().into_vec())
        } else if file_type.is_char_device() {
            let (major, minor) = split_rdev(meta.rdev());
            Kind::CharDevice(major, minor)
        } else if file_type.is_block_device() {
            let (major, minor) = split_rdev(meta.rdev());
            Kind::BlockDevice(major, minor)
        } else if file_type.is_fifo() {
            Kind::Fifo
        } else {
            Kind::Socket
        };
        let mut hard_link_of = None;
        if !file_type.is_dir() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            match self.first_names.get(&key) {
                Some(first) => hard_link_of = Some(first.clone()),
                None => {
                    self.first_names.insert(key, path.clone());
                }
            }
        }
        let xattrs = crate::xattr::read(host).map_err(at(host))?;
        self.entries.push(Walked {
            path: path.clone(),
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            hard_link_of,
            xattrs,
        });
        let foreign = meta.dev() != self.root_dev;
        if foreign {
            self.other_device.push(path.clone());
        }
        if file_type.is_dir() && !(foreign && self.options.same_device) {
            let mut names = Vec::new();
            for child in fs::read_dir(host).map_err(at(host))? {
                names.push(child.map_err(at(host))?.file_name());
            }
            names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            for name in names {
                let mut child_path = path.clone();
                if child_path.len() > 1 {
                    child_path.push(b'/');
                }
                child_path.extend_from_slice(name.as_bytes());
                self.visit(&host.join(&name), child_path)?;
            }
        }
        Ok(())
    }
}

fn split_rdev(rdev: u64) -> (u32, u32) {
    // glibc's encoding of dev_t, as major(3) and minor(3) decode it.
    let major = ((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0x0000_0fff);
    let minor = ((rdev >> 12) & 0xffff_ff00) | (rdev & 0x0000_00ff);
    (major as u32, minor as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_tree_same_digest_and_content_matters() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for dir in [a.path(), b.path()] {
            fs::create_dir(dir.join("etc")).unwrap();
            fs::write(dir.join("etc/hostname"), b"x\n").unwrap();
            std::os::unix::fs::symlink("hostname", dir.join("etc/link")).unwrap();
            fs::hard_link(dir.join("etc/hostname"), dir.join("hard")).unwrap();
        }
        let da = digest_directory(a.path()).unwrap();
        assert_eq!(da, digest_directory(b.path()).unwrap());
        fs::write(b.path().join("etc/hostname"), b"y\n").unwrap();
        assert_ne!(da, digest_directory(b.path()).unwrap());
    }

    #[test]
    fn options_default_to_the_plain_digest() {
        let a = tempfile::tempdir().unwrap();
        fs::create_dir(a.path().join("d")).unwrap();
        fs::write(a.path().join("d/f"), b"1").unwrap();
        let plain = digest_directory(a.path()).unwrap();
        let same = digest_directory_with(a.path(), WalkOptions { same_device: true }).unwrap();
        assert_eq!(same.digest, plain);
        assert_eq!(same.entries, 3);
        assert!(same.other_device.is_empty());
    }

    #[test]
    fn missing_root_names_the_path() {
        let err = digest_directory(Path::new("/nonexistent/imgbuild")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/imgbuild"));
    }

    #[test]
    fn rdev_split_matches_libc() {
        let dev = libc::makedev(259, 70000);
        assert_eq!(split_rdev(dev), (259, 70000));
    }
}
