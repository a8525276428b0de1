//! The rootfs digest: one sha256 over a canonical serialization of every entry of a root tree.
//!
//! Both sides compute it: the builder over the tree it assembled in memory, the guest init over the
//! root filesystem its kernel mounted. Equal digests prove that a platform runs the identical root.
//!
//! # Canonical serialization (version 1)
//! The hash starts with the line `imgbuild-rootfs-digest-v1\n`. Entries follow in depth-first
//! pre-order with the children of every directory sorted by the bytes of their names (the root
//! itself first, as path `/`). Each entry is encoded as (integers little-endian, `bytes` = u32
//! length followed by the bytes):
//!
//! | field | encoding |
//! |---|---|
//! | path | bytes, absolute (`/etc/passwd`) |
//! | type | u8: `d` dir, `f` file, `l` symlink, `c` char device, `b` block device, `p` fifo, `s` socket |
//! | mode | u32, permission bits only (`0o7777`: with setuid, setgid, sticky) |
//! | uid, gid | u32, u32 |
//! | type data | file: u64 size and the 32-byte sha256 of the content; symlink: bytes of the target; devices: u32 major, u32 minor; others: nothing |
//! | hard link | bytes: the path of the first entry (in this order) of the same inode, empty when none |
//! | xattrs | u32 count, then name bytes and value bytes of each, sorted by name |
//!
//! Not covered: timestamps (a guest may touch them), `/lost+found` (the filesystem's own) and
//! [`BUILD_INFO_PATH`], the file that records the digest itself.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

mod host_walk;

pub use host_walk::{digest_directory, digest_directory_with, WalkError, WalkOptions, WalkSummary};

/// Path of the file in which the builder records the image name and the rootfs digest.
pub const BUILD_INFO_PATH: &str = "/etc/imgbuild/build.json";

/// Paths that the digest leaves out, with everything below them.
pub const EXCLUDED_PATHS: [&str; 2] = ["/lost+found", BUILD_INFO_PATH];

const HEADER: &[u8] = b"imgbuild-rootfs-digest-v1\n";

/// True when `path` (absolute) is left out of the digest.
pub fn is_excluded(path: &[u8]) -> bool {
    EXCLUDED_PATHS.iter().any(|excluded| {
        let excluded = excluded.as_bytes();
        path == excluded || (path.starts_with(excluded) && path.get(excluded.len()) == Some(&b'/'))
    })
}

/// The canonical order of two absolute paths: component by component, by bytes.
pub fn path_order(a: &[u8], b: &[u8]) -> Ordering {
    let components = |p: &[u8]| {
        p.split(|&c| c == b'/')
            .filter(|c| !c.is_empty())
            .map(<[u8]>::to_vec)
            .collect::<Vec<_>>()
    };
    components(a).cmp(&components(b))
}

/// What kind of entry, with the data the digest covers for that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind<'a> {
    /// A directory.
    Directory,
    /// A regular file of `size` bytes whose content hashes to `sha256`.
    File {
        /// Length in bytes.
        size: u64,
        /// sha256 of the content.
        sha256: [u8; 32],
    },
    /// A symbolic link.
    Symlink {
        /// The link target, as stored.
        target: &'a [u8],
    },
    /// A character device node.
    CharDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A block device node.
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

impl EntryKind<'_> {
    fn type_byte(&self) -> u8 {
        match self {
            EntryKind::Directory => b'd',
            EntryKind::File { .. } => b'f',
            EntryKind::Symlink { .. } => b'l',
            EntryKind::CharDevice { .. } => b'c',
            EntryKind::BlockDevice { .. } => b'b',
            EntryKind::Fifo => b'p',
            EntryKind::Socket => b's',
        }
    }
}

/// One entry as the digest sees it.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// Absolute path; `/` for the root.
    pub path: &'a [u8],
    /// Type and type-specific data.
    pub kind: EntryKind<'a>,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// For the second and later names of a hard-linked inode: the first name, in digest order.
    pub hard_link_of: Option<&'a [u8]>,
    /// Extended attributes, sorted by name.
    pub xattrs: &'a [(Vec<u8>, Vec<u8>)],
}

/// Feeds entries, in canonical order, into the digest.
pub struct DigestBuilder {
    hasher: Sha256,
    entries: u64,
}

impl Default for DigestBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl DigestBuilder {
    /// A digest over no entries yet.
    pub fn new() -> Self {
        let mut hasher = Sha256::new();
        hasher.update(HEADER);
        DigestBuilder { hasher, entries: 0 }
    }

    fn bytes(&mut self, data: &[u8]) {
        // Lengths above 4 GiB cannot occur for paths, targets or xattrs; saturate rather than wrap.
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        self.hasher.update(len.to_le_bytes());
        self.hasher.update(data);
    }

    /// Adds one entry. Excluded paths ([`is_excluded`]) are skipped here, so callers need not.
    pub fn add(&mut self, entry: &Entry<'_>) {
        if is_excluded(entry.path) {
            return;
        }
        self.entries += 1;
        self.bytes(entry.path);
        self.hasher.update([entry.kind.type_byte()]);
        self.hasher.update((entry.mode & 0o7777).to_le_bytes());
        self.hasher.update(entry.uid.to_le_bytes());
        self.hasher.update(entry.gid.to_le_bytes());
        match entry.kind {
            EntryKind::File { size, sha256 } => {
                self.hasher.update(size.to_le_bytes());
                self.hasher.update(sha256);
            }
            EntryKind::Symlink { target } => self.bytes(target),
            EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
                self.hasher.update(major.to_le_bytes());
                self.hasher.update(minor.to_le_bytes());
            }
            EntryKind::Directory | EntryKind::Fifo | EntryKind::Socket => {}
        }
        self.bytes(entry.hard_link_of.unwrap_or_default());
        let count = u32::try_from(entry.xattrs.len()).unwrap_or(u32::MAX);
        self.hasher.update(count.to_le_bytes());
        for (name, value) in entry.xattrs {
            self.bytes(name);
            self.bytes(value);
        }
    }

    /// Number of entries covered so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// The digest of everything added.
    pub fn finish(self) -> RootfsDigest {
        RootfsDigest(self.hasher.finalize().into())
    }
}

/// A rootfs digest; displayed and parsed as `sha256:HEX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RootfsDigest(pub [u8; 32]);

impl fmt::Display for RootfsDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// A string that is not `sha256:` followed by 64 hex digits.
#[derive(Debug, thiserror::Error)]
#[error("not a rootfs digest (expected sha256: and 64 hex digits): {0:?}")]
pub struct ParseDigestError(String);

impl FromStr for RootfsDigest {
    type Err = ParseDigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseDigestError(s.chars().take(80).collect());
        let hex = s.strip_prefix("sha256:").ok_or_else(err)?;
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return Err(err());
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let text = std::str::from_utf8(pair).map_err(|_| err())?;
            out[i] = u8::from_str_radix(text, 16).map_err(|_| err())?;
        }
        Ok(RootfsDigest(out))
    }
}

impl serde::Serialize for RootfsDigest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for RootfsDigest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &[u8]) -> Entry<'_> {
        Entry {
            path,
            kind: EntryKind::File {
                size: 0,
                sha256: [0; 32],
            },
            mode: 0o644,
            uid: 0,
            gid: 0,
            hard_link_of: None,
            xattrs: &[],
        }
    }

    #[test]
    fn excluded_paths_and_children() {
        assert!(is_excluded(b"/lost+found"));
        assert!(is_excluded(b"/lost+found/x"));
        assert!(is_excluded(b"/etc/imgbuild/build.json"));
        assert!(!is_excluded(b"/lost+found2"));
        assert!(!is_excluded(b"/etc/imgbuild"));
    }

    #[test]
    fn order_is_by_component() {
        assert_eq!(path_order(b"/a-c", b"/a/b"), Ordering::Greater);
        assert_eq!(path_order(b"/", b"/a"), Ordering::Less);
        assert_eq!(path_order(b"/a/b", b"/a/b"), Ordering::Equal);
    }

    #[test]
    fn every_field_changes_the_digest() {
        let base = file(b"/x");
        let digest = |e: &Entry<'_>| {
            let mut b = DigestBuilder::new();
            b.add(e);
            b.finish()
        };
        let d0 = digest(&base);
        let xattrs = vec![(b"user.a".to_vec(), b"1".to_vec())];
        let variants = [
            Entry {
                path: b"/y",
                ..base
            },
            Entry {
                mode: 0o4644,
                ..base
            },
            Entry { uid: 70000, ..base },
            Entry { gid: 1, ..base },
            Entry {
                hard_link_of: Some(b"/w"),
                ..base
            },
            Entry {
                xattrs: &xattrs,
                ..base
            },
            Entry {
                kind: EntryKind::Fifo,
                ..base
            },
            Entry {
                kind: EntryKind::File {
                    size: 1,
                    sha256: [0; 32],
                },
                ..base
            },
        ];
        for v in &variants {
            assert_ne!(digest(v), d0, "{v:?}");
        }
        assert_eq!(digest(&base), d0);
    }

    #[test]
    fn excluded_entries_do_not_count() {
        let mut b = DigestBuilder::new();
        b.add(&file(b"/etc/imgbuild/build.json"));
        assert_eq!(b.entries(), 0);
        assert_eq!(b.finish(), DigestBuilder::new().finish());
    }

    #[test]
    fn display_parse_round_trip() {
        let d = RootfsDigest([0xab; 32]);
        let s = d.to_string();
        assert_eq!(s.len(), 7 + 64);
        assert_eq!(s.parse::<RootfsDigest>().unwrap(), d);
        assert!("sha256:zz".parse::<RootfsDigest>().is_err());
        assert!("md5:00".parse::<RootfsDigest>().is_err());
    }
}
