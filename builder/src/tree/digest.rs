//! Hashing file contents and computing the rootfs digest of a tree.
//!
//! The serialization itself is defined once, in `imgbuild_init::digest`, so that the guest
//! computes the very same digest over its mounted root.

use std::collections::HashMap;

use imgbuild_init::digest::{DigestBuilder, Entry, EntryKind, RootfsDigest};
use imgbuild_init::largest_first::map_largest_first;
use sha2::{Digest as _, Sha256};

use super::{ContentError, ContentReader, InodeId, Kind, Tree};

const CHUNK: usize = 1 << 20;

/// Computes the sha256 of every reachable file that has none yet, on all CPUs. `progress` is
/// called with the number of bytes hashed as they are.
pub fn hash_contents(tree: &mut Tree, progress: &(dyn Fn(u64) + Sync)) -> Result<(), ContentError> {
    let mut seen = vec![false; tree.allocated()];
    let mut work: Vec<(InodeId, Vec<u8>, u64)> = Vec::new();
    for (path, id) in tree.walk() {
        if std::mem::replace(&mut seen[id.index()], true) {
            continue;
        }
        if let Kind::File(data) = &tree.inode(id).kind {
            if data.sha256.is_none() {
                work.push((id, path, data.size));
            }
        }
    }
    let shared: &Tree = tree;
    let hashes = map_largest_first(
        &work,
        |w| w.2,
        CHUNK,
        |(id, path, _), buffer| hash_one(shared, *id, path, buffer, progress),
    )?;
    for ((id, _, _), sha) in work.iter().zip(hashes) {
        if let Kind::File(data) = &mut tree.inode_mut(*id).kind {
            data.sha256 = Some(sha);
        }
    }
    Ok(())
}

fn hash_one(
    tree: &Tree,
    id: InodeId,
    path: &[u8],
    buffer: &mut [u8],
    progress: &(dyn Fn(u64) + Sync),
) -> Result<[u8; 32], ContentError> {
    let shown = String::from_utf8_lossy(path).into_owned();
    let Kind::File(data) = &tree.inode(id).kind else {
        unreachable!("only files are queued for hashing");
    };
    let reader = data.content.open(data.size, &shown)?;
    sha256_of(&reader, buffer, progress).map_err(|source| ContentError {
        path: shown.clone(),
        source,
    })
}

/// sha256 of a content, reading only its data ranges (holes are hashed as zeros without being
/// read). `buffer` is scratch space; `progress` gets the bytes read.
pub fn sha256_of(
    reader: &ContentReader<'_>,
    buffer: &mut [u8],
    progress: &(dyn Fn(u64) + Sync),
) -> std::io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut pos = 0u64;
    for (start, end) in reader.data_ranges()? {
        feed_zeros(&mut hasher, start - pos);
        let mut off = start;
        while off < end {
            let want = buffer.len().min((end - off) as usize);
            reader.read_exact_at(&mut buffer[..want], off)?;
            hasher.update(&buffer[..want]);
            off += want as u64;
            progress(want as u64);
        }
        pos = end;
    }
    feed_zeros(&mut hasher, reader.len() - pos);
    Ok(hasher.finalize().into())
}

/// Zeros hashed in place of holes. Static: a zeroed buffer allocated per file cost a 1 MiB
/// memset each (glibc serves it from the heap once it has been freed once), 0.17 CPU-seconds
/// over the 6,800 files of a minimal Debian tree.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

fn feed_zeros(hasher: &mut Sha256, mut count: u64) {
    while count > 0 {
        let n = count.min(ZEROS.len() as u64) as usize;
        hasher.update(&ZEROS[..n]);
        count -= n as u64;
    }
}

/// A file without its content hash: [`hash_contents`] was not run after it was added.
#[derive(Debug, thiserror::Error)]
#[error("internal error: {0} has no content hash yet")]
pub struct UnhashedFile(pub String);

/// The rootfs digest of the tree; every file must have been hashed.
pub fn tree_digest(tree: &Tree) -> Result<RootfsDigest, UnhashedFile> {
    let mut builder = DigestBuilder::new();
    let mut first_names: HashMap<InodeId, Vec<u8>> = HashMap::new();
    let counts = tree.link_counts();
    for (path, id) in tree.walk() {
        if imgbuild_init::digest::is_excluded(&path) {
            continue;
        }
        let inode = tree.inode(id);
        let kind = match &inode.kind {
            Kind::Directory(_) => EntryKind::Directory,
            Kind::File(data) => EntryKind::File {
                size: data.size,
                sha256: data
                    .sha256
                    .ok_or_else(|| UnhashedFile(String::from_utf8_lossy(&path).into_owned()))?,
            },
            Kind::Symlink(target) => EntryKind::Symlink { target },
            Kind::CharDevice { major, minor } => EntryKind::CharDevice {
                major: *major,
                minor: *minor,
            },
            Kind::BlockDevice { major, minor } => EntryKind::BlockDevice {
                major: *major,
                minor: *minor,
            },
            Kind::Fifo => EntryKind::Fifo,
            Kind::Socket => EntryKind::Socket,
        };
        let mut hard_link_of = None;
        if counts[id.index()] > 1 && !matches!(inode.kind, Kind::Directory(_)) {
            hard_link_of = first_names.get(&id).cloned();
            if hard_link_of.is_none() {
                first_names.insert(id, path.clone());
            }
        }
        builder.add(&Entry {
            path: &path,
            kind,
            mode: u32::from(inode.meta.mode),
            uid: inode.meta.uid,
            gid: inode.meta.gid,
            hard_link_of: hard_link_of.as_deref(),
            xattrs: &inode.meta.xattrs,
        });
    }
    Ok(builder.finish())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::tree::{Content, FileData, Inode, Meta};

    fn tree_with(content: &'static [u8]) -> Tree {
        let mut t = Tree::new(Meta::root(0o755, 0));
        t.insert(
            b"etc/hostname",
            Inode::new(
                Meta::root(0o644, 0),
                Kind::File(FileData {
                    size: content.len() as u64,
                    content: Content::Bytes(Arc::from(content)),
                    sha256: None,
                }),
            ),
        )
        .unwrap();
        t.hard_link(b"etc/hostname2", b"etc/hostname").unwrap();
        t
    }

    #[test]
    fn digest_requires_hashes_and_matches_a_directory_walk() {
        let mut t = tree_with(b"box\n");
        assert!(tree_digest(&t).is_err());
        hash_contents(&mut t, &|_| {}).unwrap();
        let d = tree_digest(&t).unwrap();

        // The same tree on disk, walked by the guest-side code, gives the same digest.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/hostname"), b"box\n").unwrap();
        std::fs::set_permissions(
            root.join("etc/hostname"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        std::fs::hard_link(root.join("etc/hostname"), root.join("etc/hostname2")).unwrap();
        let uid = std::fs::metadata(root)
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .unwrap();
        if uid == 0 {
            assert_eq!(imgbuild_init::digest::digest_directory(root).unwrap(), d);
        }

        let mut other = tree_with(b"box2\n");
        hash_contents(&mut other, &|_| {}).unwrap();
        assert_ne!(tree_digest(&other).unwrap(), d);
    }
}
